"""The order of training examples as a resumable stream: one rank's batches, shuffled per pass.

A checkpoint must let a preempted run go on with exactly the batches it had not seen yet. Here the
order is a pure function of ``(seed, pass)`` and the position is two numbers (the pass and the next
batch in it), which torchdata's ``StatefulDataLoader`` saves with every checkpoint and restores. The
pass counter is the sampler's own: Lightning advances its epoch counter twice when a run resumes from
a checkpoint taken at the end of an epoch, and an order that followed it would skip a pass.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableBatches(Sampler[list[int]]):
    """Batches of example indices for one rank; each iteration is one pass over the data.

    Pass ``p`` is a permutation drawn from ``(seed, p)`` alone (or the natural order without
    ``shuffle``), cut into whole batches of ``batch_size * num_replicas`` examples; rank ``r`` takes
    the ``r``-th slice of each. A last partial batch is dropped, so every rank takes the same number
    of steps.

    Args:
        length: examples in the data set.
        batch_size: examples per batch on one rank.
        seed: seed of the shuffling.
        shuffle: draw a new order for every pass.
        num_replicas: ranks that share the data.
        rank: this rank.
    """

    def __init__(
        self, length: int, batch_size: int, seed: int = 0, shuffle: bool = True, num_replicas: int = 1, rank: int = 0
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be at least 1, got {batch_size}")
        if length < batch_size * num_replicas:
            raise ValueError(f"the data set has {length} example(s), fewer than one batch of {batch_size} on each of "
                             f"{num_replicas} rank(s): lower data.batch_size or add data")
        self.length, self.batch_size, self.seed, self.shuffle = length, batch_size, seed, shuffle
        self.num_replicas, self.rank = num_replicas, rank
        self.passes_done = 0  # passes before the current one
        self.next_batch = 0  # the next batch of the current pass

    def __len__(self) -> int:
        return self.length // (self.batch_size * self.num_replicas)

    def order(self, index: int) -> torch.Tensor:
        """The example order of pass ``index`` (the same on every rank)."""
        if not self.shuffle:
            return torch.arange(self.length)
        return torch.randperm(self.length, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + index))

    def __iter__(self) -> Iterator[list[int]]:
        # A pass ends when its last batch is taken, but moves on only when the next iteration starts:
        # Lightning may stop at the last batch without exhausting this generator.
        if self.next_batch >= len(self):
            self.passes_done, self.next_batch = self.passes_done + 1, 0
        order = self.order(self.passes_done)
        step = self.batch_size * self.num_replicas
        while self.next_batch < len(self):
            start = self.next_batch * step + self.rank * self.batch_size
            self.next_batch += 1
            yield order[start : start + self.batch_size].tolist()

    def state_dict(self) -> dict[str, int]:
        """Where the stream stands: the current pass and its next batch."""
        return {"passes_done": self.passes_done, "next_batch": self.next_batch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from a saved position."""
        self.passes_done, self.next_batch = int(state["passes_done"]), int(state["next_batch"])
