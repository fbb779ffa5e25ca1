"""The Lightning strategy for FSDP runs: FSDP2 over every process, nothing else."""

from __future__ import annotations

from lightning.pytorch.strategies import ModelParallelStrategy


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
