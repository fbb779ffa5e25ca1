"""Checkpoints written so that a kill at any moment leaves the previous complete one in place.

A checkpoint file is written beside its final name and renamed over it (one atomic step). The
folder of an FSDP run is written beside its final name too, then swapped in with two renames; a
kill between them leaves the previous folder under ``<name>.previous``, which
``complete_checkpoint`` puts back before anything reads the checkpoint.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

PARTIAL = ".partial"  # suffix of a checkpoint being written
PREVIOUS = ".previous"  # suffix of the checkpoint a folder swap replaces


def _beside(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def is_local(path: str | os.PathLike) -> bool:
    """Only local files can be renamed atomically; remote storage (``s3://`` ...) is written directly."""
    return "://" not in str(path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint writer, streaming to ``<name>.partial`` and renaming it into place.

    Lightning's own writer serialises the whole checkpoint into an in-memory buffer (and copies that once
    more) before it writes the file: two extra copies of the checkpoint in host memory, about 17 GB for
    Janus-Pro-1B with AdamW. ``torch.save`` to the open file writes each tensor as it goes instead.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        """Stream the checkpoint into a file beside ``path``, flush it to disk, then rename it over ``path``."""
        if not is_local(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options for local files")
        final = Path(path)
        final.parent.mkdir(parents=True, exist_ok=True)
        partial = _beside(final, PARTIAL)
        with open(partial, "wb") as handle:
            torch.save(checkpoint, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, final)


def replace_folder(partial: Path, final: Path) -> None:
    """Put a completely written folder in place of ``final``, keeping the old one until the new one is there."""
    previous = _beside(final, PREVIOUS)
    if previous.exists():
        shutil.rmtree(previous)
    if final.exists():
        os.replace(final, previous)
    os.replace(partial, final)  # a kill before this line leaves the old folder as <final>.previous
    if previous.exists():
        shutil.rmtree(previous)


def complete_checkpoint(path: str | os.PathLike) -> Path:
    """``path``, after putting back the previous checkpoint if a folder swap was killed half-way."""
    path = Path(path)
    previous = _beside(path, PREVIOUS)
    if is_local(path) and not path.exists() and previous.exists():
        os.replace(previous, path)
    return path
