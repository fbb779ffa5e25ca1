"""SLURM's requeue signal: the run saves at the step boundary, says how to resume and requeues its job."""

import os
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
from lightning.pytorch.callbacks import ModelCheckpoint

from corl.preemption import Preempted, Preemption, resume_command


class Strategy:
    def reduce_boolean_decision(self, decision, all=True):  # one rank: its own decision
        return decision


def test_slurms_requeue_signal_saves_requeues_and_exits_with_the_signal(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    requeued, saved = [], []
    monkeypatch.setattr("corl.preemption.subprocess.run", lambda command, check: requeued.append(command))
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpts", save_last=True)
    trainer = SimpleNamespace(strategy=Strategy(), checkpoint_callbacks=[checkpoints], is_global_zero=True,
                              global_step=7, save_checkpoint=saved.append, default_root_dir=str(tmp_path))
    callback = Preemption(["fit", "-c", "configs/s1.yaml", "--ckpt_path", "last"])
    before = signal.getsignal(signal.SIGUSR1)
    callback.on_train_start(trainer, None)
    callback.on_train_batch_end(trainer, None, None, None, 0)  # no signal: nothing happens
    assert saved == [] and requeued == []
    os.kill(os.getpid(), signal.SIGUSR1)
    with pytest.raises(Preempted) as stop:
        callback.on_train_batch_end(trainer, None, None, None, 0)
    assert stop.value.code == 128 + signal.SIGUSR1
    assert saved == [Path(tmp_path / "ckpts" / "last.ckpt")]
    assert requeued == [["scontrol", "requeue", "4242"]]
    out = capsys.readouterr().out
    assert "received SLURM's requeue signal" in out and "stopped after step 7" in out
    assert f"corl fit -c configs/s1.yaml --ckpt_path {tmp_path / 'ckpts' / 'last.ckpt'}" in out
    assert signal.getsignal(signal.SIGUSR1) == before, "the signal handlers are given back"


def test_the_resume_command_replaces_any_ckpt_path():
    checkpoint = Path("runs/x/last.ckpt")
    assert resume_command(["fit", "-c", "a b.yaml", "--ckpt_path=old"], checkpoint) == (
        "corl fit -c 'a b.yaml' --ckpt_path runs/x/last.ckpt")
