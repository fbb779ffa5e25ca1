"""The Lightning strategy for FSDP runs: FSDP2 over every process, nothing else."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.strategies import ModelParallelStrategy

from corl.checkpoint_io import PARTIAL, complete_checkpoint, replace_folder
from corl.checkpoints import SHARDED_META, is_sharded_checkpoint
from corl.modules.lora import check_resumable


class FullyShardedStrategy(ModelParallelStrategy):
    """Lightning's ``ModelParallelStrategy`` with every process one data-parallel rank.

    ``ModelParallelStrategy`` defaults to one data-parallel rank per node and tensor parallelism
    inside it; corl shards with FSDP only (``CoRLModule.configure_model``), so the data-parallel
    size is always the world size and each rank samples its own whole groups, as under DDP.

    Args:
        save_distributed_checkpoint: each rank saves its shard into a checkpoint folder (fast, scales);
            ``false`` gathers the full weights and optimiser state on rank 0 into one file.
            ``corl export`` and ``init_from`` read both.
        process_group_backend: ``nccl`` on GPUs and ``gloo`` on CPUs unless set.
    """

    def __init__(self, save_distributed_checkpoint: bool = True, process_group_backend: str | None = None) -> None:
        super().__init__(
            data_parallel_size="auto",
            tensor_parallel_size=1,
            save_distributed_checkpoint=save_distributed_checkpoint,
            process_group_backend=process_group_backend,
        )

    def setup_environment(self) -> None:
        """Make every process (of every node) a data-parallel rank before the mesh is built."""
        self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: str | Path, storage_options: Any = None) -> None:
        """Every rank writes its shard into ``<name>.partial``; the complete folder then replaces ``<name>``.

        A kill while the shards are written leaves the previous checkpoint untouched. A single-file
        checkpoint (``save_distributed_checkpoint: false``) goes through the atomic checkpoint writer.
        """
        if not self._save_distributed_checkpoint:
            return super().save_checkpoint(checkpoint, filepath, storage_options)
        final = Path(self.broadcast(str(filepath)))
        partial = final.with_name(final.name + PARTIAL)
        if self.global_rank == 0 and partial.exists():
            shutil.rmtree(partial)  # what a killed save left behind
        self.barrier("corl_checkpoint_start")
        super().save_checkpoint(checkpoint, partial, storage_options)
        self.barrier("corl_checkpoint_written")
        if self.global_rank == 0:
            replace_folder(partial, final)
        self.barrier("corl_checkpoint_in_place")

    def load_checkpoint(self, checkpoint_path: str | Path, weights_only: bool | None = None) -> dict[str, Any]:
        """Load, after putting back the previous checkpoint if a save was killed between its two renames.

        The weights of a folder of shards are loaded here, before the module's ``on_load_checkpoint``,
        so its LoRA settings are checked here too.
        """
        if self.global_rank == 0:
            complete_checkpoint(checkpoint_path)
        self.barrier("corl_checkpoint_complete")
        path = Path(checkpoint_path)
        if is_sharded_checkpoint(path):
            meta = torch.load(path / SHARDED_META, map_location="cpu", weights_only=False)
            check_resumable(meta.get("hyper_parameters", {}), self.lightning_module.hparams)
        return super().load_checkpoint(checkpoint_path, weights_only)
