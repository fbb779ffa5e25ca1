import math

import lightning as L
import pytest
import torch

from corl.data.datamodule import ExampleDataModule
from corl.data.procedural import ProceduralExamples
from corl.data.schema import collate_examples
from corl.modules.corl_module import CoRLModule
from corl.modules.grpo import group_advantages
from corl.modules.metrics import reward_stats
from corl.modules.optim import lr_lambda
from corl.modules.rewards import ImageReward, RewardScore, TextReward
from corl.modules.token_logprobs import TokenLogps
from corl.modules.update import logprobs, micro_batch_loss


class Constant(ImageReward):
    def __init__(self, values, **kwargs):
        super().__init__(**kwargs)
        self.values = torch.tensor(values)

    def __call__(self, samples):
        return self.values[: len(samples)]


class Broken(ImageReward):
    default_name = "broken"

    def __call__(self, samples):
        raise KeyError("no such thing")


def text_constant(values):
    def fn(completions, **columns):
        assert set(columns) >= {"qa_solution", "qa_type", "qa_problem", "prompt"}
        return values[: len(completions)]

    return fn


def batch(n=2, image_size=64):
    return collate_examples([ProceduralExamples(n, seed=3, image_size=image_size)[i] for i in range(n)])


def module(**kwargs):
    base = dict(model="tiny", group_size=2, max_completion_tokens=6, micro_batch_size=16, log_media_every_n_steps=0)
    return CoRLModule(**{**base, **kwargs})


def test_paired_reward_is_image_plus_lambda_times_text():
    m = module(
        image_rewards=[Constant([0.1, 0.2, 0.3, 0.4], weight=2.0, name="a")],
        text_rewards=[TextReward(text_constant([1.0, 0.0, 0.5, 1.0]), weight=0.5, name="t")],
        text_weight=0.8,
    )
    b = batch()
    rewards = m.score(m.rollout(b), b)
    image = 2.0 * torch.tensor([0.1, 0.2, 0.3, 0.4])
    text = 0.5 * torch.tensor([1.0, 0.0, 0.5, 1.0])
    torch.testing.assert_close(rewards["total"], image + 0.8 * text)
    torch.testing.assert_close(rewards["a"], torch.tensor([0.1, 0.2, 0.3, 0.4]))


def test_nan_counts_as_its_groups_mean_and_is_counted():
    nan = float("nan")
    # Groups of 4: (nan, 1, 0, 0.5) and (nan, nan, nan, nan).
    m = module(image_rewards=[Constant([nan, 1.0, 0.0, 0.5, nan, nan, nan, nan], name="c")],
               text_rewards=[TextReward(text_constant([1.0, 1.0, 0.0, 1.0] * 2), name="t")], text_weight=1.0,
               group_size=4)
    b = batch()
    rewards = m.score(m.rollout(b), b)
    # The NaN of group 1 counts as (1 + 0 + 0.5) / 3 = 0.5; group 2 scored nothing: 0 for all of it.
    torch.testing.assert_close(rewards["total"], torch.tensor([1.5, 2.0, 0.0, 1.5, 1.0, 1.0, 0.0, 1.0]))
    stats = reward_stats(rewards, torch.zeros(8))
    assert stats["reward/c/nan_count"].item() == 5
    assert stats["reward/c/mean"].item() == pytest.approx(0.5)
    assert stats["reward/t/nan_count"].item() == 0  # logged every step: ranks must log the same keys


def test_an_unscored_output_gets_the_advantage_of_an_average_one():
    nan = float("nan")
    m = module(image_rewards=[Constant([nan, 1.0, 0.0, 0.5], name="c")], group_size=4)
    b = batch(n=1)
    advantages = group_advantages(m.score(m.rollout(b), b)["total"], 4)
    # Filled rewards (0.5, 1, 0, 0.5): mean 0.5, unbiased std sqrt(0.5 / 3); the NaN output gets 0.
    std = (0.5 / 3) ** 0.5
    torch.testing.assert_close(advantages, torch.tensor([0.0, 0.5, -0.5, 0.0]) / (std + 1e-4))


def test_an_exception_in_a_reward_names_the_reward():
    m = module(image_rewards=[Broken()])
    b = batch()
    with pytest.raises(RuntimeError, match="reward 'broken' failed"):
        m.score(m.rollout(b), b)


def test_a_task_without_rewards_is_not_rolled_out():
    text_only = module(text_rewards=[TextReward("format")])
    rollout = text_only.rollout(batch())
    assert rollout.image is None and rollout.text is not None
    image_only = module(image_rewards=[Constant([0.0] * 4)])
    rollout = image_only.rollout(batch())
    assert rollout.text is None and rollout.image is not None
    assert rollout.real_pixels.shape == (2, 3, 64, 64)
    with pytest.raises(ValueError, match="at least one reward"):
        module()


def trainable_grads(m):
    return torch.cat([p.grad.flatten() for p in m.policy.llm.parameters() if p.grad is not None])


@pytest.mark.parametrize("aggregation", ["token", "sequence"])
def test_micro_batches_add_up_to_the_full_batch_gradient(aggregation):
    torch.manual_seed(0)
    m = module(image_rewards=[Constant([0.0] * 8)], text_rewards=[TextReward("format")], group_size=4,
               aggregation=aggregation, max_completion_tokens=10)
    b = batch()
    rollout = m.rollout(b)
    advantages = group_advantages(torch.randn(8), 4)
    totals = rollout.token_counts()
    full, _ = micro_batch_loss(m.policy, rollout, advantages, rollout.rows(), totals, m.update_settings.loss)
    full.backward()
    full_grad = trainable_grads(m)
    m.policy.zero_grad()
    parts = 0.0
    for rows in rollout.rows().split(3):  # uneven micro-batches: 3 + 3 + 2 rows
        loss, _ = micro_batch_loss(m.policy, rollout, advantages, rows, totals, m.update_settings.loss)
        loss.backward()
        parts += loss.item()
    assert parts == pytest.approx(full.item(), abs=1e-5)
    torch.testing.assert_close(trainable_grads(m), full_grad, atol=1e-6, rtol=1e-4)


def fit(make_trainer, m, steps):
    trainer, metrics = make_trainer(steps)
    trainer.fit(m, ExampleDataModule(batch_size=2, length=64))
    return trainer, metrics.steps


def test_mu_passes_step_the_optimiser_mu_times_and_clip_on_later_passes(quiet_trainer):
    L.seed_everything(0)
    m = module(text_rewards=[TextReward(lambda c, **_: [float(len(x) % 3) for x in c], name="len3")],
               mu=3, lr=5e-2, eps_low=0.01, eps_high=0.01, group_size=4)
    trainer, metrics = fit(quiet_trainer, m, 6)
    assert trainer.global_step == 6 and len(metrics) == 2  # 3 optimiser steps per batch
    # Pass 1 has ratio 1 exactly; later passes move pi away from pi_old, so the tiny clip range bites.
    assert all(s["text/clip_fraction"] > 0 for s in metrics)


def test_reference_model_only_when_beta_positive():
    assert module(text_rewards=[TextReward("format")]).reference is None
    m = module(text_rewards=[TextReward("format")], beta=0.1)
    assert m.reference is not None and not any(p.requires_grad for p in m.reference.parameters())
    m.train()  # what Lightning does at the start of fit
    assert not any(sub.training for sub in m.reference.modules())
    rollout = m.rollout(batch())
    torch.testing.assert_close(rollout.ref_text_logps, rollout.text.old_logps, atol=1e-4, rtol=0)


def test_kl_is_logged_and_grows_after_updates_when_beta_positive(quiet_trainer):
    L.seed_everything(0)
    m = module(image_rewards=[Constant([0.0, 1.0] * 4)], beta=0.5, lr=5e-2)
    _, metrics = fit(quiet_trainer, m, 3)
    assert metrics[0]["image/kl"] == pytest.approx(0.0, abs=1e-6)
    assert metrics[-1]["image/kl"] > 0


def test_learning_rate_schedule():
    warm_cosine = lr_lambda(warmup=2, total=6, kind="cosine")
    # warmup 1/2, 2/2, then cosine over 4 steps: 1, cos(pi/4) ..., 0
    assert [round(warm_cosine(s), 4) for s in range(7)] == [0.5, 1.0, 1.0, 0.8536, 0.5, 0.1464, 0.0]
    assert lr_lambda(0, 10, "constant")(7) == 1.0
    with pytest.raises(ValueError, match="lr_schedule"):
        lr_lambda(0, 10, "linear")


def test_rollout_records_no_autograd_graph(monkeypatch):
    m = module(image_rewards=[Constant([0.0] * 4)], text_rewards=[TextReward("format")], beta=0.1)
    grad_modes = []
    reference_logprobs = m.policy.scorer.text

    def spy(*args, **kwargs):
        grad_modes.append(torch.is_grad_enabled())
        return reference_logprobs(*args, **kwargs)

    monkeypatch.setattr(m.policy.scorer, "text", spy)
    rollout = m.rollout(batch())
    assert grad_modes == [False]  # the reference log-probs of the rollout, computed without a graph
    for tensor in (rollout.image.old_logps, rollout.text.old_logps, rollout.ref_image_logps, rollout.ref_text_logps):
        assert not tensor.requires_grad


def nan_once(m, monkeypatch, calls_to_poison=(1,)):
    """The training forward of the text task returns NaN log-probs on the given calls (counted from 1)."""
    real, calls = m.policy.scorer.text, []

    def poisoned(tokens, weights, with_entropy=False):
        scored = real(tokens, weights, with_entropy)
        if torch.is_grad_enabled():  # the training forward (reference and replay passes take no gradient)
            calls.append(1)
            if len(calls) in calls_to_poison:
                return TokenLogps(scored.logps * float("nan"), scored.entropy)
        return scored

    monkeypatch.setattr(m.policy.scorer, "text", poisoned)


def test_a_non_finite_loss_skips_the_step_and_says_why(quiet_trainer, monkeypatch):
    L.seed_everything(0)
    m = module(text_rewards=[TextReward(lambda c, **_: [float(len(x) % 3) for x in c], name="len3")],
               group_size=4, lr=1e-2, warmup_steps=4)
    before = {k: v.clone() for k, v in m.policy.llm.state_dict().items()}
    nan_once(m, monkeypatch)
    with pytest.warns(UserWarning, match=r"skipped an optimiser step .*loss/text nan, text ratio in \[nan, nan\]"):
        trainer, steps = fit(quiet_trainer, m, 2)
    assert trainer.global_step == 2 and len(steps) == 3, "the skipped batch is not counted as a step"
    assert [s["train/skipped_steps"] for s in steps] == [1, 1, 1]
    assert math.isnan(steps[0]["loss/text"]) and math.isfinite(steps[1]["loss/text"])
    # Two real updates, each after its own scheduler step: warmup 1/4, 2/4 (the skipped one took none).
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 2
    # lr is the rate each update used, not the next one's: 1/4 for the first real update, 2/4 for the second
    assert [s["lr"] for s in steps] == pytest.approx([1e-2 / 4, 1e-2 / 4, 1e-2 * 2 / 4])
    assert any(not torch.equal(v, before[k]) for k, v in m.policy.llm.state_dict().items())
    assert all(torch.isfinite(v).all() for v in m.policy.llm.state_dict().values()), "no NaN reached the weights"


def test_too_many_skipped_steps_stop_the_run(quiet_trainer, monkeypatch):
    m = module(text_rewards=[TextReward("format")], max_skipped_steps=1)
    nan_once(m, monkeypatch, calls_to_poison=(1, 2))
    with pytest.raises(RuntimeError, match=r"2 optimiser steps were skipped .* model.max_skipped_steps = 1"), \
            pytest.warns(UserWarning, match="skipped an optimiser step"):
        fit(quiet_trainer, m, 3)


def test_reference_logprobs_are_taken_per_micro_batch(monkeypatch):
    m = module(image_rewards=[Constant([0.0] * 6)], text_rewards=[TextReward("format")], beta=0.1, group_size=3,
               micro_batch_size=4)
    b = batch()
    torch.manual_seed(0)
    whole = m.rollout(b)
    full_image, full_text = logprobs(m.policy, whole, m.reference)
    sizes = []

    def counted(real):
        def logprobs(part, reference=None, with_entropy=False):
            sizes.append(part.prompt_ids.shape[0])
            return real(part, reference, with_entropy)

        return logprobs

    monkeypatch.setattr(m.policy, "logprobs", counted(m.policy.logprobs))
    torch.manual_seed(0)
    rollout = m.rollout(b)
    assert sizes == [4, 4, 2, 2], "6 rows: micro-batches of 4 and 2, for images and answers"
    torch.testing.assert_close(rollout.ref_image_logps, full_image.logps)
    torch.testing.assert_close(rollout.ref_text_logps, full_text.logps)


def test_replayed_old_logprobs_make_the_first_ratio_exactly_one(quiet_trainer):
    L.seed_everything(0)
    m = module(image_rewards=[Constant([0.0, 1.0] * 4)], text_rewards=[TextReward("format")], old_logps="replay")
    _, steps = fit(quiet_trainer, m, 1)
    for task in ("image", "text"):
        assert steps[0][f"{task}/ratio_min"] == steps[0][f"{task}/ratio_max"] == 1.0
        assert 0 <= steps[0][f"{task}/replay_gap"] < 1e-4  # float32: sampling and training agree anyway
    with pytest.raises(ValueError, match="model.old_logps must be one of"):
        module(text_rewards=[TextReward("format")], old_logps="recompute")


def test_truncated_answers_get_no_loss_but_keep_their_reward():
    m = module(text_rewards=[TextReward(text_constant([1.0, 0.0, 0.5, 1.0]), name="t")],
               mask_truncated_completions=True, max_completion_tokens=4)
    b = batch()
    rollout = m.rollout(b)
    ends = rollout.text.completion_ends_with_eos
    assert not ends.all(), "a random tiny model rarely stops within 4 tokens"
    assert (rollout.text.mask.sum(1) == torch.where(ends, rollout.text.completion_mask.sum(1), 0)).all()
    assert rollout.token_counts()["text"][0] == int(rollout.text.mask.sum())
    # Truncated rows pass no gradient: their advantage does not reach the weights.
    advantages = torch.zeros(4)
    advantages[(~ends).nonzero()[0]] = 1.0
    loss, _ = micro_batch_loss(m.policy, rollout, advantages, rollout.rows(), rollout.token_counts(),
                               m.update_settings.loss)
    loss.backward()
    assert float(loss) == 0.0
    assert all(p.grad is None or not p.grad.any() for p in m.policy.llm.parameters())


@pytest.mark.parametrize("options", [{"importance_sampling_level": "sequence"}, {"aggregation": "constant"}])
def test_loss_variants_train_and_log_entropy(quiet_trainer, options):
    L.seed_everything(0)
    m = module(image_rewards=[Constant([0.0, 1.0] * 4)], text_rewards=[TextReward("format")], **options)
    _, steps = fit(quiet_trainer, m, 2)
    for task in ("image", "text"):
        assert steps[0][f"{task}/ratio"] == pytest.approx(1.0, abs=1e-5)
        assert steps[0][f"{task}/entropy"] > 0
    assert math.isfinite(steps[-1]["loss/total"])


def test_an_image_rewards_parts_are_scored_logged_and_validated_beside_it():
    class WithParts(Constant):
        def scored(self, samples):
            values = self(samples)
            return RewardScore(values, {"half": values / 2})

    m = module(image_rewards=[WithParts([0.2, 0.4, 0.6, 0.8], name="w"), Constant([0.0] * 4, name="my/b")],
               text_rewards=[TextReward("format")])
    b = batch()
    rewards = m.score(m.rollout(b), b)
    torch.testing.assert_close(rewards["w/half"], torch.tensor([0.1, 0.2, 0.3, 0.4]))
    torch.testing.assert_close(rewards["image"], torch.tensor([0.2, 0.4, 0.6, 0.8]))  # the parts add nothing
    assert m.reward_names(rewards) == ["w", "w/half", "my/b", "format"]
    assert m.reward_names(rewards, "text") == ["format"]
    assert reward_stats(rewards, torch.zeros(4))["reward/w/half/mean"].item() == pytest.approx(0.25)
