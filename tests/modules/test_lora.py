"""LoRA: adapters on the LLM's decoder layers only, the reference without them, merging by hand."""

import pytest
import torch
from torch import nn

from corl.modules.lora import (
    AdaptersOff,
    LoRA,
    adapter_layers,
    adapter_weights,
    adapters_disabled,
    add_adapters,
    merge_adapters,
)
from corl.modules.tiny import build_tiny_janus


def test_merge_adapters_by_hand():
    state = {
        "proj.base_layer.weight": torch.tensor([[1.0, 0.0], [0.0, 1.0]]),  # W [out 2, in 2]
        "proj.base_layer.bias": torch.tensor([0.5, -0.5]),
        "proj.lora_A.default.weight": torch.tensor([[1.0, 2.0]]),  # A [r 1, in 2]
        "proj.lora_B.default.weight": torch.tensor([[3.0], [-1.0]]),  # B [out 2, r 1]
        "norm.weight": torch.tensor([7.0]),
    }
    merged = merge_adapters(state, LoRA(r=1, alpha=0.5))  # scale alpha / r = 0.5
    # B @ A = [[3, 6], [-1, -2]]; W + 0.5 * B @ A = [[1 + 1.5, 3], [-0.5, 1 - 1]]
    torch.testing.assert_close(merged["proj.weight"], torch.tensor([[2.5, 3.0], [-0.5, 0.0]]))
    torch.testing.assert_close(merged["proj.bias"], torch.tensor([0.5, -0.5]))  # the bias is the base layer's
    assert set(merged) == {"proj.weight", "proj.bias", "norm.weight"}  # the plain model's names, no adapters
    assert "proj.base_layer.weight" in state, "the input is left as it was"


def test_adapter_weights_are_named_as_peft_names_them():
    state = {"layer.q_proj.base_layer.weight": torch.zeros(2, 2),
             "layer.q_proj.lora_A.default.weight": torch.ones(1, 2),
             "layer.q_proj.lora_B.default.weight": torch.ones(2, 1)}
    out = adapter_weights(state)
    assert set(out) == {"base_model.model.layer.q_proj.lora_A.weight", "base_model.model.layer.q_proj.lora_B.weight"}


def test_only_the_llm_decoder_projections_get_adapters_and_only_they_train(tiny_policy):
    policy = tiny_policy(lora=LoRA(r=4, target_modules=["q_proj", "v_proj", "down_proj"]))
    layers = len(policy.llm.layers)
    adapted = {name for name, m in policy.model.named_modules() if m in adapter_layers(policy.model)}
    assert adapted == {f"model.language_model.layers.{i}.{part}" for i in range(layers)
                       for part in ("self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj")}
    # The vision tower has q_proj / v_proj too: no adapters there.
    assert isinstance(policy.model.model.vision_model.encoder.layers[0].self_attn.q_proj, nn.Linear)
    trainable = [name for name, p in policy.model.named_parameters() if p.requires_grad]
    assert len(trainable) == layers * 3 * 2 and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    a = policy.llm.layers[0].self_attn.q_proj.lora_A["default"].weight
    assert a.shape == (4, 64)  # [r, in]
    assert not any(p.requires_grad for p in policy.model.lm_head.parameters())  # the text head is frozen too


@pytest.mark.parametrize(("settings", "message"), [
    ({"r": 0}, "model.lora.r must be a whole number of at least 1, got 0"),
    ({"r": 2.5}, "model.lora.r must be a whole number"),
    ({"alpha": 0.0}, "model.lora.alpha must be a positive number"),
    ({"dropout": 1.0}, r"model.lora.dropout must lie in \[0, 1\)"),
    ({"target_modules": ["q_proj", "lm_head"]}, r"model.lora.target_modules: \['lm_head'\]: .* down_proj, gate_proj"),
    ({"target_modules": []}, "model.lora.target_modules: none given"),
])
def test_bad_lora_settings_name_the_setting(settings, message):
    model, _ = build_tiny_janus(image_size=32, patch_size=8)
    with pytest.raises(ValueError, match=message):
        add_adapters(model, LoRA(**settings))


def test_adapters_are_not_added_twice():
    model, _ = build_tiny_janus(image_size=32, patch_size=8)
    add_adapters(model, LoRA(r=2))
    with pytest.raises(ValueError, match="already has LoRA adapters"):
        add_adapters(model, LoRA(r=2))


def text_rollout(policy, scenes, group_size=2):
    ids, mask, embeds, _ = policy.understanding_prompts(
        [s.qa_problem for s in scenes], [s.qa_type for s in scenes], [s.real_image for s in scenes]
    )
    return policy.sample_texts(ids, mask, embeds, group_size=group_size)


@pytest.mark.parametrize("mode", ["cfg", "conditional"])
def test_training_logprobs_equal_sampling_logprobs_with_adapters(lora_policy, scenes, mode):
    policy = lora_policy(image_logprob_mode=mode)
    images = policy.sample_images([s.prompt for s in scenes], group_size=2)
    torch.testing.assert_close(policy.logprobs(images).logps, images.old_logps, atol=1e-4, rtol=0)
    texts = text_rollout(policy, scenes)
    torch.testing.assert_close(policy.logprobs(texts).logps, texts.old_logps, atol=1e-4, rtol=0)


def test_adapters_are_float32_on_a_bfloat16_base_and_logprobs_stay_consistent(scenes):
    from corl.modules.policy import JanusPolicy

    model, processor = build_tiny_janus(image_size=32, patch_size=8, seed=0)
    policy = JanusPolicy(model.to(torch.bfloat16), processor, cfg_weight=3.0, lora=LoRA(r=4))
    dtypes = {name: p.dtype for name, p in policy.model.named_parameters()}
    assert {d for n, d in dtypes.items() if ".lora_" in n} == {torch.float32}
    assert {d for n, d in dtypes.items() if ".lora_" not in n} == {torch.bfloat16}
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if ".lora_B." in name:
                p.normal_(0.0, 0.3)
    images = policy.sample_images([s.prompt for s in scenes], group_size=2)
    torch.testing.assert_close(policy.logprobs(images).logps, images.old_logps, atol=1e-4, rtol=0)


def test_adapter_dropout_acts_only_where_gradients_are_taken(lora_policy, scenes):
    policy = lora_policy(LoRA(r=4, dropout=0.5))
    policy.train()
    assert not any(m.training for m in policy.modules()), "the policy stays in eval mode"
    images = policy.sample_images([s.prompt for s in scenes], group_size=2)
    with torch.no_grad():  # a replay of pi_old, or the reference: no dropout, the sampling distribution
        torch.testing.assert_close(policy.logprobs(images).logps, images.old_logps, atol=1e-4, rtol=0)
    trained = policy.logprobs(images).logps  # the loss's forward: the adapters' input is dropped
    assert trained.requires_grad and (trained - images.old_logps).abs().max() > 1e-3


def test_reference_is_the_base_model_with_no_second_copy(tiny_policy, lora_policy, scenes):
    base, policy = tiny_policy(), lora_policy()
    reference = policy.make_reference()
    assert isinstance(reference, AdaptersOff) and not isinstance(reference, nn.Module)
    with reference.weights() as weights:  # the policy's own modules, not a copy
        assert weights["llm"] is policy.llm and weights["lm_head"] is policy.model.lm_head
    images = base.sample_images([s.prompt for s in scenes], group_size=2)
    texts = text_rollout(base, scenes)
    with torch.no_grad():
        torch.testing.assert_close(policy.logprobs(images, reference).logps, base.logprobs(images).logps,
                                   atol=1e-5, rtol=0)
        torch.testing.assert_close(policy.logprobs(texts, reference).logps, base.logprobs(texts).logps,
                                   atol=1e-5, rtol=0)
        assert (policy.logprobs(images).logps - base.logprobs(images).logps).abs().max() > 1e-2, "adapters matter"
    trainable = [p for p in policy.parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n for n, p in policy.named_parameters() if p.requires_grad), \
        "switching the adapters back on leaves them trainable, and nothing else"


def test_adapters_disabled_is_undone_after_an_error(tiny_policy):
    policy = tiny_policy(lora=LoRA(r=2))
    with pytest.raises(RuntimeError), adapters_disabled(policy.llm):
        raise RuntimeError("inside")
    assert not any(layer.disable_adapters for layer in adapter_layers(policy.llm))
