"""The Janus policy: one object that owns the model and puts its parts together for RL and SFT.

Each job lives in a module of its own: Janus plumbing (``corl.modules.janus``), prompts
(``corl.modules.prompts``), sampling (``corl.modules.sampling``), training log-probs
(``corl.modules.token_logprobs``), the KL reference (``corl.modules.reference``) and the rewards' view of
the policy (``corl.modules.reading``). The LightningModules only see rollouts and log-prob records.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from PIL import Image
from torch import nn

from corl.data.templates import Instruction
from corl.modules.decode_weights import DecodeWeightsMode
from corl.modules.decoding import DecodeMode
from corl.modules.janus import Janus
from corl.modules.logprobs import ImageLogprobMode
from corl.modules.lora import LoRA, add_adapters
from corl.modules.prompts import JanusPrompts
from corl.modules.reading import PolicyReader
from corl.modules.reference import Reference, make_reference
from corl.modules.rollout import ImageRollout, ImageTokens, TextRollout, TextTokens
from corl.modules.sampling import Sampler, SamplingSettings
from corl.modules.settings import check_choice
from corl.modules.token_logprobs import ScoringSettings, TokenLogps, TokenScorer


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
        check_choice("image_logprob_mode", image_logprob_mode, ImageLogprobMode)
        self.model, self.processor, self.tokenizer = model, processor, processor.tokenizer
        self.janus = Janus(model, processor)
        self.sampler = Sampler(self.janus, SamplingSettings(
            cfg_weight, image_temperature, text_temperature, max_completion_tokens, image_logprob_mode, decode,
            prefill_once, decode_weights), lora=lora is not None)
        self.scorer = TokenScorer(self.janus, ScoringSettings(
            cfg_weight, image_temperature, text_temperature, image_logprob_mode, logprob_chunk_tokens, pack_groups))
        self.prompts = JanusPrompts(processor, self.janus.num_image_tokens, system_prompt, instruction)
        self.reader = PolicyReader(self.janus, self.prompts, self.sampler)
        # Only the LLM (with its text head) learns, or only the adapters on it; vision tower, aligners,
        # VQ model, generation embedding and generation head stay frozen.
        self.janus.freeze()
        self.lora = lora
        if lora is None:
            self.trained_modules().requires_grad_(True)
        else:
            add_adapters(self.model, lora)
        self.model.eval()
        self.janus.vq_memory_format(torch.channels_last)

    def train(self, mode: bool = True) -> JanusPolicy:
        """Stay in eval mode: dropout would make training log-probs differ from sampling log-probs."""
        return super().train(False)

    @property
    def llm(self) -> nn.Module:
        """The trained language model (decoder stack with its token embedding)."""
        return self.janus.llm

    @property
    def device(self) -> torch.device:
        """Where the model's weights live."""
        return self.janus.device

    @property
    def num_image_tokens(self) -> int:
        """Image tokens per generated image, from the model config (576 for Janus-Pro)."""
        return self.janus.num_image_tokens

    def trained_modules(self) -> nn.ModuleDict:
        """The modules RL changes: the LLM and its text head (possibly tied to its embedding), or their adapters.

        With LoRA these are still the modules the adapters sit in: FSDP shards them the same way.
        """
        return self.janus.trained_modules()

    def make_reference(self) -> Reference:
        """The KL reference: the trained modules as they are now, frozen (``corl.modules.reference``)."""
        return make_reference(self.trained_modules(), lora=self.lora is not None)

    # -------------------------------------------------------------------------------- sampling
    def sample_images(self, prompts: list[str], group_size: int) -> ImageRollout:
        """G images per prompt (``Sampler.images``)."""
        return self.sampler.images(*self.generation_prompts(prompts), group_size)

    def sample_texts(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, image_embeds: torch.Tensor,
                     group_size: int, temperature: float | None = None, max_tokens: int | None = None) -> TextRollout:
        """G answers per example (``Sampler.texts``)."""
        return self.sampler.texts(prompt_ids, prompt_mask, image_embeds, group_size, temperature, max_tokens)

    def decode_stats(self) -> dict[str, float]:
        """What the decode loops did since the last call (``decode/*``)."""
        return self.sampler.stats()

    # ----------------------------------------------------------------------------------- scoring
    def logprobs(self, tokens: ImageTokens | TextTokens, reference: Reference | None = None,
                 with_entropy: bool = False) -> TokenLogps:
        """Training log-probs of image or answer tokens (a rollout's or SFT's targets), one forward.

        With ``reference`` (from ``make_reference``) the same tokens are scored by the reference;
        ``with_entropy`` also gives each sampling distribution's entropy (no gradient).
        """
        weights = nullcontext(self.trained_modules()) if reference is None else reference.weights()
        with weights as modules:
            return self.scorer(tokens, modules, with_entropy)

    # ---------------------------------------------------------------------------------- prompts
    def generation_prompts(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Conditional ids, mask and unconditional ids of T2I prompts, on the device (``JanusPrompts.generation``)."""
        return tuple(t.to(self.device) for t in self.prompts.generation(prompts))

    def understanding_prompts(
        self, questions: list[str], qa_types: list[str], images: list[Image.Image]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Ids, mask, image features ``[B, N_img, D]`` (tower run once per image) and pixels in [-1, 1].

        The features carry a gradient where the vision tower trains (the warm start's SFT); rollouts
        call this under ``no_grad``.
        """
        contents = [self.prompts.question(q, t) for q, t in zip(questions, qa_types, strict=True)]
        enc = self.prompts.encode(contents, "text").to(self.device)
        pixels = self.janus.pixel_values(images)
        return enc.ids, enc.mask, self.janus.image_features(pixels), pixels

    def answer_ids(self, answers: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ids ``[B, T]`` of given answers, each ending in EOS, and their mask (SFT targets)."""
        return tuple(t.to(self.device) for t in self.prompts.answers(answers))
