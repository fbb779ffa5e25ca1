"""``corl generate``: images for a benchmark's prompt file, written where its scorer looks for them.

The layout follows the prompt file:

- GenEval (``evaluation_metadata.jsonl``, a ``prompt`` per row) and plain text (a prompt per line):
  ``OUT/<index>/metadata.jsonl`` and ``OUT/<index>/samples/<k>.png``;
- DPG-Bench (a folder of ``<name>.txt`` prompts): ``OUT/<name>.png``, the samples in one square grid,
  as its ``compute_dpg_bench.py --pic-num`` reads them;
- WISE (a ``.json`` list of ``{"prompt_id", "Prompt", ...}``): ``OUT/<prompt_id>.png``, one image each.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

LAYOUTS = ("geneval", "dpg", "wise")


@dataclass
class Prompt:
    """One prompt and where its images go."""

    text: str
    name: str  # the GenEval index, the DPG file's stem, or the WISE prompt_id
    row: dict  # GenEval's metadata row, written beside the samples


def read_prompts(path: Path) -> tuple[str, list[Prompt]]:
    """The layout and the prompts of a benchmark's prompt file (see the module's docstring)."""
    if path.is_dir():
        files = sorted(path.glob("*.txt"))
        if not files:
            raise SystemExit(f"corl generate: {path} is a folder without .txt prompts (DPG-Bench's layout)")
        return "dpg", [Prompt(file.read_text(encoding="utf-8").strip(), file.stem, {}) for file in files]
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        rows = json.loads(text)
        if not isinstance(rows, list) or not all(isinstance(r, dict) and "prompt_id" in r and "Prompt" in r
                                                 for r in rows):
            raise SystemExit(f"corl generate: {path}: expected WISE's layout, a list of objects with 'prompt_id' "
                             "and 'Prompt'")
        return "wise", [Prompt(row["Prompt"], str(row["prompt_id"]), row) for row in rows]
    lines = [line for line in text.splitlines() if line.strip()]
    if path.suffix != ".jsonl":
        return "geneval", [Prompt(line.strip(), f"{i:05d}", {"prompt": line.strip()}) for i, line in enumerate(lines)]
    prompts = []
    for number, line in enumerate(lines):
        row = json.loads(line)
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise SystemExit(f"corl generate: {path}, row {number}: expected an object with a 'prompt' string")
        prompts.append(Prompt(row["prompt"], f"{number:05d}", row))
    return "geneval", prompts


def check_samples(layout: str, samples: int) -> None:
    """Refuse a sample count the layout cannot hold."""
    if layout == "wise" and samples != 1:
        raise SystemExit("corl generate: WISE scores one image per prompt: use --samples 1")
    if layout == "dpg" and math.isqrt(samples) ** 2 != samples:
        raise SystemExit(f"corl generate: DPG-Bench reads the samples as a square grid: --samples {samples} is "
                         "not a square (it uses 4)")


def write_images(layout: str, prompt: Prompt, images: torch.Tensor, out: Path) -> None:
    """Save one prompt's images ``[k, 3, H, W]`` in ``[-1, 1]`` where the layout's scorer reads them."""
    from torchvision.utils import make_grid, save_image

    images = (images.float() + 1) / 2
    if layout == "dpg":
        save_image(make_grid(images, nrow=math.isqrt(len(images)), padding=0), out / f"{prompt.name}.png")
    elif layout == "wise":
        save_image(images[0], out / f"{prompt.name}.png")
    else:
        folder = out / prompt.name
        (folder / "samples").mkdir(parents=True, exist_ok=True)
        (folder / "metadata.jsonl").write_text(json.dumps(prompt.row) + "\n", encoding="utf-8")
        for k, image in enumerate(images):
            save_image(image, folder / "samples" / f"{k:04d}.png")


@torch.no_grad()
def generate_command(args: argparse.Namespace) -> None:
    """Images for a GenEval, DPG-Bench or WISE prompt file (or a text file of prompts), in its scorer's layout."""
    from corl.models import load_model
    from corl.modules.policy import JanusPolicy

    layout, prompts = read_prompts(Path(args.prompts))
    check_samples(layout, args.samples)
    model, processor = load_model(args.model, args.dtype)
    model.to(args.device)
    policy = JanusPolicy(model, processor, cfg_weight=args.cfg_weight, image_temperature=args.temperature)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(prompts), args.batch_prompts):  # one decode loop for several prompts
        chunk = prompts[start : start + args.batch_prompts]
        images = policy.sample_images([prompt.text for prompt in chunk], args.samples).pixels  # [k * samples, ...]
        for offset, prompt in enumerate(chunk):
            write_images(layout, prompt, images[offset * args.samples : (offset + 1) * args.samples], out)
    print(f"wrote {len(prompts)} prompts x {args.samples} images to {out} ({layout} layout)")


def add_parser(commands) -> None:
    """``corl generate`` and its options."""
    p = commands.add_parser("generate", help=generate_command.__doc__)
    p.add_argument("model", help="a corl checkpoint or an exported folder (either layout)")
    p.add_argument("prompts", help="GenEval metadata .jsonl, a DPG-Bench prompts folder, a WISE .json, or a text "
                   "file (a prompt per line)")
    p.add_argument("out", help="output folder")
    p.add_argument("--samples", type=int, default=4, help="images per prompt (GenEval and DPG-Bench use 4, WISE 1)")
    p.add_argument("--batch-prompts", type=int, default=8, help="prompts sampled together in one decode loop")
    p.add_argument("--cfg-weight", type=float, default=5.0)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=generate_command)
