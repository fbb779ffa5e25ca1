"""Records passed from rollout to rewards to the update. ``R = B * G`` rows: example-major groups."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Literal

import torch

OldLogps = Literal["rollout", "replay"]  # pi_old: the sampling log-probs, or a training forward before the update


def _take_rows(record, rows: torch.Tensor, per_row: tuple[str, ...]):
    return replace(record, **{name: getattr(record, name)[rows] for name in per_row})


@dataclass
class ImageTokens:
    """Image tokens to score, with the prompts they follow (a rollout's, or SFT's targets)."""

    prompt_ids: torch.Tensor  # [R, L] left-padded, ends with <begin_of_image>
    prompt_mask: torch.Tensor  # [R, L] 1 on real prompt tokens
    uncond_ids: torch.Tensor  # [R, L] the CFG unconditional prompt (text replaced by pad)
    tokens: torch.Tensor  # [R, N] the image tokens

    @property
    def mask(self) -> torch.Tensor:
        """[R, N] every image token counts."""
        return torch.ones_like(self.tokens, dtype=torch.bool)


@dataclass
class ImageRollout(ImageTokens):
    """G sampled images per prompt, with what the training pass needs to score them again."""

    old_logps: torch.Tensor  # [R, N] log-probs under the training distribution at rollout time
    pixels: torch.Tensor  # [R, 3, H, W] decoded images in [-1, 1], on the device

    def rows(self, rows: torch.Tensor) -> ImageRollout:
        """The sub-rollout of the given rows (a micro-batch)."""
        return _take_rows(self, rows, tuple(f.name for f in fields(self)))


@dataclass
class TextTokens:
    """Answer tokens to score after their (image, question) prompts (a rollout's, or SFT's targets)."""

    prompt_ids: torch.Tensor  # [R, L] left-padded, image placeholders where the template puts them
    prompt_mask: torch.Tensor  # [R, L]
    example_index: torch.Tensor  # [R] which row of image_embeds each row reads
    image_embeds: torch.Tensor  # [B, N_img, D] aligner output of the real images
    completion_ids: torch.Tensor  # [R, T] right-padded after EOS
    completion_mask: torch.Tensor  # [R, T] 1 up to and including EOS

    @property
    def mask(self) -> torch.Tensor:
        """[R, T] true on the answer tokens."""
        return self.completion_mask.bool()


@dataclass
class TextRollout(TextTokens):
    """G sampled answers per (image, question); the image is encoded once per example."""

    old_logps: torch.Tensor  # [R, T] sampling log-probs
    texts: list[str]  # R decoded completions, special tokens removed
    completion_ends_with_eos: torch.Tensor  # [R] bool: stopped by EOS, not by the length limit
    trained: torch.Tensor | None = None  # [R] bool: rows that count in the loss (None: all)

    def rows(self, rows: torch.Tensor) -> TextRollout:
        """The sub-rollout of the given rows; ``image_embeds`` stays per example."""
        per_row = ("prompt_ids", "prompt_mask", "example_index", "completion_ids", "completion_mask", "old_logps",
                   "completion_ends_with_eos")
        sub = _take_rows(self, rows, per_row + (("trained",) if self.trained is not None else ()))
        return replace(sub, texts=[self.texts[i] for i in rows.tolist()])

    @property
    def mask(self) -> torch.Tensor:
        """[R, T] true on completion tokens that count in the loss."""
        mask = super().mask
        return mask if self.trained is None else mask & self.trained[:, None]


@dataclass
class Rollout:
    """One step's rollout of both tasks; a task without rewards is ``None`` (not sampled)."""

    image: ImageRollout | None
    text: TextRollout | None
    real_pixels: torch.Tensor  # [B, 3, H, W] the real images in [-1, 1]
    group_size: int
    ref_image_logps: torch.Tensor | None = None  # [R, N] under the frozen reference, when beta > 0
    ref_text_logps: torch.Tensor | None = None  # [R, T]

    def rows(self) -> torch.Tensor:
        """``[R]`` all row indices."""
        part = self.image if self.image is not None else self.text
        return torch.arange(part.prompt_ids.shape[0], device=part.prompt_ids.device)

    def part(self, task: str, rows: torch.Tensor | None = None) -> ImageRollout | TextRollout | None:
        """The ``image`` or ``text`` rollout, restricted to ``rows`` when given."""
        record = self.image if task == "image" else self.text
        return record if record is None or rows is None else record.rows(rows)

    def ref_logps(self, task: str) -> torch.Tensor | None:
        """Reference log-probs of a task, recorded once at rollout time."""
        return self.ref_image_logps if task == "image" else self.ref_text_logps

    def token_counts(self) -> dict[str, tuple[int, int]]:
        """``task -> (valid tokens, rows)`` of the whole rollout, to weight micro-batches exactly."""
        return {task: (int(rec.mask.sum()), rec.mask.shape[0])
                for task, rec in (("image", self.image), ("text", self.text)) if rec is not None}

    def num_tokens(self) -> int:
        """Tokens generated in this rollout (image tokens + valid answer tokens)."""
        return sum(tokens for tokens, _ in self.token_counts().values())

    def stats(self) -> dict[str, torch.Tensor]:
        """Completion-length statistics of the text rollout."""
        if self.text is None:
            return {}
        lengths = self.text.completion_mask.sum(1).float()
        return {
            "text/completion_length_mean": lengths.mean(),
            "text/completion_length_max": lengths.max(),
            "text/truncated_fraction": (~self.text.completion_ends_with_eos).float().mean(),
        }
