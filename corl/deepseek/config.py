"""Configuration in DeepSeek's layout: ``config.json`` of ``model_type`` "multi_modality" and the processor files.

DeepSeek's config names components rather than sizing them: the vision tower is a SigLIP by name
(``siglip_large_patch16_384``), the image tokenizer is "VQ-16" (its loader ignores the params beside
it), and only the LLM and the small MLPs carry sizes. So a model translates exactly when its tower and
tokenizer are the named ones, as every Janus-Pro release is. Any other model (the embedded tiny one)
is written with its transformers configuration under ``corl_janus_config`` beside DeepSeek's fields:
corl reads it back exactly; DeepSeek's own loader cannot build such a model and says so.
"""

from __future__ import annotations

from transformers import JanusConfig, LlamaConfig

CORL_CONFIG = "corl_janus_config"  # the exact transformers configuration, where DeepSeek's fields fall short

# DeepSeek's SigLIP_MODEL_CONFIG entry of the tower every Janus-Pro uses (janus/models/siglip_vit.py).
SIGLIP = {"siglip_large_patch16_384": {"patch_size": 16, "hidden_size": 1024, "num_hidden_layers": 24,
                                       "num_attention_heads": 16, "mlp_ratio": 4.0}}
# DeepSeek's "VQ-16" (janus/models/vq_model.py: ModelArgs defaults, ch 128 and 2 res blocks per level).
VQ_16 = {"base_channels": 128, "channel_multiplier": [1, 1, 2, 2, 4], "latent_channels": 256, "num_res_blocks": 2,
         "embed_dim": 8, "num_embeddings": 16384}
# What DeepSeek's LlamaConfig reads, the fields the released config carries ...
LLAMA_FIELDS = ("hidden_size", "intermediate_size", "max_position_embeddings", "num_attention_heads",
                "num_hidden_layers", "num_key_value_heads", "vocab_size")
# ... and those written only where they differ from LlamaConfig's defaults (transformers 4 and 5 agree on them).
LLAMA_DEFAULTS = {"rms_norm_eps": 1e-6, "rope_theta": 10000.0, "hidden_act": "silu", "attention_bias": False,
                  "mlp_bias": False}
# Fields of a configuration that do not describe the architecture.
_NOT_ARCHITECTURE = {"dtype", "torch_dtype", "transformers_version", "_name_or_path", "architectures",
                     "output_attentions", "output_hidden_states", "use_cache", "return_dict", "chunk_size_feed_forward",
                     "problem_type", "id2label", "label2id", "tokenizer_class"}


def deepseek_config(config: JanusConfig, dtype: str) -> dict:
    """``config.json`` in DeepSeek's layout for a transformers Janus configuration, its tensors in ``dtype``."""
    text, vision, vq = config.text_config, config.vision_config, config.vq_config
    model_name = next((name for name, sizes in SIGLIP.items()
                       if all(getattr(vision, key) == value for key, value in sizes.items())), "corl-custom")
    language = {key: getattr(text, key) for key in LLAMA_FIELDS}
    language.update({key: value for key, value in _llama_extras(text).items() if value != LLAMA_DEFAULTS[key]})
    mlp = {"cls": "MlpProjector", "params": {"depth": vision.depth, "input_dim": vision.hidden_size,
                                             "n_embed": vision.projection_dim, "projector_type": "mlp_gelu"}}
    out = {
        "aligner_config": {**mlp, "model_type": "aligner"},
        "architectures": ["MultiModalityCausalLM"],
        "gen_aligner_config": {"cls": "MlpProjector", "model_type": "gen_aligner", "params": {
            "depth": vq.num_hidden_layers, "input_dim": vq.embed_dim, "n_embed": vq.projection_dim,
            "projector_type": "mlp_gelu"}},
        "gen_head_config": {"cls": "vision_head", "model_type": "gen_head", "params": {
            "image_token_embed": vq.projection_dim, "image_token_size": vq.num_embeddings,
            "n_embed": vq.image_token_embed_dim}},
        "gen_vision_config": {"cls": "VQ-16", "model_type": "gen_vision", "params": {
            "image_token_size": vq.num_embeddings, "n_embed": vq.embed_dim}},
        "language_config": {**language, "model_type": "llama", "torch_dtype": dtype},
        "model_type": "multi_modality",
        "torch_dtype": dtype,
        "vision_config": {"cls": "CLIPVisionTower", "model_type": "vision", "params": {
            "image_size": vision.image_size, "model_name": model_name, "select_feature": "same",
            "select_layer": -1}},
    }
    token_ids = {"bos_token_id": text.bos_token_id, "eos_token_id": text.eos_token_id,
                 "pad_token_id": text.pad_token_id, "image_token_id": config.image_token_id}
    try:
        exact = architecture(janus_config(out, token_ids)) == architecture(config)
    except ValueError:
        exact = False
    if not exact:
        out[CORL_CONFIG] = config.to_dict()
    return out


def janus_config(config: dict, token_ids: dict[str, int]) -> JanusConfig:
    """The transformers configuration of a DeepSeek ``config.json``; ``token_ids`` from its tokenizer.

    Raises ValueError for a component DeepSeek's fields cannot size (an unknown tower or tokenizer).
    """
    if CORL_CONFIG in config:
        return JanusConfig(**{k: v for k, v in config[CORL_CONFIG].items() if k not in _NOT_ARCHITECTURE})
    language, vision = config["language_config"], _params(config, "vision_config")
    aligner, gen_aligner = _params(config, "aligner_config"), _params(config, "gen_aligner_config")
    gen_head, gen_vision = _params(config, "gen_head_config"), _params(config, "gen_vision_config")
    tower = SIGLIP.get(vision.get("model_name"))
    if tower is None:
        raise ValueError(f"vision tower {vision.get('model_name')!r} is not one corl can size "
                         f"(known: {sorted(SIGLIP)})")
    if config["gen_vision_config"].get("cls") != "VQ-16":
        raise ValueError(f"image tokenizer {config['gen_vision_config'].get('cls')!r} is not VQ-16")
    if gen_head["image_token_embed"] != gen_aligner["n_embed"]:
        raise ValueError("gen_head's image_token_embed differs from gen_aligner's n_embed: transformers' Janus "
                         "shares one width for both")
    extras = {key: language.get(key, default) for key, default in LLAMA_DEFAULTS.items()}
    rope_theta = extras.pop("rope_theta")
    text = LlamaConfig(
        **{key: language[key] for key in LLAMA_FIELDS}, **extras, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
        **{key: token_ids[key] for key in ("bos_token_id", "eos_token_id", "pad_token_id")},
    )
    image_size = vision["image_size"]
    return JanusConfig(
        text_config=text.to_dict(),
        vision_config={**tower, "image_size": image_size, "projection_dim": aligner["n_embed"],
                       "depth": aligner["depth"], "num_image_tokens": (image_size // tower["patch_size"]) ** 2},
        vq_config={**VQ_16, "num_embeddings": gen_vision["image_token_size"], "embed_dim": gen_vision["n_embed"],
                   "projection_dim": gen_aligner["n_embed"], "num_hidden_layers": gen_aligner["depth"],
                   "image_token_embed_dim": gen_head["n_embed"]},
        image_token_id=token_ids["image_token_id"],
        tie_word_embeddings=False,
    )


def architecture(config: JanusConfig) -> dict:
    """The fields of ``config`` that decide the model's shapes and computation, for comparison."""

    def strip(fields: dict) -> dict:
        return {key: strip(value) if isinstance(value, dict) else value
                for key, value in fields.items() if key not in _NOT_ARCHITECTURE}

    return strip(config.to_dict())


def _params(config: dict, key: str) -> dict:
    return dict(config[key].get("params", {}))


def _llama_extras(text: LlamaConfig) -> dict:
    rope = getattr(text, "rope_parameters", None) or {}
    return {"rms_norm_eps": text.rms_norm_eps, "rope_theta": rope.get("rope_theta", LLAMA_DEFAULTS["rope_theta"]),
            "hidden_act": text.hidden_act, "attention_bias": text.attention_bias, "mlp_bias": text.mlp_bias}
