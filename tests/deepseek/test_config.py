"""config.json in DeepSeek's layout: the release's fields for Janus-Pro-1B, exact round trips for any other size."""

import pytest
import torch

from corl.deepseek.config import CORL_CONFIG, architecture, deepseek_config, janus_config
from corl.modules.tiny import JANUS_PRO_1B, build_tiny_janus

# deepseek-ai/Janus-Pro-1B's config.json (the release), every field that shapes the model.
RELEASE = {
    "architectures": ["MultiModalityCausalLM"],
    "model_type": "multi_modality",
    "torch_dtype": "bfloat16",
    "language_config": {"hidden_size": 2048, "intermediate_size": 5632, "max_position_embeddings": 16384,
                        "model_type": "llama", "num_attention_heads": 16, "num_hidden_layers": 24,
                        "num_key_value_heads": 16, "torch_dtype": "bfloat16", "vocab_size": 102400},
    "vision_config": {"cls": "CLIPVisionTower", "model_type": "vision", "params": {
        "image_size": 384, "model_name": "siglip_large_patch16_384", "select_feature": "same", "select_layer": -1}},
    "aligner_config": {"cls": "MlpProjector", "model_type": "aligner", "params": {
        "depth": 2, "input_dim": 1024, "n_embed": 2048, "projector_type": "mlp_gelu"}},
    "gen_aligner_config": {"cls": "MlpProjector", "model_type": "gen_aligner", "params": {
        "depth": 2, "input_dim": 8, "n_embed": 2048, "projector_type": "mlp_gelu"}},
    "gen_head_config": {"cls": "vision_head", "model_type": "gen_head", "params": {
        "image_token_embed": 2048, "image_token_size": 16384, "n_embed": 2048}},
    "gen_vision_config": {"cls": "VQ-16", "model_type": "gen_vision", "params": {
        "image_token_size": 16384, "n_embed": 8}},
}


@pytest.fixture(scope="module")
def pro_1b():
    """Janus-Pro-1B's architecture (``random:janus-pro-1b``) on the meta device: its config, no weights."""
    with torch.device("meta"):
        model, _ = build_tiny_janus(JANUS_PRO_1B)
    return model.config


def token_ids(config):
    text = config.text_config
    return {"bos_token_id": text.bos_token_id, "eos_token_id": text.eos_token_id,
            "pad_token_id": text.pad_token_id, "image_token_id": config.image_token_id}


def test_janus_pro_1b_exports_the_releases_config(pro_1b):
    written = deepseek_config(pro_1b, "bfloat16")
    for key, value in RELEASE.items():
        assert written[key] == value, key
    assert CORL_CONFIG not in written, "Janus-Pro's sizes need nothing beyond DeepSeek's own fields"


def test_the_releases_config_reads_as_janus_pro_1bs_architecture(pro_1b):
    # What a user's download of deepseek-ai/Janus-Pro-1B turns into (its tokenizer gives the token ids).
    assert architecture(janus_config(RELEASE, token_ids(pro_1b))) == architecture(pro_1b)
    read = janus_config(RELEASE, token_ids(pro_1b))
    assert not read.tie_word_embeddings and not read.text_config.tie_word_embeddings  # DeepSeek's lm_head is its own


def test_sizes_deepseek_cannot_name_travel_exactly_and_other_llm_settings_are_written():
    model, _ = build_tiny_janus()
    model.config.text_config.rms_norm_eps = 1e-5
    written = deepseek_config(model.config, "float32")
    assert written["vision_config"]["params"]["model_name"] == "corl-custom"
    assert written["language_config"]["rms_norm_eps"] == 1e-5
    assert architecture(janus_config(written, token_ids(model.config))) == architecture(model.config)


def test_a_tower_corl_cannot_size_is_refused(pro_1b):
    other = {**RELEASE, "vision_config": {**RELEASE["vision_config"], "params": {
        **RELEASE["vision_config"]["params"], "model_name": "siglip_so400m_patch14_384"}}}
    with pytest.raises(ValueError, match="vision tower 'siglip_so400m_patch14_384' is not one corl can size"):
        janus_config(other, token_ids(pro_1b))
