"""Weights in and out: read a corl checkpoint or an exported folder, export.

Merging models is pure arithmetic on state dicts (``corl.merging``, and for a LoRA run's adapters
``corl.modules.lora.merge_adapters``), so it is tested on small tensors; the file handling is here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from corl.checkpoint_io import complete_checkpoint
from corl.modules.loading import load_janus
from corl.modules.lora import merge_adapters, save_adapters, saved_lora
from corl.names import DEEPSEEK, DTYPES, HF

POLICY_PREFIX = "policy.model."
SHARDED_INDEX = ".metadata"  # torch.distributed.checkpoint's index of the shards
SHARDED_META = "meta.pt"  # Lightning's non-tensor state (hyper-parameters, loops) beside the shards


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The Janus state dict and the module's hyper-parameters of a corl (Lightning) checkpoint.

    Either one file, or the folder of shards an FSDP run writes (``FullyShardedStrategy``). A LoRA
    run's adapters are merged into its base weights: the state dict is the plain model's, whatever
    the run trained.
    """
    state, hparams = read_policy_state(path)
    lora = saved_lora(hparams)
    return (state if lora is None else merge_adapters(state, lora)), hparams


def read_policy_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The policy's state dict as the run saved it (a LoRA run's adapters apart), and the hyper-parameters."""
    path = complete_checkpoint(path)
    if is_sharded_checkpoint(path):
        ckpt = {"state_dict": _read_sharded_weights(path, POLICY_PREFIX), **_load(path / SHARDED_META)}
    elif path.is_file():
        ckpt = _load(path)
    else:
        raise FileNotFoundError(f"no checkpoint at {path}")
    if "state_dict" not in ckpt:
        raise ValueError(f"{path} is not a Lightning checkpoint (no state_dict)")
    state = {k[len(POLICY_PREFIX):]: v for k, v in ckpt["state_dict"].items() if k.startswith(POLICY_PREFIX)}
    if not state:
        raise ValueError(f"{path} holds no corl policy weights (no '{POLICY_PREFIX}*' keys)")
    return state, dict(ckpt.get("hyper_parameters", {}))


def is_sharded_checkpoint(path: Path) -> bool:
    """True for the checkpoint folder of an FSDP run: shards, their index and Lightning's own state."""
    return path.is_dir() and (path / SHARDED_INDEX).is_file() and (path / SHARDED_META).is_file()


def is_exported_folder(path: Path) -> bool:
    """True for a model folder (``corl export``, either layout); an FSDP run's checkpoint is a folder too."""
    return path.is_dir() and not is_sharded_checkpoint(path)


def checkpoint_entry(path: str | Path, key: str):
    """One top-level entry of a checkpoint (file or FSDP folder), read without loading its tensors; None if absent."""
    path = Path(path)
    if is_sharded_checkpoint(path):
        return _load(path / SHARDED_META).get(key)
    if path.is_file():
        return torch.load(path, map_location="cpu", weights_only=False, mmap=True).get(key)
    return None


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def _read_sharded_weights(path: Path, prefix: str) -> dict[str, torch.Tensor]:
    """Whole tensors of the model weights under ``prefix`` from a folder of shards, in one process.

    Only those weights are read: the optimiser state in the same folder is twice their size.
    """
    from torch.distributed.checkpoint import FileSystemReader, load
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    entries = FileSystemReader(path).read_metadata().state_dict_metadata
    wanted = f"state_dict.{prefix}"
    flat = {key: torch.empty(meta.size, dtype=meta.properties.dtype) for key, meta in entries.items()
            if key.startswith(wanted) and isinstance(meta, TensorStorageMetadata)}
    load(flat, checkpoint_id=path, no_dist=True)
    return {key[len("state_dict."):]: tensor for key, tensor in flat.items()}


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The Janus state dict of a corl checkpoint or an exported folder."""
    path = Path(path)
    if is_exported_folder(path):
        return load_janus(str(path))[0].state_dict()
    return read_checkpoint(path)[0]


def load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model``; a different architecture is a clear error, not a partial load."""
    check_compatible([model.state_dict(), state], [type(model).__name__, source])
    model.load_state_dict(state)


def start_from(model: torch.nn.Module, init_from: str | None) -> None:
    """Put ``model.init_from``'s weights (a corl checkpoint or an exported folder) into ``model``, when set.

    Stage 2 starts so from stage 1: the weights only, the optimiser and step counter start fresh
    (resuming an interrupted run is ``--ckpt_path``).
    """
    if init_from is not None:
        load_state(model, read_weights(init_from), init_from)


def check_compatible(states: Sequence[dict[str, torch.Tensor]], names: Sequence[str]) -> None:
    """Raise unless every state dict has the same keys and shapes as the first."""
    first = states[0]
    for state, name in zip(states[1:], names[1:], strict=True):
        missing, extra = sorted(set(first) - set(state)), sorted(set(state) - set(first))
        if missing or extra:
            raise ValueError(f"{name} does not match {names[0]}: missing {missing[:5]}, unexpected {extra[:5]}")
        shapes = [k for k in first if first[k].shape != state[k].shape]
        if shapes:
            k = shapes[0]
            raise ValueError(f"{name} does not match {names[0]}: {k} is {tuple(state[k].shape)}, "
                             f"not {tuple(first[k].shape)} (different model sizes)")


def export(model, processor, out: str | Path, layout: str = HF) -> Path:
    """Write a model folder (weights, config, tokenizer, processor) for external evaluation suites.

    ``layout``: ``hf``, transformers' (``JanusForConditionalGeneration``), or ``deepseek``, DeepSeek's
    ``janus`` package's (``MultiModalityCausalLM``), which VLMEvalKit and the GenEval scripts load.
    """
    if layout == DEEPSEEK:
        from corl.deepseek.folder import save_deepseek

        return save_deepseek(model, processor, out)
    if layout != HF:
        raise ValueError(f"layout must be {HF!r} or {DEEPSEEK!r}, got {layout!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def export_adapters(path: str | Path, out: str | Path, dtype: str = "float32") -> tuple[Path, str]:
    """Write a LoRA run's adapters as a peft adapter folder; the folder, and the model they were trained on.

    That model is the run's ``init_from`` if it had one, else its ``model``.
    """
    state, hparams = read_policy_state(path)
    lora = saved_lora(hparams)
    if lora is None:
        raise ValueError(f"{path} was not trained with model.lora, so it has no adapters: export the whole model "
                         "(corl export without --adapters-only)")
    base = hparams.get("init_from") or hparams.get("model", "tiny")
    return save_adapters(state, lora, out, base, DTYPES[dtype]), base
