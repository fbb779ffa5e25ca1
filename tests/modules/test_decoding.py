import pytest
import torch

from corl.modules.decoding import resolve_mode


def sample_both_ways(policy, sample):
    """The same sampling with one prefill per prompt and with one per row, from the same seed."""
    results = []
    for once in (True, False):
        policy.sampler.settings.prefill_once = once
        torch.manual_seed(0)
        results.append(sample())
    return results


def test_images_prefilled_once_per_prompt_sample_the_same_tokens(tiny_policy, scenes):
    policy = tiny_policy(image_logprob_mode="cfg")
    once, per_row = sample_both_ways(policy, lambda: policy.sample_images([s.prompt for s in scenes], 4))
    assert torch.equal(once.tokens, per_row.tokens)
    torch.testing.assert_close(once.old_logps, per_row.old_logps, atol=1e-5, rtol=0)
    torch.testing.assert_close(policy.logprobs(once).logps, once.old_logps, atol=1e-4, rtol=0)


def test_answers_prefilled_once_per_example_sample_the_same_tokens(tiny_policy, scenes):
    policy = tiny_policy(max_completion_tokens=10)
    ids, mask, embeds, _ = policy.understanding_prompts(
        [s.qa_problem for s in scenes], [s.qa_type for s in scenes], [s.real_image for s in scenes]
    )
    once, per_row = sample_both_ways(policy, lambda: policy.sample_texts(ids, mask, embeds, 4))
    assert torch.equal(once.completion_ids, per_row.completion_ids) and once.texts == per_row.texts
    torch.testing.assert_close(once.old_logps, per_row.old_logps, atol=1e-5, rtol=0)
    torch.testing.assert_close(policy.logprobs(once).logps, once.old_logps, atol=1e-4, rtol=0)


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
    image_loop = policy.sampler._loop("image")
    policy.sample_images([s.prompt for s in scenes], 2)
    assert policy.sampler._loop("image") is image_loop and policy.sampler._loop("text") is not image_loop


def greedy_step(policy):
    """A next_fn that decodes greedily from the text head (deterministic, so two paths can be compared)."""
    embed = policy.llm.get_input_embeddings()
    seen = []

    def next_fn(logits, index):
        token = logits.argmax(-1)
        if index == 0:
            seen.clear()
        seen.append(token)
        return embed(token)[:, None], None

    return next_fn, seen


def decode(loop, policy, length, steps=5, seed=0):
    generator = torch.Generator().manual_seed(seed + length)
    ids = torch.randint(10, 200, (2, length), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, : length // 2] = 0  # the second prompt is shorter: left padding inside the batch too
    next_fn, seen = greedy_step(policy)
    loop.run(policy.llm.get_input_embeddings()(ids), mask, torch.tensor([0, 0, 1, 1]), steps, next_fn)
    return torch.stack(seen, 1)


def counting_loop(policy, counter, name="text"):
    from corl.modules.decoding import DecodeLoop

    return DecodeLoop(policy.llm, policy.model.lm_head, "captured", name=name,
                      compiler=lambda fn: torch.compile(fn, backend=counter, dynamic=False))


def test_the_captured_step_compiles_per_bucket_not_per_prompt_length(tiny_policy):
    from torch._dynamo.testing import CompileCounter

    from corl.modules.decoding import BUCKET, DecodeLoop

    torch._dynamo.reset()
    policy, counter = tiny_policy(), CompileCounter()
    loop = counting_loop(policy, counter)
    eager = DecodeLoop(policy.llm, policy.model.lm_head, "eager")
    lengths = [3, 7, 12, 20, 33, 50, 9, 64]  # eight distinct prompt lengths, one bucket
    for length in lengths:
        assert torch.equal(decode(loop, policy, length), decode(eager, policy, length)), length
        if length == lengths[0]:
            first = counter.frame_count
    assert first >= 1 and counter.frame_count == first, "a new prompt length must not compile again"
    assert len(loop._shapes) == 1 and loop.capacity == BUCKET  # one cache, reused and reset
    decode(loop, policy, BUCKET + 5)  # a longer prompt grows the capacity by a bucket: one more graph
    assert counter.frame_count == 2 * first and loop.capacity == 2 * BUCKET
    for length in (4, 40, 100):  # shorter prompts now fit the grown capacity: nothing new
        assert torch.equal(decode(loop, policy, length), decode(eager, policy, length))
    assert counter.frame_count == 2 * first
    stats = loop.stats.take()
    assert stats.eager_steps == 0 and stats.fallbacks == 0 and stats.compiled_shapes == 2
    assert stats.captured_steps == 12 * 4  # 12 rollouts of 5 steps: the first token comes from the prefill


def test_image_and_text_loops_have_recompile_budgets_of_their_own(tiny_policy):
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    policy, counter = tiny_policy(), CompileCounter()
    image, text = counting_loop(policy, counter, "image"), counting_loop(policy, counter, "text")
    with torch._dynamo.config.patch(recompile_limit=1), pytest.warns(UserWarning, match="past torch's recompile"):
        decode(image, policy, 10)
        decode(text, policy, 10, steps=4)  # another shape, in the other loop: its own budget
        assert image.stats.fallbacks == 0 and text.stats.fallbacks == 0
        expected = decode(image, policy, 10, steps=6)
        fell_back = decode(image, policy, 10, steps=6)  # a second shape in one loop: past its budget of 1
    assert image.stats.fallbacks == 1 and image.stats.eager_steps > 0, "counted, not silent"
    assert torch.equal(fell_back, expected)
    assert text.stats.captured_steps == 3 and text.stats.fallbacks == 0


def test_a_failure_mid_step_restarts_the_rollout_eagerly_without_advancing_the_cache_twice(tiny_policy):
    from torch._dynamo.testing import CompileCounter

    from corl.modules.decoding import DecodeLoop

    policy = tiny_policy()
    eager = DecodeLoop(policy.llm, policy.model.lm_head, "eager")
    loop = counting_loop(policy, CompileCounter())
    compiled, calls = loop._compiled, []

    def flaky(next_embeds):
        calls.append(1)
        if len(calls) == 3:  # part of the cache is written, then the step fails
            loop._forward(next_embeds)
            raise RuntimeError("CUDA graph capture failed")
        return compiled(next_embeds)

    loop._compiled = flaky
    with pytest.warns(UserWarning, match="starts again from its prefill"):
        tokens = decode(loop, policy, 12, steps=6)
    assert torch.equal(tokens, decode(eager, policy, 12, steps=6))
    assert loop.mode == "eager" and loop.stats.restarts == 1 and loop.stats.fallbacks == 1
    decode(loop, policy, 12, steps=6)
    assert len(calls) == 3, "eager for good after a failed capture"


def test_the_cache_keyword_follows_the_installed_transformers(tiny_policy):
    import inspect

    from corl.modules.decoding import cache_keyword

    llm = tiny_policy().llm
    keyword = cache_keyword(llm)
    assert keyword in inspect.signature(llm.forward).parameters and keyword in ("cache", "past_key_values")

    class Neither(torch.nn.Module):
        def forward(self, inputs_embeds, **kwargs):
            return inputs_embeds

    with pytest.raises(TypeError, match="neither"):
        cache_keyword(Neither())
