"""The run's bookkeeping as Lightning callbacks, which ``CoRLModule.configure_callbacks`` attaches.

``ExactResume``: every rank's random states, data position and counters go into each checkpoint and
come back on ``--ckpt_path``, so a resumed run goes on exactly (``corl.resume``). ``FinalCheckpoint``:
``last.ckpt`` holds the final weights, which stage 2, merges and exports start from. ``RewardLayout``:
TensorBoard's custom-scalars page, rewards first.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn

from corl.lightning_internals import save_last_if_behind
from corl.modules.logging_media import write_layout
from corl.resume import gather_from_ranks, rng_states, set_rng_states

RANK_STATES = "corl_rank_states"  # checkpoint key: every rank's random states, data position and counters


class ExactResume(L.Callback):
    """Save and restore what Lightning does not: each rank's random states, data position and counters.

    The module keeps two counters it restores (``skipped_reading``, ``skipped_steps``); the DataModule
    keeps dynamic sampling's stream of further examples (``extra_state``, ``load_extra_state``).
    """

    def __init__(self) -> None:
        self._resumed_rng: dict | None = None  # random states to put back right before the first resumed step

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        """Every rank's states, gathered: Lightning's own loop state is only the writing rank's."""
        loader = trainer.train_dataloader if trainer.state.fn == "fit" else None
        state = {
            "rng": rng_states(),
            "loader": [loader.state_dict()] if hasattr(loader, "state_dict") else [],
            "skipped_reading": pl_module.skipped_reading,
            "skipped_steps": pl_module.skipped_steps,
            "extra_examples": getattr(trainer.datamodule, "extra_state", lambda: None)(),
        }
        checkpoint[RANK_STATES] = gather_from_ranks(state)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        """Take this rank's own states back (before Lightning restores its loops from the same dict)."""
        ranks = checkpoint.get(RANK_STATES)
        if not ranks:
            return
        if len(ranks) != trainer.world_size:
            rank_zero_warn(f"the checkpoint was written by {len(ranks)} rank(s), this run has {trainer.world_size}"
                           ": it continues, but not exactly where the run stopped (data order and random draws)")
            return
        mine = ranks[trainer.global_rank]
        fit_loop = checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {})
        if mine["loader"] and "combined_loader" in fit_loop:
            fit_loop["combined_loader"] = mine["loader"]  # Lightning saved only the writing rank's
        pl_module.skipped_reading, pl_module.skipped_steps = mine["skipped_reading"], mine["skipped_steps"]
        if hasattr(trainer.datamodule, "load_extra_state"):  # dynamic sampling's stream of further examples
            trainer.datamodule.load_extra_state(mine.get("extra_examples"))
        self._resumed_rng = mine["rng"]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        """After a resume, the random states the run had when it was saved, right before its next step."""
        if self._resumed_rng is not None:
            set_rng_states(self._resumed_rng)
            self._resumed_rng = None


class FinalCheckpoint(L.Callback):
    """``last.ckpt`` holds the final step even when it is not a multiple of ``every_n_train_steps``."""

    def on_train_end(self, trainer, pl_module) -> None:
        """Lightning's checkpoint callback would keep the last periodic save otherwise."""
        save_last_if_behind(trainer)


class RewardLayout(L.Callback):
    """TensorBoard's custom-scalars layout with the module's rewards first (``logging_media.reward_layout``)."""

    def on_train_start(self, trainer, pl_module) -> None:
        """Written once, by the first rank."""
        if trainer.is_global_zero:
            names = [reward.name for reward in (*pl_module.image_rewards, *pl_module.text_rewards)]
            write_layout(trainer.logger, names)
