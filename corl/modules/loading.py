"""Load a Janus model and processor: the embedded tiny default, or real weights from a local folder."""

from __future__ import annotations

from pathlib import Path

import torch

TINY = "tiny"
RANDOM_PRO_1B = "random:janus-pro-1b"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_janus(model: str, dtype: str = "float32", seed: int = 0):
    """``(JanusForConditionalGeneration, JanusProcessor)`` for ``model``.

    Args:
        model: ``tiny`` for the embedded randomly initialised model, ``random:janus-pro-1b`` for
            Janus-Pro-1B's architecture with random weights (GPU checks and benchmarks, no download),
            or a local folder in Hugging Face format (e.g. ``deepseek-community/Janus-Pro-1B``).
        dtype: parameter dtype, one of ``float32``, ``bfloat16``, ``float16``.
        seed: initialisation seed of the tiny model.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if model in (TINY, RANDOM_PRO_1B):
        from corl.modules.tiny import JANUS_PRO_1B, build_tiny_janus

        janus, processor = build_tiny_janus(JANUS_PRO_1B if model == RANDOM_PRO_1B else None, seed=seed)
        return janus.to(DTYPES[dtype]), processor
    path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"no Janus weights at {path} (config.json missing). Download them once, e.g. "
            f"`hf download deepseek-community/Janus-Pro-1B --local-dir {path}`, then point model.model at that "
            "folder; or use model: tiny for the embedded default."
        )
    from transformers import AutoProcessor, JanusForConditionalGeneration

    janus = JanusForConditionalGeneration.from_pretrained(path, dtype=DTYPES[dtype])
    processor = AutoProcessor.from_pretrained(path)
    return janus, processor
