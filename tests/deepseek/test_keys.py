"""The weight table against transformers' conversion script, restated here from its facts."""

import re

import pytest
import torch
from safetensors.torch import load_file

from corl.checkpoints import export
from corl.deepseek.keys import to_deepseek, to_hf
from corl.modules.tiny import build_tiny_janus

# DeepSeek -> transformers as transformers' convert_janus_weights_to_hf.py states it, in this test's own
# words: ordered substitutions on the whole name, qkv split in thirds on dim 0, pos_embed squeezed, the
# SigLIP pooling head and the codebook usage counter dropped.
DROPPED = [r"^vision_model\.vision_tower\.attn_pool\.", r"^gen_vision_model\.quantize\.codebook_used$"]
SUBSTITUTIONS = [
    (r"^vision_model\.vision_tower\.blocks\.(\d+)\.attn\.proj\.",
     r"model.vision_model.encoder.layers.\1.self_attn.projection_layer."),
    (r"^vision_model\.vision_tower\.blocks\.(\d+)\.attn\.", r"model.vision_model.encoder.layers.\1.self_attn."),
    (r"^vision_model\.vision_tower\.blocks\.(\d+)\.norm(\d)\.", r"model.vision_model.encoder.layers.\1.layer_norm\2."),
    (r"^vision_model\.vision_tower\.blocks\.", "model.vision_model.encoder.layers."),
    (r"^vision_model\.vision_tower\.pos_embed$", "model.vision_model.embeddings.position_embedding.weight"),
    (r"^vision_model\.vision_tower\.patch_embed\.proj\.", "model.vision_model.embeddings.patch_embedding."),
    (r"^vision_model\.vision_tower\.norm\.", "model.vision_model.post_layernorm."),
    (r"^gen_vision_model\.", "model.vqmodel."),
    (r"\.decoder\.conv_blocks\.", ".decoder.up."),
    (r"\.encoder\.conv_blocks\.", ".encoder.down."),
    (r"\.res\.", ".block."),
    (r"\.mid\.0\.", ".mid.block_1."),
    (r"\.mid\.1\.", ".mid.attn_1."),
    (r"\.mid\.2\.", ".mid.block_2."),
    (r"^gen_aligner\.layers\.0\.", "model.generation_aligner.fc1."),
    (r"^gen_aligner\.layers\.2\.", "model.generation_aligner.hidden_layers.0."),
    (r"^aligner\.layers\.0\.", "model.aligner.fc1."),
    (r"^aligner\.layers\.2\.", "model.aligner.hidden_layers.0."),
    (r"^gen_head\.output_mlp_projector\.", "model.generation_head.proj_out."),
    (r"^gen_head\.vision_head\.", "model.generation_head.vision_head."),
    (r"^gen_embed\.", "model.generation_embeddings."),
    (r"^language_model\.model\.", "model.language_model."),
    (r"^language_model\.lm_head\.", "lm_head."),
]


def script_direction(state):
    out = {}
    for name, tensor in state.items():
        if any(re.search(pattern, name) for pattern in DROPPED):
            continue
        new = name
        for pattern, replacement in SUBSTITUTIONS:
            new = re.sub(pattern, replacement, new)
        if ".self_attn.qkv." in new:
            for part, chunk in zip("qkv", torch.split(tensor, tensor.shape[0] // 3), strict=True):
                out[new.replace(".qkv.", f".{part}_proj.")] = chunk
        elif new.endswith("position_embedding.weight"):
            out[new] = tensor.squeeze(0)
        else:
            out[new] = tensor
    return out


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    model, processor = build_tiny_janus(seed=3)
    root = tmp_path_factory.mktemp("exports")
    return model, export(model, processor, root / "deepseek", "deepseek"), export(model, processor, root / "hf")


def test_the_conversion_scripts_direction_turns_the_deepseek_export_into_the_transformers_export(exports):
    _, deepseek, hf = exports
    converted = script_direction(load_file(deepseek / "model.safetensors"))
    expected = load_file(hf / "model.safetensors")
    assert sorted(converted) == sorted(expected)
    for name, tensor in expected.items():
        assert torch.equal(converted[name], tensor), name


def test_the_deepseek_export_has_deepseeks_names_shapes_and_extra_entries(exports):
    model, deepseek, _ = exports
    state = load_file(deepseek / "model.safetensors")
    vision = model.config.vision_config
    width, layers = vision.hidden_size, model.config.text_config.num_hidden_layers
    assert state["vision_model.vision_tower.blocks.0.attn.qkv.weight"].shape == (3 * width, width)
    assert state["vision_model.vision_tower.pos_embed"].shape == (1, vision.num_image_tokens, width)
    assert f"language_model.model.layers.{layers - 1}.self_attn.q_proj.weight" in state
    assert "language_model.lm_head.weight" in state and "gen_head.vision_head.weight" in state
    # the entries DeepSeek's model has and transformers' lacks: there, so its loader initialises nothing
    assert state["vision_model.vision_tower.attn_pool.kv.weight"].shape == (2 * width, width)
    assert state["vision_model.vision_tower.attn_pool.mlp.fc1.weight"].shape == (4 * width, width)
    assert state["vision_model.vision_tower.attn_pool.latent"].shape == (1, 1, width)
    assert state["gen_vision_model.quantize.codebook_used"].shape == (65536,)
    assert not any(name.startswith(("model.", "lm_head")) for name in state)


def test_both_directions_are_inverse_and_unknown_names_are_refused(exports):
    model, _, _ = exports
    state = model.state_dict()
    back = to_hf(to_deepseek(state))
    assert sorted(back) == sorted(state) and all(torch.equal(back[k], state[k]) for k in state)
    with pytest.raises(ValueError, match="'vision_model.vision_tower.cls_token' is not a Janus-Pro weight"):
        to_hf({"vision_model.vision_tower.cls_token": torch.zeros(1)})
    with pytest.raises(ValueError, match="'model.extra.weight' has no place"):
        to_deepseek({"model.extra.weight": torch.zeros(1)})
