"""Bidirectional cycle consistency R_cycle = ((1 - LPIPS(real, generated)) + S(prompt, re-caption)) / 2.

The image half compares the generated image with the real image its prompt describes; the text half
re-captions the generated image and compares that caption with the prompt. Both halves lie in
[0, 1], so R_cycle does too. Where one half cannot be scored (the caption metric gives NaN for an
empty caption), R_cycle is the other half alone: half of a score would make it the group's worst.
"""

from __future__ import annotations

import torch

from corl.modules.rewards.base import GeneratedImages, ImageReward, RewardScore, missing
from corl.modules.rewards.caption_metrics import CaptionMetric, CiderD
from corl.modules.rewards.captioners import Captioner, SelfCaptioner
from corl.modules.rewards.consistency import ImageConsistencyReward


class CycleConsistencyReward(ImageReward):
    """R_cycle, each part loaded once.

    Args:
        similarity: the image half, 1 - LPIPS (its trunk settings live there).
        captioner: who re-captions the generated image: the policy itself (``SelfCaptioner``) or
            an external image-to-text model (``HFCaptioner``, BLIP in the paper).
        caption_metric: S, ``Spice`` (the paper's; needs Java) or ``CiderD`` (pure Python).
        weight: weight in the image reward.
        name: log name.
    """

    default_name = "cycle"

    def __init__(
        self,
        similarity: ImageConsistencyReward | None = None,
        captioner: Captioner | None = None,
        caption_metric: CaptionMetric | None = None,
        weight: float = 1.0,
        name: str | None = None,
    ) -> None:
        super().__init__(weight, name)
        self.similarity = similarity or ImageConsistencyReward()
        self.captioner = captioner or SelfCaptioner()
        self.caption_metric = caption_metric or CiderD()

    def missing(self) -> list[str]:
        """What its parts need that is absent (``corl check``)."""
        return missing(self.similarity, self.captioner, self.caption_metric)

    def setup(self) -> None:
        """Load LPIPS, the captioner and the caption metric (SPICE starts its JVM here)."""
        self.similarity.setup()
        self.captioner.setup()
        self.caption_metric.setup()

    def __call__(self, samples: GeneratedImages) -> torch.Tensor:
        """R_cycle per generated image: the mean of the halves that could be scored (NaN where neither)."""
        return self.scored(samples).values

    def scored(self, samples: GeneratedImages) -> RewardScore:
        """R_cycle with the re-captions it compared with the prompts."""
        image_part = self.similarity(samples)
        captions = self.captioner(samples)
        text_part = self.caption_metric(captions, samples.prompts).to(image_part.device)
        return RewardScore(torch.stack([image_part, text_part]).nanmean(dim=0), captions=captions)
