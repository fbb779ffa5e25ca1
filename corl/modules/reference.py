"""The KL reference: the trained modules as they were when training started, frozen."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from corl.modules.lora import AdaptersOff


class FrozenModules(nn.ModuleDict):
    """Modules that stay in eval mode whatever ``.train()`` the parent module receives (the KL reference)."""

    def train(self, mode: bool = True) -> FrozenModules:
        """Stay in eval mode: the reference's log-probs must not depend on the trainer's mode."""
        return super().train(False)

    @contextmanager
    def weights(self) -> Iterator[nn.ModuleDict]:
        """The modules that score as the reference: these."""
        yield self


Reference = FrozenModules | AdaptersOff  # a frozen copy, or (LoRA) the policy with its adapters switched off


def make_reference(trained: nn.ModuleDict, lora: bool) -> Reference:
    """The reference of the trained modules (``{"llm", "lm_head"}``) as they are now.

    With LoRA the base weights never change, so it is the policy itself with its adapters switched off
    (no copy); otherwise a frozen copy of the trained modules (the frozen towers and heads are shared,
    not copied).
    """
    if lora:
        return AdaptersOff(trained)
    reference = FrozenModules(copy.deepcopy(trained))  # deepcopy keeps a head/embedding tie
    return reference.requires_grad_(False).eval()
