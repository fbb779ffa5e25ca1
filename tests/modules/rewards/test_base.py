import pytest
import torch

from corl.modules.rewards import TEXT_REWARDS, TextReward, format_reward


def test_builtin_names_resolve():
    assert set(TEXT_REWARDS) == {"format", "accuracy", "mcq_accuracy", "oe_accuracy"}
    reward = TextReward("format", weight=0.5)
    assert reward.name == "format" and reward.weight == 0.5
    torch.testing.assert_close(reward(["<think>a</think><answer>b</answer>", "nope"]), torch.tensor([1.0, 0.0]))


def test_import_path_and_callable():
    by_path = TextReward("corl.modules.rewards.text:format_reward")
    assert by_path.fn is format_reward and by_path.name == "format_reward"
    assert TextReward(format_reward, name="fmt").name == "fmt"


def test_kwargs_reach_the_function():
    strict = TextReward("oe_accuracy")
    lenient = TextReward("oe_accuracy", kwargs={"lenient": True})
    assert strict(["two"], qa_solution=["2"]).item() == 0.0
    assert lenient(["two"], qa_solution=["2"]).item() == 1.0


def test_none_scores_become_nan():
    reward = TextReward(lambda completions, **_: [None, 1.0], name="partial")
    values = reward(["a", "b"])
    assert values[0].isnan() and values[1] == 1.0


@pytest.mark.parametrize("fn, message", [
    ("accuracyy", "unknown text reward 'accuracyy'"),
    ("corl.nope:fn", "cannot import text reward"),
    ("corl.modules.rewards.text:nope", "cannot import text reward"),
])
def test_bad_names_are_explained(fn, message):
    with pytest.raises(ValueError, match=message):
        TextReward(fn)


def test_wrong_number_of_scores_is_an_error():
    reward = TextReward(lambda completions, **_: [1.0], name="short")
    with pytest.raises(ValueError, match="'short' returned 1 scores for 2 completions"):
        reward(["a", "b"])
