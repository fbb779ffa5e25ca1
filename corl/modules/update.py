"""The update of one rollout: μ optimiser passes over micro-batches of the clipped GRPO loss, with the skip policy.

The loss is a pure function of the policy, the rollout and the settings; ``update`` runs it with the
Trainer's side of a step handed in (``OptimiserSteps``: backward, clipping, agreement across ranks), so
both are tested without a Trainer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from lightning.pytorch.utilities import rank_zero_warn

from corl.modules.grpo import Aggregation, ImportanceLevel, masked_mean, policy_loss
from corl.modules.metrics import EXTREMES, accumulate, skip_report
from corl.modules.rollout import ImageRollout, Rollout, TextRollout
from corl.modules.sharding import norm_value
from corl.modules.token_logprobs import TokenLogps


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


@dataclass(frozen=True)
class UpdateSettings:
    """How a rollout is learnt from (``CoRLModule``'s settings of the same names)."""

    loss: LossSettings
    mu: int = 1
    replay_old_logps: bool = False  # ``old_logps: replay``
    max_skipped_steps: int = 3

    @classmethod
    def of(cls, hp) -> UpdateSettings:
        """The settings of a ``CoRLModule``'s hyperparameters."""
        loss = LossSettings(beta=hp.beta, eps_low=hp.eps_low, eps_high=hp.eps_high, aggregation=hp.aggregation,
                            importance_sampling_level=hp.importance_sampling_level,
                            max_completion_tokens=hp.max_completion_tokens, micro_batch_size=hp.micro_batch_size)
        return cls(loss, hp.mu, hp.old_logps == "replay", hp.max_skipped_steps)


@dataclass
class OptimiserSteps:
    """The Trainer's side of an update: the optimiser and its schedule, backward, clipping.

    ``finite_on_every_rank`` says whether every rank found its pass finite: all ranks skip the same passes.
    """

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    backward: Callable[[torch.Tensor], None]
    clip: Callable[[], None]
    finite_on_every_rank: Callable[[bool], bool]


@dataclass
class UpdateStats:
    """What an update did: its metrics (means over the passes, ranges as ranges), the rate and the skips."""

    metrics: dict[str, float]
    lr: float  # the rate of the rollout's last update
    skipped_steps: int  # passes skipped so far in the run

    def logged(self) -> dict[str, float]:
        """The scalars for the logs."""
        return {**self.metrics, "lr": self.lr, "train/skipped_steps": self.skipped_steps}


def update(policy, rollout: Rollout, advantages: torch.Tensor, rewards: dict[str, torch.Tensor],
           settings: UpdateSettings, steps: OptimiserSteps, skipped_steps: int, global_step: int) -> UpdateStats:
    """``mu`` optimiser steps over the rollout, each accumulating over micro-batches of rows.

    A pass whose loss or gradient norm is not finite (on any rank) is skipped: no update, no scheduler
    step. It is counted and reported with its cause; past ``max_skipped_steps`` the run stops.
    ``skipped_steps`` and ``global_step`` are the run's counts before this update.
    """
    totals, sums = rollout.token_counts(), {}
    if settings.replay_old_logps:  # pi_old from the training forward, so the first pass's ratio is exactly 1
        sums = replay_old_logps(policy, rollout, settings.loss.micro_batch_size)
    used_lr = steps.optimizer.param_groups[0]["lr"]
    for _ in range(settings.mu):
        steps.optimizer.zero_grad(set_to_none=True)
        step: dict[str, float] = {}
        for rows in rollout.rows().split(settings.loss.micro_batch_size):
            loss, metrics = micro_batch_loss(policy, rollout, advantages, rows, totals, settings.loss)
            steps.backward(loss)
            accumulate(step, {k: float(v) for k, v in metrics.items()})
        step["grad_norm"] = gradient_norm(policy.trained_modules().parameters())
        accumulate(sums, {k: v if k.endswith(EXTREMES) else v / settings.mu for k, v in step.items()})
        finite = all(math.isfinite(v) for k, v in step.items() if k.startswith("loss/") or k == "grad_norm")
        if not steps.finite_on_every_rank(finite):
            steps.optimizer.zero_grad(set_to_none=True)
            skipped_steps += 1
            check_skipped(skipped_steps, settings.max_skipped_steps, skip_report(step, rewards), global_step)
            continue
        steps.clip()
        used_lr = steps.optimizer.param_groups[0]["lr"]
        steps.optimizer.step()
        steps.scheduler.step()
        global_step += 1
    return UpdateStats(sums, used_lr, skipped_steps)


def replay_old_logps(policy, rollout: Rollout, micro_batch_size: int) -> dict[str, float]:
    """Replace the rollout's pi_old by the training forward's log-probs; the gaps (``<task>/replay_gap``)."""
    gaps = {}
    image_logps, text_logps = rollout_logprobs(policy, rollout, micro_batch_size)
    for task, logps in (("image", image_logps), ("text", text_logps)):
        part = rollout.part(task)
        if part is not None:
            gaps[f"{task}/replay_gap"] = float((logps - part.old_logps).abs().max())
            part.old_logps = logps
    return gaps


def gradient_norm(parameters) -> float:
    """The total gradient norm of the parameters that have a gradient (0 when none has)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    return norm_value(torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(()))


def check_skipped(skipped: int, limit: int, report: str, global_step: int) -> None:
    """Say why a pass was skipped; stop the run once more than ``limit`` were."""
    if skipped > limit:
        raise RuntimeError(
            f"{skipped} optimiser steps were skipped for non-finite values, more than "
            f"model.max_skipped_steps = {limit}; the last: {report}. Lower model.lr, check the rewards "
            "and the data, or try float32."
        )
    rank_zero_warn(f"skipped an optimiser step at step {global_step} ({skipped} so far): {report}")


def logprobs(policy, rollout: Rollout, reference=None, rows: torch.Tensor | None = None,
             with_entropy: bool = False) -> tuple[TokenLogps | None, TokenLogps | None]:
    """Training log-probs of the (sub-)rollout's image and text tokens; None for an absent task."""
    parts = (rollout.part("image", rows), rollout.part("text", rows))
    image, text = (None if part is None else policy.logprobs(part, reference, with_entropy) for part in parts)
    return image, text


@torch.no_grad()
def rollout_logprobs(policy, rollout: Rollout, micro_batch_size: int, reference=None
                     ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Training-forward log-probs of the whole rollout (the policy's or the reference's), per micro-batch."""
    parts = [logprobs(policy, rollout, reference, rows) for rows in rollout.rows().split(micro_batch_size)]
    image, text = zip(*parts, strict=True)
    return tuple(None if task[0] is None else torch.cat([part.logps for part in task]) for task in (image, text))


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
        logps, spread = result.logps, result.entropy
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
