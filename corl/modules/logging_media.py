"""Image grids and sample completions for TensorBoard, so a run can be judged by eye."""

from __future__ import annotations

import torch
from torchvision.utils import make_grid

from corl.data.schema import ExampleBatch
from corl.modules.rollout import Rollout

MAX_EXAMPLES = 4


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def log_media(logger, step: int, batch: ExampleBatch, rollout: Rollout, rewards: dict[str, torch.Tensor],
              group_size: int, captions: list[str] | None = None) -> None:
    """Log, for the first few examples, the real image then its G samples as one grid row, and answers.

    ``captions`` (re-captions of the generated images by the cycle reward), when given, are shown
    under their prompts.

    Does nothing unless the logger is TensorBoard (has ``add_image``).
    """
    writer = getattr(logger, "experiment", None)
    if not hasattr(writer, "add_image"):
        return
    shown = min(MAX_EXAMPLES, len(batch))
    names = [k for k in rewards if k not in ("image", "text")]
    if rollout.image is not None:
        rows = []
        for example in range(shown):
            samples = rollout.image.pixels[example * group_size : (example + 1) * group_size]
            rows.append(torch.cat([rollout.real_pixels[example : example + 1].to(samples.device), samples]))
        grid = make_grid(torch.cat(rows).float().cpu(), nrow=group_size + 1, normalize=True, value_range=(-1, 1))
        writer.add_image("samples/images", grid, step)
        lines = []
        for i in range(shown):
            lines.append(f"{i}. {_markdown_cell(batch.prompt[i])}")
            if captions:
                recaps = captions[i * group_size : (i + 1) * group_size]
                lines += [f"    - re-caption: {_markdown_cell(c)}" for c in recaps]
        writer.add_text("samples/image_prompts", "Row = real image, then its samples.\n\n" + "\n".join(lines), step)
    if rollout.text is not None:
        lines = ["| question | completion | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
        for example in range(shown):
            row = example * group_size
            scores = " | ".join(f"{rewards[n][row].item():.3f}" for n in names)
            lines.append(f"| {_markdown_cell(batch.qa_problem[example])} | "
                         f"{_markdown_cell(rollout.text.texts[row])} | {scores} |")
        writer.add_text("samples/completions", "\n".join(lines), step)
