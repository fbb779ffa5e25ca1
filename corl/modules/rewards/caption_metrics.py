"""Caption similarity S(prompt, re-caption) for the cycle-consistency reward.

A caption metric is a class with ``setup()`` (load or start once; fail early) and
``__call__(candidates, references) -> Tensor [R]`` with one score in [0, 1] per pair (NaN where a
pair cannot be scored).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def simple_tokenize(text: str) -> str:
    """Lower-cased words joined by spaces, punctuation dropped (the COCO tools' PTB tokenizer needs Java)."""
    return " ".join(_WORD.findall(text.lower()))


class CaptionMetric:
    """Interface of a caption metric."""

    name = "caption"

    def setup(self) -> None:
        """Load or start the scorer once."""

    def __call__(self, candidates: Sequence[str], references: Sequence[str]) -> torch.Tensor:
        """Score ``[R]`` of each candidate against its reference."""
        raise NotImplementedError


class CiderD(CaptionMetric):
    """CIDEr-D of pycocoevalcap (pure Python, offline), divided by 10 to lie in [0, 1].

    Document frequencies come from the references of the call, as in the COCO evaluation; every
    prompt of a rollout appears G times, which leaves the IDF unchanged. With a single distinct
    reference the IDF is zero and so is every score: use at least two prompts per step.

    Args:
        n: longest n-gram.
        sigma: length penalty width of CIDEr-D.
    """

    name = "cider"

    def __init__(self, n: int = 4, sigma: float = 6.0) -> None:
        self.n, self.sigma = n, sigma

    def __call__(self, candidates: Sequence[str], references: Sequence[str]) -> torch.Tensor:
        """CIDEr-D / 10 per pair, clipped to [0, 1]."""
        from pycocoevalcap.cider.cider_scorer import CiderScorer

        if len(candidates) != len(references):
            raise ValueError(f"{len(candidates)} candidates for {len(references)} references")
        scorer = CiderScorer(n=self.n, sigma=self.sigma)
        for candidate, reference in zip(candidates, references, strict=True):
            scorer.cook_append(simple_tokenize(candidate), [simple_tokenize(reference)])
        _, scores = scorer.compute_score()
        return (torch.as_tensor(scores, dtype=torch.float32) / 10.0).clamp(0.0, 1.0)
