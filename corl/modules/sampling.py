"""Group sampling for both tasks: G images per prompt (with CFG) and G answers per (image, question).

Every sampled token's log-prob is recorded with the temperature (and, for images, the guided logits) the
training pass scores it with (``corl.modules.token_logprobs``), so the first training pass reproduces them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from corl.modules.decode_weights import DecodeWeights, DecodeWeightsMode, full
from corl.modules.decoding import DecodeLoop, DecodeMode, resolve_mode
from corl.modules.janus import Janus
from corl.modules.logprobs import ImageLogprobMode, guided_logits, sample_from_logits, token_logps
from corl.modules.rollout import ImageRollout, TextRollout
from corl.modules.settings import check_choice
from corl.modules.sharding import fsdp_units


@dataclass
class SamplingSettings:
    """How rollouts sample (``JanusPolicy``'s settings of the same names; benchmarks switch some)."""

    cfg_weight: float = 5.0
    image_temperature: float = 1.0
    text_temperature: float = 1.0
    max_completion_tokens: int = 512
    image_logprob_mode: ImageLogprobMode = "cfg"
    decode: DecodeMode = "auto"
    prefill_once: bool = True
    decode_weights: DecodeWeightsMode = "auto"


class Sampler:
    """Decode loops over a Janus model, kept across rollouts so a captured step is compiled once per shape.

    ``lora``: the model trains adapters (then rollouts decode from the trained modules themselves).
    """

    def __init__(self, janus: Janus, settings: SamplingSettings, lora: bool = False) -> None:
        check_choice("decode_weights", settings.decode_weights, DecodeWeightsMode)
        resolve_mode(settings.decode, torch.device("cuda"))  # refuses an unknown mode now, not at the first rollout
        self.janus, self.settings, self.lora = janus, settings, lora
        self._loops: dict[tuple, DecodeLoop] = {}
        self._copies: dict[torch.dtype, DecodeWeights] = {}

    # --------------------------------------------------------------------------------- images
    @torch.no_grad()
    def images(self, ids: torch.Tensor, mask: torch.Tensor, uncond: torch.Tensor, group_size: int) -> ImageRollout:
        """G images per prompt in one decode loop over ``2 * B * G`` rows (conditional + unconditional).

        Each conditional and each unconditional prompt is prefilled once (``prefill_once``).
        """
        janus, s = self.janus, self.settings
        loop = self._loop("image")
        prompt_ids, prompt_mask, prompt_uncond = self._to_capacity(loop, ids, mask, uncond)
        rows, prefilled, continues = self._prompt_rows(len(ids), group_size)
        ids, mask, uncond = prompt_ids[rows], prompt_mask[rows], prompt_uncond[rows]
        r, n = ids.shape[0], janus.num_image_tokens
        tokens = ids.new_zeros(r, n)
        sample_logps = torch.zeros(r, n, device=ids.device)
        cond_logps = torch.zeros_like(sample_logps)

        def next_fn(logits: torch.Tensor, step: int) -> tuple[torch.Tensor, None]:
            cond, guided = logits[:r], logits[r:]
            token = sample_from_logits(guided, s.image_temperature)
            tokens[:, step] = token
            sample_logps[:, step] = token_logps(guided, token, s.image_temperature)
            cond_logps[:, step] = token_logps(cond, token, s.image_temperature)
            return janus.embed_image_tokens(token.repeat(2)).unsqueeze(1), None

        # Rows [conditional; unconditional]: the unconditional prompts are prefilled after the conditional ones.
        both_ids = torch.cat([prompt_ids[prefilled], prompt_uncond[prefilled]])
        both_mask = torch.cat([prompt_mask[prefilled], prompt_mask[prefilled]])
        both_rows = torch.cat([continues, continues + len(prefilled)])
        loop.run(janus.embed_prompt(both_ids, None), both_mask, both_rows, n, next_fn)
        old = sample_logps if s.image_logprob_mode == "cfg" else cond_logps
        return ImageRollout(ids, mask, uncond, tokens, old, janus.decode_images(tokens))

    def _image_step_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[2R, D]`` (conditional; unconditional rows) -> conditional and guided logits ``[2R, V]``."""
        cond, uncond = self.janus.image_logits(hidden).chunk(2)
        return torch.cat([cond, guided_logits(cond, uncond, self.settings.cfg_weight)])

    # ---------------------------------------------------------------------------------- texts
    @torch.no_grad()
    def texts(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, image_embeds: torch.Tensor,
              group_size: int, temperature: float | None = None, max_tokens: int | None = None) -> TextRollout:
        """G answers per example in one decode loop; each image's features are computed once and shared.

        ``temperature`` and ``max_tokens`` default to the settings; other values are for uses outside RL
        (greedy captions), since the log-probs are always at the settings' temperature.
        """
        s, janus = self.settings, self.janus
        temperature = s.text_temperature if temperature is None else temperature
        loop = self._loop("text")
        prompt_ids, prompt_mask = self._to_capacity(loop, prompt_ids, prompt_mask)
        example_index, prefilled, continues = self._prompt_rows(prompt_ids.shape[0], group_size)
        ids, mask = prompt_ids[example_index], prompt_mask[example_index]
        rows, limit = ids.shape[0], max_tokens or s.max_completion_tokens
        eos, pad = janus.tokenizer.eos_token_id, janus.tokenizer.pad_token_id
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
            logps[:, step] = token_logps(logits, token, s.text_temperature)
            finished.logical_or_(token == eos)
            return janus.llm.get_input_embeddings()(token).unsqueeze(1), finished

        embeds = janus.embed_prompt(prompt_ids[prefilled], image_embeds[prefilled])
        loop.run(embeds, prompt_mask[prefilled], continues, limit, next_fn)
        used = int(valid.sum(1).max().item()) if valid.any() else 1
        completion, valid, logps = completion[:, :used], valid[:, :used], logps[:, :used]
        texts = janus.tokenizer.batch_decode(completion.masked_fill(~valid, pad), skip_special_tokens=True)
        return TextRollout(ids, mask, example_index, image_embeds, completion, valid.long(),
                           logps.masked_fill(~valid, 0.0), texts, finished.clone())

    @staticmethod
    def _text_step_logits(head: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """``[R, D]`` -> the text head's logits ``[R, V]``."""
        return head(hidden).float()

    # ------------------------------------------------------------------------------ the loops
    def _loop(self, task: str) -> DecodeLoop:
        """The task's decode loop, kept across rollouts so a captured step is compiled once per shape."""
        mode = resolve_mode(self.settings.decode, self.janus.device)
        copy = self._decode_copy()
        key = (task, mode, copy.dtype if copy is not None else None)
        if key not in self._loops:
            llm, head = (copy.llm, copy.lm_head) if copy is not None else (self.janus.llm, self.janus.lm_head)
            logits_fn = self._image_step_logits if task == "image" else partial(self._text_step_logits, head)
            self._loops[key] = DecodeLoop(llm, logits_fn, mode, name=task)
        return self._loops[key]

    def _to_capacity(self, loop: DecodeLoop, ids: torch.Tensor, mask: torch.Tensor,
                     *more_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Prompts left-padded to the loop's prompt capacity, as it decodes them.

        The rollout records them so: the training forward then reads the same padding as the decode
        (in bfloat16 another amount of padding rounds the log-probs differently).
        """
        pad = loop.reserve(ids.shape[1]) - ids.shape[1]
        pad_id = self.janus.tokenizer.pad_token_id
        return (F.pad(ids, (pad, 0), value=pad_id), F.pad(mask, (pad, 0)),
                *(F.pad(more, (pad, 0), value=pad_id) for more in more_ids))

    def _prompt_rows(self, prompts: int, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(example [R], prefilled [P], continues [R])`` for ``R = prompts * G`` decoded rows.

        ``example`` is each row's prompt, ``prefilled`` the prompts that are prefilled and
        ``continues`` which prefilled prompt each row goes on from. With ``prefill_once`` each prompt
        is prefilled once and its cache copied to its G rows; otherwise every row prefills its own
        copy (the eager baseline of the benchmark).
        """
        device = self.janus.device
        example = torch.arange(prompts, device=device).repeat_interleave(group_size)
        if self.settings.prefill_once:
            return example, torch.arange(prompts, device=device), example
        return example, example, torch.arange(len(example), device=device)

    def _decode_copy(self) -> DecodeWeights | None:
        """The plain copy rollouts decode with, refreshed; None where they decode from the trained modules.

        With ``decode_weights: auto`` the copy is made under mixed precision (autocast to a dtype narrower
        than the weights) and under FSDP, for a model without LoRA (``corl.modules.decode_weights``).
        """
        if self.settings.decode_weights != "auto" or self.lora:
            return None
        llm, head = self.janus.llm, self.janus.lm_head
        device_type, weight = self.janus.device.type, head.weight
        narrower = torch.is_autocast_enabled(device_type) and (
            torch.get_autocast_dtype(device_type).itemsize < weight.dtype.itemsize)
        if not narrower and not fsdp_units(llm):
            return None
        dtype = torch.get_autocast_dtype(device_type) if narrower else full(weight).dtype
        if dtype not in self._copies:
            self._copies[dtype] = DecodeWeights(llm, head, dtype)
        else:
            self._copies[dtype].refresh(llm, head)
        return self._copies[dtype]

    def stats(self) -> dict[str, float]:
        """What the decode loops did since the last call (``decode/*``: captured share, compiles, fallbacks)."""
        taken = [loop.stats.take() for loop in self._loops.values()]
        steps = sum(t.captured_steps + t.eager_steps for t in taken)
        return {
            "decode/captured_fraction": sum(t.captured_steps for t in taken) / steps if steps else 0.0,
            "decode/compiled_shapes": float(sum(t.compiled_shapes for t in taken)),
            "decode/fallbacks": float(sum(t.fallbacks for t in taken)),
            "decode/restarts": float(sum(t.restarts for t in taken)),
        }
