"""The tool commands: weights after training (export, merge, generate, evaluate, grid), prompts before.

The commands import the checkpoint and model code themselves, so ``corl evaluate --scores`` that only
gathers earlier scores, and every ``--help``, start without Lightning and the Janus classes.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from corl.evaluate import add_parser as add_evaluate_parser
from corl.generate import add_parser as add_generate_parser
from corl.image_grid import add_parser as add_grid_parser
from corl.names import DTYPES
from corl.prompt_tool import add_parser as add_prompt_parser


def export_command(args: argparse.Namespace) -> None:
    """Checkpoint -> a folder that transformers' Janus classes (hf) or DeepSeek's janus package (deepseek) loads."""
    from corl.checkpoints import export, export_adapters
    from corl.models import load_model

    if args.adapters_only:
        if args.format != "hf":
            raise SystemExit("corl export --adapters-only writes a peft adapter folder; --format applies to "
                             "whole models")
        try:
            out, base = export_adapters(args.checkpoint, args.out, args.dtype)
        except ValueError as err:
            raise SystemExit(f"corl export --adapters-only: {err}") from err
        print(f"exported the LoRA adapters of {args.checkpoint} to {out} (a peft adapter folder for {base})")
        return
    model, processor = load_model(args.checkpoint, args.dtype)
    print(f"exported {args.checkpoint} to {export(model, processor, args.out, args.format)} ({args.format} layout)")


def merge_command(args: argparse.Namespace) -> None:
    """Merge models with the same architecture: the paper's Gaussian merge, a weighted average, or task arithmetic."""
    from corl.checkpoints import check_compatible, export
    from corl.merging import gaussian_merge, linear_merge, task_arithmetic
    from corl.models import load_model

    if args.method == "gaussian" and args.weights:
        raise SystemExit("corl merge: --method gaussian has no --weights (the bulk of each delta is averaged, "
                         "its outliers kept whole); --width sets the band")
    if args.method in ("gaussian", "task_arithmetic") and args.base is None:
        raise SystemExit(f"corl merge: --method {args.method} needs --base (the model the runs started from, "
                         "e.g. the stage-1 checkpoint for the MC and OE models)")
    weights = args.weights or [1.0 / len(args.models)] * len(args.models)
    loaded = [load_model(path, args.dtype) for path in args.models]
    states = [model.state_dict() for model, _ in loaded]
    names = list(args.models)
    if args.base is not None and args.method != "linear":
        base = load_model(args.base, args.dtype)[0].state_dict()
        check_compatible([base, *states], [args.base, *names])
    else:
        check_compatible(states, names)
    if args.method == "gaussian":
        merged, how = gaussian_merge(base, states, args.width), f"gaussian, width {args.width}, from {args.base}"
    elif args.method == "task_arithmetic":
        merged, how = task_arithmetic(base, states, weights), f"task_arithmetic, weights {weights}, from {args.base}"
    else:
        merged, how = linear_merge(states, weights), f"linear, weights {weights}"
    model, processor = loaded[0]
    model.load_state_dict(merged)
    print(f"merged {names} ({how}) into {export(model, processor, args.out, args.format)} ({args.format} layout)")


def add_format(p: argparse.ArgumentParser) -> None:
    """The layout of a written model folder."""
    p.add_argument("--format", choices=["hf", "deepseek"], default="hf",
                   help="hf: transformers' Janus classes (JanusForConditionalGeneration); deepseek: DeepSeek's "
                   "janus package (MultiModalityCausalLM, as deepseek-ai/Janus-Pro-1B), which VLMEvalKit and the "
                   "GenEval / DPG scripts load (docs/evaluation.md)")


def parser() -> argparse.ArgumentParser:
    """The three sub-commands and their options."""
    root = argparse.ArgumentParser(prog="corl", description="corl export | merge | generate | evaluate | prompt "
                                   "(training: corl fit, corl sft)")
    commands = root.add_subparsers(dest="command", required=True)
    p = commands.add_parser("export", help=export_command.__doc__)
    p.add_argument("checkpoint", help="a corl .ckpt file, the .ckpt folder of an FSDP run, or an exported folder")
    p.add_argument("out", help="output folder")
    add_format(p)
    p.add_argument("--adapters-only", action="store_true",
                   help="a LoRA run: write its adapters as a peft adapter folder instead of the merged model")
    p.set_defaults(run=export_command)
    p = commands.add_parser("merge", help=merge_command.__doc__)
    p.add_argument("models", nargs="+", help="corl checkpoints or exported folders")
    p.add_argument("--out", required=True, help="output folder (an exported model)")
    add_format(p)
    p.add_argument("--method", choices=["gaussian", "linear", "task_arithmetic"], default="gaussian",
                   help="gaussian: the paper's merge (Si et al. 2025; each tensor's deltas from --base averaged "
                   "within mean +- width x std, kept whole outside); linear: a weighted average; task_arithmetic: "
                   "--base plus the weighted deltas")
    p.add_argument("--weights", type=float, nargs="+",
                   help="linear and task_arithmetic: one per model (default: equal, summing to 1)")
    p.add_argument("--base", help="gaussian and task_arithmetic: the model the runs started from")
    p.add_argument("--width", type=float, default=2.0,
                   help="gaussian: the band's half-width in standard deviations (the authors' 2)")
    p.set_defaults(run=merge_command)
    add_generate_parser(commands)
    for sub in commands.choices.values():
        sub.add_argument("--dtype", default="float32", choices=list(DTYPES))
    add_evaluate_parser(commands)  # its model settings (dtype included) come from a config
    add_grid_parser(commands)
    add_prompt_parser(commands)
    return root


def run(argv: Sequence[str]) -> None:
    """Parse and run one sub-command; ``evaluate``, ``grid`` and ``prompt`` pass options they do not know on."""
    args, overrides = parser().parse_known_args(list(argv))
    if overrides and args.command not in ("evaluate", "grid", "prompt"):  # these pass them to the config
        raise SystemExit(f"corl {args.command}: unrecognized arguments: {' '.join(overrides)}")
    args.overrides = overrides
    args.run(args)
