"""``corl check``: everything a config needs that is missing, all at once, before anything is loaded.

``corl fit`` runs the same check first, so a run on a fresh machine fails in a second with the full
list (model folder, data folders, reward models, SPICE, GPUs), each with the command that fixes it,
instead of one missing piece per attempt at the bottom of a traceback.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from corl.data.readers import DataError, data_files
from corl.errors import UsageError
from corl.modules.loading import folder_format, model_source
from corl.names import BUILT_IN

# The public data sets of the paper, by the folder name a download gives them (README's commands).
PUBLIC_DATA = {name: f"mm-vl/{name}" for name in ("x2x_rft_22k", "x2x_rft_16k", "mcot_r1_mcq_66k", "mcot_r1_vqa_66k")}
GPU_ACCELERATORS = ("gpu", "cuda")


def problems(config: dict[str, Any]) -> list[str]:
    """What the parsed config of ``corl fit`` (its ``model``, ``data`` and ``trainer`` parts) lacks."""
    model, data, trainer = config.get("model") or {}, config.get("data") or {}, config.get("trainer") or {}
    found = []
    found += _model(model.get("model"))
    if model.get("init_from"):
        found += _checkpoint(model["init_from"])
    for key in ("source", "val_source"):
        found += _data(f"data.{key}", data.get(key))
    for reward in (model.get("image_rewards") or []):
        found += [f"model.image_rewards ({_class_name(reward)}): {p}" for p in _build(reward).missing()]
    found += _devices(trainer)
    named = ("last", "hpc", "registry")  # Lightning finds these itself (none yet: a fresh start)
    if config.get("ckpt_path") not in (None, *named) and not Path(config["ckpt_path"]).expanduser().exists():
        found.append(f"ckpt_path: no checkpoint at {config['ckpt_path']} to resume from (a run's last.ckpt)")
    return found


def report(found: list[str], config_name: str) -> str:
    """The problems as a list a person can work through."""
    if not found:
        return f"corl check: {config_name} has everything it needs"
    lines = [f"corl check: {config_name} needs {len(found)} thing(s) that are missing:"]
    return "\n".join(lines + [f"  - {problem}" for problem in found])


def _model(name: str | None) -> list[str]:
    if name is None or name in BUILT_IN:
        return []
    try:
        path, local = model_source(name)  # a hub id passes: fetched into transformers' cache on load
        if local:
            folder_format(path)
    except (FileNotFoundError, ValueError) as err:
        return [f"model.model: {err}"]
    return []


def _checkpoint(name: str) -> list[str]:
    if name in BUILT_IN or Path(name).expanduser().exists():
        return []
    return [f"model.init_from: no checkpoint or model folder at {name} (stage 2 starts from stage 1's "
            "checkpoints/s1/last.ckpt: run stage 1 first, or point model.init_from at its last.ckpt)"]


def _data(setting: str, source: str | None) -> list[str]:
    if source is None or source == "procedural":
        return []
    path = Path(source).expanduser()
    if path.exists():
        try:
            data_files(path)
        except DataError as err:
            return [f"{setting}: {err}"]
        return []
    public = PUBLIC_DATA.get(path.name)
    fix = (f"`hf download {public} --repo-type dataset --local-dir {source}`" if public
           else "download the data set there, or set it to a folder of parquet/jsonl files")
    return [f"{setting}: no data at {source}: {fix}"]


def _devices(trainer: dict[str, Any]) -> list[str]:
    accelerator = str(trainer.get("accelerator") or "auto")
    if accelerator not in GPU_ACCELERATORS:
        return []
    import torch

    devices = trainer.get("devices", "auto")
    wanted = len(devices) if isinstance(devices, (list, tuple)) else int(devices) if str(devices).isdigit() else 1
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if have >= wanted:
        return []
    cpu = "--trainer.accelerator cpu --trainer.devices 1 --trainer.strategy auto --trainer.precision 32-true"
    return [f"trainer: accelerator {accelerator} with {wanted} device(s), but this machine has {have} CUDA GPU(s): "
            f"run on a node with {wanted}, set --trainer.devices {max(have, 1)}" + ("" if have else f", or try {cpu}")]


def _class_name(spec: Any) -> str:
    return str(_get(spec, "class_path", "?")).rsplit(".", 1)[-1]


def _build(spec: Any) -> Any:
    """The object a ``{class_path, init_args}`` config describes, parts included; nothing heavy is loaded."""
    if isinstance(spec, list):
        return [_build(item) for item in spec]
    path = _get(spec, "class_path", None)
    if path is None:
        return spec
    module, _, name = str(path).rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    args = _get(spec, "init_args", None) or {}
    items: Iterable = args.items() if isinstance(args, dict) else vars(args).items()
    try:
        return cls(**{key: _build(value) for key, value in items})
    except (TypeError, ValueError) as err:
        raise UsageError(f"{path}: {err}") from err


def _get(spec: Any, key: str, default: Any) -> Any:
    if isinstance(spec, dict):
        return spec.get(key, default)
    return getattr(spec, key, default)
