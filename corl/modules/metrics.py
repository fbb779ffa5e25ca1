"""Step statistics as pure functions: adding up metrics, reward statistics, reports of skipped steps.

Metrics add up over micro-batches and passes (ranges by min and max), and a skipped step is reported
with what made it non-finite.
"""

from __future__ import annotations

import math

import torch

EXTREMES = ("_min", "_max")  # metrics that are ranges, not means


def accumulate(into: dict[str, float], values: dict[str, float]) -> None:
    """Add ``values`` into ``into``; keys ending in ``_min`` / ``_max`` keep the smallest / largest instead.

    A NaN stays NaN either way, so a broken step shows in its range too.
    """
    for key, value in values.items():
        if key not in into or math.isnan(value):
            into[key] = value
        elif key.endswith("_min"):
            into[key] = min(into[key], value)
        elif key.endswith("_max"):
            into[key] = max(into[key], value)
        else:
            into[key] += value


def skip_report(step: dict[str, float], rewards: dict[str, torch.Tensor]) -> str:
    """What made a step non-finite: the gradient norm, each task's loss and ratio range, the rewards."""
    parts = [f"grad_norm {step.get('grad_norm', math.nan):.4g}"]
    for task in ("image", "text"):
        if f"loss/{task}" in step:
            parts.append(f"loss/{task} {step[f'loss/{task}']:.4g}, {task} ratio in "
                         f"[{step[f'{task}/ratio_min']:.4g}, {step[f'{task}/ratio_max']:.4g}]")
    for name, values in rewards.items():
        scored = values[~values.isnan()]
        mean = f"{scored.mean().item():.4g}" if scored.numel() else "nan"
        parts.append(f"reward/{name} mean {mean} ({values.numel() - scored.numel()} NaN)")
    return "; ".join(parts)


def step_scalars(step, advantages: torch.Tensor, update: dict[str, float],
                 decode: dict[str, float]) -> dict[str, float]:
    """A training step's scalars, always the same keys in the same order (one collective averages them across ranks).

    Rewards and advantages, the update's, the rollout's lengths, the collection's times, the decode's, the
    throughput and each reward's seconds; ``step`` is a ``corl.modules.collect.Collected``.
    """
    rollout = step.rollout
    stats = {**reward_stats(step.scores.values, advantages), **update, **rollout.stats(), **step.stats, **decode}
    stats["throughput/rollout_tokens_per_s"] = rollout.num_tokens() / max(step.stats["time/rollout"], 1e-9)
    stats.update({f"time/reward/{name}": seconds for name, seconds in step.scores.seconds.items()})
    return {k: float(v) for k, v in stats.items()}


def reward_stats(rewards: dict[str, torch.Tensor], advantages: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean, std and NaN count of every reward, and advantage statistics (the same keys every step)."""
    stats = {}
    for name, value in rewards.items():
        valid = value[~value.isnan()]
        stats[f"reward/{name}/mean"] = valid.mean() if valid.numel() else value.new_tensor(float("nan"))
        stats[f"reward/{name}/std"] = valid.std() if valid.numel() > 1 else value.new_zeros(())
        stats[f"reward/{name}/nan_count"] = value.new_tensor(float(value.numel() - valid.numel()))
    stats["advantage/mean"] = advantages.mean()
    stats["advantage/std"] = advantages.std() if advantages.numel() > 1 else advantages.new_zeros(())
    stats["advantage/abs_mean"] = advantages.abs().mean()
    return stats
