"""``corl grid``: a few held-out prompts drawn by several models under the same random draws, as one PNG.

A table says that ``scene`` rose by a few hundredths; the grid shows what changed. Every model draws the
same prompts with the same seed, so where two rows differ the weights made the difference. Each row is
one model's images of one prompt, under the model's name, its mean ``scene`` on those images (when the
config scores the procedural world), and the prompt.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from corl.data.schema import collate_examples
from corl.evaluate import add_model_parser, build_module, held_out, keep_rewards, model_specs, on_device
from corl.resume import seeded


@torch.no_grad()
def model_rows(config: str, path: str, overrides: list[str], prompts: int, samples: int, seed: int,
               device: str, data: str = "procedural") -> tuple[list[str], torch.Tensor, torch.Tensor | None]:
    """``(prompts, images [P, S, 3, H, W], scene [P, S])`` of one model on the first held-out prompts.

    ``scene`` is None when the config has no ``scene`` reward (it checks procedural scenes only).
    """
    module, datamodule = build_module(config, path, overrides)
    scored = "scene" in [reward.name for reward in module.image_rewards]
    keep_rewards(module, ["scene"] if scored else [])
    on_device(module, device)
    dataset = held_out(datamodule, data, prompts)
    prompts = len(dataset)
    batch = collate_examples([dataset[i] for i in range(prompts) for _ in range(samples)])
    with module.rollout_mode(), seeded(seed, module.device):
        rollout = module.rollout(batch, tasks=("image",), evaluation=True)
        scene = module.score(rollout, batch)["scene"].view(prompts, samples) if scored else None
    images = rollout.image.pixels.cpu()
    return batch.prompt[::samples], images.view(prompts, samples, *images.shape[1:]), scene


def grid_command(args: argparse.Namespace) -> None:
    """Draw the first held-out prompts with each model (same seed) into one PNG, a row per prompt and model."""
    from torchvision.utils import save_image

    from corl.modules.logging_media import captioned_rows

    if args.prompts < 1 or args.samples < 1:
        raise SystemExit(f"corl grid: --prompts and --samples must be at least 1, got {args.prompts}, {args.samples}")
    drawn = [(name, *model_rows(args.config, path, args.overrides, args.prompts, args.samples, args.seed,
                                args.device, args.data)) for name, path in model_specs(args.models)]
    rows, captions = [], []
    for index in range(len(drawn[0][1])):
        for name, prompts, images, scene in drawn:
            rows.append(images[index])
            score = "" if scene is None else f", scene {scene[index].mean():.2f}"
            captions.append(f"{name}{score}: {prompts[index]}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(captioned_rows(rows, captions), out)
    means = "; scene: " + ", ".join(f"{name} {scene.mean():.3f}" for name, _, _, scene in drawn) \
        if drawn[0][3] is not None else ""
    print(f"wrote {len(drawn[0][1])} prompts x {len(drawn)} models x {args.samples} images to {out}{means}")


def add_parser(commands) -> None:
    """``corl grid`` and its options."""
    p = add_model_parser(commands, "grid", grid_command, __doc__,
                         "the config whose model settings and scene reward draw them")
    p.add_argument("--out", required=True, help="the PNG to write")
    p.add_argument("--prompts", type=int, default=4, help="the first held-out prompts")
    p.add_argument("--samples", type=int, default=6, help="images per prompt and model")
