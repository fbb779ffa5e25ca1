"""FSDP units, gathering for rollouts, and activation checkpointing (the two-process run is in test_distributed)."""

import pytest
import torch
import torch.distributed as dist
from torch import nn

from corl.modules.sharding import Sharding, checkpoint_layers, checkpointing_paused, gathered, shard, sharded_units
from corl.modules.tiny import build_tiny_janus


def test_units_are_embedding_layers_norm_and_head_in_forward_order(tiny_policy):
    policy = tiny_policy()
    llm = policy.llm
    units = sharded_units(policy.trained_modules())
    assert units == [llm.embed_tokens, *llm.layers, llm.norm, policy.model.lm_head]
    trained = {id(p) for p in policy.trained_modules().parameters()}
    assert {id(p) for unit in units for p in unit.parameters()} == trained  # every trained weight, once


def test_a_tied_text_head_is_refused_with_advice():
    model, processor = build_tiny_janus(image_size=32, patch_size=8, tie_word_embeddings=True)
    trained = nn.ModuleDict({"llm": model.model.language_model, "lm_head": model.lm_head})
    with pytest.raises(ValueError, match="untied text head"):
        sharded_units(trained)


def test_gathering_without_sharding_changes_nothing(tiny_policy):
    policy = tiny_policy()
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    with gathered(policy):
        pass
    assert all(torch.equal(before[k], v) for k, v in policy.state_dict().items())


@pytest.fixture
def single_process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.filterwarnings("ignore")
def test_sharded_policy_is_whole_inside_gathered_and_sharded_after(tiny_policy, scenes, single_process_group):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor

    policy = tiny_policy()
    shard(policy.trained_modules(), init_device_mesh("cpu", (1,)), Sharding(param_dtype=None))
    weight = lambda: policy.llm.layers[0].mlp.up_proj.weight  # noqa: E731 - FSDP swaps the parameter object
    assert isinstance(weight(), DTensor)
    with gathered(policy):
        assert not isinstance(weight(), DTensor)  # whole, and kept whole across the decode's many forwards
        rollout = policy.sample_images([s.prompt for s in scenes], 2)
        assert not isinstance(weight(), DTensor)
    assert isinstance(weight(), DTensor)
    # Training reads the sharded weights through FSDP's hooks: the same log-probs as sampling.
    assert torch.allclose(policy.logprobs(rollout).logps, rollout.old_logps, atol=1e-4)
    assert isinstance(weight(), DTensor)  # and resharded after the forward again


@pytest.mark.filterwarnings("ignore")
def test_sharded_lora_units_train_their_adapters_and_score_the_base_as_reference(tiny_policy, lora_policy, scenes,
                                                                                 single_process_group):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor

    base, policy = tiny_policy(), lora_policy()
    units = sharded_units(policy.trained_modules())
    trained = {id(p) for p in policy.trained_modules().parameters()}
    assert {id(p) for unit in units for p in unit.parameters()} == trained  # adapters included, each once
    shard(policy.trained_modules(), init_device_mesh("cpu", (1,)), Sharding(param_dtype=None))
    q_proj = policy.llm.layers[0].self_attn.q_proj
    # One unit per decoder layer holds its frozen base weights and its trainable adapters together.
    assert isinstance(q_proj.base_layer.weight, DTensor) and not q_proj.base_layer.weight.requires_grad
    assert isinstance(q_proj.lora_A["default"].weight, DTensor) and q_proj.lora_A["default"].weight.requires_grad
    reference = policy.make_reference()
    with gathered(policy), torch.no_grad():
        rollout = policy.sample_images([s.prompt for s in scenes], 2)
        ref_logps = policy.logprobs(rollout, reference).logps
    torch.testing.assert_close(ref_logps, base.logprobs(rollout).logps.detach(), atol=1e-5, rtol=0)
    logps = policy.logprobs(rollout).logps  # the sharded training forward, adapters on
    torch.testing.assert_close(logps, rollout.old_logps, atol=1e-4, rtol=0)
    logps.sum().backward()
    with_grad = {name for name, p in policy.named_parameters() if p.grad is not None}
    assert with_grad == {name for name, p in policy.named_parameters() if ".lora_" in name}


def test_activation_checkpointing_keeps_gradients_and_names(tiny_policy, scenes):
    def text_grads(policy):
        ids, mask, embeds, _ = policy.understanding_prompts(
            [s.qa_problem for s in scenes], [s.qa_type for s in scenes], [s.real_image for s in scenes]
        )
        torch.manual_seed(1)
        rollout = policy.sample_texts(ids, mask, embeds, 2)
        policy.logprobs(rollout).logps.sum().backward()
        return {k: p.grad for k, p in policy.named_parameters() if p.grad is not None}, rollout.completion_ids

    plain, checkpointed = tiny_policy(), tiny_policy()
    names = list(checkpointed.state_dict())
    checkpoint_layers(checkpointed.llm)
    assert list(checkpointed.state_dict()) == names
    (grads, tokens), (ck_grads, ck_tokens) = text_grads(plain), text_grads(checkpointed)
    assert torch.equal(tokens, ck_tokens)
    assert grads.keys() == ck_grads.keys() and grads
    for name, grad in grads.items():
        assert torch.allclose(grad, ck_grads[name], atol=1e-6), name


def test_checkpointing_is_paused_for_rollouts_and_restored(tiny_policy):
    from torch.distributed._composable import checkpoint

    policy = tiny_policy()
    checkpoint_layers(policy.llm)
    states = [checkpoint.state(layer) for layer in policy.llm.layers]
    with checkpointing_paused(policy.llm):
        assert not any(state.enable_hook for state in states)
    assert all(state.enable_hook for state in states)
    with checkpointing_paused(tiny_policy().llm):  # nothing checkpointed: nothing to pause
        pass
