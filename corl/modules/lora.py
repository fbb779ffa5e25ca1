"""LoRA through peft: low-rank adapters on the LLM's decoder layers, everything else frozen.

The adapters are injected in place (``peft.inject_adapter_in_model``) into the Janus model the policy
holds, on linear projections of the LLM's decoder layers only: the token embedding, the text head,
the vision tower, the aligners, the VQ model and the generation embedding and head stay frozen, so
the optimiser gets the adapters and nothing else. Names stay the model's own, with peft's
``base_layer``, ``lora_A.default`` and ``lora_B.default`` under each adapted projection, so FSDP
units, activation checkpointing and the decode loop see the same modules as without LoRA.

The base weights never change, so the policy with its adapters switched off *is* the model it
started from: that is the KL reference of a LoRA run (``AdaptersOff``), with no second copy of the
weights.

Checkpoints hold the whole state, base and adapters. ``merge_adapters`` folds the adapters into the
base weights, ``W + (alpha / r) * B @ A``, for exports, merges and the next stage;
``save_adapters`` writes them as a peft adapter folder instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from peft import LoraConfig

ADAPTER = "default"  # peft's name of the (only) adapter, part of every adapter key in a checkpoint
LLM_PATH = "model.language_model"  # the LLM inside JanusForConditionalGeneration (JanusPolicy.llm)
PEFT_PREFIX = "base_model.model."  # where peft's adapter folders put the model's own names
LLAMA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class LoRA:
    """Low-rank adapters (LoRA, through peft) on the LLM's decoder layers; the rest of the model stays frozen.

    Args:
        r: rank of every adapter: ``A`` is ``[r, in]``, ``B`` is ``[out, r]`` (``B`` starts at zero, so
            training starts from the base model exactly).
        alpha: an adapted layer computes ``W x + (alpha / r) * B A x``.
        dropout: dropout on the adapters' input, in forwards that build a graph for the loss only. Sampling,
            pi_old and the KL reference run without it, so the rollout's log-probs stay those of the model
            that sampled; above 0 the first pass's ratio is no longer exactly 1.
        target_modules: the linear projections of every decoder layer that get an adapter, by name
            (Llama's attention and MLP projections by default).
    """

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(LLAMA_PROJECTIONS))

    @property
    def scale(self) -> float:
        """``alpha / r``, the factor of ``B @ A``."""
        return self.alpha / self.r


def saved_lora(hparams: dict) -> LoRA | None:
    """A run's LoRA settings from its saved hyper-parameters (where LightningCLI built the module, a dict)."""
    value = hparams.get("lora")
    return LoRA(**value) if isinstance(value, dict) else value


def check_resumable(saved: dict, current: dict) -> None:
    """Refuse to resume a checkpoint (its saved hyper-parameters) whose LoRA settings are not this run's.

    Otherwise loading fails deep inside ``load_state_dict`` on missing or misshapen adapter keys, or,
    for another ``alpha``, silently scales the trained adapters differently.
    """
    before, now = saved_lora(saved), saved_lora(current)
    if before != now:
        raise ValueError(f"the checkpoint was trained with model.lora = {before}, this run has model.lora = {now}: "
                         "resume with the run's own settings, or start a new run from its weights with model.init_from")


def check_lora(lora: LoRA, llm: nn.Module) -> None:
    """Raise ``ValueError`` naming ``model.lora.<setting>`` for a setting that cannot work on ``llm``."""
    if adapter_layers(llm):
        raise ValueError("model.lora: the model already has LoRA adapters")
    if isinstance(lora.r, bool) or not isinstance(lora.r, int) or lora.r < 1:
        raise ValueError(f"model.lora.r must be a whole number of at least 1, got {lora.r!r}")
    if isinstance(lora.alpha, bool) or not isinstance(lora.alpha, int | float) or lora.alpha <= 0:
        raise ValueError(f"model.lora.alpha must be a positive number, got {lora.alpha!r}")
    if isinstance(lora.dropout, bool) or not isinstance(lora.dropout, int | float) or not 0 <= lora.dropout < 1:
        raise ValueError(f"model.lora.dropout must lie in [0, 1), got {lora.dropout!r}")
    linear = sorted({name.rsplit(".", 1)[-1] for name, m in llm.layers.named_modules() if isinstance(m, nn.Linear)})
    unknown = [name for name in lora.target_modules if name not in linear]
    if not lora.target_modules or unknown:
        raise ValueError(f"model.lora.target_modules: {unknown or 'none given'}: adapters go on the linear projections "
                         f"of the LLM's decoder layers, which are {', '.join(linear)}")


def peft_config(lora: LoRA, base_model: str | None = None) -> LoraConfig:
    """The ``peft.LoraConfig`` of these adapters, aimed at the LLM's decoder layers alone.

    ``target_modules`` is a regular expression on full module names, so the vision tower's projections
    of the same names never get adapters, in training or where peft loads an adapter folder.
    """
    from peft import LoraConfig

    names = "|".join(re.escape(name) for name in lora.target_modules)
    return LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, base_model_name_or_path=base_model,
        target_modules=rf"{re.escape(LLM_PATH)}\.layers\.\d+\.(?:.*\.)?(?:{names})",
    )


class TrainingDropout(nn.Dropout):
    """Dropout only where gradients are taken (the loss's forwards); none under ``no_grad``.

    The policy stays in eval mode on purpose, so peft's dropout, which follows ``.training``, would
    never act; this one follows ``torch.is_grad_enabled()`` instead: rollouts, pi_old replays and the
    KL reference run without gradients, hence without dropout.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return F.dropout(x, self.p, training=torch.is_grad_enabled(), inplace=self.inplace)


def add_adapters(model: nn.Module, lora: LoRA) -> None:
    """Inject fresh adapters into a Janus model's LLM, in place; afterwards only they require gradients.

    The adapters are float32 whatever the model's dtype (as peft's ``get_peft_model`` makes them): a
    bfloat16 base takes half the memory and AdamW still updates float32 weights.
    """
    from peft import inject_adapter_in_model

    check_lora(lora, model.get_submodule(LLM_PATH))
    inject_adapter_in_model(peft_config(lora), model, adapter_name=ADAPTER)
    for layer in adapter_layers(model):
        layer.lora_A.float()
        layer.lora_B.float()
        for name, dropout in layer.lora_dropout.items():
            if isinstance(dropout, nn.Dropout):
                layer.lora_dropout[name] = TrainingDropout(dropout.p)


def adapter_layers(module: nn.Module) -> list[nn.Module]:
    """The modules of ``module`` that carry adapters (peft's tuner layers)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in module.modules() if isinstance(m, BaseTunerLayer)]


@contextmanager
def adapters_disabled(module: nn.Module) -> Iterator[None]:
    """Every adapter in ``module`` switched off for the duration: the layers compute with their base weights."""
    layers = adapter_layers(module)
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield
    finally:
        for layer in layers:
            layer.enable_adapters(True)  # peft marks the adapters trainable again, as they were


class AdaptersOff:
    """The KL reference of a LoRA run: the policy's own trained modules with their adapters switched off.

    Not an ``nn.Module``, so nothing is registered, saved, sharded or counted a second time.

    Args:
        trained: the policy's ``trained_modules()``.
    """

    def __init__(self, trained: nn.ModuleDict) -> None:
        self.trained = trained

    @contextmanager
    def weights(self) -> Iterator[nn.ModuleDict]:
        """The modules that score as the reference, for the duration."""
        with adapters_disabled(self.trained["llm"]):
            yield self.trained


def _adapted_modules(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the modules with an adapter in a state dict of an adapted model."""
    suffix = f".lora_A.{ADAPTER}.weight"
    return [key[: -len(suffix)] for key in state if key.endswith(suffix)]


def merge_adapters(state: dict[str, torch.Tensor], lora: LoRA) -> dict[str, torch.Tensor]:
    """The plain model's state dict: each adapted ``W`` becomes ``W + (alpha / r) * B @ A``, adapters dropped.

    ``state`` is an adapted model's (``base_layer`` / ``lora_A`` / ``lora_B`` keys); the result has the
    names and shapes of the model without adapters. The product is taken in float32.
    """
    merged = dict(state)
    for module in _adapted_modules(state):
        a = merged.pop(f"{module}.lora_A.{ADAPTER}.weight").float()  # [r, in]
        b = merged.pop(f"{module}.lora_B.{ADAPTER}.weight").float()  # [out, r]
        for name in [k for k in merged if k.startswith(f"{module}.base_layer.")]:
            merged[f"{module}.{name[len(module) + len('.base_layer.'):]}"] = merged.pop(name)
        weight = merged[f"{module}.weight"]
        merged[f"{module}.weight"] = (weight.float() + lora.scale * (b @ a)).to(weight.dtype)
    return merged


def adapter_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The adapters of an adapted model's state dict, named as peft's adapter folders name them."""
    out = {}
    for module in _adapted_modules(state):
        for part in ("lora_A", "lora_B"):
            out[f"{PEFT_PREFIX}{module}.{part}.weight"] = state[f"{module}.{part}.{ADAPTER}.weight"]
    return out


def save_adapters(state: dict[str, torch.Tensor], lora: LoRA, out: str | Path, base_model: str | None,
                  dtype: torch.dtype = torch.float32) -> Path:
    """Write a peft adapter folder (``adapter_config.json``, ``adapter_model.safetensors``) of ``state``'s adapters.

    ``peft.PeftModel.from_pretrained(base, out)`` puts them on ``base``, the model they were trained on.
    """
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    peft_config(lora, base_model).save_pretrained(out)
    weights = {k: v.to(dtype).contiguous() for k, v in adapter_weights(state).items()}
    save_file(weights, out / "adapter_model.safetensors")
    return out
