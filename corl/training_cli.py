"""``corl fit | validate | sft``: LightningCLI with corl's command line manners.

Only the subcommands that do something here are offered (``test`` and ``predict`` have no step in
corl), a misspelt option is answered with the option meant, and the preflight (``corl.preflight``)
runs on the parsed config before anything is loaded.
"""

from __future__ import annotations

import difflib
import re
import sys
from argparse import ArgumentError
from pathlib import Path

from jsonargparse import Namespace
from lightning.pytorch.cli import LightningCLI

from corl.checkpoints import checkpoint_entry
from corl.data.datamodule import ExampleDataModule
from corl.errors import UsageError
from corl.lightning_internals import cli_options
from corl.modules.corl_module import CoRLModule
from corl.preemption import LOGGER_VERSION, Preemption
from corl.preflight import problems, report
from corl.trainer_setup import TrainerSetup

SUBCOMMANDS = ("fit", "validate")


class CorlCLI(LightningCLI):
    """LightningCLI over a corl module and the example DataModule.

    Args:
        check_only: run the preflight on the parsed config, print its report and exit (``corl check``).
    """

    def __init__(self, *args, check_only: bool = False, **kwargs) -> None:
        self.check_only = check_only
        super().__init__(*args, **kwargs)

    @classmethod
    def run_command(cls, argv: list[str], check_only: bool = False) -> CorlCLI:
        """Run ``corl fit | validate | sft`` with ``argv`` (the command first)."""
        module, typed = CoRLModule, list(argv)
        if argv[0] == "sft":  # supervised fine-tuning: a fit of the SFT module
            from corl.modules.sft_module import SFTModule

            module, argv = SFTModule, ["fit", *argv[1:]]
        strict = {"exit_on_error": False}
        cli = cls(
            module,
            ExampleDataModule,
            args=argv,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,  # the module owns AdamW and its schedule (see its arguments)
            parser_kwargs={**strict, **{name: strict for name in SUBCOMMANDS}},
            trainer_defaults={"callbacks": [Preemption(typed), TrainerSetup()]},
            check_only=check_only,
        )
        return cli

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """Only fit and validate: test and predict have nothing to run in corl."""
        return {name: skip for name, skip in LightningCLI.subcommands().items() if name in SUBCOMMANDS}

    def before_instantiate_classes(self) -> None:
        """The preflight: everything the config needs that is missing, before the model is loaded."""
        subcommand = self.config.get("subcommand")
        config = (self.config[subcommand] if subcommand else self.config).as_dict()
        found = problems(config)
        name = ", ".join(str(path) for path in config.get("config") or []) or "the command line"
        if self.check_only:
            print(report(found, name))
            sys.exit(1 if found else 0)
        if found:
            raise UsageError(report(found, name) + "\n(`corl check` runs this check alone)")
        trainer = self.config[subcommand].trainer if subcommand else self.config.trainer
        if trainer.get("enable_progress_bar") is not False:
            callbacks = trainer.callbacks or []
            if not any("ProgressBar" in str(getattr(c, "class_path", "")) for c in callbacks):
                trainer.callbacks = [*callbacks, Namespace(class_path="corl.progress.StepProgressBar")]
        _continue_logging(trainer, config.get("ckpt_path"))

    def parse_arguments(self, parser, args) -> None:
        """Parse ``args``; a bad option is a one-line ``UsageError`` that names the option meant."""
        try:
            self.config = parser.parse_args(args)
        except ArgumentError as err:
            raise UsageError(self._explain(str(err), args)) from err

    def _explain(self, message: str, args) -> str:
        command = args[0] if args else "fit"
        known = cli_options(self)
        unknown = re.findall(r"(--[\w.]+)", message.split("\n")[0]) or re.findall(r'Key "([\w.]+)"', message)
        hints = []
        for option in unknown:
            option = option if option.startswith("--") else f"--{option}"
            close = difflib.get_close_matches(option, known, n=1, cutoff=0.75)
            if close:
                hints.append(f"{option}: did you mean {close[0]}?")
        first = message.strip().split("\n")[0]
        more = f" ({'; '.join(hints)})" if hints else ""
        return f"{first}{more}; `corl {command} --help` lists every option"


def check_command(argv: list[str]) -> None:
    """``corl check [fit|sft] -c CONFIG [overrides]``: the preflight alone; exit status 1 if anything lacks."""
    command = argv[0] if argv and argv[0] in ("fit", "sft") else "fit"
    CorlCLI.run_command([command, *argv[1 if argv and argv[0] == command else 0:]], check_only=True)


def _continue_logging(trainer, ckpt_path: str | None) -> None:
    """A resumed run logs into the TensorBoard run it stopped in, not a new ``version_N``."""
    logger = trainer.get("logger")
    if not ckpt_path or not isinstance(logger, Namespace) or logger.get("init_args") is None:
        return
    if logger.init_args.get("version") is not None or "version" not in logger.init_args:
        return
    path = Path(ckpt_path)
    if ckpt_path == "last":
        folders = [c.init_args.get("dirpath") for c in trainer.callbacks or []
                   if str(getattr(c, "class_path", "")).endswith("ModelCheckpoint") and c.get("init_args")]
        path = Path(next((f for f in folders if f), ".")) / "last.ckpt"
    if path.exists():
        logger.init_args.version = checkpoint_entry(path, LOGGER_VERSION)
