"""The Janus policy: group sampling for both tasks, training log-probs, decoding.

Everything that knows about transformers' Janus classes, the processor and the chat template lives
here, so the LightningModule only sees rollouts and log-prob tensors.

Log-prob convention (the public reference code gets this wrong): the token at position k is
scored from the hidden state at k - 1, with the same temperature (and, in ``cfg`` mode, the same
guided logits) it was sampled with, so the first training pass reproduces the sampling log-probs.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import partial
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from corl.data.images import photo_pixels
from corl.data.templates import Instruction
from corl.modules.decode_weights import DecodeWeights, DecodeWeightsMode, full
from corl.modules.decoding import DecodeLoop, DecodeMode, positions_from_mask, resolve_mode
from corl.modules.logprobs import chunked_token_logps, sample_from_logits, token_logps
from corl.modules.lora import AdaptersOff, LoRA, add_adapters
from corl.modules.packing import Packing, pack_rows, packed_inputs, packed_mask, packed_positions, unpacked_states
from corl.modules.prompts import JanusPrompts, span_mask
from corl.modules.rollout import ImageRollout, TextRollout
from corl.modules.sharding import fsdp_units

ImageLogprobMode = Literal["conditional", "cfg"]


class FrozenModules(nn.ModuleDict):
    """Modules that stay in eval mode whatever ``.train()`` the parent module receives (the KL reference)."""

    def train(self, mode: bool = True) -> FrozenModules:
        """Stay in eval mode: the reference's log-probs must not depend on the trainer's mode."""
        return super().train(False)

    @contextmanager
    def weights(self) -> Iterator[nn.ModuleDict]:
        """The modules that score as the reference: these."""
        yield self


Reference = FrozenModules | AdaptersOff  # a frozen copy, or (LoRA) the policy with its adapters switched off


class JanusPolicy(nn.Module):
    """A Janus model and its processor, with RL sampling and scoring for images and text.

    Args:
        model: a ``JanusForConditionalGeneration``.
        processor: its ``JanusProcessor`` (tokenizer with chat template, image processor).
        cfg_weight: classifier-free guidance weight w for images: logits u + w * (c - u).
        image_temperature: sampling temperature of image tokens (also used to score them).
        text_temperature: sampling temperature of answers (also used to score them).
        max_completion_tokens: the length limit of a text answer.
        image_logprob_mode: ``"cfg"`` scores image tokens with the guided logits they were sampled
            from (needs the unconditional rows in the training forward); ``"conditional"`` with the
            conditional logits only (cheaper; then pi_old is the conditional distribution too).
        logprob_chunk_tokens: training log-probs are taken over about this many (row, position)
            pairs at a time, so the float32 logits of a whole micro-batch never exist at once.
        decode: the decode loop's one-token step: ``captured`` (CUDA graphs, replayed), ``eager``,
            or ``auto`` (captured on CUDA, eager elsewhere).
        prefill_once: prefill each prompt once and copy its KV cache to the rows of its group
            (``False`` prefills every row: only to measure the difference).
        pack_groups: the text training forward runs each prompt once per group, with the group's answers
            packed behind it (``corl.modules.packing``), under SDPA or eager attention (other
            attention implementations take a forward per row). ``False``: a forward per row, only
            to measure the difference.
        lora: train low-rank adapters on the LLM's decoder layers instead of the LLM and its text head.
        system_prompt: in front of every understanding prompt (rollouts, captions, matching): ``none``
            (the CoRL authors' layout), ``default`` (the processor's) or a text (``JanusPrompts``).
        instruction: the answer-format instruction put around bare questions: ``authors``, ``poster``,
            ``none`` or ``{MC: template, OE: template}``; questions that ask for ``<answer>`` tags stay verbatim.
        decode_weights: ``auto`` decodes from a plain copy of the LLM with its matrices in the compute dtype
            under mixed precision or FSDP (``corl.modules.decode_weights``); ``trained`` from the trained
            modules themselves.
    """

    def __init__(
        self,
        model: nn.Module,
        processor,
        *,
        cfg_weight: float = 5.0,
        image_temperature: float = 1.0,
        text_temperature: float = 1.0,
        max_completion_tokens: int = 512,
        image_logprob_mode: ImageLogprobMode = "cfg",
        logprob_chunk_tokens: int = 1024,
        decode: DecodeMode = "auto",
        prefill_once: bool = True,
        pack_groups: bool = True,
        lora: LoRA | None = None,
        system_prompt: str = "none",
        instruction: Instruction = "authors",
        decode_weights: DecodeWeightsMode = "auto",
    ) -> None:
        super().__init__()
        if image_logprob_mode not in get_args(ImageLogprobMode):
            raise ValueError(f"image_logprob_mode must be one of {get_args(ImageLogprobMode)}, "
                             f"got {image_logprob_mode!r}")
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.cfg_weight = cfg_weight
        self.image_temperature = image_temperature
        self.text_temperature = text_temperature
        self.max_completion_tokens = max_completion_tokens
        self.image_logprob_mode = image_logprob_mode
        self.logprob_chunk_tokens = logprob_chunk_tokens
        self.decode, self.prefill_once, self.pack_groups = decode, prefill_once, pack_groups
        self._decode_loops: dict[tuple, DecodeLoop] = {}
        if decode_weights not in ("auto", "trained"):
            raise ValueError(f"decode_weights must be 'auto' or 'trained', got {decode_weights!r}")
        self.decode_weights = decode_weights
        self._decode_copies: dict[torch.dtype, DecodeWeights] = {}  # a plain dict: not the policy's weights
        resolve_mode(decode, torch.device("cuda"))  # refuses an unknown mode now, not at the first rollout
        self.prompts = JanusPrompts(processor, self.num_image_tokens, system_prompt, instruction)
        # Only the LLM (with its text head) learns, or only the adapters on it; vision tower, aligners,
        # VQ model, generation embedding and generation head stay frozen.
        self.model.requires_grad_(False)
        self.lora = lora
        if lora is None:
            self.trained_modules().requires_grad_(True)
        else:
            add_adapters(self.model, lora)
        self.model.eval()
        # The VQ's convolutions run on channels-last tensors: the same numbers (to float rounding), and on
        # the CPU its decode, the largest cost of an image rollout of the tiny model, takes 0.6x the time.
        self.model.model.vqmodel.to(memory_format=torch.channels_last)

    def train(self, mode: bool = True) -> JanusPolicy:
        """Stay in eval mode: dropout would make training log-probs differ from sampling log-probs."""
        return super().train(False)

    # ----------------------------------------------------------------------------------- plumbing
    @property
    def llm(self) -> nn.Module:
        """The trained language model (decoder stack with its token embedding)."""
        return self.model.model.language_model

    @property
    def device(self) -> torch.device:
        """Where the model's weights live."""
        return self.model.lm_head.weight.device

    @property
    def num_image_tokens(self) -> int:
        """Image tokens per generated image, from the model config (576 for Janus-Pro)."""
        return self.model.config.vision_config.num_image_tokens

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Aligned vision-tower features ``[B, N_img, D]`` of images ``[B, 3, H, W]`` in [-1, 1]."""
        size = self.model.config.vision_config.image_size
        if pixels.shape[-2:] != (size, size):
            pixels = F.interpolate(pixels.float(), size=(size, size), mode="bilinear", align_corners=False)
        return self.model.model.get_image_features(pixels.to(self.model.dtype)).pooler_output

    def _embed_prompt(self, ids: torch.Tensor, image_embeds: torch.Tensor | None, llm: nn.Module | None = None):
        """Token embeddings ``[R, L, D]`` with the real images' features at the image placeholders."""
        embeds = (llm if llm is not None else self.llm).get_input_embeddings()(ids)
        if image_embeds is not None:
            slots = (ids == self.model.config.image_token_id).unsqueeze(-1)
            embeds = embeds.masked_scatter(slots, image_embeds.to(embeds.dtype))
        return embeds

    def _embed_image_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        # The generation aligner is an MLP: under autocast it returns bf16 while token embeddings stay
        # in the parameter dtype; one dtype keeps the KV cache and the concatenated inputs consistent.
        embeds = self.model.prepare_embeddings_for_image_generation(tokens)
        return embeds.to(self.llm.get_input_embeddings().weight.dtype)

    def trained_modules(self) -> nn.ModuleDict:
        """The modules RL changes: the LLM and its text head (possibly tied to its embedding), or their adapters.

        With LoRA these are still the modules the adapters sit in: FSDP shards them the same way.
        """
        return nn.ModuleDict({"llm": self.llm, "lm_head": self.model.lm_head})

    def make_reference(self) -> Reference:
        """The KL reference: the trained modules as they are now, frozen.

        With LoRA the base weights never change, so it is the policy itself with its adapters switched
        off (no copy); otherwise a frozen copy of the trained modules (the frozen towers and heads are
        shared, not copied).
        """
        if self.lora is not None:
            return AdaptersOff(self.trained_modules())
        reference = FrozenModules(copy.deepcopy(self.trained_modules()))  # deepcopy keeps a head/embedding tie
        return reference.requires_grad_(False).eval()

    def _weights(self, reference: Reference | None) -> AbstractContextManager[nn.ModuleDict]:
        """The modules that score: the policy's own, or the reference's."""
        return nullcontext(self.trained_modules()) if reference is None else reference.weights()

    def _forward(self, embeds: torch.Tensor, mask: torch.Tensor, llm: nn.Module) -> torch.Tensor:
        """Last hidden states of a full forward pass; no KV cache (activation checkpointing would fill it twice)."""
        out = llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions_from_mask(mask), use_cache=False)
        return out.last_hidden_state

    def _decode_loop(self, task: str) -> DecodeLoop:
        """The task's decode loop, kept across rollouts so a captured step is compiled once per shape."""
        mode = resolve_mode(self.decode, self.device)
        copy = self._decode_copy()
        key = (task, mode, copy.dtype if copy is not None else None)
        if key not in self._decode_loops:
            llm, head = (copy.llm, copy.lm_head) if copy is not None else (self.llm, self.model.lm_head)
            logits_fn = self._image_step_logits if task == "image" else partial(self._text_step_logits, head)
            self._decode_loops[key] = DecodeLoop(llm, logits_fn, mode, name=task)
        return self._decode_loops[key]

    def _to_capacity(self, loop: DecodeLoop, ids: torch.Tensor, mask: torch.Tensor,
                     *more_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Prompts left-padded to the loop's prompt capacity, as it decodes them.

        The rollout records them so: the training forward then reads the same padding as the decode
        (in bfloat16 another amount of padding rounds the log-probs differently).
        """
        pad = loop.reserve(ids.shape[1]) - ids.shape[1]
        pad_id = self.tokenizer.pad_token_id
        return (F.pad(ids, (pad, 0), value=pad_id), F.pad(mask, (pad, 0)),
                *(F.pad(more, (pad, 0), value=pad_id) for more in more_ids))

    def _decode_copy(self) -> DecodeWeights | None:
        """The plain copy rollouts decode with, refreshed; None where they decode from the trained modules.

        With ``decode_weights: auto`` the copy is made under mixed precision (autocast to a dtype narrower
        than the weights) and under FSDP, for a model without LoRA (``corl.modules.decode_weights``).
        """
        if self.decode_weights != "auto" or self.lora is not None:
            return None
        device_type, weight = self.device.type, self.model.lm_head.weight
        narrower = torch.is_autocast_enabled(device_type) and (
            torch.get_autocast_dtype(device_type).itemsize < weight.dtype.itemsize)
        if not narrower and not fsdp_units(self.llm):
            return None
        dtype = torch.get_autocast_dtype(device_type) if narrower else full(weight).dtype
        if dtype not in self._decode_copies:
            self._decode_copies[dtype] = DecodeWeights(self.llm, self.model.lm_head, dtype)
        else:
            self._decode_copies[dtype].refresh(self.llm, self.model.lm_head)
        return self._decode_copies[dtype]

    def decode_stats(self) -> dict[str, float]:
        """What the decode loops did since the last call (``decode/*``: captured share, compiles, fallbacks)."""
        taken = [loop.stats.take() for loop in self._decode_loops.values()]
        steps = sum(t.captured_steps + t.eager_steps for t in taken)
        return {
            "decode/captured_fraction": sum(t.captured_steps for t in taken) / steps if steps else 0.0,
            "decode/compiled_shapes": float(sum(t.compiled_shapes for t in taken)),
            "decode/fallbacks": float(sum(t.fallbacks for t in taken)),
            "decode/restarts": float(sum(t.restarts for t in taken)),
        }

    def _image_step_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[2R, D]`` (conditional; unconditional rows) -> conditional and guided logits ``[2R, V]``."""
        cond, uncond = self.model.model.generation_head(hidden).float().chunk(2)
        return torch.cat([cond, self._guided(cond, uncond)])

    @staticmethod
    def _text_step_logits(head: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """``[R, D]`` -> the text head's logits ``[R, V]``."""
        return head(hidden).float()

    def _prompt_rows(self, prompts: int, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(example [R], prefilled [P], continues [R])`` for ``R = prompts * G`` decoded rows.

        ``example`` is each row's prompt, ``prefilled`` the prompts that are prefilled and
        ``continues`` which prefilled prompt each row goes on from. With ``prefill_once`` each prompt
        is prefilled once and its cache copied to its G rows; otherwise every row prefills its own
        copy (the eager baseline of the benchmark).
        """
        example = torch.arange(prompts, device=self.device).repeat_interleave(group_size)
        if self.prefill_once:
            return example, torch.arange(prompts, device=self.device), example
        return example, example, torch.arange(len(example), device=self.device)

    # ------------------------------------------------------------------------------- image side
    def generation_prompts(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Conditional ids, mask and the Janus unconditional ids (only BOS and BOI kept) for T2I.

        The conditional prompt is the processor's image-mode prompt: no system prompt, ending in
        ``<begin_of_image>``.
        """
        enc = self.prompts.encode([[{"type": "text", "text": p}] for p in prompts], "image").to(self.device)
        ids, mask = enc.ids, enc.mask
        boi = self.tokenizer.convert_tokens_to_ids(self.processor.image_start_token)
        keep = (ids == self.tokenizer.bos_token_id) | (ids == boi)
        uncond = torch.where(keep | (mask == 0), ids, torch.full_like(ids, self.tokenizer.pad_token_id))
        return ids, mask, uncond

    def _guided(self, cond_logits: torch.Tensor, uncond_logits: torch.Tensor) -> torch.Tensor:
        return uncond_logits + self.cfg_weight * (cond_logits - uncond_logits)

    @torch.no_grad()
    def sample_images(self, prompts: list[str], group_size: int) -> ImageRollout:
        """G images per prompt in one decode loop over ``2 * B * G`` rows (conditional + unconditional).

        Each conditional and each unconditional prompt is prefilled once (``prefill_once``).
        """
        loop = self._decode_loop("image")
        prompt_ids, prompt_mask, prompt_uncond = self._to_capacity(loop, *self.generation_prompts(prompts))
        rows, prefilled, continues = self._prompt_rows(len(prompts), group_size)
        ids, mask, uncond = prompt_ids[rows], prompt_mask[rows], prompt_uncond[rows]
        r, n = ids.shape[0], self.num_image_tokens
        tokens = ids.new_zeros(r, n)
        sample_logps = torch.zeros(r, n, device=ids.device)
        cond_logps = torch.zeros_like(sample_logps)

        def next_fn(logits: torch.Tensor, step: int) -> tuple[torch.Tensor, None]:
            cond, guided = logits[:r], logits[r:]
            token = sample_from_logits(guided, self.image_temperature)
            tokens[:, step] = token
            sample_logps[:, step] = token_logps(guided, token, self.image_temperature)
            cond_logps[:, step] = token_logps(cond, token, self.image_temperature)
            return self._embed_image_tokens(token.repeat(2)).unsqueeze(1), None

        # Rows [conditional; unconditional]: the unconditional prompts are prefilled after the conditional ones.
        both_ids = torch.cat([prompt_ids[prefilled], prompt_uncond[prefilled]])
        both_mask = torch.cat([prompt_mask[prefilled], prompt_mask[prefilled]])
        both_rows = torch.cat([continues, continues + len(prefilled)])
        loop.run(self._embed_prompt(both_ids, None), both_mask, both_rows, n, next_fn)
        old = sample_logps if self.image_logprob_mode == "cfg" else cond_logps
        return ImageRollout(ids, mask, uncond, tokens, old, self.decode_images(tokens))

    @torch.no_grad()
    def encode_images(self, photos: list[Image.Image]) -> torch.Tensor:
        """VQ tokens ``[B, N]`` of real photos, centre-cropped to the generation resolution (SFT targets)."""
        size = self.model.config.vision_config.image_size
        pixels = torch.stack([photo_pixels(photo, size) for photo in photos]).to(self.device, self.model.dtype)
        return self.model.model.vqmodel.encode(pixels).image_tokens.view(len(photos), -1)

    @torch.no_grad()
    def decode_images(self, tokens: torch.Tensor) -> torch.Tensor:
        """VQ-decode image tokens ``[R, N]`` to pixels ``[R, 3, H, W]`` in [-1, 1], on the device."""
        return self.model.model.vqmodel.decode(tokens).float().clamp(-1.0, 1.0)

    def image_logprobs(self, rollout: ImageRollout, reference: Reference | None = None,
                       with_entropy: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Training log-probs ``[R, N]`` of the rollout's image tokens: one forward per micro-batch.

        With ``reference`` (from ``make_reference``) the same tokens are scored by the reference.
        ``with_entropy`` also returns each sampling distribution's entropy ``[R, N]`` (no gradient).
        """
        n = rollout.tokens.shape[1]
        length = rollout.prompt_ids.shape[1]
        ids, mask = rollout.prompt_ids, rollout.prompt_mask
        if self.image_logprob_mode == "cfg":
            ids, mask = torch.cat([ids, rollout.uncond_ids]), torch.cat([mask, mask])
        tokens = rollout.tokens.repeat(ids.shape[0] // rollout.tokens.shape[0], 1)
        # Inputs are prompt + tokens[:-1]: the state at position L-1 (<begin_of_image>) predicts token 0.
        with self._weights(reference) as weights:
            prompt = self._embed_prompt(ids, None, weights["llm"])
            embeds = torch.cat([prompt, self._embed_image_tokens(tokens[:, :-1])], dim=1)
            full_mask = torch.cat([mask, mask.new_ones(mask.shape[0], n - 1)], dim=1)
            hidden = self._forward(embeds, full_mask, weights["llm"])[:, length - 1 :]  # [rows, N, D]
        head = self.model.model.generation_head

        def logits(states: torch.Tensor) -> torch.Tensor:  # [rows, n, D] -> [R, n, V], as sampled
            out = head(states).float()
            return self._guided(*out.chunk(2)) if self.image_logprob_mode == "cfg" else out

        logps, spread = chunked_token_logps(hidden, rollout.tokens, logits, self.image_temperature,
                                            self.logprob_chunk_tokens, with_entropy)
        return (logps, spread) if with_entropy else logps

    # -------------------------------------------------------------------------------- text side
    @torch.no_grad()
    def pixel_values(self, images: list[Image.Image]) -> torch.Tensor:
        """The processor's pixels ``[B, 3, H, W]`` in [-1, 1] for real images, on the device."""
        pixels = self.processor.image_processor([im.convert("RGB") for im in images], return_tensors="pt")
        return pixels["pixel_values"].to(self.device).float()

    def understanding_prompts(
        self, questions: list[str], qa_types: list[str], images: list[Image.Image]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Ids, mask, image features ``[B, N_img, D]`` (tower run once per image) and pixels in [-1, 1].

        The features carry a gradient where the vision tower trains (the warm start's SFT); rollouts
        call this under ``no_grad``.
        """
        contents = [self.prompts.question(q, t) for q, t in zip(questions, qa_types, strict=True)]
        enc = self.prompts.encode(contents, "text").to(self.device)
        pixels = self.pixel_values(images)
        return enc.ids, enc.mask, self.image_features(pixels), pixels

    @torch.no_grad()
    def describe(self, features: torch.Tensor, instruction: str, max_tokens: int) -> list[str]:
        """Greedy one-sentence captions of images given by their ``image_features`` ``[R, N_img, D]``."""
        content = [{"type": "image"}, {"type": "text", "text": instruction}]
        enc = self.prompts.encode([content] * len(features), "text").to(self.device)
        rollout = self.sample_texts(enc.ids, enc.mask, features, 1, temperature=0.0, max_tokens=max_tokens)
        return [text.strip() for text in rollout.texts]

    @torch.no_grad()
    def matching_states(
        self, features: torch.Tensor, prompts: list[str]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Last hidden states when the policy reads (image, prompt), with the image and prompt spans.

        The images come as their ``image_features`` ``[R, N_img, D]``.

        One batched forward over the understanding prompts (with the ``system_prompt`` setting). The
        spans come from the batch itself: image positions are the image tokens, prompt positions are
        the tokens that carry characters of the prompt as the chat template kept it (stripped), so
        left padding, the system prompt and the template cannot shift them.

        Returns:
            ``states [R, L, D]``, ``image_mask [R, L]`` and ``text_mask [R, L]`` (bool).
        """
        contents = [[{"type": "image"}, {"type": "text", "text": prompt}] for prompt in prompts]
        enc = self.prompts.encode(contents, "text").to(self.device)
        spans = [self.prompts.part_span(content, 1, "text") for content in contents]
        ids, mask = enc.ids, enc.mask
        text_mask = span_mask(enc, spans)
        image_mask = ids == self.model.config.image_token_id
        embeds = self._embed_prompt(ids, features)
        return self._forward(embeds, mask, self.llm), image_mask, text_mask

    @torch.no_grad()
    def sample_texts(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        image_embeds: torch.Tensor,
        group_size: int,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> TextRollout:
        """G answers per example in one decode loop; each image's features are computed once and shared.

        ``temperature`` and ``max_tokens`` default to the policy's settings; other values are for
        uses outside RL (greedy captions), since the log-probs are always at the policy's temperature.
        """
        temperature = self.text_temperature if temperature is None else temperature
        loop = self._decode_loop("text")
        prompt_ids, prompt_mask = self._to_capacity(loop, prompt_ids, prompt_mask)
        example_index, prefilled, continues = self._prompt_rows(prompt_ids.shape[0], group_size)
        ids, mask = prompt_ids[example_index], prompt_mask[example_index]
        rows, limit = ids.shape[0], max_tokens or self.max_completion_tokens
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        completion = ids.new_full((rows, limit), pad)
        logps = torch.zeros(rows, limit, device=ids.device)
        finished = torch.zeros(rows, dtype=torch.bool, device=ids.device)
        valid = torch.zeros(rows, limit, dtype=torch.bool, device=ids.device)

        def next_fn(logits: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
            if step == 0:  # a rollout started again from its prefill (``DecodeLoop``) overwrites what it had
                finished.zero_()
                valid.zero_()
            token = sample_from_logits(logits, temperature)
            token = torch.where(finished, torch.full_like(token, pad), token)
            valid[:, step] = ~finished
            completion[:, step] = token
            logps[:, step] = token_logps(logits, token, self.text_temperature)
            finished.logical_or_(token == eos)
            return self.llm.get_input_embeddings()(token).unsqueeze(1), finished

        embeds = self._embed_prompt(prompt_ids[prefilled], image_embeds[prefilled])
        loop.run(embeds, prompt_mask[prefilled], continues, limit, next_fn)
        used = int(valid.sum(1).max().item()) if valid.any() else 1
        completion, valid, logps = completion[:, :used], valid[:, :used], logps[:, :used]
        texts = self.tokenizer.batch_decode(completion.masked_fill(~valid, pad), skip_special_tokens=True)
        return TextRollout(ids, mask, example_index, image_embeds, completion, valid.long(),
                           logps.masked_fill(~valid, 0.0), texts, finished.clone())

    def answer_ids(self, answers: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ids ``[B, T]`` of given answers, each ending in EOS, and their mask (SFT targets)."""
        eos = self.tokenizer.eos_token_id
        ids = [self.tokenizer(answer, add_special_tokens=False)["input_ids"] + [eos] for answer in answers]
        width = max(len(row) for row in ids)
        padded = torch.full((len(ids), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros(len(ids), width, dtype=torch.long)
        for row, tokens in enumerate(ids):
            padded[row, : len(tokens)], mask[row, : len(tokens)] = torch.tensor(tokens), 1
        return padded.to(self.device), mask.to(self.device)

    def text_logprobs(self, rollout: TextRollout, reference: Reference | None = None,
                      with_entropy: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Training log-probs ``[R, T]`` of the rollout's answer tokens (0 off the mask): one forward per micro-batch.

        With ``reference`` (from ``make_reference``) the same tokens are scored by the reference.
        ``with_entropy`` also returns each sampling distribution's entropy ``[R, T]`` (no gradient).
        """
        length = rollout.prompt_ids.shape[1]
        t = rollout.completion_ids.shape[1]
        with self._weights(reference) as weights:
            llm = weights["llm"]
            answer = llm.get_input_embeddings()(rollout.completion_ids[:, :-1])
            packing = pack_rows(rollout.example_index) if self._packs(llm) else None
            if packing is not None and len(packing.sources) < len(rollout.example_index):
                hidden = self._packed_forward(rollout, answer, packing, llm)
            else:
                prompt = self._embed_prompt(rollout.prompt_ids, rollout.image_embeds[rollout.example_index], llm)
                # The state at the prompt's last position scores completion token 0 (shift by one).
                embeds = torch.cat([prompt, answer], dim=1)
                mask = torch.cat([rollout.prompt_mask, rollout.prompt_mask.new_ones(prompt.shape[0], t - 1)], dim=1)
                hidden = self._forward(embeds, mask, llm)[:, length - 1 :]
            logps, spread = chunked_token_logps(hidden, rollout.completion_ids, weights["lm_head"],
                                                self.text_temperature, self.logprob_chunk_tokens, with_entropy)
        logps = logps.masked_fill(~rollout.mask, 0.0)
        return (logps, spread) if with_entropy else logps

    def _packs(self, llm: nn.Module) -> bool:
        """Whether the text training forward packs groups: on, and an attention that takes a 4D mask."""
        return self.pack_groups and getattr(llm.config, "_attn_implementation", None) in ("sdpa", "eager")

    def _packed_forward(self, rollout: TextRollout, answer: torch.Tensor, packing: Packing, llm: nn.Module):
        """States ``[R, T, D]`` scoring each row's answer tokens, from one forward per distinct prompt."""
        sources, block = packing.sources, answer.shape[1]
        prompt = self._embed_prompt(rollout.prompt_ids[sources], rollout.image_embeds[rollout.example_index[sources]],
                                    llm)
        mask = rollout.prompt_mask[sources]
        attend = packed_mask(mask, packing.blocks, block)
        if llm.config._attn_implementation == "eager":  # eager attention adds its mask to the scores
            attend = torch.zeros(attend.shape, dtype=prompt.dtype, device=attend.device).masked_fill(
                ~attend, torch.finfo(prompt.dtype).min)
        out = llm(inputs_embeds=packed_inputs(prompt, answer, packing), attention_mask=attend,
                  position_ids=packed_positions(mask, packing.blocks, block), use_cache=False)
        return unpacked_states(out.last_hidden_state, packing, mask.shape[1], block)
