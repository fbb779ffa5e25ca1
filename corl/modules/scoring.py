"""Scoring a rollout into one typed record: every reward and its parts, the weighted sums, the time each took.

The paired reward of output i is R_i = R_image(I_i) + lambda * R_text(T_i): each task's rewards are
weighted and summed, and an item a reward could not score (NaN) counts as its group's mean of that
reward (``fill_unscored``), so it neither wins nor loses; the named rewards keep their NaNs for the logs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from corl.data.schema import ExampleBatch
from corl.modules.grpo import fill_unscored
from corl.modules.rewards.base import GeneratedImages, ImageReward, RewardScore, TextReward
from corl.modules.rollout import Rollout


@dataclass
class Scores:
    """A rollout's rewards ``[R]`` by name (parts as ``<name>/<part>``), with ``image``, ``text`` and ``total``."""

    values: dict[str, torch.Tensor]
    seconds: dict[str, float]  # each reward's own time, for ``time/reward/<name>``
    captions: list[str] | None = None  # re-captions of the generated images (the cycle reward's), for the logs


@torch.no_grad()
def score_rollout(rollout: Rollout, batch: ExampleBatch, policy, image_rewards: Sequence[ImageReward],
                  text_rewards: Sequence[TextReward], text_weight: float, device: torch.device) -> Scores:
    """Every reward of ``rollout`` (whose examples are ``batch``'s), weighted into the paired total."""
    values: dict[str, torch.Tensor] = {}
    seconds: dict[str, float] = {}
    rows = rollout.rows()
    image_total = torch.zeros(len(rows), device=device)
    text_total = torch.zeros_like(image_total)
    examples = (rows // rollout.group_size).tolist()
    captions = None
    if rollout.image is not None:
        samples = GeneratedImages(images=rollout.image.pixels, real_photos=[batch.real_image[i] for i in examples],
                                  prompts=[batch.prompt[i] for i in examples], tokens=rollout.image.tokens,
                                  reader=policy.reader)
        for reward in image_rewards:
            score, seconds[reward.name] = _timed(reward.name, reward, device, samples)
            values[reward.name] = score.values
            values.update({f"{reward.name}/{part}": value for part, value in score.parts.items()})
            image_total += reward.weight * fill_unscored(values[reward.name], rollout.group_size)
            captions = captions or score.captions or None
    if rollout.text is not None:
        columns = {k: [v[i] for i in examples] for k, v in batch.text_columns().items()}
        for reward in text_rewards:
            score, seconds[reward.name] = _timed(reward.name, reward, device, rollout.text.texts, **columns)
            values[reward.name] = score.values
            text_total += reward.weight * fill_unscored(values[reward.name], rollout.group_size)
    values.update(image=image_total, text=text_total, total=image_total + text_weight * text_total)
    return Scores(values, seconds, captions)


def reward_names(values: dict[str, torch.Tensor], image_rewards: Sequence[ImageReward],
                 text_rewards: Sequence[TextReward], task: str | None = None) -> list[str]:
    """The keys of ``values`` that are rewards (of ``task``: ``image`` or ``text``) or their parts."""
    rewards = {"image": image_rewards, "text": text_rewards}
    names = {reward.name for t in ([task] if task else rewards) for reward in rewards[t]}
    return [key for key in values if key in names or key.rpartition("/")[0] in names]


def _timed(name: str, reward, device: torch.device, *args, **kwargs) -> tuple[RewardScore, float]:
    """One reward's scores and parts on ``device``, and its seconds (waiting for the GPU: the time is its own)."""
    start = time.perf_counter()
    try:
        score = reward.scored(*args, **kwargs)
    except Exception as err:  # noqa: BLE001 - re-raised with the reward's name
        raise RuntimeError(f"reward {name!r} failed: {err}") from err
    value = torch.as_tensor(score.values, dtype=torch.float32).to(device)
    parts = {part: torch.as_tensor(v, dtype=torch.float32).to(device) for part, v in score.parts.items()}
    if value.is_cuda:
        torch.cuda.synchronize(value.device)
    return replace(score, values=value, parts=parts), time.perf_counter() - start
