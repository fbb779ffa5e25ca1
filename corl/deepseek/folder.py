"""Whole folders in DeepSeek's layout: ``corl export --format deepseek`` writes them, corl's loading reads them."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import JanusForConditionalGeneration, JanusProcessor

from corl.deepseek.config import deepseek_config, janus_config
from corl.deepseek.keys import deepseek_only, to_deepseek, to_hf
from corl.deepseek.processor import read_processor, write_processor
from corl.modules.tiny import set_generation_tokens

MODEL_TYPE = "multi_modality"
WEIGHTS = "model.safetensors"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # each alone, or in shards with a .index.json


def save_deepseek(model: JanusForConditionalGeneration, processor: JanusProcessor, out: str | Path) -> Path:
    """Write ``model`` and ``processor`` as DeepSeek's ``janus`` package loads ``deepseek-ai/Janus-Pro-1B``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = to_deepseek(model.state_dict())
    dtype = next(iter(state.values())).dtype
    vision = model.config.vision_config
    state.update(deepseek_only(vision.hidden_size, int(vision.hidden_size * vision.mlp_ratio), dtype))
    state = _unshared(state)
    save_file(state, str(out / WEIGHTS), metadata={"format": "pt"})  # transformers 4 reads "pt" files only
    config = deepseek_config(model.config, str(dtype).removeprefix("torch."))
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    write_processor(processor, out)
    return out


def load_deepseek(folder: str | Path, dtype: torch.dtype) -> tuple[JanusForConditionalGeneration, JanusProcessor]:
    """The transformers Janus and processor of a DeepSeek folder (a download of Janus-Pro, or a corl export)."""
    folder = Path(folder)
    processor = read_processor(folder)
    tokenizer = processor.tokenizer
    token_ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                 "pad_token_id": tokenizer.pad_token_id,
                 "image_token_id": tokenizer.convert_tokens_to_ids(processor.image_token)}
    try:
        config = janus_config(json.loads((folder / "config.json").read_text(encoding="utf-8")), token_ids)
        state = to_hf(read_weights(folder))
    except (KeyError, ValueError) as err:
        raise ValueError(f"{folder}: cannot read it as DeepSeek's Janus ({err})") from err
    with torch.device("meta"):
        expected = JanusForConditionalGeneration(config).state_dict()
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or extra or wrong:
        raise ValueError(f"{folder}: the weights do not fit its config.json: missing {missing[:5]}, unexpected "
                         f"{extra[:5]}, other shapes {wrong[:5]}")
    model = JanusForConditionalGeneration.from_pretrained(None, config=config, state_dict=state, dtype=dtype)
    set_generation_tokens(model, tokenizer)
    return model, processor


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The state dict of a folder: one safetensors or ``pytorch_model.bin`` file, or their shards and index."""
    for name in _WEIGHT_FILES:
        index = folder / f"{name}.index.json"
        files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else [name]
        if all((folder / file).is_file() for file in files):
            state = {}
            for file in files:
                state.update(_load(folder / file))
            return state
    raise FileNotFoundError(f"{folder} has no weights ({' or '.join(_WEIGHT_FILES)}, or their shards)")


def _load(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def _unshared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous tensors with storage of their own (safetensors refuses tied or overlapping ones)."""
    seen, out = set(), {}
    for name, tensor in state.items():
        pointer = tensor.untyped_storage().data_ptr()
        out[name] = tensor.contiguous() if pointer not in seen else tensor.clone()
        seen.add(pointer)
    return out
