"""Preemption that keeps its progress: a signal ends the run at the next step boundary, saved and resumable.

A scheduler sends SIGTERM (SLURM: its requeue signal, ``--signal=USR1@120``; a person: Ctrl-C) some
time before it kills the job. corl then finishes the step under way (its rollout and updates are
one unit of exact resume), stops, writes ``last.ckpt`` atomically and prints the command that resumes
the run. Under SLURM's requeue signal it also requeues the job, whose command line resumes with
``--ckpt_path last``. Every rank stops at the same step: the decision is shared after each step.
A second Ctrl-C stops at once, without saving.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

LOGGER_VERSION = "corl_logger_version"  # in every checkpoint: a resumed run logs into the same TensorBoard run
NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT (Ctrl-C)", signal.SIGUSR1: "SLURM's requeue signal"}


class Preemption(L.Callback):
    """Stop cleanly on SIGTERM, SIGINT or SLURM's requeue signal; save; say how to resume.

    Args:
        command: the ``corl`` command line of this run, for the resume command it prints.
    """

    def __init__(self, command: list[str] | None = None) -> None:
        self.command = list(command or [])
        self.received: int | None = None
        self.saved: Path | None = None
        self._previous: dict[int, object] = {}

    @property
    def exit_code(self) -> int:
        """What the process exits with after a stop by signal (128 + the signal, as a shell reports it)."""
        return 128 + int(self.received or 0)

    def on_train_start(self, trainer, pl_module) -> None:
        """Take the signals over for the training (Lightning's own handlers come back at the end)."""
        signals = [signal.SIGTERM, signal.SIGINT]
        if os.environ.get("SLURM_JOB_ID"):
            signals.append(signal.SIGUSR1)
        self._previous = {number: signal.signal(number, self._handle) for number in signals}

    def _handle(self, number: int, frame) -> None:
        if self.received is not None and number == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        if self.received is None:
            print(f"\ncorl: received {NAMES.get(number, number)}: finishing this step, then saving", flush=True)
        self.received = number

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        """After a whole step: if any rank got a signal, every rank saves ``last.ckpt`` here and stops.

        This is the point where the periodic checkpoints are written too, so the saved state is one a
        resume continues from exactly; stopping here skips the validation and clean-up a normal end runs.
        """
        if not trainer.strategy.reduce_boolean_decision(self.received is not None, all=False):
            return
        self.received = self.received or signal.SIGTERM  # another rank got it: this one stops with it
        self.saved = last_checkpoint_path(trainer)
        trainer.save_checkpoint(self.saved)
        self._give_back()
        if trainer.is_global_zero:
            print(f"corl: stopped after step {trainer.global_step}; saved {self.saved}. Resume with:\n"
                  f"  {resume_command(self.command, self.saved)}", flush=True)
            if self.received == signal.SIGUSR1 and os.environ.get("SLURM_JOB_ID"):
                subprocess.run(["scontrol", "requeue", os.environ["SLURM_JOB_ID"]], check=False)
        raise Preempted(self.exit_code)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        """Keep the TensorBoard run's version, so a resume logs on in it."""
        if trainer.logger is not None:
            checkpoint[LOGGER_VERSION] = trainer.logger.version

    def on_fit_end(self, trainer, pl_module) -> None:
        """Give the signals back to Lightning."""
        self._give_back()

    def _give_back(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}


class Preempted(SystemExit):
    """The run stopped on a signal after saving; its code is 128 + the signal, as a shell reports a kill."""


def last_checkpoint_path(trainer) -> Path:
    """Where the run's checkpoint callback keeps ``last.ckpt`` (the run's root folder when it has none)."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath:
            return Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
    return Path(trainer.default_root_dir) / "last.ckpt"


def resume_command(command: list[str], checkpoint: Path) -> str:
    """``command`` with ``--ckpt_path checkpoint`` in place of any it had."""
    args, skip = [], False
    for arg in command:
        if skip:
            skip = False
            continue
        if arg == "--ckpt_path":
            skip = True
            continue
        if not arg.startswith("--ckpt_path="):
            args.append(arg)
    return shlex.join(["corl", *args, "--ckpt_path", str(checkpoint)])
