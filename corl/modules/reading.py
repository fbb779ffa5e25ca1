"""The policy reading images for rewards: vision features, greedy captions, matching states.

Rewards that judge a generated image by how the policy itself reads it (the self-captioner, the
matching reward) get this narrow reader (``corl.modules.rewards.base.ImageReader``), not the policy.
"""

from __future__ import annotations

import torch

from corl.modules.janus import Janus
from corl.modules.prompts import JanusPrompts, span_mask
from corl.modules.sampling import Sampler


class PolicyReader:
    """Reads images through the policy's understanding path (its prompts, with their ``system_prompt``)."""

    def __init__(self, janus: Janus, prompts: JanusPrompts, sampler: Sampler) -> None:
        self.janus, self.prompts, self.sampler = janus, prompts, sampler

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Aligned vision-tower features ``[R, N_img, D]`` of images ``[R, 3, H, W]`` in [-1, 1]."""
        return self.janus.image_features(pixels)

    @torch.no_grad()
    def describe(self, features: torch.Tensor, instruction: str, max_tokens: int) -> list[str]:
        """Greedy one-sentence captions of images given by their ``image_features`` ``[R, N_img, D]``."""
        content = [{"type": "image"}, {"type": "text", "text": instruction}]
        enc = self.prompts.encode([content] * len(features), "text").to(self.janus.device)
        rollout = self.sampler.texts(enc.ids, enc.mask, features, 1, temperature=0.0, max_tokens=max_tokens)
        return [text.strip() for text in rollout.texts]

    @torch.no_grad()
    def matching_states(
        self, features: torch.Tensor, prompts: list[str]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Last hidden states when the policy reads (image, prompt), with the image and prompt spans.

        The images come as their ``image_features`` ``[R, N_img, D]``.

        One batched forward over the understanding prompts. The spans come from the batch itself: image
        positions are the image tokens, prompt positions are the tokens that carry characters of the prompt
        as the chat template kept it (stripped), so left padding, the system prompt and the template cannot
        shift them.

        Returns:
            ``states [R, L, D]``, ``image_mask [R, L]`` and ``text_mask [R, L]`` (bool).
        """
        contents = [[{"type": "image"}, {"type": "text", "text": prompt}] for prompt in prompts]
        enc = self.prompts.encode(contents, "text").to(self.janus.device)
        spans = [self.prompts.part_span(content, 1, "text") for content in contents]
        text_mask = span_mask(enc, spans)
        embeds = self.janus.embed_prompt(enc.ids, features)
        return self.janus.forward(embeds, enc.mask), self.janus.image_token_mask(enc.ids), text_mask
