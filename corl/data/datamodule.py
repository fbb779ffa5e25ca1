"""The stage-1 DataModule: triplets from the procedural set or from local files."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader, Dataset

from corl.data.procedural import ProceduralTriplets
from corl.data.readers import TripletFiles
from corl.data.schema import collate_triplets


class TripletDataModule(L.LightningDataModule):
    """Batches of ⟨real image, prompt, question⟩ triplets for unified RL.

    Args:
        source: ``procedural`` for the embedded data set, or a local parquet/jsonl file or folder.
        batch_size: prompts (triplets) per step on each device; each is expanded to G samples.
        num_workers: DataLoader worker processes.
        shuffle: shuffle the examples every epoch.
        columns: our column name -> the file's column name, for files that name them differently.
        length: number of procedural examples.
        seed: seed of the procedural set.
        image_size: side of the procedural images in pixels.
    """

    def __init__(
        self,
        source: str = "procedural",
        batch_size: int = 16,
        num_workers: int = 0,
        shuffle: bool = True,
        columns: dict[str, str] | None = None,
        length: int = 1024,
        seed: int = 0,
        image_size: int = 64,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.dataset: Dataset | None = None

    def setup(self, stage: str | None = None) -> None:
        """Open the data set once (procedural or files); rows are checked as they are read."""
        if self.dataset is not None:
            return
        hp = self.hparams
        if hp.source == "procedural":
            self.dataset = ProceduralTriplets(hp.length, hp.seed, hp.image_size)
        else:
            self.dataset = TripletFiles(hp.source, hp.columns)

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches of ``batch_size`` triplets, collated into a ``TripletBatch``."""
        self.setup()
        return DataLoader(
            self.dataset,
            batch_size=self.hparams.batch_size,
            shuffle=self.hparams.shuffle,
            num_workers=self.hparams.num_workers,
            collate_fn=collate_triplets,
            drop_last=True,
            persistent_workers=self.hparams.num_workers > 0,
        )
