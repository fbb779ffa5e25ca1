"""The stage-1 triplet: one real image, a caption of it (the T2I prompt) and a question about it.

Field names are the public data set's column names (``mm-vl/x2x_rft_22k``), so a row of that set
and a row of the procedural set are the same record.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from PIL import Image

TRIPLET_COLUMNS = ("prompt", "real_image", "qa_problem", "qa_solution", "qa_type")


@dataclass
class Triplet:
    """One stage-1 example."""

    prompt: str  # caption of real_image; the text-to-image prompt
    real_image: Image.Image  # RGB
    qa_problem: str  # the question (options included for MC)
    qa_solution: str  # ground truth, usually "<answer>…</answer>"
    qa_type: str  # "MC" or an open-ended type


@dataclass
class TripletBatch:
    """A collated list of triplets; lists rather than tensors because the policy's processor encodes them."""

    prompt: list[str]
    real_image: list[Image.Image]
    qa_problem: list[str]
    qa_solution: list[str]
    qa_type: list[str]

    def __len__(self) -> int:
        return len(self.prompt)

    def text_columns(self) -> dict[str, list[Any]]:
        """The columns passed to text rewards (TRL convention), one entry per example."""
        return {"prompt": self.prompt, "qa_problem": self.qa_problem, "qa_solution": self.qa_solution,
                "qa_type": self.qa_type}


def collate_triplets(items: list[Triplet]) -> TripletBatch:
    """Collate function for the DataLoader."""
    return TripletBatch(**{f.name: [getattr(t, f.name) for t in items] for f in fields(Triplet)})
