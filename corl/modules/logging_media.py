"""Image grids and sample completions for TensorBoard, so a run can be judged by eye."""

from __future__ import annotations

import textwrap

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import make_grid

from corl.data.schema import ExampleBatch
from corl.data.templates import solution_answer
from corl.modules.rollout import Rollout

MAX_EXAMPLES = 4
CAPTION_LINES = 2  # lines of the prompt above each row of the grid
LINE_HEIGHT = 12  # PIL's default bitmap font is 11 px high
CHAR_WIDTH = 6


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def captioned_rows(rows: list[torch.Tensor], captions: list[str]) -> torch.Tensor:
    """One grid ``[3, H, W]`` in [0, 1]: each row of images ``[k, 3, h, w]`` (in [-1, 1]) under its caption."""
    strips = []
    for images, caption in zip(rows, captions, strict=True):
        row = make_grid(images.float().cpu(), nrow=len(images), normalize=True, value_range=(-1, 1))
        width = row.shape[-1]
        band = Image.new("RGB", (width, CAPTION_LINES * LINE_HEIGHT + 4), "white")
        lines = textwrap.wrap(caption, max(8, width // CHAR_WIDTH))[:CAPTION_LINES]
        ImageDraw.Draw(band).multiline_text((2, 2), "\n".join(lines), fill="black", font=ImageFont.load_default(),
                                            spacing=1)
        text = torch.from_numpy(np.asarray(band, dtype=np.float32) / 255).permute(2, 0, 1)
        strips += [text, row]
    return torch.cat(strips, dim=1)


def completions_table(batch: ExampleBatch, texts: list[str], rewards: dict[str, torch.Tensor], shown: int,
                      group_size: int) -> str:
    """Markdown: each shown question, its ground truth, the first sampled answer and that answer's rewards."""
    names = [name for name in rewards if name not in ("image", "text")]
    lines = ["| question | ground truth | completion | rewards |", "|---|---|---|---|"]
    for example in range(shown):
        row = example * group_size
        truth = solution_answer(batch.qa_solution[example]) if batch.qa_solution else ""
        scores = ", ".join(f"{name} {rewards[name][row].item():.2f}" for name in names)
        lines.append(f"| {_markdown_cell(batch.qa_problem[example])} | {_markdown_cell(truth)} | "
                     f"{_markdown_cell(texts[row])} | {scores} |")
    return "\n".join(lines)


def reward_layout(names: list[str]) -> dict:
    """TensorBoard's custom-scalars layout: the rewards first, each with its held-out score, then training.

    The Scalars tab sorts tags alphabetically (``advantage/*`` before ``reward/*``); the Custom Scalars
    tab shows this order.
    """
    rewards = {name: ["Multiline", [f"^reward/{name}/mean$", f"^val/{name}$"]] for name in [*names, "total"]}
    training = {
        "loss": ["Multiline", ["^loss/"]], "KL to the reference": ["Multiline", ["/kl$"]],
        "clip fraction": ["Multiline", ["/clip_fraction$"]], "learning rate": ["Multiline", ["^lr$"]],
        "gradient norm": ["Multiline", ["^grad_norm$"]], "answer length": ["Multiline", ["completion_length_mean$"]],
    }
    return {"rewards (train mean, held-out val)": rewards, "training": training}


def write_layout(logger, names: list[str]) -> None:
    """Write ``reward_layout`` once to a TensorBoard logger (other loggers have no layout)."""
    writer = getattr(logger, "experiment", None)
    if hasattr(writer, "add_custom_scalars"):
        writer.add_custom_scalars(reward_layout(names))


def log_media(logger, step: int, batch: ExampleBatch, rollout: Rollout, rewards: dict[str, torch.Tensor],
              group_size: int, captions: list[str] | None = None) -> None:
    """Log, for the first few examples, the real image then its G samples as one grid row, and answers.

    Each row of the grid carries its prompt; ``captions`` (re-captions of the generated images by the
    cycle reward), when given, are listed under their prompts in ``samples/image_prompts``.

    Does nothing unless the logger is TensorBoard (has ``add_image``).
    """
    writer = getattr(logger, "experiment", None)
    if not hasattr(writer, "add_image"):
        return
    shown = min(MAX_EXAMPLES, len(batch))
    if rollout.image is not None:
        rows = []
        for example in range(shown):
            samples = rollout.image.pixels[example * group_size : (example + 1) * group_size]
            rows.append(torch.cat([rollout.real_pixels[example : example + 1].to(samples.device), samples]))
        writer.add_image("samples/images", captioned_rows(rows, batch.prompt[:shown]), step)
        lines = []
        for i in range(shown):
            lines.append(f"{i}. {_markdown_cell(batch.prompt[i])}")
            if captions:
                recaps = captions[i * group_size : (i + 1) * group_size]
                lines += [f"    - re-caption: {_markdown_cell(c)}" for c in recaps]
        writer.add_text("samples/image_prompts", "Row = real image, then its samples.\n\n" + "\n".join(lines), step)
    if rollout.text is not None:
        writer.add_text("samples/completions", completions_table(batch, rollout.text.texts, rewards, shown,
                                                                 group_size), step)


def log_held_out_images(logger, step: int, prompts: list[str], images: torch.Tensor) -> None:
    """The first held-out prompts' images as one row (``val/images``), with the prompts (``val/image_prompts``).

    Validation draws them under the same seed at every check, so TensorBoard's step slider shows the same
    prompts and draws changing only with the weights.
    """
    writer = getattr(logger, "experiment", None)
    if not hasattr(writer, "add_image"):
        return
    shown = min(2 * MAX_EXAMPLES, len(prompts))
    caption = f"step {step}: the same held-out prompts and draws at every check"
    writer.add_image("val/images", captioned_rows([images[:shown]], [caption]), step)
    writer.add_text("val/image_prompts", "\n".join(f"{i + 1}. {_markdown_cell(p)}" for i, p in
                                                   enumerate(prompts[:shown])), step)
