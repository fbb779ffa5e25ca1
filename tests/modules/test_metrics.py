import math

import torch

from corl.modules.metrics import accumulate, skip_report


def test_accumulate_adds_means_and_keeps_ranges():
    total = {}
    accumulate(total, {"loss/text": 0.25, "text/ratio_min": 0.9, "text/ratio_max": 1.1})
    accumulate(total, {"loss/text": 0.5, "text/ratio_min": 0.95, "text/ratio_max": 1.3})
    assert total == {"loss/text": 0.75, "text/ratio_min": 0.9, "text/ratio_max": 1.3}
    accumulate(total, {"text/ratio_max": math.nan, "loss/text": 1.0})
    accumulate(total, {"text/ratio_max": 2.0})
    assert math.isnan(total["text/ratio_max"]) and total["loss/text"] == 1.75  # a NaN range stays NaN


def test_skip_report_names_what_is_not_finite():
    step = {"grad_norm": math.nan, "loss/image": 0.5, "image/ratio_min": 0.8, "image/ratio_max": math.inf}
    rewards = {"cycle": torch.tensor([0.5, float("nan"), 0.25, 0.75]), "total": torch.tensor([1.0, 2.0, 3.0, 4.0])}
    assert skip_report(step, rewards) == (
        "grad_norm nan; loss/image 0.5, image ratio in [0.8, inf]; reward/cycle mean 0.5 (1 NaN); "
        "reward/total mean 2.5 (0 NaN)"
    )
