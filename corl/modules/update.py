"""The GRPO loss of a rollout's rows: training log-probs, the clipped objective per task, weighted into one.

Pure functions of the policy, the rollout and the settings, so the loss is tested without a Trainer;
``CoRLModule.update`` runs them μ times over micro-batches, with the optimiser and the skip policy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from corl.modules.grpo import Aggregation, ImportanceLevel, masked_mean, policy_loss
from corl.modules.metrics import EXTREMES
from corl.modules.rollout import ImageRollout, Rollout, TextRollout


@dataclass(frozen=True)
class LossSettings:
    """The objective's settings (``CoRLModule``'s of the same names)."""

    beta: float = 0.0
    eps_low: float = 0.2
    eps_high: float = 0.2
    aggregation: Aggregation = "sequence"
    importance_sampling_level: ImportanceLevel = "token"
    max_completion_tokens: int = 512
    micro_batch_size: int = 16


def logprobs(policy, rollout: Rollout, reference=None, rows: torch.Tensor | None = None, with_entropy: bool = False):
    """Training log-probs of the (sub-)rollout's image and text tokens; None for an absent task.

    ``with_entropy`` gives ``(logps, entropy)`` pairs instead, from the same forward.
    """
    image, text = rollout.part("image", rows), rollout.part("text", rows)
    image_logps = policy.image_logprobs(image, reference, with_entropy) if image is not None else None
    text_logps = policy.text_logprobs(text, reference, with_entropy) if text is not None else None
    return image_logps, text_logps


@torch.no_grad()
def rollout_logprobs(policy, rollout: Rollout, micro_batch_size: int, reference=None
                     ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Training-forward log-probs of the whole rollout (the policy's or the reference's), per micro-batch."""
    parts = [logprobs(policy, rollout, reference, rows) for rows in rollout.rows().split(micro_batch_size)]
    image, text = zip(*parts, strict=True)
    return (None if image[0] is None else torch.cat(image)), (None if text[0] is None else torch.cat(text))


def micro_batch_loss(policy, rollout: Rollout, advantages: torch.Tensor, rows: torch.Tensor,
                     totals: dict[str, tuple[int, int]], settings: LossSettings
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss of the pairs in ``rows``: image-token term + text-token term, both with A_i.

    Each term is weighted by the micro-batch's share of the rollout's tokens (``token``
    aggregation) or rows (``sequence``, ``constant``), so the micro-batches add up to the
    full-batch loss. The entropy of the sampling distributions comes from the same forward.
    """
    image_logps, text_logps = logprobs(policy, rollout, rows=rows, with_entropy=True)
    loss = torch.zeros((), device=advantages.device)
    metrics: dict[str, torch.Tensor] = {}
    for task, result in (("image", image_logps), ("text", text_logps)):
        if result is None:
            continue
        logps, spread = result
        part, ref = rollout.part(task, rows), rollout.ref_logps(task)
        limit = policy.num_image_tokens if task == "image" else settings.max_completion_tokens
        task_loss, task_metrics = objective(logps, part, advantages[rows], None if ref is None else ref[rows],
                                            settings, limit)
        task_metrics["entropy"] = masked_mean(spread, part.mask)
        tokens, total_tokens = int(part.mask.sum()), totals[task][0]
        share = tokens / max(total_tokens, 1) if settings.aggregation == "token" else len(rows) / totals[task][1]
        loss = loss + share * task_loss
        metrics[f"loss/{task}"] = share * task_loss.detach()
        # Means add up over micro-batches by their shares; the ratio's range is taken as it is.
        metrics.update({f"{task}/{k}": v if k.endswith(EXTREMES) else share * v for k, v in task_metrics.items()})
    metrics["loss/total"] = loss.detach()
    return loss, metrics


def objective(logps: torch.Tensor, part: ImageRollout | TextRollout, advantages: torch.Tensor,
              ref_logps: torch.Tensor | None, settings: LossSettings, max_length: int
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One task's clipped GRPO loss (``policy_loss``) of some rollout rows.

    ``logps`` ``[r, L]`` are the task's training log-probs of those rows; ``part`` is the task's rollout
    of the same rows, ``advantages`` ``[r]`` and ``ref_logps`` ``[r, L]`` (None without a reference) theirs.
    """
    return policy_loss(
        logps, part.old_logps, advantages, part.mask, ref_logps=ref_logps, beta=settings.beta,
        eps_low=settings.eps_low, eps_high=settings.eps_high, aggregation=settings.aggregation,
        importance_sampling_level=settings.importance_sampling_level, max_length=max_length,
    )
