"""``corl export``, ``merge``, ``generate``, ``evaluate`` and ``prompt``: weights after training, and prompts before.

The commands import the checkpoint and model code themselves, so ``corl evaluate --scores`` that only
gathers earlier scores, and every ``--help``, start without Lightning and the Janus classes.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import torch

from corl.evaluate import add_parser as add_evaluate_parser
from corl.prompt_tool import add_parser as add_prompt_parser


def export_command(args: argparse.Namespace) -> None:
    """Checkpoint -> transformers folder that ``JanusForConditionalGeneration.from_pretrained`` loads."""
    from corl.checkpoints import export, export_adapters, load_model

    if args.adapters_only:
        try:
            out, base = export_adapters(args.checkpoint, args.out, args.dtype)
        except ValueError as err:
            raise SystemExit(f"corl export --adapters-only: {err}") from err
        print(f"exported the LoRA adapters of {args.checkpoint} to {out} (a peft adapter folder for {base})")
        return
    model, processor = load_model(args.checkpoint, args.dtype)
    print(f"exported {args.checkpoint} to {export(model, processor, args.out)}")


def merge_command(args: argparse.Namespace) -> None:
    """Merge models with the same architecture: the paper's Gaussian merge, a weighted average, or task arithmetic."""
    from corl.checkpoints import check_compatible, export, load_model
    from corl.merging import gaussian_merge, linear_merge, task_arithmetic

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
    print(f"merged {names} ({how}) into {export(model, processor, args.out)}")


def read_prompts(path: Path) -> list[dict]:
    """Prompts from a text file (one per line) or GenEval's metadata jsonl (a ``prompt`` per line)."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix != ".jsonl":
        return [{"prompt": line.strip()} for line in lines]
    rows = [json.loads(line) for line in lines]
    for number, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise SystemExit(f"corl generate: {path}, row {number}: expected an object with a 'prompt' string")
    return rows


@torch.no_grad()
def generate_command(args: argparse.Namespace) -> None:
    """Images for a prompt file in GenEval's layout: OUT/<index>/metadata.jsonl, OUT/<index>/samples/<k>.png."""
    from torchvision.utils import save_image

    from corl.checkpoints import load_model
    from corl.modules.policy import JanusPolicy

    model, processor = load_model(args.model, args.dtype)
    model.to(args.device)
    policy = JanusPolicy(model, processor, cfg_weight=args.cfg_weight, image_temperature=args.temperature)
    torch.manual_seed(args.seed)
    rows = read_prompts(Path(args.prompts))
    for start in range(0, len(rows), args.batch_prompts):  # one decode loop for several prompts
        chunk = rows[start : start + args.batch_prompts]
        images = policy.sample_images([row["prompt"] for row in chunk], args.samples).pixels  # [k * samples, ...]
        for offset, row in enumerate(chunk):
            folder = Path(args.out) / f"{start + offset:05d}"
            (folder / "samples").mkdir(parents=True, exist_ok=True)
            (folder / "metadata.jsonl").write_text(json.dumps(row) + "\n", encoding="utf-8")
            for k in range(args.samples):
                image = images[offset * args.samples + k]
                save_image((image.float() + 1) / 2, folder / "samples" / f"{k:04d}.png")
    print(f"wrote {len(rows)} prompts x {args.samples} images to {args.out}")


def parser() -> argparse.ArgumentParser:
    """The three sub-commands and their options."""
    root = argparse.ArgumentParser(prog="corl", description="corl export | merge | generate | evaluate | prompt "
                                   "(training: corl fit, corl sft)")
    commands = root.add_subparsers(dest="command", required=True)
    p = commands.add_parser("export", help=export_command.__doc__)
    p.add_argument("checkpoint", help="a corl .ckpt file, or the .ckpt folder of an FSDP run")
    p.add_argument("out", help="output folder")
    p.add_argument("--adapters-only", action="store_true",
                   help="a LoRA run: write its adapters as a peft adapter folder instead of the merged model")
    p.set_defaults(run=export_command)
    p = commands.add_parser("merge", help=merge_command.__doc__)
    p.add_argument("models", nargs="+", help="corl checkpoints or exported folders")
    p.add_argument("--out", required=True, help="output folder (an exported model)")
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
    p = commands.add_parser("generate", help=generate_command.__doc__)
    p.add_argument("model", help="a corl checkpoint or an exported folder")
    p.add_argument("prompts", help="text file (a prompt per line) or GenEval metadata .jsonl")
    p.add_argument("out", help="output folder")
    p.add_argument("--samples", type=int, default=4, help="images per prompt (GenEval uses 4)")
    p.add_argument("--batch-prompts", type=int, default=8, help="prompts sampled together in one decode loop")
    p.add_argument("--cfg-weight", type=float, default=5.0)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=generate_command)
    for sub in commands.choices.values():
        sub.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    add_evaluate_parser(commands)  # its model settings (dtype included) come from a config
    add_prompt_parser(commands)
    return root


def run(argv: Sequence[str]) -> None:
    """Parse and run one sub-command; ``corl evaluate`` and ``prompt`` pass options they do not know to the config."""
    args, overrides = parser().parse_known_args(list(argv))
    if overrides and args.command not in ("evaluate", "prompt"):  # these two pass them to the config
        raise SystemExit(f"corl {args.command}: unrecognized arguments: {' '.join(overrides)}")
    args.overrides = overrides
    args.run(args)
