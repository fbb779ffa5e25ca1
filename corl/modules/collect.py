"""Collecting a step's rollout: sample both tasks, score, and under dynamic sampling roll out further examples.

DAPO's dynamic sampling replaces groups whose rewards are all equal (no advantage) by informative
groups from further examples, round after round up to a limit; a step always keeps ``batch_size``
groups, so every rank takes the same steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from corl.data.schema import ExampleBatch
from corl.modules.dynamic_sampling import combine, informative_groups, pick_groups
from corl.modules.rollout import Rollout
from corl.modules.scoring import Scores


def tasks_at(step: int, tasks: tuple[str, ...], alternate_every: int) -> tuple[str, ...]:
    """The tasks rolled out at a training step: all with rewards, or one of them in turn (RL-Cycle)."""
    if alternate_every <= 0 or len(tasks) < 2:
        return tasks
    return (tasks[(step // alternate_every) % 2],)


@torch.no_grad()
def sample(policy, batch: ExampleBatch, tasks: tuple[str, ...], group_size: int, greedy_answers: bool = False,
           mask_truncated: bool = False) -> Rollout:
    """G images per prompt and G answers per (image, question) for the tasks asked for, with the real images.

    ``greedy_answers`` answers greedily (held-out scores); ``mask_truncated`` gives answers cut off by the
    length limit no loss (DAPO's overlong filtering).
    """
    if "image" in tasks and batch.prompt is None:
        raise ValueError("image rewards are configured but the data has no prompts (data.kind: t2i or triplet)")
    if "text" in tasks and batch.qa_problem is None:
        raise ValueError("text rewards are configured but the data has no questions (data.kind: qa or triplet)")
    image = text = None
    if "text" in tasks:
        ids, mask, image_embeds, real = policy.understanding_prompts(batch.qa_problem, batch.qa_type, batch.real_image)
        text = policy.sample_texts(ids, mask, image_embeds, group_size, temperature=0.0 if greedy_answers else None)
        if mask_truncated:
            text = replace(text, trained=text.completion_ends_with_eos.clone())
    else:
        real = policy.janus.pixel_values(batch.real_image)
    if "image" in tasks:
        image = policy.sample_images(batch.prompt, group_size)
    return Rollout(image=image, text=text, real_pixels=real, group_size=group_size)


@dataclass
class Collected:
    """A step's rollout, its scores and examples, and how it was collected (seconds, dynamic-sampling stats)."""

    rollout: Rollout
    scores: Scores
    batch: ExampleBatch
    stats: dict[str, float] = field(default_factory=dict)


def collect(batch: ExampleBatch, sample: Callable[[ExampleBatch], Rollout],
            score: Callable[[Rollout, ExampleBatch], Scores], more: Callable[[], ExampleBatch], group_size: int,
            dynamic_sampling: bool = False, max_resample_rounds: int = 3, pad_id: int = 0) -> Collected:
    """Roll out ``batch`` and score it; with ``dynamic_sampling``, add rounds from ``more()`` examples as needed.

    Returns the step's rollout (under dynamic sampling: ``batch_size`` groups, informative ones first),
    with ``time/rollout`` and ``time/rewards`` summed over the rounds.
    """
    rounds, seconds = [], {"time/rollout": 0.0, "time/rewards": 0.0}
    while True:
        start = time.perf_counter()
        rollout = sample(batch)
        middle = time.perf_counter()
        scores = score(rollout, batch)
        seconds["time/rollout"] += middle - start
        seconds["time/rewards"] += time.perf_counter() - middle
        rounds.append((rollout, scores, batch))
        if not dynamic_sampling or not _needs_more(rounds, group_size, max_resample_rounds):
            break
        batch = more()  # new examples, this rank's own stream
    if not dynamic_sampling:
        return Collected(rollout, scores, batch, seconds)
    flags = [informative_groups(s.values["total"], group_size) for _, s, _ in rounds]
    kept = [(r, s.values, b) for r, s, b in rounds]
    rollout, values, batch = combine(kept, pick_groups(flags, len(rounds[0][2])), pad_id)
    seen, informative = sum(len(f) for f in flags), sum(int(f.sum()) for f in flags)
    stats = {**seconds, "dynamic/left_out_fraction": 1.0 - informative / seen, "dynamic/rounds": float(len(rounds) - 1)}
    return Collected(rollout, Scores(values, scores.seconds, scores.captions), batch, stats)


def _needs_more(rounds: list, group_size: int, max_rounds: int) -> bool:
    """Another round while fewer than ``batch_size`` groups inform and rounds are left."""
    if len(rounds) > max_rounds:
        return False
    found = sum(int(informative_groups(s.values["total"], group_size).sum()) for _, s, _ in rounds)
    return found < len(rounds[0][2])
