"""``corl evaluate``: score models on held-out examples with the rewards of a config.

Every model answers every held-out question greedily and draws one image per prompt, each batch
under its own fixed seed, so the same model always gets the same numbers and two models are compared
on the same examples and the same random draws. The rewards are those the config trains with
(accuracy, format, the image rewards), so the table is the miniature of the paper's result tables.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from corl.data.procedural import ProceduralExamples
from corl.data.readers import ExampleFiles
from corl.data.schema import collate_examples
from corl.resume import seeded

HELD_OUT_SEED = 424_242  # procedural examples no training config draws (they use seeds 0 and 1)


def model_specs(specs: list[str]) -> list[tuple[str, str | None]]:
    """``name=path`` (or a bare path, named after it) -> ``(name, path)``; ``tiny`` is the embedded default."""
    out = []
    for spec in specs:
        name, _, path = spec.rpartition("=")
        path = path or spec
        if not name:
            name = "tiny" if path == "tiny" else Path(path).stem if Path(path).suffix == ".ckpt" else Path(path).name
        out.append((name, None if path == "tiny" else path))
    return out


def build_module(config: str, init_from: str | None):
    """The config's CoRL module (its model and rewards), starting from ``init_from``'s weights."""
    from lightning.pytorch.cli import LightningCLI

    from corl.data.datamodule import ExampleDataModule
    from corl.modules.corl_module import CoRLModule

    args = ["-c", config, "--trainer.logger", "false", "--trainer.callbacks", "null"]
    if init_from is not None:
        args += ["--model.init_from", init_from]
    cli = LightningCLI(CoRLModule, ExampleDataModule, args=args, run=False, auto_configure_optimizers=False)
    return cli.model, cli.datamodule


def held_out(datamodule, source: str, examples: int):
    """The held-out examples: procedural ones of a seed no training uses, or a file of the config's kind."""
    hp = datamodule.hparams
    if source == "procedural":
        return ProceduralExamples(examples, HELD_OUT_SEED, hp.image_size, hp.kind, hp.questions)
    files = ExampleFiles(source, hp.kind, hp.columns, hp.defaults, hp.skip_bad_rows, hp.max_text_chars)
    return torch.utils.data.Subset(files, range(min(examples, len(files))))


@torch.no_grad()
def evaluate(module, dataset, batch_size: int, seed: int, device: str) -> dict[str, float]:
    """Mean of every reward over the held-out examples (NaN items left out)."""
    module.to(device).eval()
    for reward in module.image_rewards:
        reward.setup()
    sums: dict[str, list[float]] = {}
    for start in range(0, len(dataset), batch_size):
        batch = collate_examples([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        with module.rollout_mode(), seeded(seed + start, module.device):
            rewards = module.score(module.rollout(batch, evaluation=True), batch)
        for reward in (*module.image_rewards, *module.text_rewards):
            values = rewards[reward.name][~rewards[reward.name].isnan()]
            total, count = sums.get(reward.name, [0.0, 0])
            sums[reward.name] = [total + float(values.sum()), count + values.numel()]
    return {name: (total / count if count else float("nan")) for name, (total, count) in sums.items()}


def table(results: dict[str, dict[str, float]]) -> str:
    """The results as a text table: a row per model, a column per reward."""
    names = list(dict.fromkeys(reward for scores in results.values() for reward in scores))
    width = max(len(model) for model in results) + 2
    lines = ["model".ljust(width) + "".join(f"{name:>12}" for name in names)]
    for model, scores in results.items():
        lines.append(model.ljust(width) + "".join(f"{scores.get(name, float('nan')):12.3f}" for name in names))
    return "\n".join(lines)


def evaluate_command(args: argparse.Namespace) -> None:
    """Score each model and print (and write) the table."""
    results = {}
    for name, path in model_specs(args.models):
        module, datamodule = build_module(args.config, path)
        dataset = held_out(datamodule, args.data, args.examples)
        results[name] = evaluate(module, dataset, args.batch_size, args.seed, args.device)
        print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in results[name].items()), flush=True)
    print(table(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


def add_parser(commands) -> None:
    """The ``evaluate`` sub-command's options."""
    p = commands.add_parser("evaluate", help=evaluate_command.__doc__, description=__doc__)
    p.add_argument("models", nargs="+", help="NAME=PATH or PATH: corl checkpoints, exported folders, or tiny")
    p.add_argument("--config", "-c", required=True, help="the config whose model settings and rewards score them")
    p.add_argument("--data", default="procedural", help="procedural (a held-out seed) or a file/folder of the kind")
    p.add_argument("--examples", type=int, default=256, help="held-out examples")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0, help="sampling seed; the same for every model")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", help="write {model: {reward: mean}} here")
    p.set_defaults(run=evaluate_command)
