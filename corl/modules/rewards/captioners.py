"""Captioners re-describe generated images for the cycle-consistency reward.

A captioner has ``setup()`` (load once) and ``__call__(samples) -> list[str]``, one caption per image
of a ``GeneratedImages`` record, computed in batches.
"""

from __future__ import annotations

from corl.data.templates import DESCRIBE
from corl.modules.rewards.base import GeneratedImages


class Captioner:
    """Interface of a captioner."""

    def setup(self) -> None:
        """Load the captioning model once (nothing for the policy itself)."""

    def __call__(self, samples: GeneratedImages) -> list[str]:
        """One caption per image of ``samples``."""
        raise NotImplementedError


class SelfCaptioner(Captioner):
    """The policy itself, asked to describe each generated image, greedy, through its understanding path.

    Args:
        instruction: the user turn that asks for the caption.
        max_tokens: caption length limit.
        batch_size: images per batched decode.
    """

    def __init__(self, instruction: str = DESCRIBE, max_tokens: int = 40, batch_size: int = 64) -> None:
        self.instruction, self.max_tokens, self.batch_size = instruction, max_tokens, batch_size

    def __call__(self, samples: GeneratedImages) -> list[str]:
        """Greedy captions; the images never leave the device."""
        features = samples.image_features()  # shared with the matching reward
        captions: list[str] = []
        for start in range(0, len(samples), self.batch_size):
            batch = features[start : start + self.batch_size]
            captions += samples.reader.describe(batch, self.instruction, self.max_tokens)
        return captions
