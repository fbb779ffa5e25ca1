"""Merging arithmetic on state dicts, checked against numbers worked by hand."""

import pytest
import torch

from corl.merging import gaussian_band, gaussian_merge, linear_merge, task_arithmetic


def test_linear_merge_by_hand():
    a = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.0])}
    b = {"w": torch.tensor([3.0, 6.0]), "b": torch.tensor([4.0])}
    merged = linear_merge([a, b], [0.25, 0.75])
    torch.testing.assert_close(merged["w"], torch.tensor([2.5, 5.0]))  # 0.25 * 1 + 0.75 * 3 = 2.5
    torch.testing.assert_close(merged["b"], torch.tensor([3.0]))


def test_task_arithmetic_by_hand():
    base = {"w": torch.tensor([1.0, 1.0])}
    mc = {"w": torch.tensor([2.0, 1.0])}  # task vector (1, 0)
    oe = {"w": torch.tensor([1.0, 4.0])}  # task vector (0, 3)
    merged = task_arithmetic(base, [mc, oe], [1.0, 0.5])
    torch.testing.assert_close(merged["w"], torch.tensor([2.0, 2.5]))  # 1 + 1*1, 1 + 0.5*3


def test_gaussian_band_by_hand():
    d1 = torch.tensor([0.0, 2.0])  # mean 1, unbiased std sqrt(2)
    d2 = torch.tensor([1.0, 5.0])  # mean 3, unbiased std sqrt(8)
    lo, hi = gaussian_band([d1, d2], width=2.0)
    # mu = (1 + 3) / 2 = 2; s = min(sqrt 2, sqrt 8) = sqrt 2; band 2 -+ 2 sqrt 2 = (-0.828, 4.828)
    torch.testing.assert_close(lo, torch.tensor(2 - 2 * 2**0.5))
    torch.testing.assert_close(hi, torch.tensor(2 + 2 * 2**0.5))


def test_gaussian_merge_averages_the_bulk_and_keeps_outliers_whole():
    base = {"w": torch.tensor([1.0, 1.0, 1.0, 1.0])}
    mc = {"w": torch.tensor([1.1, 0.9, 1.0, 1.0])}  # deltas (0.1, -0.1, 0, 0): mean 0, std 0.0816
    oe = {"w": torch.tensor([1.0, 1.2, 1.0, 2.0])}  # deltas (0, 0.2, 0, 1): mean 0.3, std 0.476
    merged = gaussian_merge(base, [mc, oe], width=2.0)
    # mu = (0 + 0.3) / 2 = 0.15, s = 0.0816, band (0.15 - 0.163, 0.15 + 0.163) = (-0.0133, 0.3133):
    # mc's 0.1 is inside (x 1/2), its -0.1 outside (x 1), its zeros inside; oe's 0.2 and 0 inside, its 1 outside.
    expected = torch.tensor([
        1 + 0.5 * 0.1 + 0.5 * 0.0,  # 1.05
        1 - 0.1 + 0.5 * 0.2,        # 1.00
        1 + 0.0,                    # both zero deltas inside the band
        1 + 0.5 * 0.0 + 1.0,        # oe's outlier kept whole: 2.0
    ])
    torch.testing.assert_close(merged["w"], expected)


def test_gaussian_merge_is_the_average_when_every_delta_lies_in_the_bulk():
    torch.manual_seed(0)
    base = {"w": torch.randn(64, 64)}
    states = [{"w": base["w"] + 0.01 * torch.randn(64, 64).clamp(-1.5, 1.5)} for _ in range(2)]
    # |delta| <= 1.5 sigma-ish, so (with mu ~ 0 and s ~ 0.01) nothing leaves a 4-sigma band: the plain average.
    merged = gaussian_merge(base, states, width=4.0)
    torch.testing.assert_close(merged["w"], linear_merge(states, [0.5, 0.5])["w"])


def test_gaussian_merge_keeps_unchanged_tensors_and_buffers_and_takes_whole_deltas_of_single_elements():
    base = {"frozen": torch.ones(3), "scalar": torch.tensor([2.0]), "ids": torch.arange(3)}
    a = {"frozen": torch.ones(3), "scalar": torch.tensor([3.0]), "ids": torch.arange(3)}
    b = {"frozen": torch.ones(3), "scalar": torch.tensor([2.5]), "ids": torch.arange(3)}
    merged = gaussian_merge(base, [a, b])
    torch.testing.assert_close(merged["frozen"], torch.ones(3))  # zero deltas: zero
    torch.testing.assert_close(merged["scalar"], torch.tensor([3.5]))  # no std, empty band: 2 + 1 + 0.5
    assert merged["ids"].dtype == torch.int64 and merged["ids"].tolist() == [0, 1, 2]


def test_gaussian_merge_keeps_the_dtype_and_refuses_no_models():
    base = {"w": torch.zeros(4, dtype=torch.bfloat16)}
    merged = gaussian_merge(base, [{"w": torch.ones(4, dtype=torch.bfloat16)}])
    assert merged["w"].dtype == torch.bfloat16
    with pytest.raises(ValueError, match="at least one"):
        gaussian_merge(base, [])
