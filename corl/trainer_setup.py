"""What corl needs of the Trainer, set where the Trainer is made (the CLI), not in the model's ``setup``.

``TrainerSetup`` is a callback the CLI adds to every run: it refuses strategies that cannot run corl,
writes checkpoints atomically and keeps Lightning from re-splitting the loaders across ranks.
"""

from __future__ import annotations

import lightning as L
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy

from corl.checkpoint_io import AtomicCheckpointIO
from corl.lightning_internals import keep_own_sampler


class TrainerSetup(L.Callback):
    """Checks and settings of the Trainer, applied before anything is loaded onto it."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Refuse what cannot work, write checkpoints atomically, keep corl's own data split."""
        strategy = trainer.strategy
        if isinstance(strategy, FSDPStrategy | DeepSpeedStrategy):
            raise ValueError(
                f"trainer.strategy {type(strategy).__name__} wraps the whole module, but rollouts call "
                "the policy's parts one by one: shard with corl.strategies.FullyShardedStrategy (configs/fsdp.yaml)"
            )
        if stage == "fit" and trainer.max_steps == 0:
            raise ValueError("trainer.max_steps is 0: nothing would be trained (-1 trains until the data runs out)")
        if type(strategy.checkpoint_io) is TorchCheckpointIO:  # a kill mid-write must not truncate last.ckpt
            strategy.checkpoint_io = AtomicCheckpointIO()
        # The loaders split the data across ranks themselves, in an order a checkpoint can resume;
        # Lightning must not wrap them in a DistributedSampler of its own.
        keep_own_sampler(trainer)
