"""Caption similarity S(prompt, re-caption) for the cycle-consistency reward.

A caption metric is a class with ``setup()`` (load or start once; fail early) and
``__call__(candidates, references) -> Tensor [R]`` with one score in [0, 1] per pair (NaN where a
pair cannot be scored).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
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

    Document frequencies come from the distinct references of the call, as in the COCO evaluation
    of one caption per image: pairs are scored in rounds in which each reference appears once, so a
    prompt repeated G times (a rollout group) weighs as one document. With a single distinct
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
        rounds: dict[int, list[int]] = defaultdict(list)
        seen: Counter[str] = Counter()
        for row, reference in enumerate(references):
            rounds[seen[reference]].append(row)  # round k holds the k-th use of each reference
            seen[reference] += 1
        scores = torch.zeros(len(candidates))
        for rows in rounds.values():
            scorer = CiderScorer(n=self.n, sigma=self.sigma)
            for row in rows:
                scorer.cook_append(simple_tokenize(candidates[row]), [simple_tokenize(references[row])])
            _, round_scores = scorer.compute_score()
            scores[rows] = torch.as_tensor(round_scores, dtype=torch.float32)
        return (scores / 10.0).clamp(0.0, 1.0)
