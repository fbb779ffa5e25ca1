import pytest
import torch

from corl.modules.decoding import resolve_mode


def sample_both_ways(policy, sample):
    """The same sampling with one prefill per prompt and with one per row, from the same seed."""
    results = []
    for once in (True, False):
        policy.prefill_once = once
        torch.manual_seed(0)
        results.append(sample())
    return results


def test_images_prefilled_once_per_prompt_sample_the_same_tokens(tiny_policy, scenes):
    policy = tiny_policy(image_logprob_mode="cfg")
    once, per_row = sample_both_ways(policy, lambda: policy.sample_images([s.prompt for s in scenes], 4))
    assert torch.equal(once.tokens, per_row.tokens)
    torch.testing.assert_close(once.old_logps, per_row.old_logps, atol=1e-5, rtol=0)
    torch.testing.assert_close(policy.image_logprobs(once), once.old_logps, atol=1e-4, rtol=0)


def test_answers_prefilled_once_per_example_sample_the_same_tokens(tiny_policy, scenes):
    policy = tiny_policy(max_completion_tokens=10)
    ids, mask, embeds, _ = policy.understanding_prompts(
        [s.qa_problem for s in scenes], [s.qa_type for s in scenes], [s.real_image for s in scenes]
    )
    once, per_row = sample_both_ways(policy, lambda: policy.sample_texts(ids, mask, embeds, 4))
    assert torch.equal(once.completion_ids, per_row.completion_ids) and once.texts == per_row.texts
    torch.testing.assert_close(once.old_logps, per_row.old_logps, atol=1e-5, rtol=0)
    torch.testing.assert_close(policy.text_logprobs(once), once.old_logps, atol=1e-4, rtol=0)


def test_one_prefill_per_prompt(tiny_policy, scenes):
    policy = tiny_policy()
    widths = []
    policy.llm.register_forward_hook(lambda module, args, kwargs, out: widths.append(kwargs["inputs_embeds"].shape[:2]),
                                     with_kwargs=True)
    policy.sample_images([s.prompt for s in scenes], 4)
    prefill, *steps = widths
    assert prefill[0] == 2 * len(scenes), "each conditional and unconditional prompt once, not G times"
    assert {tuple(s) for s in steps} == {(2 * len(scenes) * 4, 1)}, "then every row, one token per step"


def test_decode_modes():
    assert resolve_mode("auto", torch.device("cpu")) == "eager"
    assert resolve_mode("auto", torch.device("cuda")) == "captured"
    with pytest.raises(ValueError, match="needs a CUDA device"):
        resolve_mode("captured", torch.device("cpu"))
    with pytest.raises(ValueError, match="model.decode must be"):
        resolve_mode("fast", torch.device("cpu"))


def test_each_task_keeps_one_decode_loop_across_rollouts(tiny_policy, scenes):
    # A captured step is compiled per loop: a new loop every rollout would compile (and capture) every time.
    policy = tiny_policy()
    policy.sample_images([s.prompt for s in scenes], 2)
    image_loop = policy._decode_loop("image")
    policy.sample_images([s.prompt for s in scenes], 2)
    assert policy._decode_loop("image") is image_loop and policy._decode_loop("text") is not image_loop
