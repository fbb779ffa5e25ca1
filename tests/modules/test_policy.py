import pytest
import torch


@pytest.mark.parametrize("chunk_tokens", [1024, 5])  # one chunk, or chunks of a few positions
@pytest.mark.parametrize("mode", ["cfg", "conditional"])
def test_image_training_logprobs_equal_sampling_logprobs(tiny_policy, scenes, mode, chunk_tokens):
    policy = tiny_policy(image_logprob_mode=mode, logprob_chunk_tokens=chunk_tokens)
    rollout = policy.sample_images([s.prompt for s in scenes], group_size=2)
    assert rollout.tokens.shape == (6, policy.num_image_tokens)
    recomputed = policy.logprobs(rollout).logps
    torch.testing.assert_close(recomputed, rollout.old_logps, atol=1e-4, rtol=0)


def test_cfg_and_conditional_logprobs_differ(tiny_policy, scenes):
    # Proves cfg mode really scores with the guided logits (and conditional mode without them).
    policy = tiny_policy(image_logprob_mode="cfg", cfg_weight=5.0)
    rollout = policy.sample_images([s.prompt for s in scenes[:1]], group_size=2)
    policy.scorer.settings.image_logprob_mode = "conditional"
    assert (policy.logprobs(rollout).logps - rollout.old_logps).abs().max() > 1e-2


def test_image_logprob_shift_is_checked(tiny_policy, scenes):
    # Scoring token k from the state at k (the reference code's off-by-one) must not match.
    policy = tiny_policy(image_logprob_mode="conditional")
    rollout = policy.sample_images([s.prompt for s in scenes[:1]], group_size=2)
    shifted = rollout.rows(torch.arange(2))
    shifted.tokens = torch.roll(rollout.tokens, 1, dims=1)
    assert (policy.logprobs(shifted).logps[:, 1:] - rollout.old_logps[:, :-1]).abs().max() > 1e-3


@pytest.mark.parametrize("pack_groups", [True, False])  # one forward per group's prompt, or per row
@pytest.mark.parametrize("chunk_tokens", [1024, 5])
def test_text_training_logprobs_equal_sampling_logprobs(tiny_policy, scenes, chunk_tokens, pack_groups):
    policy = tiny_policy(logprob_chunk_tokens=chunk_tokens, pack_groups=pack_groups)
    ids, mask, embeds, pixels = policy.understanding_prompts(
        [s.qa_problem for s in scenes], [s.qa_type for s in scenes], [s.real_image for s in scenes]
    )
    assert mask[:, 0].min() == 0 or mask.all(), "prompts of different lengths are left-padded"
    rollout = policy.sample_texts(ids, mask, embeds, group_size=3)
    assert rollout.completion_ids.shape[0] == 9 and len(rollout.texts) == 9
    recomputed = policy.logprobs(rollout).logps
    torch.testing.assert_close(recomputed, rollout.old_logps, atol=1e-4, rtol=0)
    assert (recomputed[~rollout.mask] == 0).all()


def test_text_stops_at_eos_and_masks_the_rest(tiny_policy, scenes):
    policy = tiny_policy(max_completion_tokens=10)
    eos = policy.tokenizer.eos_token_id
    # Make each row emit EOS with probability ~0.4 at every step, so rows end at different lengths.
    def push_eos(module, inputs, logits):
        logits[..., eos] += 100.0 * torch.bernoulli(torch.full(logits.shape[:-1], 0.4))
        return logits

    policy.model.lm_head.register_forward_hook(push_eos)
    ids, mask, embeds, _ = policy.understanding_prompts([scenes[0].qa_problem], ["MC"], [scenes[0].real_image])
    rollout = policy.sample_texts(ids, mask, embeds, group_size=4)
    lengths = rollout.completion_mask.sum(1)
    assert rollout.completion_ends_with_eos.all()
    assert len(set(lengths.tolist())) > 1 and lengths.max() < 10
    for row, length in enumerate(lengths.tolist()):
        assert rollout.completion_ids[row, length - 1] == eos  # EOS is the last valid token
        assert (rollout.completion_ids[row, length:] == policy.tokenizer.pad_token_id).all()


def test_real_image_encoded_once_per_example(tiny_policy, scenes):
    policy = tiny_policy()
    calls = []
    policy.model.model.vision_model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    ids, mask, embeds, _ = policy.understanding_prompts(
        [s.qa_problem for s in scenes], [s.qa_type for s in scenes], [s.real_image for s in scenes]
    )
    rollout = policy.sample_texts(ids, mask, embeds, group_size=4)
    policy.logprobs(rollout).logps
    assert calls == [len(scenes)]  # one batched pass over B images, not B * G, none in the log-prob pass


def test_unconditional_prompt_keeps_only_bos_and_boi(tiny_policy, scenes):
    policy = tiny_policy()
    ids, mask, uncond = policy.generation_prompts([s.prompt for s in scenes])
    tok = policy.tokenizer
    boi = tok.convert_tokens_to_ids(policy.processor.image_start_token)
    assert (ids[:, -1] == boi).all() and (uncond[:, -1] == boi).all()
    real = mask.bool() & (ids != tok.bos_token_id) & (ids != boi)
    assert (uncond[real] == tok.pad_token_id).all()
    assert (uncond[~real] == ids[~real]).all()


def test_policy_never_enters_train_mode(tiny_policy):
    policy = tiny_policy()
    policy.train()
    assert not any(module.training for module in policy.modules())


@pytest.mark.parametrize("tied", [True, False])
def test_only_the_llm_and_its_text_head_are_trainable(tied):
    from corl.modules.policy import JanusPolicy
    from corl.modules.tiny import build_tiny_janus

    model, processor = build_tiny_janus(image_size=32, patch_size=8, tie_word_embeddings=tied)
    policy = JanusPolicy(model, processor)
    trainable = {name for name, p in policy.model.named_parameters(remove_duplicate=False) if p.requires_grad}
    assert trainable and all(name.startswith(("model.language_model.", "lm_head.")) for name in trainable)
    assert "lm_head.weight" in trainable  # Janus-Pro-1B's head is untied: it must learn too
    for frozen in ("vision_model", "aligner", "vqmodel", "generation_embeddings", "generation_aligner",
                   "generation_head"):
        assert not any(p.requires_grad for p in getattr(policy.model.model, frozen).parameters())


def test_reference_is_a_frozen_copy(tiny_policy, scenes):
    policy = tiny_policy()
    reference = policy.make_reference()
    assert not any(p.requires_grad for p in reference.parameters())
    rollout = policy.sample_images([scenes[0].prompt], group_size=2)
    torch.testing.assert_close(policy.logprobs(rollout, reference).logps, rollout.old_logps, atol=1e-4, rtol=0)
    with torch.no_grad():
        for p in policy.llm.parameters():
            p.add_(0.05)
    assert (policy.logprobs(rollout, reference).logps - rollout.old_logps).abs().max() < 1e-4
    assert (policy.logprobs(rollout).logps - rollout.old_logps).abs().max() > 1e-3


def test_decoded_images_stay_on_device_in_range(tiny_policy, scenes):
    policy = tiny_policy()
    rollout = policy.sample_images([scenes[0].prompt], group_size=2)
    assert rollout.pixels.shape == (2, 3, 32, 32)
    assert rollout.pixels.device == policy.device
    assert rollout.pixels.min() >= -1 and rollout.pixels.max() <= 1


def test_logprobs_consistent_under_bf16_autocast(tiny_policy, scenes):
    # Mixed precision: fp32 weights, bf16 compute. Sampling and training must still see one dtype in
    # the KV cache and the inputs (the generation aligner returns bf16 under autocast).
    policy = tiny_policy(image_logprob_mode="cfg")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rollout = policy.sample_images([s.prompt for s in scenes[:2]], group_size=2)
        recomputed = policy.logprobs(rollout).logps
    assert (recomputed - rollout.old_logps).abs().max() < 0.05


def test_under_mixed_precision_rollouts_decode_from_a_copy_in_the_compute_dtype(tiny_policy, scenes):
    # fp32 masters under bf16 autocast: a decode step would cast every matrix again; the copy holds them in bf16.
    policy = tiny_policy(image_logprob_mode="cfg")
    calls = {"trained": 0}
    policy.llm.register_forward_hook(lambda *args: calls.__setitem__("trained", calls["trained"] + 1))
    prompts = [s.prompt for s in scenes[:2]]
    policy.sample_images(prompts, group_size=2)
    assert calls["trained"] > 0 and not policy.sampler._copies  # full precision: no copy
    calls["trained"] = 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rollout = policy.sample_images(prompts, group_size=2)
        assert calls["trained"] == 0, "the rollout decoded from the trained fp32 modules"
        copy = policy.sampler._copies[torch.bfloat16]
        assert copy.lm_head.weight.dtype == torch.bfloat16 and copy.llm.norm.weight.dtype == torch.float32
        assert copy.llm.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16
        recomputed = policy.logprobs(rollout).logps  # the training forward: fp32 masters under autocast
    assert (recomputed - rollout.old_logps).abs().max() < 0.05
    with torch.no_grad():  # an optimiser step changes the weights in place
        policy.model.lm_head.weight.mul_(1.5)
        policy.llm.layers[0].mlp.up_proj.weight.add_(0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ids, mask, embeds, _ = policy.understanding_prompts(
            [s.qa_problem for s in scenes[:2]], [s.qa_type for s in scenes[:2]], [s.real_image for s in scenes[:2]])
        answers = policy.sample_texts(ids, mask, embeds, 2)
        recomputed = policy.logprobs(answers).logps
    assert policy.sampler._copies[torch.bfloat16] is copy  # one copy, refreshed
    assert torch.equal(copy.lm_head.weight, policy.model.lm_head.weight.to(torch.bfloat16))
    assert torch.equal(copy.llm.layers[0].mlp.up_proj.weight, policy.llm.layers[0].mlp.up_proj.weight.bfloat16())
    assert (recomputed - answers.old_logps).abs().max() < 0.05
    assert all(key.startswith("model.") for key in policy.state_dict()), "the copy is not part of the weights"
    with pytest.raises(ValueError, match="decode_weights"):
        tiny_policy(decode_weights="bf16")
