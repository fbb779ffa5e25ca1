"""The update runs without a Trainer: μ passes over micro-batches, the skip policy, typed statistics."""

import math

import pytest
import torch

from corl.data.procedural import ProceduralExamples
from corl.data.schema import collate_examples
from corl.modules.corl_module import CoRLModule
from corl.modules.grpo import group_advantages
from corl.modules.rewards import TextReward
from corl.modules.token_logprobs import TokenLogps
from corl.modules.update import LossSettings, OptimiserSteps, UpdateSettings, update


def rollout_and_steps(lr=1e-2):
    module = CoRLModule(model="tiny", group_size=2, max_completion_tokens=6, log_media_every_n_steps=0,
                        text_rewards=[TextReward(lambda c, **_: [float(len(x) % 3) for x in c], name="len3")])
    batch = collate_examples([ProceduralExamples(2, seed=3)[i] for i in range(2)])
    torch.manual_seed(0)
    rollout = module.rollout(batch)
    rewards = module.score(rollout, batch)
    advantages = group_advantages(rewards["total"], 2, "group", 1e-4)
    params = [p for p in module.policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    steps = OptimiserSteps(optimizer, scheduler, lambda loss: loss.backward(), lambda: None, lambda finite: finite)
    return module.policy, rollout, advantages, rewards, steps


def test_mu_passes_step_the_optimiser_and_return_typed_statistics():
    policy, rollout, advantages, rewards, steps = rollout_and_steps()
    before = {k: v.clone() for k, v in policy.llm.state_dict().items()}
    stats = update(policy, rollout, advantages, rewards, UpdateSettings(LossSettings(micro_batch_size=3), mu=2),
                   steps, skipped_steps=0, global_step=0)
    assert steps.scheduler.last_epoch == 2, "one optimiser and scheduler step per pass"
    assert stats.skipped_steps == 0 and stats.lr == pytest.approx(1e-2)
    assert stats.metrics["text/ratio_min"] <= 1.0 <= stats.metrics["text/ratio_max"]
    assert math.isfinite(stats.metrics["loss/total"]) and stats.metrics["grad_norm"] > 0
    assert set(stats.logged()) >= {"lr", "train/skipped_steps", "loss/text"}
    assert any(not torch.equal(v, before[k]) for k, v in policy.llm.state_dict().items())


def test_a_non_finite_pass_is_skipped_counted_and_stops_the_run_past_the_limit(monkeypatch):
    policy, rollout, advantages, rewards, steps = rollout_and_steps()
    real = policy.scorer.text

    def poisoned(*args, **kwargs):
        scored = real(*args, **kwargs)
        return TokenLogps(scored.logps * math.nan, scored.entropy)

    monkeypatch.setattr(policy.scorer, "text", poisoned)
    before = {k: v.clone() for k, v in policy.llm.state_dict().items()}
    settings = UpdateSettings(LossSettings(), mu=1, max_skipped_steps=1)
    with pytest.warns(UserWarning, match=r"skipped an optimiser step at step 7 \(1 so far\): .*loss/text nan"):
        stats = update(policy, rollout, advantages, rewards, settings, steps, skipped_steps=0, global_step=7)
    assert stats.skipped_steps == 1 and steps.scheduler.last_epoch == 0
    assert all(torch.equal(v, before[k]) for k, v in policy.llm.state_dict().items()), "no update"
    with pytest.raises(RuntimeError, match="2 optimiser steps were skipped"):
        update(policy, rollout, advantages, rewards, settings, steps, skipped_steps=1, global_step=7)
