"""AdamW with linear warmup and a constant or cosine schedule, shared by the RL and SFT modules."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Literal, get_args

import torch

LRSchedule = Literal["constant", "cosine"]  # after warmup


def lr_lambda(warmup: int, total: int, kind: str) -> Callable[[int], float]:
    """Multiplier of the peak LR at an optimiser step: linear warmup, then constant or cosine to 0."""
    if kind not in get_args(LRSchedule):
        raise ValueError(f"lr_schedule must be one of {get_args(LRSchedule)}, got {kind!r}")

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def adamw_with_schedule(
    params: Iterable[torch.nn.Parameter],
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    warmup_steps: int,
    schedule: str,
    total_steps: int,
) -> tuple[list[torch.optim.Optimizer], list[torch.optim.lr_scheduler.LambdaLR]]:
    """Lightning's ``configure_optimizers`` value: AdamW and its per-step schedule."""
    optimizer = torch.optim.AdamW(list(params), lr=lr, weight_decay=weight_decay, betas=tuple(betas))
    return [optimizer], [torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(warmup_steps, total_steps, schedule))]
