import math

import pytest
import torch

from corl.modules.grpo import fill_unscored, group_advantages, k3_kl, masked_mean, policy_loss


def test_group_advantages_group_scale_by_hand():
    # group 1: [1, 2, 3] mean 2, unbiased std 1 -> [-1, 0, 1] / (1 + eps)
    # group 2: [0, 0, 6] mean 2, unbiased std sqrt((4 + 4 + 16) / 2) = sqrt(12)
    adv = group_advantages(torch.tensor([1.0, 2.0, 3.0, 0.0, 0.0, 6.0]), group_size=3, eps=1e-4)
    s = math.sqrt(12.0)
    expected = torch.tensor([-1 / 1.0001, 0.0, 1 / 1.0001, -2 / (s + 1e-4), -2 / (s + 1e-4), 4 / (s + 1e-4)])
    torch.testing.assert_close(adv, expected)


def test_group_advantages_batch_and_none_scale():
    rewards = torch.tensor([1.0, 3.0, 10.0, 14.0])
    # centred per group: [-1, 1, -2, 2]; batch std of [1, 3, 10, 14] = sqrt(((-6)^2+(-4)^2+3^2+7^2)/3) = sqrt(110/3)
    centred = torch.tensor([-1.0, 1.0, -2.0, 2.0])
    torch.testing.assert_close(group_advantages(rewards, 2, scale="none"), centred)
    torch.testing.assert_close(group_advantages(rewards, 2, scale="batch"), centred / (math.sqrt(110 / 3) + 1e-4))


def test_equal_rewards_give_zero_advantage():
    adv = group_advantages(torch.tensor([0.7, 0.7, 0.7, 0.7, 1.0, 0.0]), group_size=2)
    assert adv[:4].abs().max() == 0
    assert adv[4] > 0 > adv[5]


def test_group_advantages_rejects_ragged_groups_and_bad_scale():
    with pytest.raises(ValueError, match="groups of 4"):
        group_advantages(torch.zeros(6), 4)
    with pytest.raises(ValueError, match="unknown advantage scale"):
        group_advantages(torch.zeros(4), 2, scale="global")


def test_masked_mean_ignores_masked_values():
    values = torch.tensor([[1.0, 2.0, 100.0], [3.0, 50.0, 60.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert masked_mean(values, mask).item() == pytest.approx(2.0)  # (1 + 2 + 3) / 3
    torch.testing.assert_close(masked_mean(values, mask, dim=1), torch.tensor([1.5, 3.0]))


def test_loss_at_ratio_one_is_minus_mean_advantage():
    logps = torch.log(torch.tensor([[0.5, 0.25], [0.5, 0.5]]))
    adv = torch.tensor([2.0, -1.0])
    loss, metrics = policy_loss(logps, logps.clone(), adv, torch.ones(2, 2))
    # per token -A: [-2, -2, 1, 1] -> mean -0.5
    assert loss.item() == pytest.approx(-0.5)
    assert metrics["clip_fraction"].item() == 0.0
    assert metrics["ratio"].item() == pytest.approx(1.0)


def test_clipping_upper_side_positive_advantage():
    # ratio 1.5 > 1 + 0.2 with A = +1: min(1.5, 1.2) = 1.2 -> loss -1.2, no gradient through the clip
    old = torch.zeros(1, 1)
    logps = torch.full((1, 1), math.log(1.5), requires_grad=True)
    loss, metrics = policy_loss(logps, old, torch.tensor([1.0]), torch.ones(1, 1), eps_high=0.2)
    assert loss.item() == pytest.approx(-1.2)
    assert metrics["clip_fraction"].item() == 1.0
    loss.backward()
    assert logps.grad.abs().item() == 0.0


def test_clipping_lower_side_negative_advantage():
    # ratio 0.5 < 1 - 0.3 with A = -2: min(0.5 * -2, 0.7 * -2) = -1.4 -> loss 1.4
    logps = torch.full((1, 1), math.log(0.5), requires_grad=True)
    loss, metrics = policy_loss(logps, torch.zeros(1, 1), torch.tensor([-2.0]), torch.ones(1, 1), eps_low=0.3)
    assert loss.item() == pytest.approx(1.4)
    assert metrics["clip_fraction"].item() == 1.0
    loss.backward()
    assert logps.grad.abs().item() == 0.0


def test_clipping_is_asymmetric_and_inactive_on_the_helpful_side():
    # ratio 1.5 with A = -1 is not clipped (min picks the unclipped -1.5): loss 1.5, gradient flows
    logps = torch.full((1, 1), math.log(1.5), requires_grad=True)
    loss, metrics = policy_loss(logps, torch.zeros(1, 1), torch.tensor([-1.0]), torch.ones(1, 1))
    assert loss.item() == pytest.approx(1.5)
    assert metrics["clip_fraction"].item() == 0.0
    loss.backward()
    assert logps.grad.item() == pytest.approx(1.5)  # d(-rho * A)/d logp = -A * rho = 1.5
    # eps_high = 0.6 lets ratio 1.5 through with A = +1
    loss, _ = policy_loss(torch.full((1, 1), math.log(1.5)), torch.zeros(1, 1), torch.tensor([1.0]),
                          torch.ones(1, 1), eps_low=0.2, eps_high=0.6)
    assert loss.item() == pytest.approx(-1.5)


def test_k3_kl_by_hand():
    # ref - logp = log(2): exp(log 2) - log 2 - 1 = 1 - log 2
    kl = k3_kl(torch.tensor([0.0]), torch.tensor([math.log(2.0)]))
    assert kl.item() == pytest.approx(1 - math.log(2.0))
    assert k3_kl(torch.tensor([0.3]), torch.tensor([0.3])).item() == 0.0


def test_kl_penalty_added_with_beta():
    logps = torch.zeros(1, 2)
    ref = torch.tensor([[math.log(2.0), 0.0]])
    loss, metrics = policy_loss(logps, logps, torch.tensor([0.0]), torch.ones(1, 2), ref_logps=ref, beta=0.5)
    # tokens: k3 = [1 - log 2, 0]; loss = 0.5 * mean = 0.25 * (1 - log 2)
    assert loss.item() == pytest.approx(0.25 * (1 - math.log(2.0)))
    assert metrics["kl"].item() == pytest.approx((1 - math.log(2.0)) / 2)
    with pytest.raises(ValueError, match="ref_logps"):
        policy_loss(logps, logps, torch.tensor([0.0]), torch.ones(1, 2), beta=0.1)


def test_token_vs_sequence_aggregation():
    logps = torch.zeros(2, 3)
    adv = torch.tensor([1.0, 3.0])
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]])
    token, _ = policy_loss(logps, logps, adv, mask, aggregation="token")
    sequence, _ = policy_loss(logps, logps, adv, mask, aggregation="sequence")
    # token: (-1 - 3 - 3 - 3) / 4 = -2.5 ; sequence: mean(-1, -3) = -2
    assert token.item() == pytest.approx(-2.5)
    assert sequence.item() == pytest.approx(-2.0)
    with pytest.raises(ValueError, match="aggregation"):
        policy_loss(logps, logps, adv, mask, aggregation="sum")


def test_no_gradient_into_masked_tokens_even_with_extreme_values():
    logps = torch.tensor([[-1.0, -1.0, 50.0]], requires_grad=True)  # the pad position holds garbage
    old = torch.tensor([[-1.0, -1.2, -80.0]])
    ref = torch.tensor([[-1.0, -1.0, float("-inf")]])
    mask = torch.tensor([[1, 1, 0]])
    loss, metrics = policy_loss(logps, old, torch.tensor([1.0]), mask, ref_logps=ref, beta=0.1)
    loss.backward()
    assert torch.isfinite(loss)
    assert logps.grad[0, 2].item() == 0.0
    assert logps.grad[0, :2].abs().sum() > 0
    assert torch.isfinite(metrics["kl"]) and torch.isfinite(metrics["ratio"])


def test_fill_unscored_uses_the_groups_mean_of_the_scored():
    nan = float("nan")
    values = torch.tensor([nan, 0.2, 0.4, 1.0, nan, 0.0, nan, nan])  # groups of 2
    # (nan, 0.2) -> 0.2; (0.4, 1.0) unchanged; (nan, 0.0) -> 0.0; (nan, nan) -> 0 for both.
    filled = fill_unscored(values, 2)
    torch.testing.assert_close(filled, torch.tensor([0.2, 0.2, 0.4, 1.0, 0.0, 0.0, 0.0, 0.0]))


def test_gspo_uses_one_length_normalised_ratio_per_sequence():
    # One sequence, two valid tokens and a pad: log-ratios 0.1 and 0.3, so s = exp((0.1 + 0.3) / 2) = exp(0.2)
    # = 1.221403 for both tokens (inside the clip range 1 +- 0.5). Loss (token mean, A = 1) = (-s - s) / 2 = -s,
    # and s depends on each valid logp through the mean: d loss / d logp_t = -s * 1/2 = -0.610701 for both
    # (the token-level ratio would give -e^0.1/2 and -e^0.3/2 instead).
    logps = torch.tensor([[0.1, 0.3, 5.0]], requires_grad=True)
    old = torch.zeros(1, 3)
    mask = torch.tensor([[True, True, False]])
    loss, metrics = policy_loss(logps, old, torch.tensor([1.0]), mask, eps_low=0.5, eps_high=0.5,
                                importance_sampling_level="sequence")
    assert loss.item() == pytest.approx(-math.exp(0.2), abs=1e-6)
    loss.backward()
    torch.testing.assert_close(logps.grad, torch.tensor([[-math.exp(0.2) / 2, -math.exp(0.2) / 2, 0.0]]))
    assert metrics["ratio_min"].item() == pytest.approx(math.exp(0.2)) == metrics["ratio_max"].item()


def test_gspo_clips_the_sequence_ratio():
    # s = exp(0.4) = 1.4918 > 1 + 0.2 with A > 0: the clipped term wins, constant, no gradient.
    logps = torch.tensor([[0.2, 0.6]], requires_grad=True)
    loss, metrics = policy_loss(logps, torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2, dtype=torch.bool),
                                importance_sampling_level="sequence")
    assert loss.item() == pytest.approx(-1.2)
    loss.backward()
    assert torch.equal(logps.grad, torch.zeros(1, 2)) and metrics["clip_fraction"].item() == 1.0


def test_dr_grpo_constant_aggregation_divides_by_rows_times_max_length():
    # Ratio 1 everywhere, so each valid token's loss is -A: row 0 (A = 1) has 3 valid tokens, row 1 (A = -2)
    # one. Sum = -3 + 2 = -1; rows x max_length = 2 x 4 = 8, loss = -1/8. Gradient -A/8 on valid tokens.
    logps = torch.zeros(2, 4, requires_grad=True)
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    loss, _ = policy_loss(logps, torch.zeros(2, 4), torch.tensor([1.0, -2.0]), mask, aggregation="constant",
                          max_length=4)
    assert loss.item() == pytest.approx(-1 / 8)
    loss.backward()
    expected = torch.tensor([[-1 / 8, -1 / 8, -1 / 8, 0.0], [2 / 8, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(logps.grad, expected)
    with pytest.raises(ValueError, match="max_length"):
        policy_loss(logps, torch.zeros(2, 4), torch.tensor([1.0, -2.0]), mask, aggregation="constant")
