"""The Lightning internals corl uses (corl/lightning_internals.py) still exist where corl reads them."""

import lightning as L
import pytest
from lightning.pytorch.callbacks import ModelCheckpoint

from corl.lightning_internals import cli_options, keep_own_sampler, logged_step
from corl.training_cli import CorlCLI


def test_the_trainer_internals_are_where_corl_reads_them():
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    assert logged_step(trainer) == 0
    assert trainer._accelerator_connector.use_distributed_sampler is True
    keep_own_sampler(trainer)
    assert trainer._accelerator_connector.use_distributed_sampler is False
    callback = ModelCheckpoint(save_last=True)
    assert isinstance(callback._last_global_step_saved, int)
    assert callable(callback._save_last_checkpoint) and callable(callback._monitor_candidates)


def test_the_cli_internals_are_where_corl_reads_them():
    class Probe(CorlCLI):
        found: list[str] = []

        def before_instantiate_classes(self) -> None:
            Probe.found = cli_options(self)
            raise SystemExit(0)

    with pytest.raises(SystemExit):
        Probe.run_command(["fit", "--model.model", "tiny"])
    assert {"--model.group_size", "--trainer.max_steps", "--data.batch_size", "--ckpt_path"} <= set(Probe.found)
