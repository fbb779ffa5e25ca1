"""The Trainer as the CLI sets it up: refused strategies, atomic checkpoints, corl's own data split."""

from types import SimpleNamespace

import lightning as L
import pytest
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy

from corl.checkpoint_io import AtomicCheckpointIO
from corl.trainer_setup import TrainerSetup


@pytest.mark.parametrize("strategy", [FSDPStrategy, DeepSpeedStrategy])
def test_strategies_that_wrap_the_whole_module_are_refused_before_training(strategy):
    trainer = SimpleNamespace(strategy=object.__new__(strategy), max_steps=5)
    with pytest.raises(ValueError, match="wraps the whole module.*FullyShardedStrategy"):
        TrainerSetup().setup(trainer, None, "fit")


def test_a_plain_trainer_writes_atomically_and_keeps_the_loaders_split_as_they_are():
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, max_steps=3)
    TrainerSetup().setup(trainer, None, "fit")
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    assert trainer._accelerator_connector.use_distributed_sampler is False


def test_zero_steps_are_refused_for_fit_only():
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, max_steps=0)
    with pytest.raises(ValueError, match="trainer.max_steps is 0"):
        TrainerSetup().setup(trainer, None, "fit")
    TrainerSetup().setup(trainer, None, "validate")
