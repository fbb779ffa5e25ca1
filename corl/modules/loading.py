"""Load a Janus model and processor: the embedded tiny default, or real weights from a local folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

from corl.names import DEEPSEEK, DTYPES, LAYOUTS, RANDOM_PRO_1B, TINY, TINY_WARM


def load_janus(model: str, dtype: str = "float32", seed: int = 0):
    """``(JanusForConditionalGeneration, JanusProcessor)`` for ``model``.

    Args:
        model: ``tiny`` for the embedded randomly initialised model,
            ``random:janus-pro-1b`` for Janus-Pro-1B's architecture with random weights (GPU checks
            and benchmarks, no download),
            a local folder in transformers' layout (e.g. a download of ``deepseek-community/Janus-Pro-1B``)
            or in DeepSeek's (``deepseek-ai/Janus-Pro-1B``, or ``corl export --format deepseek``),
            or a hub id, which transformers fetches into its cache where the machine is online.
        dtype: parameter dtype, one of ``float32``, ``bfloat16``, ``float16``.
        seed: initialisation seed of the tiny model (and of the warm start's training).
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if model == TINY_WARM:  # built by SFT, which itself loads models: resolved a layer up
        raise ValueError("model tiny-warm is built on first use by corl.models.load_named (it trains, so model "
                         "loading does not reach it); cold-start SFT starts from tiny, a folder or a checkpoint")
    if model in (TINY, RANDOM_PRO_1B):
        from corl.modules.tiny import JANUS_PRO_1B, build_tiny_janus

        janus, processor = build_tiny_janus(JANUS_PRO_1B if model == RANDOM_PRO_1B else None, seed=seed)
        check_processor(janus, processor, model)
        return janus.to(DTYPES[dtype]), processor
    path, local = model_source(model)
    if local and folder_format(path) == DEEPSEEK:
        from corl.deepseek.folder import load_deepseek

        janus, processor = load_deepseek(path, DTYPES[dtype])
        check_processor(janus, processor, str(path))
        return janus, processor
    from transformers import AutoProcessor, JanusForConditionalGeneration

    source = str(path) if local else model
    try:
        janus = JanusForConditionalGeneration.from_pretrained(source, dtype=DTYPES[dtype])
        processor = AutoProcessor.from_pretrained(source)
    except OSError as err:
        if local:
            raise
        raise FileNotFoundError(
            f"cannot load hub model {model!r} ({err}). Offline, download it once elsewhere "
            f"(`hf download {model} --local-dir DIR`) and set model.model to DIR."
        ) from err
    check_processor(janus, processor, source)
    return janus, processor


def load_processor(model: str, seed: int = 0):
    """``(JanusProcessor, image tokens per image)`` of ``model`` without loading its weights (``corl prompt``)."""
    if model in (TINY, TINY_WARM, RANDOM_PRO_1B):
        from corl.modules.tiny import JANUS_PRO_1B, JanusSizes, build_tiny_processor
        from corl.warm.sizes import WARM_SIZES

        sizes = {TINY: JanusSizes(), TINY_WARM: WARM_SIZES, RANDOM_PRO_1B: JANUS_PRO_1B}[model]
        processor = build_tiny_processor(sizes)
        return processor, processor.num_image_tokens
    path, local = model_source(model)
    if local and folder_format(path) == DEEPSEEK:
        from corl.deepseek.processor import read_processor

        processor = read_processor(path)
        return processor, processor.num_image_tokens
    from transformers import AutoConfig, AutoProcessor

    source = str(path) if local else model
    return AutoProcessor.from_pretrained(source), AutoConfig.from_pretrained(source).vision_config.num_image_tokens


def model_source(model: str) -> tuple[Path, bool]:
    """The folder ``model`` names and whether it holds a model; refused unless it does or names a hub id."""
    path = Path(model).expanduser()
    local = (path / "config.json").is_file()
    if not local and (path / "adapter_config.json").is_file():
        raise FileNotFoundError(
            f"{path} is a peft adapter folder (corl export --adapters-only), not a whole model: use the model its "
            "adapters were trained on, or the merged export of the run (corl export without --adapters-only)"
        )
    if not local and (path.exists() or not _looks_like_hub_id(model) or not on_hub(model)):
        raise FileNotFoundError(missing_model(path))
    return path, local


def missing_model(path: Path) -> str:
    """Why ``path`` cannot be loaded and the download that fixes it."""
    size = "7B" if "7b" in path.name.lower() else "1B"
    what = "has no config.json" if path.is_dir() else "does not exist"
    return (f"no Janus weights at {path} (the folder {what}). Download them once: `hf download "
            f"deepseek-community/Janus-Pro-{size} --local-dir {path}` (or deepseek-ai/Janus-Pro-{size}, DeepSeek's "
            "layout: corl reads both); or use model: tiny for the embedded default")


def on_hub(repo_id: str) -> bool:
    """Whether the Hugging Face hub has model ``repo_id``, asked once, briefly, and only when online.

    A name of two path parts may be a local folder not yet downloaded (``checkpoints/Janus-Pro-1B``):
    it is taken for a hub id only when the hub knows it, so a missing folder is reported as one at once.
    """
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        return False
    try:
        from huggingface_hub import HfApi

        HfApi().model_info(repo_id, timeout=5)
    except Exception:  # noqa: BLE001 - offline, unknown repository, gated: all mean "not a usable hub id"
        return False
    return True


def folder_format(path: Path) -> str:
    """``hf`` or ``deepseek``: the layout of a model folder, from its config.json; anything else is refused."""
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    kind = config.get("model_type")
    if kind in LAYOUTS:
        return LAYOUTS[kind]
    raise ValueError(
        f"{path} holds a model_type {kind!r} model (architectures {config.get('architectures')}), not Janus: corl "
        f"reads Janus in transformers' layout (model_type 'janus', e.g. deepseek-community/Janus-Pro-1B) or in "
        f"DeepSeek's (model_type 'multi_modality', e.g. deepseek-ai/Janus-Pro-1B)"
    )


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~"))


def check_processor(model, processor, source: str) -> None:
    """Refuse a processor that does not fit the model: a wrong tokenizer silently trains garbage."""
    config = model.config
    tokenizer = processor.tokenizer
    problems = []
    if len(tokenizer) > config.text_config.vocab_size:
        problems.append(f"the tokenizer has {len(tokenizer)} tokens, the model's vocabulary only "
                        f"{config.text_config.vocab_size}")
    image_id = tokenizer.convert_tokens_to_ids(getattr(processor, "image_token", None) or "")
    if image_id != config.image_token_id:
        problems.append(f"the processor's image token has id {image_id}, the model expects {config.image_token_id}")
    expected = config.vision_config.num_image_tokens
    if getattr(processor, "num_image_tokens", expected) != expected:
        problems.append(f"the processor expands an image to {processor.num_image_tokens} tokens, "
                        f"the model uses {expected}")
    if problems:
        raise ValueError(f"processor and model of {source} do not match: " + "; ".join(problems))
