"""A progress bar that counts what ``trainer.max_steps`` counts: optimiser steps, across epochs and resumes.

Lightning's bar counts batches per epoch; in corl a batch is one rollout and ``model.mu`` optimiser
steps, so with μ = 2 it read "1/50" against a ``max_steps`` of 100, and "Epoch 0/-2" without
``max_epochs``. This one reads "step 37/100 (epoch 0)", and a resumed run starts where it stopped.
"""

from __future__ import annotations

import math

from lightning.pytorch.callbacks import TQDMProgressBar


def total_steps(trainer, mu: int) -> int | None:
    """The optimiser steps the run will take: ``max_steps``, else the epochs' rollouts times μ (None: unknown)."""
    if trainer.max_steps and trainer.max_steps > 0:
        return trainer.max_steps
    batches, epochs = trainer.num_training_batches, trainer.max_epochs
    if not epochs or epochs < 0 or math.isinf(batches):
        return None
    return int(batches) * epochs * mu


class StepProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, counting optimiser steps (``trainer.global_step``) up to ``max_steps``."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        """Start the bar at the run's step (a resume's too), its total the run's optimiser steps."""
        super().on_train_epoch_start(trainer, pl_module)
        bar = self.train_progress_bar
        bar.reset(total=total_steps(trainer, int(pl_module.hparams.get("mu", 1))))
        bar.n = trainer.global_step
        bar.set_description(f"step (epoch {trainer.current_epoch})")
        bar.refresh()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        """Show the optimiser steps taken so far."""
        bar = self.train_progress_bar
        if bar is not None and not bar.disable:
            bar.n = trainer.global_step
            bar.set_postfix(self.get_metrics(trainer, pl_module))
            bar.refresh()
