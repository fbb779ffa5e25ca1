"""What a checkpoint must hold, beyond weights and optimiser, for a resumed run to go on exactly.

Every rank saves its own random-number states (torch CPU and CUDA, Python, NumPy), its position in
the data and its counters; they are gathered into the checkpoint (which one rank writes) and each
rank takes its own back on resume. The random states are put back right before the first training
step after the resume, so nothing that runs in between (the sanity check, opening the data)
changes the draws the run would have made.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


def rng_states() -> dict[str, Any]:
    """This process's random-number states, in types that a weights-only ``torch.load`` reads back."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    numpy_state = (kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(gauss))
    states = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": numpy_state}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Put back states from ``rng_states``."""
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    kind, keys, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run a block with its own seeded torch generator; the training stream of draws is left untouched.

    Validation samples with it, so held-out scores are reproducible and checkpoints taken around a
    validation resume exactly.
    """
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def gather_from_ranks(value: Any) -> list[Any]:
    """``value`` of every rank, in rank order (a list of one without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values
