"""``corl evaluate``: score models on held-out examples with the rewards of a config.

Every model answers every held-out question greedily and draws one image per prompt, each batch
under its own fixed seed, so the same model always gets the same numbers and two models are compared
on the same examples and the same random draws. The rewards are those the config trains with
(accuracy, format, the image rewards), so the table is the miniature of the paper's result tables.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from corl.data.procedural import ProceduralExamples
from corl.data.readers import ExampleFiles
from corl.data.schema import collate_examples
from corl.modules.held_out import held_out_scores
from corl.names import BUILT_IN

HELD_OUT_SEED = 424_242  # procedural examples no training config draws (they use seeds 0 and 1)


def model_specs(specs: list[str]) -> list[tuple[str, str]]:
    """``name=path`` (or a bare path, named after it) -> ``(name, path)``; a path may be a built-in model name.

    The name ends at the first ``=``, and only a name without ``/`` is one: Lightning names checkpoints
    ``epoch=0-step=80.ckpt``, so ``r40=runs/x/epoch=0-step=80.ckpt`` and the bare path both work.
    """
    out = []
    for spec in specs:
        name, named, path = spec.partition("=")
        if not named or "/" in name or Path(spec).exists():
            name, path = "", spec
        if not name:
            name = path if path in BUILT_IN else Path(path).stem if Path(path).suffix == ".ckpt" else Path(path).name
        out.append((name, path))
    return out


def build_module(config: str, model: str, overrides: Sequence[str] = ()):
    """The config's CoRL module (its rewards) with ``model``: a built-in one, or weights to start from.

    ``overrides`` are more config options, e.g. ``["--model.seed", "1"]``.
    """
    from lightning.pytorch.cli import LightningCLI

    from corl.data.datamodule import ExampleDataModule
    from corl.modules.corl_module import CoRLModule
    from corl.quiet import quiet_lightning

    quiet_lightning()
    args = ["-c", config, "--trainer.logger", "false", "--trainer.callbacks", "null", "--model.init_from"]
    args += ["null", "--model.model", model] if model in BUILT_IN else [model]
    args += list(overrides)
    cli = LightningCLI(CoRLModule, ExampleDataModule, args=args, run=False, auto_configure_optimizers=False)
    return cli.model, cli.datamodule


def held_out(datamodule, source: str, examples: int):
    """The held-out examples: procedural ones of a seed no training uses, or a file of the config's kind."""
    hp = datamodule.hparams
    if source == "procedural":
        return ProceduralExamples(examples, HELD_OUT_SEED, hp.image_size, hp.kind, hp.questions)
    files = ExampleFiles(source, hp.kind, hp.columns, hp.defaults, hp.skip_bad_rows, hp.max_text_chars)
    return torch.utils.data.Subset(files, range(min(examples, len(files))))


def keep_rewards(module, names: Sequence[str]) -> None:
    """Score with the config's rewards of these names only (as logged: ``scene``, ``accuracy``, ...)."""
    known = [reward.name for reward in (*module.image_rewards, *module.text_rewards)]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"--rewards: {', '.join(unknown)} not among the config's rewards ({', '.join(known)})")
    module.image_rewards = [reward for reward in module.image_rewards if reward.name in names]
    module.text_rewards = [reward for reward in module.text_rewards if reward.name in names]


def on_device(module, device: str):
    """The module on ``device`` in eval mode, its image rewards' scorers loaded (its own ``setup``)."""
    module.to(device).eval()
    module.setup("validate")
    return module


@torch.no_grad()
def evaluate(
    module, dataset, batch_size: int, seed: int, device: str, sampled_answers: bool = False
) -> dict[str, float]:
    """Mean of every reward and of its parts (``scene/colour``) over the held-out examples (NaN items left out).

    With ``sampled_answers`` every question is also answered once at the config's text temperature,
    as in training, and the text rewards of those answers are added as ``<name>_sampled``: RL optimises
    the sampled answers, and an early RL run moves them before it moves the greedy ones.
    """
    on_device(module, device)
    sums: dict[str, list[float]] = {}

    for start in range(0, len(dataset), batch_size):
        batch = collate_examples([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        for name, values in held_out_scores(module, batch, seed + start, sampled_answers).scores.items():
            total, count = sums.get(name, [0.0, 0])
            sums[name] = [total + float(values.sum()), count + values.numel()]
    return {name: (total / count if count else float("nan")) for name, (total, count) in sums.items()}


def table(results: dict[str, dict[str, float]]) -> str:
    """The results as a text table: a row per model, a column per reward."""
    names = list(dict.fromkeys(reward for scores in results.values() for reward in scores))
    width = max(len(model) for model in results) + 2
    columns = [max(10, len(name)) + 2 for name in names]
    lines = ["model".ljust(width) + "".join(f"{name:>{w}}" for name, w in zip(names, columns))]
    for model, scores in results.items():
        cells = (f"{scores.get(name, float('nan')):{w}.3f}" for name, w in zip(names, columns))
        lines.append(model.ljust(width) + "".join(cells))
    return "\n".join(lines)


def score_model(path: str, args: argparse.Namespace) -> dict[str, float]:
    """One model's held-out scores under the command's options (also run in ``--jobs`` worker processes)."""
    module, datamodule = build_module(args.config, path, args.overrides)
    if args.rewards:
        keep_rewards(module, args.rewards)
    dataset = held_out(datamodule, args.data, args.examples)
    return evaluate(module, dataset, args.batch_size, args.seed, args.device, args.sampled_answers)


def scored_models(specs: list[tuple[str, str]], args: argparse.Namespace) -> Iterator[tuple[str, dict[str, float]]]:
    """``(name, scores)`` of each model, in order; ``args.jobs`` models at a time, each in a process of its own.

    A tiny model's one-token decode steps leave a second CPU core mostly idle, so models scored side by side,
    the parent's threads split between the workers, finish sooner than one after another (the demo's six
    models: 110 s against 123 s on two cores).
    """
    if args.jobs <= 1 or len(specs) <= 1:
        yield from ((name, score_model(path, args)) for name, path in specs)
        return
    threads = max(1, torch.get_num_threads() // args.jobs)
    context = multiprocessing.get_context("spawn")  # no forked copy of the parent's threads and locks
    with ProcessPoolExecutor(args.jobs, mp_context=context, initializer=torch.set_num_threads,
                             initargs=(threads,)) as pool:
        futures = [pool.submit(score_model, path, args) for _, path in specs]
        yield from ((name, future.result()) for (name, _), future in zip(specs, futures))


def earlier_scores(paths: Sequence[str], rewards: Sequence[str] | None) -> dict[str, dict[str, float]]:
    """``{model: {reward: mean}}`` read from earlier ``--json`` files (a later file wins a name).

    Lets runs that finish at different times each score their own models, and one table gather them
    (``make demo``'s stage-2 chains). Every model must carry each reward of ``rewards``.
    """
    known: dict[str, dict[str, float]] = {}
    for path in paths:
        try:
            scores = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise SystemExit(f"corl evaluate: --scores {path}: no such file") from None
        except json.JSONDecodeError as err:
            raise SystemExit(f"corl evaluate: --scores {path}: not JSON ({err})") from None
        if not isinstance(scores, dict) or not all(isinstance(v, dict) for v in scores.values()):
            raise SystemExit(f"corl evaluate: --scores {path}: not {{model: {{reward: mean}}}} as --json writes it")
        for name, values in scores.items():
            missing = [reward for reward in rewards or () if reward not in values]
            if missing:
                raise SystemExit(f"corl evaluate: --scores {path}: {name} has no {', '.join(missing)} score")
        known.update(scores)
    return known


def evaluate_command(args: argparse.Namespace) -> None:
    """Score each model (or take its scores from ``--scores``) and print (and write) the table."""
    if args.jobs < 1:
        raise SystemExit(f"corl evaluate: --jobs must be at least 1, got {args.jobs}")
    specs = model_specs(args.models)
    known = earlier_scores(args.scores or [], args.rewards)
    for name in (name for name, _ in specs if name in known):
        print(f"{name}: scores from --scores", flush=True)
    scored = {}
    for name, scores in scored_models([(name, path) for name, path in specs if name not in known], args):
        scored[name] = scores
        print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()), flush=True)
    results = {name: known[name] if name in known else scored[name] for name, _ in specs}
    print(table(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


def add_model_parser(commands, name: str, run, description: str, config_help: str):
    """A sub-command over models loaded under a config and held-out data, with the options every such one has."""
    p = commands.add_parser(name, help=run.__doc__, description=description,
                            epilog="Other options go to the config, e.g. --model.seed 1 --model.cfg_weight 3.")
    p.add_argument("models", nargs="+",
                   help="NAME=PATH or PATH: corl checkpoints, exported folders, or tiny / tiny-warm")
    p.add_argument("--config", "-c", required=True, help=config_help)
    p.add_argument("--data", default="procedural", help="procedural (a held-out seed) or a file/folder of the kind")
    p.add_argument("--seed", type=int, default=0, help="sampling seed; the same for every model")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.set_defaults(run=run)
    return p


def add_parser(commands) -> None:
    """The ``evaluate`` sub-command's options."""
    p = add_model_parser(commands, "evaluate", evaluate_command, __doc__,
                         "the config whose model settings and rewards score them")
    p.add_argument("--examples", type=int, default=256, help="held-out examples")
    p.add_argument("--rewards", nargs="+", metavar="NAME",
                   help="score with these of the config's rewards only (default: all), e.g. scene accuracy format")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--jobs", type=int, default=1,
                   help="models scored at once, each in a process with its share of the CPU threads (a tiny "
                        "model's decoding leaves cores idle); the same examples and seeds as one at a time")
    p.add_argument("--sampled-answers", action="store_true",
                   help="also answer every question once at the config's text temperature (<reward>_sampled)")
    p.add_argument("--json", help="write {model: {reward: mean}} here")
    p.add_argument("--scores", nargs="+", metavar="FILE",
                   help="earlier --json files: a model named in one is taken from it, not scored again (score "
                        "them with the same config, examples and seed)")
