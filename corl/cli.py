"""The ``corl`` command: LightningCLI over the CoRL module and the example DataModule, plus tools.

``corl --help`` lists the commands; ``corl <command> --help`` documents each one's options.
"""

from __future__ import annotations

import difflib
import os
import re
import sys

from corl.errors import UsageError
from corl.quiet import quiet_lightning

# Every command, with the line ``corl --help`` shows for it.
COMMANDS = {
    "fit": "train with RL: stage 1 (configs/s1.yaml) or a stage-2 run (configs/s2_*.yaml)",
    "validate": "score a config's held-out split once, as fit's validation does",
    "sft": "supervised fine-tuning, the optional cold start before RL (configs/sft.yaml)",
    "check": "list everything a config needs that is missing: weights, data, reward models, GPUs (corl fit does too)",
    "evaluate": "score models on held-out examples with a config's rewards",
    "grid": "draw the same held-out prompts with several models, same seed, into one PNG",
    "export": "write a checkpoint as a model folder (transformers' layout, or DeepSeek's with --format deepseek)",
    "merge": "merge models: the paper's Gaussian merge, a weighted average or task arithmetic",
    "generate": "images for a GenEval, DPG-Bench or WISE prompt file, in its scorer's layout",
    "prompt": "print what the model reads under a config, token for token",
    "warm": "build (once) the warm-started tiny Janus the demo trains",
}
TOOLS = ("export", "merge", "generate", "evaluate", "grid", "prompt")
TRAINING = ("fit", "validate", "sft")
DEBUG = "--debug"


def usage() -> str:
    """What ``corl`` and ``corl --help`` print."""
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {line}" for name, line in COMMANDS.items()]
    return "\n".join([
        "usage: corl <command> [options]   (corl <command> --help for its options)", "",
        "CoRL: co-reinforcement learning of Janus-Pro's image understanding and generation.", "",
        "commands:", *lines, "",
        f"{DEBUG} (or CORL_DEBUG=1) shows the full traceback of an error.",
    ])


def main(args: list[str] | None = None) -> None:
    """Run one command (``args`` instead of ``sys.argv`` for tests); errors propagate (see ``entry``)."""
    argv = sys.argv[1:] if args is None else list(args)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return
    command = argv[0]
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UsageError(f"unknown command {command!r}{hint}; `corl --help` lists them")
    quiet_lightning()
    if command in TOOLS:
        from corl.tools import run

        return run(argv)
    if command == "warm":
        from jsonargparse import CLI

        from corl.warm.build import warm_command

        return CLI(warm_command, args=argv[1:], as_positional=False)
    if command == "check":
        from corl.training_cli import check_command

        return check_command(argv[1:])
    # ``corl fit | validate | sft``: LightningCLI, after the preflight has found everything the config needs.
    # Imported here, not above: the tools start seconds sooner without Lightning.
    from corl.training_cli import CorlCLI

    CorlCLI.run_command(argv)


def one_line(err: BaseException) -> str:
    """An error as at most two lines: its message, without Python's framing."""
    text = str(err).strip() or type(err).__name__
    text = re.sub(r"^error: ", "", text)
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[:2]) + (" …" if len(lines) > 2 else "")


def entry() -> None:
    """The console script: an error is ``corl: error: …`` in a line or two; the traceback only when asked."""
    argv = sys.argv[1:]
    debug = DEBUG in argv or os.environ.get("CORL_DEBUG", "") not in ("", "0")
    argv = [arg for arg in argv if arg != DEBUG]
    try:
        main(argv)
    except KeyboardInterrupt:
        sys.exit(130)
    except SystemExit:
        raise
    except UsageError as err:  # written for the user, every line of it
        if debug:
            raise
        sys.exit(f"corl: error: {err}")
    except Exception as err:  # noqa: BLE001 - the one place that turns any failure into a message
        if debug:
            raise
        sys.exit(f"corl: error: {one_line(err)}\n(the full traceback: add {DEBUG}, or set CORL_DEBUG=1)")


if __name__ == "__main__":
    entry()
