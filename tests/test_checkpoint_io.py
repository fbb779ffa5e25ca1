"""Checkpoints are written so that a kill at any moment leaves the previous complete checkpoint in place."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.strategies import ModelParallelStrategy

from corl.checkpoint_io import AtomicCheckpointIO, complete_checkpoint, replace_folder
from corl.strategies import FullyShardedStrategy

KILL_MID_WRITE = """
import io, os, signal, sys, torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from corl.checkpoint_io import AtomicCheckpointIO

path = sys.argv[1]
writer = AtomicCheckpointIO() if sys.argv[2] == "atomic" else TorchCheckpointIO()
writer.save_checkpoint({"step": 1, "weights": torch.arange(100_000.0)}, path)
real_save = torch.save

def bytes_of(checkpoint):
    buffer = io.BytesIO()
    real_save(checkpoint, buffer)
    return buffer.getvalue()

def die():
    os.kill(os.getpid(), signal.SIGKILL)

# The process dies with half of the new checkpoint's bytes written to wherever it was writing them.
if sys.argv[2] == "atomic":  # corl's writer streams into the open file
    def half_then_die(checkpoint, handle, *args, **kwargs):
        handle.write(bytes_of(checkpoint)[: len(bytes_of(checkpoint)) // 2])
        handle.flush()
        die()
    torch.save = half_then_die
else:  # Lightning's writes its buffer to the target
    def half_then_die(self, checkpoint, target, storage_options=None):
        with open(target, "wb") as handle:
            handle.write(bytes_of(checkpoint)[: len(bytes_of(checkpoint)) // 2])
            handle.flush()
        die()
    TorchCheckpointIO.save_checkpoint = half_then_die
writer.save_checkpoint({"step": 2, "weights": torch.zeros(100_000)}, path)
"""

SAVE_PEAK = """
import sys, torch
from corl.checkpoint_io import AtomicCheckpointIO
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

def status(field):  # bytes; VmHWM is this process's own peak (getrusage would include its parent's, via fork)
    return int(next(line for line in open("/proc/self/status") if line.startswith(field)).split()[1]) * 1024

writer = AtomicCheckpointIO() if sys.argv[2] == "atomic" else TorchCheckpointIO()
checkpoint = {"state_dict": {f"w{i}": torch.ones(2**24) for i in range(6)}}  # 6 x 64 MiB, touched
with open("/proc/self/clear_refs", "w") as handle:  # the peak starts again from what is resident now
    handle.write("5")
before = status("VmRSS:")
writer.save_checkpoint(checkpoint, sys.argv[1])
print(status("VmHWM:") - before)
"""


def kill_while_writing(path: Path, writer: str) -> int:
    return subprocess.run([sys.executable, "-c", KILL_MID_WRITE, str(path), writer], timeout=120).returncode


def test_a_kill_while_last_ckpt_is_written_leaves_the_previous_one(tmp_path):
    path = tmp_path / "last.ckpt"
    assert kill_while_writing(path, "atomic") == -9
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["step"] == 1 and torch.equal(checkpoint["weights"], torch.arange(100_000.0))


def test_lightnings_plain_writer_would_leave_a_truncated_file(tmp_path):
    # Why corl installs its own writer: the same kill truncates the only checkpoint.
    path = tmp_path / "last.ckpt"
    assert kill_while_writing(path, "plain") == -9
    with pytest.raises(Exception):  # noqa: B017 - any unpickling error
        torch.load(path, weights_only=True)


def extra_memory_of_a_save(path: Path, writer: str) -> int:
    out = subprocess.run([sys.executable, "-c", SAVE_PEAK, str(path), writer], timeout=300, capture_output=True,
                         text=True, check=True).stdout
    return int(out.split()[-1])


def test_a_save_streams_to_the_file_without_a_copy_in_memory(tmp_path):
    size = 6 * 2**26  # the checkpoint's 384 MiB of tensors
    extra = extra_memory_of_a_save(tmp_path / "last.ckpt", "atomic")
    assert extra < size // 10, f"the save held {extra / 2**20:.0f} MiB more than the checkpoint"
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["state_dict"]["w5"].sum() == 2**24
    # Lightning's own writer holds the whole checkpoint in memory first (and a copy of it): what corl avoids.
    assert extra_memory_of_a_save(tmp_path / "plain.ckpt", "plain") > size // 2


def test_atomic_writer_replaces_a_complete_file(tmp_path):
    path = tmp_path / "last.ckpt"
    writer = AtomicCheckpointIO()
    writer.save_checkpoint({"step": 1}, path)
    writer.save_checkpoint({"step": 2}, path)
    assert torch.load(path, weights_only=True)["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def folder(path: Path, step: int) -> Path:
    path.mkdir(parents=True)
    (path / "shard").write_text(str(step))
    return path


def test_folder_swap_killed_between_its_renames_is_put_back(tmp_path, monkeypatch):
    final = folder(tmp_path / "last.ckpt", 1)
    partial = folder(tmp_path / "last.ckpt.partial", 2)
    real_replace, calls = os.replace, []

    def die_on_second(src, dst):
        calls.append(src)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed between the two renames")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", die_on_second)
    with pytest.raises(KeyboardInterrupt):
        replace_folder(partial, final)
    monkeypatch.setattr(os, "replace", real_replace)
    assert not final.exists()
    assert (complete_checkpoint(final) / "shard").read_text() == "1", "the previous checkpoint is back"
    replace_folder(partial, final)
    assert (final / "shard").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_fsdp_checkpoint_folder_is_written_beside_and_swapped_in(tmp_path, monkeypatch):
    final = folder(tmp_path / "last.ckpt", 1)
    written = []

    def write_shards(self, checkpoint, path, storage_options=None):
        written.append(Path(path).name)
        folder(Path(path), checkpoint["step"])
        if checkpoint["step"] == 3:
            raise KeyboardInterrupt("killed while the shards are written")

    monkeypatch.setattr(ModelParallelStrategy, "save_checkpoint", write_shards)
    strategy = FullyShardedStrategy()
    strategy.save_checkpoint({"step": 2}, final)
    assert written == ["last.ckpt.partial"] and (final / "shard").read_text() == "2"
    with pytest.raises(KeyboardInterrupt):
        strategy.save_checkpoint({"step": 3}, final)
    assert (final / "shard").read_text() == "2", "the previous complete checkpoint stays in place"
    strategy.save_checkpoint({"step": 4}, final)  # the next save clears what the killed one left
    assert (final / "shard").read_text() == "4"
