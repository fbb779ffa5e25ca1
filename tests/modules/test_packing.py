import pytest
import torch

from corl.modules.packing import pack_rows, packed_mask, packed_positions


def test_rows_of_one_example_share_a_sequence_in_row_order():
    packing = pack_rows(torch.tensor([2, 0, 2, 2, 5, 0]))
    assert packing.blocks == 3
    assert packing.sequences.tolist() == [1, 0, 1, 1, 2, 0]
    assert packing.slots.tolist() == [0, 0, 1, 2, 0, 1]
    assert packing.sources.tolist() == [1, 0, 4]  # a row of examples 0, 2 and 5


def test_blocks_see_the_real_prompt_and_their_own_past_only():
    prompt_mask = torch.tensor([[0, 1, 1]])  # one left-padded prompt of two real tokens
    mask = packed_mask(prompt_mask, blocks=2, block_length=2)[0, 0]  # [7, 7]: prompt, block 0, block 1
    assert mask[3].tolist() == [False, True, True, True, False, False, False]
    assert mask[6].tolist() == [False, True, True, False, False, True, True]
    assert mask[2].tolist() == [False, True, True, False, False, False, False]  # the prompt stays causal
    assert mask[0, 0] and mask[0].sum() == 1  # a padding position attends to itself only
    positions = packed_positions(prompt_mask, blocks=2, block_length=2)
    assert positions.tolist() == [[0, 0, 1, 2, 3, 2, 3]]  # each block continues from the prompt


def _micro_batch(policy, scenes):
    ids, mask, embeds, _ = policy.understanding_prompts(
        [s.qa_problem for s in scenes], [s.qa_type for s in scenes], [s.real_image for s in scenes]
    )
    rollout = policy.sample_texts(ids, mask, embeds, group_size=4)
    return rollout.rows(torch.tensor([7, 0, 3, 11, 4, 1, 9]))  # groups of 3, 2 and 2 rows, shuffled


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_forward_gives_the_per_row_logprobs_and_gradients(tiny_policy, scenes, attention):
    policy = tiny_policy(max_completion_tokens=10)
    policy.llm.config._attn_implementation = attention
    rows = _micro_batch(policy, scenes)
    results = []
    for pack in (False, True):
        policy.scorer.settings.pack_groups = pack
        policy.zero_grad(set_to_none=True)
        logps = policy.logprobs(rows).logps
        (logps * torch.linspace(-1, 1, logps.numel()).view_as(logps)).sum().backward()
        results.append((logps.detach(), [p.grad for p in policy.trained_modules().parameters()]))
    (per_row, per_row_grads), (packed, packed_grads) = results
    torch.testing.assert_close(packed, per_row, atol=1e-5, rtol=0)
    torch.testing.assert_close(packed, rows.old_logps, atol=1e-4, rtol=0)
    for a, b in zip(per_row_grads, packed_grads, strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)


def test_packed_forward_runs_each_prompt_once(tiny_policy, scenes):
    policy = tiny_policy(max_completion_tokens=10)
    rows = _micro_batch(policy, scenes)
    seen = []
    policy.llm.register_forward_hook(lambda module, args, kwargs, out: seen.append(kwargs["inputs_embeds"].shape[0]),
                                     with_kwargs=True)
    policy.logprobs(rows).logps
    policy.scorer.settings.pack_groups = False
    policy.logprobs(rows).logps
    assert seen == [3, 7]
