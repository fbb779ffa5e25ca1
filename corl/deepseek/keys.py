"""Weight names and shapes: one table of facts, read in both directions.

Each rule pairs a name prefix in DeepSeek's layout with the prefix transformers' Janus classes use
(``{}`` stands for one path segment, e.g. a layer index). The first rule whose prefix matches a name
renames it, in either direction, so the more specific rules come first. Two facts are not renames:
SigLIP's fused ``qkv`` projection is transformers' ``q_proj``, ``k_proj`` and ``v_proj`` stacked along
the output dimension, and timm's position embedding has a leading batch dimension of one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Rule:
    """``deepseek`` <-> ``hf``; ``fused``: the DeepSeek tensor is these transformers tensors stacked on dim 0."""

    deepseek: str
    hf: str
    fused: tuple[str, ...] = ()
    batch_dim: bool = False  # DeepSeek's tensor has a leading dimension of one that transformers' lacks


_TOWER = "vision_model.vision_tower."
_LAYERS = "model.vision_model.encoder.layers.{}."
RULES = (
    # SigLIP vision tower: timm's VisionTransformer <-> JanusVisionModel
    Rule(_TOWER + "patch_embed.proj.", "model.vision_model.embeddings.patch_embedding."),
    Rule(_TOWER + "pos_embed", "model.vision_model.embeddings.position_embedding.weight", batch_dim=True),
    Rule(_TOWER + "blocks.{}.norm1.", _LAYERS + "layer_norm1."),
    Rule(_TOWER + "blocks.{}.norm2.", _LAYERS + "layer_norm2."),
    Rule(_TOWER + "blocks.{}.attn.qkv.", _LAYERS + "self_attn.", fused=("q_proj.", "k_proj.", "v_proj.")),
    Rule(_TOWER + "blocks.{}.attn.proj.", _LAYERS + "self_attn.projection_layer."),
    Rule(_TOWER + "blocks.{}.mlp.", _LAYERS + "mlp."),
    Rule(_TOWER + "norm.", "model.vision_model.post_layernorm."),
    # the two MLP aligners: Sequential(Linear, GELU, Linear) <-> fc1 + hidden_layers
    Rule("aligner.layers.0.", "model.aligner.fc1."),
    Rule("aligner.layers.2.", "model.aligner.hidden_layers.0."),
    Rule("gen_aligner.layers.0.", "model.generation_aligner.fc1."),
    Rule("gen_aligner.layers.2.", "model.generation_aligner.hidden_layers.0."),
    # generation embeddings and head
    Rule("gen_embed.", "model.generation_embeddings."),
    Rule("gen_head.output_mlp_projector.", "model.generation_head.proj_out."),
    Rule("gen_head.vision_head.", "model.generation_head.vision_head."),
    # the VQ-16 tokenizer: conv_blocks / res / mid.0-2 <-> down|up / block / block_1, attn_1, block_2
    Rule("gen_vision_model.encoder.conv_blocks.{}.res.", "model.vqmodel.encoder.down.{}.block."),
    Rule("gen_vision_model.encoder.conv_blocks.", "model.vqmodel.encoder.down."),
    Rule("gen_vision_model.decoder.conv_blocks.{}.res.", "model.vqmodel.decoder.up.{}.block."),
    Rule("gen_vision_model.decoder.conv_blocks.", "model.vqmodel.decoder.up."),
    Rule("gen_vision_model.{}.mid.0.", "model.vqmodel.{}.mid.block_1."),
    Rule("gen_vision_model.{}.mid.1.", "model.vqmodel.{}.mid.attn_1."),
    Rule("gen_vision_model.{}.mid.2.", "model.vqmodel.{}.mid.block_2."),
    Rule("gen_vision_model.", "model.vqmodel."),
    # the Llama LLM
    Rule("language_model.model.", "model.language_model."),
    Rule("language_model.lm_head.", "lm_head."),
)

# In DeepSeek's model, not in transformers': timm's attention-pooling head of SigLIP (built because
# global_pool is "map", never run because the tower ignores its head) and the VQ codebook's usage
# counter (a training statistic). Read and dropped on the way in, written on the way out.
DEEPSEEK_ONLY = (_TOWER + "attn_pool.", "gen_vision_model.quantize.codebook_used")
CODEBOOK_USAGE_SIZE = 65536  # VQ-16's fixed buffer


def _match(name: str, prefix: str) -> tuple[tuple[str, ...], str] | None:
    """The segments ``{}`` stood for and the rest of ``name``, when ``name`` starts with ``prefix``."""
    match = re.compile(re.escape(prefix).replace(re.escape("{}"), r"([^.]+)")).match(name)
    return (match.groups(), name[match.end():]) if match else None


def _fill(prefix: str, segments: tuple[str, ...]) -> str:
    return prefix.format(*segments)


def to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A DeepSeek state dict in transformers' names and shapes; the DeepSeek-only entries dropped."""
    out = {}
    for name, tensor in state.items():
        if name.startswith(DEEPSEEK_ONLY):
            continue
        for rule in RULES:
            found = _match(name, rule.deepseek)
            if found is None:
                continue
            segments, rest = found
            if rule.fused:
                for part, chunk in zip(rule.fused, tensor.chunk(len(rule.fused)), strict=True):
                    out[_fill(rule.hf, segments) + part + rest] = chunk
            else:
                out[_fill(rule.hf, segments) + rest] = tensor.squeeze(0) if rule.batch_dim else tensor
            break
        else:
            raise ValueError(f"{name!r} is not a Janus-Pro weight in DeepSeek's layout (no rule in corl.deepseek.keys)")
    return out


def to_deepseek(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers state dict in DeepSeek's names and shapes (without the DeepSeek-only entries)."""
    out, stacks = {}, {}
    for name, tensor in state.items():
        for rule in RULES:
            if rule.fused:
                found = [(i, _match(name, rule.hf + part)) for i, part in enumerate(rule.fused)]
                found = [(i, hit) for i, hit in found if hit is not None]
                if found:
                    i, (segments, rest) = found[0]
                    stacks.setdefault(_fill(rule.deepseek, segments) + rest, {})[i] = tensor
                    break
                continue
            found = _match(name, rule.hf)
            if found is not None:
                segments, rest = found
                out[_fill(rule.deepseek, segments) + rest] = tensor.unsqueeze(0) if rule.batch_dim else tensor
                break
        else:
            raise ValueError(f"{name!r} has no place in DeepSeek's Janus layout (no rule in corl.deepseek.keys)")
    for name, parts in stacks.items():
        rule = next(r for r in RULES if r.fused and _match(name, r.deepseek))
        if len(parts) != len(rule.fused):
            raise ValueError(f"{name!r} needs all of {rule.fused}, found {len(parts)}")
        out[name] = torch.cat([parts[i] for i in range(len(rule.fused))])
    return out


def deepseek_only(width: int, mlp_hidden: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The entries DeepSeek's model has and transformers' lacks, filled so that loading them changes nothing.

    The pooling head is never run (the tower's ``ignore_head``), so its values cannot reach an output;
    it holds zeros, its LayerNorm scale ones. The codebook's usage counter starts at zero as in training.
    """
    pool = _TOWER + "attn_pool."
    shapes = {
        "latent": (1, 1, width), "q.weight": (width, width), "q.bias": (width,), "kv.weight": (2 * width, width),
        "kv.bias": (2 * width,), "proj.weight": (width, width), "proj.bias": (width,), "norm.bias": (width,),
        "mlp.fc1.weight": (mlp_hidden, width), "mlp.fc1.bias": (mlp_hidden,), "mlp.fc2.weight": (width, mlp_hidden),
        "mlp.fc2.bias": (width,),
    }
    out = {pool + name: torch.zeros(shape, dtype=dtype) for name, shape in shapes.items()}
    out[pool + "norm.weight"] = torch.ones(width, dtype=dtype)
    out[DEEPSEEK_ONLY[1]] = torch.zeros(CODEBOOK_USAGE_SIZE, dtype=dtype)
    return out
