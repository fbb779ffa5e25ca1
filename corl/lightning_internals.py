"""The few Lightning internals corl relies on, in one place.

Each has no public equivalent in Lightning 2.6; ``tests/test_lightning_internals.py`` fails when a
Lightning release renames one, so an upgrade breaks here, loudly, not somewhere in a run.
"""

from __future__ import annotations


def logged_step(trainer) -> int:
    """The step Lightning logs this batch's scalars at: it counts batches, not the μ optimiser steps."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped


def keep_own_sampler(trainer) -> None:
    """Stop Lightning wrapping corl's loaders in a DistributedSampler of its own.

    They split the data across ranks themselves, in an order a checkpoint can resume; the setting is
    the Trainer's, which the DataModule cannot reach otherwise.
    """
    trainer._accelerator_connector.use_distributed_sampler = False


def save_last_if_behind(trainer) -> None:
    """Write ``last.ckpt`` now unless its callback already saved this step.

    That is the final step of a run whose length is not a multiple of ``every_n_train_steps``; saving
    through the callback keeps its bookkeeping (``last_model_path``) right.
    """
    for callback in trainer.checkpoint_callbacks:
        if callback.save_last and callback._last_global_step_saved != trainer.global_step:
            callback._save_last_checkpoint(trainer, callback._monitor_candidates(trainer))


def cli_options(cli) -> list[str]:
    """Every ``--option`` of a LightningCLI's subcommands, for "did you mean" on a misspelt one."""
    return sorted({option for parser in cli._subcommand_parsers.values() for action in parser._actions
                   for option in action.option_strings if option.startswith("--")})
