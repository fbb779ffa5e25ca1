"""One DataModule for the three kinds of example, from the procedural set or from local files."""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch
from torch.utils.data import Dataset, DistributedSampler
from torchdata.stateful_dataloader import StatefulDataLoader

from corl.data.procedural import ProceduralExamples
from corl.data.readers import DataError, ExampleFiles
from corl.data.sampling import ResumableBatches
from corl.data.schema import ExampleBatch, Kind, collate_examples


class ExampleDataModule(L.LightningDataModule):
    """Batches of examples: triplets (stage 1), T2I prompts or QA pairs (stage 2).

    Args:
        source: ``procedural`` for the embedded data set, or a local parquet/jsonl file or folder.
        kind: ``triplet`` (prompt, real_image, qa_problem, qa_solution, qa_type), ``t2i`` (prompt,
            real_image) or ``qa`` (real_image, qa_problem, qa_solution, qa_type).
        batch_size: examples per step on each device; each is expanded to G samples.
        num_workers: DataLoader worker processes.
        shuffle: a new order of the examples for every pass over them, drawn from ``seed``.
        columns: our column name -> the file's column name, for files that name them differently.
        defaults: values for columns the files lack, e.g. ``{"qa_type": "MC"}`` for an MC-only set.
        skip_bad_rows: skip rows with a missing, empty, overlong or mistyped field or an undecodable
            image, counted in the logs (``data/skipped_rows``), instead of stopping with an error that
            names the file and row.
        max_text_chars: the longest prompt, question or solution accepted from files.
        length: number of procedural examples.
        seed: seed of the procedural set and of the shuffling.
        image_size: side of the procedural images in pixels.
        questions: procedural questions: ``any``, ``mc`` (multiple choice only) or ``oe`` (open-ended only).
        val_source: held-out examples for validation during fit: ``procedural`` (a disjoint seed), a
            file or folder, or None for no validation.
        val_length: number of procedural validation examples.
        val_batch_size: held-out examples per validation batch on each device (default ``batch_size``);
            validation keeps no gradients, so it can take more at once. Its first batch's images are
            the ones TensorBoard shows (``val/images``).
    """

    def __init__(
        self,
        source: str = "procedural",
        kind: Kind = "triplet",
        batch_size: int = 16,
        num_workers: int = 0,
        shuffle: bool = True,
        columns: dict[str, str] | None = None,
        defaults: dict[str, str] | None = None,
        skip_bad_rows: bool = False,
        max_text_chars: int = 20_000,
        length: int = 1024,
        seed: int = 0,
        image_size: int = 64,
        questions: Literal["any", "mc", "oe"] = "any",
        val_source: str | None = None,
        val_length: int = 64,
        val_batch_size: int | None = None,
    ) -> None:
        super().__init__()
        if val_batch_size is not None and val_batch_size < 1:
            raise DataError(f"data.val_batch_size must be at least 1 (or null: data.batch_size), got {val_batch_size}")
        # Kept in checkpoints, not merged into the logger's hyperparameters: Lightning refuses a module
        # and a DataModule whose same-named settings differ (model.seed and data.seed are two seeds).
        # LightningCLI's config.yaml beside the logs has every data setting.
        self.save_hyperparameters(logger=False)
        self.dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        self._extra: ResumableBatches | None = None  # the stream of further examples (dynamic sampling)
        self._extra_state: dict[str, int] | None = None

    def _open(self, source: str, length: int, seed: int) -> Dataset:
        hp = self.hparams
        if source == "procedural":
            return ProceduralExamples(length, seed, hp.image_size, hp.kind, hp.questions)
        return ExampleFiles(source, hp.kind, hp.columns, hp.defaults, hp.skip_bad_rows, hp.max_text_chars)

    def setup(self, stage: str | None = None) -> None:
        """Open the data sets once (procedural or files); rows are checked as they are read."""
        hp = self.hparams
        if self.dataset is None:
            self.dataset = self._open(hp.source, hp.length, hp.seed)
        if self.val_dataset is None and hp.val_source is not None:
            # A procedural validation set uses another seed, so no scene is shared with training.
            self.val_dataset = self._open(hp.val_source, hp.val_length, hp.seed + 7919)

    def _ranks(self) -> tuple[int, int]:
        """``(world size, this rank)``: corl splits the data itself."""
        return (1, 0) if self.trainer is None else (self.trainer.world_size, self.trainer.global_rank)

    def train_dataloader(self) -> StatefulDataLoader:
        """This rank's batches of ``batch_size`` examples, collated into an ``ExampleBatch``.

        The position in the data is saved with every checkpoint and restored by ``--ckpt_path``
        (``ResumableBatches`` in a torchdata ``StatefulDataLoader``), so a resumed run goes on with
        the examples it had not seen, workers or not.
        """
        self.setup()
        hp = self.hparams
        world, rank = self._ranks()
        batches = ResumableBatches(len(self.dataset), hp.batch_size, hp.seed, hp.shuffle, world, rank)
        self._check_validation_interval(len(batches))
        return StatefulDataLoader(self.dataset, batch_sampler=batches, num_workers=hp.num_workers,
                                  collate_fn=collate_examples, persistent_workers=hp.num_workers > 0,
                                  generator=self._generator())

    def _check_validation_interval(self, batches: int) -> None:
        """No validation without held-out data; with it, an interval the epoch can reach, said in corl's terms."""
        trainer = self.trainer
        if trainer is None:
            return
        if self.val_dataset is None:
            trainer.limit_val_batches = 0  # else Lightning checks an interval for validation that never runs
            return
        interval = trainer.val_check_interval
        if isinstance(interval, int) and trainer.check_val_every_n_epoch is not None and batches < interval:
            raise DataError(
                f"data.source gives {batches} rollout(s) per epoch ({len(self.dataset)} examples, data.batch_size "
                f"{self.hparams.batch_size}), fewer than trainer.val_check_interval = {interval}: set "
                f"--trainer.val_check_interval {max(batches, 1)} or less, --trainer.check_val_every_n_epoch null "
                "(count the interval across epochs), or --data.val_source null (no validation)"
            )

    def val_dataloader(self) -> StatefulDataLoader | list:
        """Held-out batches in a fixed order, split across ranks (none when ``val_source`` is unset)."""
        self.setup()
        if self.val_dataset is None:
            return []
        world, rank = self._ranks()
        sampler = DistributedSampler(self.val_dataset, num_replicas=world, rank=rank, shuffle=False)
        batch_size = self.hparams.batch_size if self.hparams.val_batch_size is None else self.hparams.val_batch_size
        return StatefulDataLoader(self.val_dataset, batch_size=batch_size, sampler=sampler,
                                  num_workers=self.hparams.num_workers, collate_fn=collate_examples,
                                  generator=self._generator())

    def extra_batch(self) -> ExampleBatch:
        """A batch of further examples (dynamic sampling), from this rank's own resumable stream.

        The stream is shuffled by another seed than the training order, so it brings examples the
        step has not seen; its position is ``extra_state()``, saved with every checkpoint.
        """
        self.setup()
        if self._extra is None:
            world, rank = self._ranks()
            hp = self.hparams
            self._extra = ResumableBatches(len(self.dataset), hp.batch_size, hp.seed + 104_729, True, world, rank)
            if self._extra_state is not None:
                self._extra.load_state_dict(self._extra_state)
            self._extra_iter = iter(self._extra)
        indices = next(self._extra_iter, None)
        if indices is None:  # a pass ended: the next one starts
            self._extra_iter = iter(self._extra)
            indices = next(self._extra_iter)
        return collate_examples([self.dataset[i] for i in indices])

    def extra_state(self) -> dict[str, int] | None:
        """Where the stream of further examples stands (None before its first use)."""
        return None if self._extra is None else self._extra.state_dict()

    def load_extra_state(self, state: dict[str, int] | None) -> None:
        """Continue the stream of further examples where a checkpoint left it."""
        self._extra, self._extra_state = None, state

    def _generator(self) -> torch.Generator:
        """A loader's own generator: opening it (worker seeds) must not draw from the training stream."""
        return torch.Generator().manual_seed(self.hparams.seed)
