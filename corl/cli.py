"""The ``corl`` command: LightningCLI over the CoRL module and the triplet DataModule.

``corl fit -c configs/demo/s1.yaml`` trains; every option is documented by ``corl fit --help``.
"""

from __future__ import annotations

import warnings

from lightning.pytorch.cli import LightningCLI

from corl.data.datamodule import TripletDataModule
from corl.modules.corl_module import CoRLModule


def main(args: list[str] | None = None) -> None:
    """Run the CLI (``args`` instead of ``sys.argv`` for tests)."""
    # The policy keeps every module in eval mode on purpose (no dropout in RL log-probs).
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    LightningCLI(
        CoRLModule,
        TripletDataModule,
        args=args,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,  # the module owns AdamW and its schedule (see its arguments)
    )


if __name__ == "__main__":
    main()
