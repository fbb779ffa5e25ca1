"""Read examples from local parquet or jsonl files (or folders of them), in the public data sets' layout.

Images may be stored as bytes (Hugging Face ``Image`` feature: ``{"bytes": ..., "path": ...}`` or raw
bytes) or as a path, relative to the file that names it. Every error names the file and the row.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from corl.data.schema import Example, columns_of

SUFFIXES = (".parquet", ".jsonl")


class DataError(ValueError):
    """Bad input data; the message names the file and the row."""


def data_files(path: str | Path) -> list[Path]:
    """The parquet/jsonl files at ``path`` (a file, or a folder searched recursively), sorted."""
    path = Path(path)
    if path.is_file():
        if path.suffix not in SUFFIXES:
            raise DataError(f"{path}: unsupported file type; expected one of {SUFFIXES}")
        return [path]
    if not path.is_dir():
        raise DataError(f"{path}: no such file or folder")
    files = sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"{path}: no {' or '.join(SUFFIXES)} files in this folder")
    return files


def _read_rows(file: Path) -> list[dict[str, Any]]:
    if file.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(file).to_pylist()
    rows = []
    with file.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                number = len(rows)  # blank lines are skipped, so row numbers match those of later errors
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(f"{file}, row {number}: invalid JSON ({err})") from err
                if not isinstance(row, dict):
                    raise DataError(f"{file}, row {number}: expected a JSON object, got {type(row).__name__}")
                rows.append(row)
    return rows


def decode_image(value: Any, base: Path) -> Image.Image:
    """An RGB image from bytes, an HF image dict, or a path relative to ``base``."""
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray)):
        image = Image.open(io.BytesIO(value))
    elif isinstance(value, str) and value:
        path = Path(value) if Path(value).is_absolute() else base / value
        image = Image.open(path)
    else:
        raise ValueError(f"expected image bytes or a path, got {type(value).__name__}")
    image.load()
    return image.convert("RGB")


class ExampleFiles(Dataset):
    """All examples of the given files, rows checked as they are read.

    Args:
        path: a parquet/jsonl file or a folder of them.
        kind: ``triplet``, ``t2i`` or ``qa``: which columns every row must have.
        columns: maps our column names to the file's, for data sets that name them differently.
        defaults: values for columns the files do not have, e.g. ``{"qa_type": "MC"}`` for an MC set.
    """

    def __init__(
        self,
        path: str | Path,
        kind: str = "triplet",
        columns: dict[str, str] | None = None,
        defaults: dict[str, str] | None = None,
    ) -> None:
        self.defaults = dict(defaults or {})
        self.columns = {name: (columns or {}).get(name, name) for name in columns_of(kind) if name not in self.defaults}
        self.rows: list[tuple[Path, int, dict[str, Any]]] = []
        for file in data_files(path):
            for number, row in enumerate(_read_rows(file)):
                missing = [theirs for theirs in self.columns.values() if row.get(theirs) is None]
                if missing:
                    raise DataError(f"{file}, row {number}: missing column(s) {missing}")
                self.rows.append((file, number, row))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Example:
        file, number, row = self.rows[index]
        values = {**self.defaults, **{ours: row[theirs] for ours, theirs in self.columns.items()}}
        try:
            values["real_image"] = decode_image(values["real_image"], file.parent)
        except (OSError, ValueError) as err:
            raise DataError(f"{file}, row {number}: cannot read column {self.columns['real_image']!r}: {err}") from err
        return Example(**{k: v if k == "real_image" else str(v) for k, v in values.items()})
