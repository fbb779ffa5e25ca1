"""FSDP2 for the trained LLM: which modules are sharded, and gathering them for rollouts.

Only the trained modules (token embedding, decoder layers, final norm, text head) are sharded, each
decoder layer its own unit. The frozen towers (vision encoder, aligners, VQ model, generation
embedding and head) stay whole on every rank: nothing updates them, so there is nothing to sync.

The policy calls the embedding, the decoder and the heads one by one, never through one module's
forward. FSDP2 takes the first unit to run as the root of all the others, so the units get a
parameter-less root of their own that runs (empty) once, right after sharding; then each unit can
run on its own. Explicit prefetching overlaps each unit's all-gather with the compute before it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Sharding:
    """How the trained modules are sharded when the strategy gives the module a device mesh.

    Args:
        param_dtype: dtype the parameters are gathered in and computed with (``bfloat16`` halves the
            all-gather traffic); ``null`` keeps the stored dtype. The sharded copy the optimiser
            updates stays in the stored dtype (float32).
        reduce_dtype: dtype of the gradient reduce-scatter.
        reshard_after_forward: free each layer's gathered parameters after its forward in training
            (and gather them again for backward); ``false`` trades memory for less communication.
    """

    param_dtype: str | None = "bfloat16"
    reduce_dtype: str = "float32"
    reshard_after_forward: bool = True


def sharded_units(trained: nn.ModuleDict) -> list[nn.Module]:
    """The FSDP units of the trained modules, in forward order: embedding, layers, rest of the LLM, head."""
    llm, head = trained["llm"], trained["lm_head"]
    embedding = llm.get_input_embeddings()
    if head.weight is embedding.weight:
        raise ValueError("FSDP needs an untied text head (Janus-Pro's is untied); this model ties it to the "
                         "token embedding, so train it with DDP or on one device")
    layers = list(llm.layers)
    taken = {id(m) for m in [embedding, llm.layers]}
    rest = [m for m in llm.children() if id(m) not in taken and list(m.parameters())]  # the final norm
    return [embedding, *layers, *rest, head]


class _Root(nn.Module):
    """The FSDP root over a set of units: it holds no parameters and its forward does nothing."""

    def __init__(self, units: list[nn.Module]) -> None:
        super().__init__()
        self.units = nn.ModuleList(units)

    def forward(self) -> None:  # noqa: D102 - run once so FSDP sets up this root and its units
        return None


def shard(trained: nn.ModuleDict, mesh, sharding: Sharding) -> nn.Module:
    """Apply ``fully_shard`` to every unit of the trained modules over ``mesh`` (1-D, data parallel).

    Returns their root, which the caller keeps (unregistered: its parameters are the units' own).
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(
        param_dtype=getattr(torch, sharding.param_dtype) if sharding.param_dtype else None,
        reduce_dtype=getattr(torch, sharding.reduce_dtype),
    )
    units = sharded_units(trained)
    for unit in units:
        fully_shard(unit, mesh=mesh, mp_policy=policy, reshard_after_forward=sharding.reshard_after_forward)
    # A unit that runs on its own waits for the compute before it to gather; so each unit asks for
    # the next one's parameters (and, in backward, the previous one's) ahead of time.
    for before, after in zip(units, units[1:]):
        before.set_modules_to_forward_prefetch([after])
        after.set_modules_to_backward_prefetch([before])
    root = fully_shard(_Root(units), mesh=mesh, mp_policy=policy)
    root()
    return root


def shard_on_mesh(device_mesh, trained: nn.ModuleDict, copies: list[nn.ModuleDict], sharding: Sharding) -> list:
    """FSDP over the data-parallel part of a ``ModelParallelStrategy`` mesh: the trained modules and any copies.

    Returns the FSDP roots, which the caller keeps (unregistered: their parameters are the units' own).
    """
    if device_mesh["tensor_parallel"].size() != 1:
        raise ValueError("corl shards with FSDP only (no tensor parallelism): use "
                         "corl.strategies.FullyShardedStrategy as trainer.strategy")
    mesh = device_mesh["data_parallel"]
    return [shard(modules, mesh, sharding) for modules in (trained, *copies)]


def fsdp_units(module: nn.Module) -> list[nn.Module]:
    """The FSDP-sharded submodules of ``module`` (empty when nothing is sharded)."""
    from torch.distributed.fsdp import FSDPModule

    return [m for m in module.modules() if isinstance(m, FSDPModule)]


@contextmanager
def gathered(module: nn.Module, reshard_after_forward: bool = True) -> Iterator[None]:
    """Keep every sharded unit of ``module`` whole for the duration (a no-op when nothing is sharded).

    Rollouts and rewards run many forwards (one per decoded token) and stop early on each rank at
    its own time; gathered once, the parameters need no collective inside, so ranks cannot wait on
    each other, and the decode reads the same weights the training forward gathers.
    """
    units = fsdp_units(module)
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
    handles = [unit.unshard(async_op=True) for unit in units]
    for handle in handles:
        handle.wait()
    try:
        yield
    finally:
        for unit in units:
            unit.reshard()
            unit.set_reshard_after_forward(reshard_after_forward, recurse=False)


def checkpoint_layers(llm: nn.Module) -> None:
    """Activation checkpointing of every decoder layer: recompute its activations in backward.

    Applied with hooks (torch's composable ``checkpoint``), so parameter names, state dicts and the
    FSDP units stay as they are.
    """
    from torch.distributed._composable import checkpoint

    for layer in llm.layers:
        checkpoint(layer)


@contextmanager
def checkpointing_paused(llm: nn.Module) -> Iterator[None]:
    """Switch the layers' activation checkpointing off for the duration (rollouts: no backward).

    Its hooks save the RNG state on every call, about 0.1 ms, which a decode loop would pay per
    layer per token.
    """
    from torch.distributed._composable import checkpoint

    states = [state for layer in llm.layers if (state := checkpoint.state(layer)) is not None]
    enabled = [state.enable_hook for state in states]
    for state in states:
        state.enable_hook = False
    try:
        yield
    finally:
        for state, flag in zip(states, enabled, strict=True):
            state.enable_hook = flag


def norm_value(norm: torch.Tensor) -> float:
    """A gradient norm as a float; a norm of sharded (DTensor) gradients is reduced across ranks first."""
    full = getattr(norm, "full_tensor", None)
    return float(full() if full is not None else norm)
