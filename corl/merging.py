"""Model merging as pure arithmetic on state dicts: linear, task arithmetic, and the paper's Gaussian merge.

The CoRL paper merges its multiple-choice and open-ended models (§4.2), and the pilot's RL-Merging models
(§3.2), with the Gaussian-distribution-based merging of Si et al. 2025 (arXiv 2501.10661, the paper's
reference [61]). That paper reports that fine-tuning deltas are mostly Gaussian around zero with a few
outliers. The rule below is the one the CoRL authors released (mm-vl/ULM-R1, ``utils.py``,
``weight_merging_gaussian``): per tensor, each model's delta from the common start is split into a Gaussian
bulk, which is averaged, and outliers, which are kept whole. Their code merges two models; for more, the
bulk's coefficient is 1/N (1/2 for two, as theirs), an extension of ours.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

State = dict[str, torch.Tensor]


def _check_lengths(states: Sequence[State], weights: Sequence[float]) -> None:
    if len(states) != len(weights):
        raise ValueError(f"{len(states)} models but {len(weights)} weights")


def linear_merge(states: Sequence[State], weights: Sequence[float]) -> State:
    """sum_i w_i * theta_i, key by key (weights are used as given: pass ones that sum to 1 to average)."""
    _check_lengths(states, weights)
    return {k: sum(w * s[k].float() for w, s in zip(weights, states)).to(states[0][k].dtype) for k in states[0]}


def task_arithmetic(base: State, states: Sequence[State], weights: Sequence[float]) -> State:
    """Task arithmetic: base + sum_i w_i * (theta_i - base), each run's task vector added to its start."""
    _check_lengths(states, weights)
    merged = {}
    for k, start in base.items():
        delta = sum(w * (s[k].float() - start.float()) for w, s in zip(weights, states))
        merged[k] = (start.float() + delta).to(start.dtype)
    return merged


def gaussian_band(deltas: Sequence[torch.Tensor], width: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The band ``(mu - width * s, mu + width * s)`` of a tensor's deltas.

    ``mu`` is the mean of the deltas' means and ``s`` the smallest of their (unbiased) standard
    deviations, each over the whole tensor: the narrower model sets how far the bulk reaches. A
    one-element tensor has no deviation: its band is empty.
    """
    mu = torch.stack([d.mean() for d in deltas]).mean()
    s = torch.stack([d.std() if d.numel() > 1 else d.new_zeros(()) for d in deltas]).min()
    return mu - width * s, mu + width * s


def gaussian_merge(base: State, states: Sequence[State], width: float = 2.0) -> State:
    """Si et al.'s Gaussian merge of models fine-tuned from ``base``, tensor by tensor.

    With deltas ``d_i = theta_i - base`` and the band ``(lo, hi)`` of ``gaussian_band``, each element is
    ``base + sum_i c_i * d_i`` where ``c_i = 1/N`` if ``lo < d_i < hi`` (the bulk: averaged) and 1
    otherwise (an outlier: kept whole). A tensor whose deltas are all equal has an empty band, so every
    delta counts whole (unchanged tensors stay unchanged); so does a one-element tensor (no standard
    deviation). Non-float tensors (buffers) are taken from ``base``. Computed in float32.

    Args:
        base: the model the runs started from (stage 1 for the MC and OE runs).
        states: the fine-tuned models, with the keys and shapes of ``base``.
        width: the band's half-width in standard deviations (the authors' ``lamda``, 2).
    """
    if not states:
        raise ValueError("the Gaussian merge needs at least one fine-tuned model")
    merged = {}
    inside = 1.0 / len(states)
    for k, start in base.items():
        if not start.is_floating_point():
            merged[k] = start
            continue
        deltas = [s[k].float() - start.float() for s in states]
        lo, hi = gaussian_band(deltas, width)
        total = torch.zeros_like(deltas[0])
        for d in deltas:
            bulk = (d > lo) & (d < hi)
            total += torch.where(bulk, inside * d, d)
        merged[k] = (start.float() + total).to(start.dtype)
    return merged
