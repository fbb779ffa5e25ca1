"""The three kinds of example, with the public data sets' column names.

- ``triplet`` (stage 1, ``mm-vl/x2x_rft_22k``): a real image, a caption of it (the T2I prompt) and a
  question about it;
- ``t2i`` (stage-2 generation, ``mm-vl/x2x_rft_16k``): a prompt and the real image it describes;
- ``qa`` (stage-2 understanding, ``mm-vl/mcot_r1_mcq_66k`` / ``mcot_r1_vqa_66k``): an image, a
  question and its solution.

One record serves all three: the columns a kind lacks are ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

from PIL import Image

Kind = Literal["triplet", "t2i", "qa"]
KIND_COLUMNS: dict[str, tuple[str, ...]] = {
    "triplet": ("prompt", "real_image", "qa_problem", "qa_solution", "qa_type"),
    "t2i": ("prompt", "real_image"),
    "qa": ("real_image", "qa_problem", "qa_solution", "qa_type"),
}


def columns_of(kind: str) -> tuple[str, ...]:
    """The columns an example of ``kind`` must have."""
    if kind not in KIND_COLUMNS:
        raise ValueError(f"unknown kind of example {kind!r}; expected one of {sorted(KIND_COLUMNS)}")
    return KIND_COLUMNS[kind]


@dataclass
class Example:
    """One example; the columns its kind lacks are None."""

    real_image: Image.Image  # RGB
    prompt: str | None = None  # caption of real_image; the text-to-image prompt
    qa_problem: str | None = None  # the question (options included for MC)
    qa_solution: str | None = None  # ground truth, usually "<answer>…</answer>"
    qa_type: str | None = None  # "MC" or an open-ended type
    skipped: int = 0  # unreadable rows passed over to reach this one (skip_bad_rows), for the logs


@dataclass
class ExampleBatch:
    """A collated list of examples; lists rather than tensors because the policy's processor encodes them."""

    real_image: list[Image.Image]
    prompt: list[str] | None = None
    qa_problem: list[str] | None = None
    qa_solution: list[str] | None = None
    qa_type: list[str] | None = None
    skipped: int = 0  # unreadable rows passed over to fill this batch (skip_bad_rows)

    def __len__(self) -> int:
        return len(self.real_image)

    def text_columns(self) -> dict[str, list[Any]]:
        """The columns passed to text rewards (TRL convention), one entry per example."""
        names = ("prompt", "qa_problem", "qa_solution", "qa_type")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


def collate_examples(items: list[Example]) -> ExampleBatch:
    """Collate function for the DataLoader; a column is None when the examples lack it."""
    columns = {}
    for field in fields(Example):
        if field.name != "skipped":
            values = [getattr(item, field.name) for item in items]
            columns[field.name] = None if any(v is None for v in values) else values
    return ExampleBatch(**columns, skipped=sum(item.skipped for item in items))
