"""GRPO math as pure tensor functions: group advantages and the clipped surrogate loss.

Nothing here knows about models, configs or Lightning, so every formula can be checked against
numbers worked by hand (see ``tests/modules/test_grpo.py``).
"""

from __future__ import annotations

from typing import Literal

import torch

AdvantageScale = Literal["group", "batch", "none"]
Aggregation = Literal["token", "sequence", "constant"]
ImportanceLevel = Literal["token", "sequence"]


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` over the positions where ``mask`` is true; 0 where nothing is valid."""
    mask = mask.to(values.dtype)
    total = (values * mask).sum() if dim is None else (values * mask).sum(dim)
    count = mask.sum() if dim is None else mask.sum(dim)
    return total / count.clamp(min=1.0)


def fill_unscored(values: torch.Tensor, group_size: int) -> torch.Tensor:
    """One reward's values ``[N]`` with each NaN (unscored) replaced by its group's mean over the scored.

    An unscored output thus adds no advantage, instead of counting as the group's worst (NaN as 0)
    or spoiling the whole group (NaN in the sum). A group with nothing scored gets 0 everywhere.
    """
    grouped = values.float().view(-1, group_size)  # [N / G, G]
    scored = ~grouped.isnan()
    total = torch.where(scored, grouped, 0.0).sum(dim=1, keepdim=True)
    mean = total / scored.sum(dim=1, keepdim=True).clamp(min=1)
    return torch.where(scored, grouped, mean).reshape(-1)


def group_advantages(
    rewards: torch.Tensor, group_size: int, scale: AdvantageScale = "group", eps: float = 1e-4
) -> torch.Tensor:
    """Group-relative advantages: each output is compared with the other samples of its prompt.

    Args:
        rewards: ``[N]`` rewards laid out as ``N / group_size`` consecutive groups.
        group_size: G, the number of outputs sampled per prompt.
        scale: ``"group"`` divides by the unbiased std of the group (+ eps), ``"batch"`` by the std
            of the whole batch (+ eps), ``"none"`` only subtracts the group mean.
        eps: keeps the division finite when a group's rewards barely differ.

    Returns:
        ``[N]`` advantages; a group whose rewards are all equal gets zeros.
    """
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards of shape {tuple(rewards.shape)} do not split into groups of {group_size}")
    grouped = rewards.float().view(-1, group_size)  # [N / G, G]
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale == "group":
        std = grouped.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(centred[:, :1])
        centred = centred / (std + eps)
    elif scale == "batch":
        std = rewards.float().std() if rewards.numel() > 1 else rewards.new_zeros(())
        centred = centred / (std + eps)
    elif scale != "none":
        raise ValueError(f"unknown advantage scale {scale!r}; expected 'group', 'batch' or 'none'")
    return centred.reshape(-1)


def k3_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(pi || ref): exp(ref - logp) - (ref - logp) - 1, always >= 0."""
    delta = ref_logps - logps
    return torch.exp(delta) - delta - 1.0


def policy_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    ref_logps: torch.Tensor | None = None,
    beta: float = 0.0,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    aggregation: Aggregation = "token",
    importance_sampling_level: ImportanceLevel = "token",
    max_length: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped GRPO surrogate with an optional k3 KL penalty.

    Args:
        logps: ``[B, L]`` log-probs of the sampled tokens under the current policy (with grad).
        old_logps: ``[B, L]`` log-probs recorded at rollout time (pi_old).
        advantages: ``[B]`` one advantage per sequence, applied to each of its tokens.
        mask: ``[B, L]`` true on tokens that count; padding contributes nothing, not even gradient.
        ref_logps: ``[B, L]`` log-probs under the frozen reference; needed when ``beta > 0``.
        beta: weight of the KL penalty.
        eps_low: the ratio is clipped from below at ``1 - eps_low``.
        eps_high: the ratio is clipped from above at ``1 + eps_high``.
        aggregation: ``"token"`` averages over all valid tokens of the batch, ``"sequence"``
            averages within each sequence first, then over sequences, ``"constant"`` (Dr. GRPO) sums
            over the valid tokens and divides by ``rows * max_length``, so no length biases the update.
        importance_sampling_level: ``"token"`` clips each token's ratio; ``"sequence"`` (GSPO) uses
            one ratio per sequence, exp of the mean over its valid tokens of ``logps - old_logps``,
            for all its tokens, clipped in the same way.
        max_length: the length limit of the task (``max_completion_tokens`` for answers, the number of
            image tokens for images); needed by the ``"constant"`` aggregation.

    Returns:
        The scalar loss and detached metrics (``clip_fraction``, ``kl``, ``ratio`` and its range over
        the valid tokens, ``ratio_min`` and ``ratio_max``; 1 where none is valid).
    """
    mask = mask.bool()
    # Padding may hold arbitrary log-probs; zero the log-ratio there so no inf/nan reaches the grad.
    log_ratio = torch.where(mask, logps - old_logps.detach(), torch.zeros_like(logps))
    if importance_sampling_level == "sequence":  # GSPO: the length-normalised sequence ratio for every token
        log_ratio = masked_mean(log_ratio, mask, dim=1).unsqueeze(1).expand_as(log_ratio)
    elif importance_sampling_level != "token":
        raise ValueError(f"unknown importance_sampling_level {importance_sampling_level!r}; expected 'token' or "
                         "'sequence'")
    ratio = torch.exp(log_ratio)
    adv = advantages.detach().unsqueeze(1).to(logps.dtype)  # [B, 1]
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high) * adv
    per_token = -torch.minimum(unclipped, clipped)
    kl = torch.zeros_like(per_token)
    if beta > 0.0:
        if ref_logps is None:
            raise ValueError("beta > 0 needs ref_logps")
        kl = k3_kl(logps, torch.where(mask, ref_logps.detach(), logps.detach()))
        per_token = per_token + beta * kl
    if aggregation == "token":
        loss = masked_mean(per_token, mask)
    elif aggregation == "sequence":
        loss = masked_mean(per_token, mask, dim=1).mean()
    elif aggregation == "constant":
        if max_length is None or max_length < 1:
            raise ValueError("the 'constant' aggregation (Dr. GRPO) needs the task's max_length")
        loss = torch.where(mask, per_token, 0.0).sum() / (per_token.shape[0] * max_length)
    else:
        raise ValueError(f"unknown aggregation {aggregation!r}; expected 'token', 'sequence' or 'constant'")
    with torch.no_grad():
        # The clip is active where min() picked the clipped term: ratio past the bound in the
        # direction the advantage pushes.
        was_clipped = (clipped < unclipped) & mask
        valid_ratio = ratio.detach()[mask]
        metrics = {
            "clip_fraction": masked_mean(was_clipped.float(), mask),
            "kl": masked_mean(kl.detach(), mask),
            "ratio": masked_mean(ratio.detach(), mask),
            "ratio_min": valid_ratio.min() if valid_ratio.numel() else ratio.new_ones(()),
            "ratio_max": valid_ratio.max() if valid_ratio.numel() else ratio.new_ones(()),
        }
    return loss, metrics
