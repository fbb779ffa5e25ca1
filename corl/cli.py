"""The ``corl`` command: LightningCLI over the CoRL module and the example DataModule, plus tools.

``corl fit -c configs/demo/s1.yaml`` trains with RL; every option is documented by ``corl fit --help``.
``corl sft -c configs/sft.yaml`` is the supervised cold start (``corl sft --help``).
``corl export | merge | generate | evaluate`` handle the weights afterwards (``corl export --help``...).
``corl prompt -c CONFIG`` prints what the model reads under a config, before any training.
``corl warm`` builds (once) the warm-started tiny Janus the demo trains (``corl warm --help``).
"""

from __future__ import annotations

import sys
import warnings

TOOLS = ("export", "merge", "generate", "evaluate", "prompt")


def main(args: list[str] | None = None) -> None:
    """Run the CLI (``args`` instead of ``sys.argv`` for tests)."""
    argv = sys.argv[1:] if args is None else args
    if argv and argv[0] in TOOLS:
        from corl.tools import run

        return run(argv)
    if argv and argv[0] == "warm":
        from jsonargparse import CLI

        from corl.warm.build import warm_command

        return CLI(warm_command, args=argv[1:], as_positional=False)
    # Imported here, not above: the tools start seconds sooner without Lightning.
    from lightning.pytorch.cli import LightningCLI

    from corl.data.datamodule import ExampleDataModule
    from corl.modules.corl_module import CoRLModule

    # The policy keeps every module in eval mode on purpose (no dropout in RL log-probs).
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    # Lightning's hint for manual optimisation: a checkpoint holds the state after the step, which is what
    # an exact resume continues from (corl.resume), so the page-long example it prints is noise.
    warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
    module = CoRLModule
    if argv and argv[0] == "sft":  # supervised fine-tuning: a fit of the SFT module
        from corl.modules.sft_module import SFTModule

        module, argv = SFTModule, ["fit", *argv[1:]]
    LightningCLI(
        module,
        ExampleDataModule,
        args=argv,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,  # the module owns AdamW and its schedule (see its arguments)
    )


if __name__ == "__main__":
    main()
