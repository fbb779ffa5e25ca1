"""Names shared across corl, each defined once: built-in models, parameter dtypes, model-folder layouts."""

from __future__ import annotations

import torch

TINY = "tiny"  # the embedded, randomly initialised tiny Janus
TINY_WARM = "tiny-warm"  # the tiny Janus taught the procedural world (corl.warm.build), the demo's
RANDOM_PRO_1B = "random:janus-pro-1b"  # Janus-Pro-1B's architecture with random weights (GPU checks)
BUILT_IN = (TINY, TINY_WARM, RANDOM_PRO_1B)  # models named rather than read from a path

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

HF, DEEPSEEK = "hf", "deepseek"  # transformers' Janus layout, DeepSeek's original one
LAYOUTS = {"janus": HF, "multi_modality": DEEPSEEK}  # config.json's model_type -> the folder's layout
