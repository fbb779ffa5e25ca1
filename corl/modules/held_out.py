"""Held-out scores, one implementation for validation during training and for ``corl evaluate``.

Every example gets one greedy answer and one image, under a seed of the batch's own, so the same
weights always get the same scores and scoring draws nothing from the training stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from corl.data.schema import ExampleBatch
from corl.resume import seeded


@dataclass
class HeldOut:
    """A held-out batch's scores and the images they score."""

    scores: dict[str, torch.Tensor]  # each reward and reward part, its unscored (NaN) items left out
    images: torch.Tensor | None  # [B, 3, H, W] in [-1, 1], one per prompt; None when no image was drawn


@torch.no_grad()
def held_out_scores(module, batch: ExampleBatch, seed: int, sampled_answers: bool = False) -> HeldOut:
    """Each reward's (and reward part's) scores of the batch, and the images drawn for them.

    ``module`` is a ``CoRLModule`` (its rollout, rewards and policy). With ``sampled_answers`` every
    question is also answered once at the text temperature, as training samples, under the same seed;
    those answers' text rewards are added as ``<name>_sampled``.
    """
    out: dict[str, torch.Tensor] = {}
    with module.rollout_mode(), seeded(seed, module.device):
        rollouts = [(module.rollout(batch, evaluation=True), None, "")]
        if sampled_answers and module.text_rewards:
            rollouts.append((module.rollout(batch, tasks=("text",), evaluation=True, greedy=False), "text", "_sampled"))
        for rollout, task, suffix in rollouts:
            scores = module.score(rollout, batch)
            for name in module.reward_names(scores, task):
                out[name + suffix] = scores[name][~scores[name].isnan()]
    image = rollouts[0][0].image
    return HeldOut(out, None if image is None else image.pixels)
