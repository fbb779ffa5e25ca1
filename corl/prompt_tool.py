"""``corl prompt``: what the model reads under a config, to check before a GPU hour is spent.

It parses the config as ``corl fit`` does (overrides included), builds the model's processor only (no
weights, no rewards, no trainer), and prints the exact text the tokenizer gets and its token ids for an
understanding rollout and a generation rollout: the system prompt the config chooses, the question with
or without an appended instruction, the chat template, the image placeholders.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import warnings
from collections.abc import Sequence

from corl.data.templates import asks_for_answer_tags

SHOWN_RUN = 8  # image placeholders shown before a run of them is shortened in the plain output


def parse_config(config: str, overrides: Sequence[str]):
    """The config as ``corl fit`` (or ``corl sft``, for an SFT config) reads it, nothing instantiated."""
    import yaml
    from lightning.pytorch.cli import LightningCLI

    from corl.data.datamodule import ExampleDataModule
    from corl.modules.corl_module import CoRLModule
    from corl.modules.sft_module import SFTModule

    class ParseOnly(LightningCLI):
        def instantiate_classes(self) -> None:
            pass

    with open(config, encoding="utf-8") as f:
        keys = set((yaml.safe_load(f) or {}).get("model") or {})
    sft_only = keys - set(inspect.signature(CoRLModule).parameters)
    module = SFTModule if sft_only and not keys - set(inspect.signature(SFTModule).parameters) else CoRLModule
    # Quiet: the config's seed is set and said, and corl's own argv is not the config's arguments.
    logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        cli = ParseOnly(module, ExampleDataModule, args=["-c", config, *overrides], run=False,
                        auto_configure_optimizers=False)
    return cli.config


def texts_to_show(args: argparse.Namespace, data) -> tuple[dict, dict]:
    """The question (with its qa_type) and the T2I prompt to show, and where each came from."""
    row = None
    if args.data is not None:
        from corl.data.readers import ExampleFiles

        files = ExampleFiles(args.data, data.kind, data.columns, data.defaults, data.skip_bad_rows,
                             data.max_text_chars)
        if not 0 <= args.row < len(files):
            raise SystemExit(f"corl prompt: --row {args.row}: {args.data} has rows 0 to {len(files) - 1}")
        row = files[args.row]
    from corl.data.procedural import make_scene

    example = make_scene(0, 0, 64)
    origin = f"{args.data}, row {args.row}" if row is not None else "the procedural example"
    qa_type = args.qa_type or (row.qa_type if row is not None else None) or (data.defaults or {}).get("qa_type") or "MC"
    if args.question is not None:
        question = {"text": args.question, "qa_type": qa_type, "from": "--question"}
    elif row is not None and row.qa_problem is not None:
        question = {"text": row.qa_problem, "qa_type": qa_type, "from": origin}
    else:
        question = {"text": example.qa_problem, "qa_type": example.qa_type, "from": "the procedural example"}
    if args.prompt is not None:
        prompt = {"text": args.prompt, "from": "--prompt"}
    elif row is not None and row.prompt is not None:
        prompt = {"text": row.prompt, "from": origin}
    else:
        prompt = {"text": example.prompt, "from": "the procedural example"}
    return question, prompt


def shortened(text: str, token: str) -> str:
    """``text`` with each long run of image placeholders written as one placeholder and its count."""
    run = token * SHOWN_RUN
    while run in text:
        start = text.index(run)
        end = start
        while text.startswith(token, end):
            end += len(token)
        text = text[:start] + f"{token}×{(end - start) // len(token)}" + text[end:]
    return text


def prompt_command(args: argparse.Namespace) -> None:
    """Print the understanding and generation prompts the config's model reads (``--json``: text and ids)."""
    from corl.modules.loading import load_processor
    from corl.modules.prompts import JanusPrompts

    config = parse_config(args.config, args.overrides)
    model = config.model
    processor, num_image_tokens = load_processor(model.model, model.seed)
    prompts = JanusPrompts(processor, num_image_tokens, model.system_prompt, model.instruction)
    question, prompt = texts_to_show(args, config.data)
    understanding = prompts.encode([prompts.question(question["text"], question["qa_type"])], "text")
    generation = prompts.encode([[{"type": "text", "text": prompt["text"]}]], "image")
    shown = {name: {"text": batch.texts[0], "ids": batch.ids[0].tolist()}
             for name, batch in (("understanding", understanding), ("generation", generation))}
    if args.json:
        print(json.dumps(shown, ensure_ascii=False))
        return
    verbatim = asks_for_answer_tags(question["text"]) or model.instruction == "none"
    how = "used verbatim" if verbatim else f"with the {model.instruction!r} instruction appended"
    print(f"{args.config}: model {model.model}, system_prompt {model.system_prompt!r}, instruction "
          f"{model.instruction!r}. The tokenizer adds BOS ({processor.tokenizer.bos_token}) itself; the token "
          f"counts include it.\n")
    print(f"understanding: {len(shown['understanding']['ids'])} tokens; the question from {question['from']} "
          f"(qa_type {question['qa_type']}), {how}:")
    print(shortened(shown["understanding"]["text"], processor.image_token))
    print(f"\ngeneration: {len(shown['generation']['ids'])} tokens; the prompt from {prompt['from']}:")
    print(shown["generation"]["text"])


def add_parser(commands) -> None:
    """The ``prompt`` sub-command's options."""
    p = commands.add_parser("prompt", help=prompt_command.__doc__, description=__doc__,
                            epilog="Other options go to the config, e.g. --model.model tiny "
                                   "--model.system_prompt default.")
    p.add_argument("--config", "-c", required=True, help="a corl fit (or corl sft) config")
    p.add_argument("--question", help="the question to show (default: from --data, else a procedural example)")
    p.add_argument("--qa-type", help="MC, or any open-ended type (default: the row's, data.defaults', else MC)")
    p.add_argument("--prompt", help="the text-to-image prompt to show")
    p.add_argument("--data", help="a data file or folder of the config's data.kind to take the texts from")
    p.add_argument("--row", type=int, default=0, help="the row of --data")
    p.add_argument("--json", action="store_true",
                   help='print {"understanding": {"text", "ids"}, "generation": {"text", "ids"}}, nothing shortened')
    p.set_defaults(run=prompt_command)
