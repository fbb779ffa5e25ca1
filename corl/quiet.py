"""Lightning's adverts and the warnings corl has made harmless, kept out of corl's output."""

from __future__ import annotations

import logging
import warnings


def quiet_lightning() -> None:
    """Keep Lightning's adverts and the warnings corl has made harmless out of corl's output."""
    # The policy keeps every module in eval mode on purpose (no dropout in RL log-probs).
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    # Lightning's hint for manual optimisation: a checkpoint holds the state after the step, which is what
    # an exact resume continues from (corl.resume), so the page-long example it prints is noise.
    warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
    # corl builds its command lines for LightningCLI itself (corl evaluate, corl sft): not a mistake.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    # Deprecations inside torchdata and Lightning themselves, nothing a corl user can change.
    warnings.filterwarnings("ignore", message="'set_vital' is deprecated")
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_no_tips)


def _no_tips(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("💡 Tip")
