"""Read examples from local parquet or jsonl files (or folders of them), in the public data sets' layout.

Images may be stored as bytes (Hugging Face ``Image`` feature: ``{"bytes": ..., "path": ...}`` or raw
bytes) or as a path, relative to the file that names it. Every error names the file and the row.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from corl.data.schema import Example, columns_of
from corl.data.templates import solution_answer

SUFFIXES = (".parquet", ".jsonl")
TEXT_COLUMNS = ("prompt", "qa_problem", "qa_solution", "qa_type")
log = logging.getLogger(__name__)


MISSING = "missing column(s)"
SKIP_HINT = "(data.skip_bad_rows: true skips such rows, counted in the log)"


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


def _jsonl_rows(file: Path) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """``(row number, byte offset, row)`` of each non-blank line; rows are numbered without blank lines."""
    number = 0
    with file.open("rb") as handle:
        while True:
            offset = handle.tell()
            line = handle.readline()
            if not line:
                return
            if not line.strip():
                continue
            try:
                row = json.loads(line.decode("utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise DataError(f"{file}, row {number}: invalid JSON ({err})") from err
            if not isinstance(row, dict):
                raise DataError(f"{file}, row {number}: expected a JSON object, got {type(row).__name__}")
            yield number, offset, row
            number += 1


def _parquet_rows(file: Path, names: list[str]) -> Iterator[tuple[int, tuple[int, int], dict[str, Any]]]:
    """``(row number, (row group, row in group), row)``, one row group in memory at a time."""
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(file)
    present = [name for name in names if name in parquet.schema_arrow.names]
    number = 0
    for group in range(parquet.num_row_groups):
        for offset, row in enumerate(parquet.read_row_group(group, columns=present).to_pylist()):
            yield number, (group, offset), row
            number += 1


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
    """The examples of local parquet/jsonl files, streamed: rows are checked once, images read on access.

    Opening scans every row once, so a missing field fails (or is skipped) before training; only an
    index is kept, and each image is decoded when its example is read, so a large set never has to
    fit in memory. Parquet is read a row group at a time.

    Args:
        path: a parquet/jsonl file or a folder of them (e.g. a Hugging Face data set's shards).
        kind: ``triplet``, ``t2i`` or ``qa``: which columns every row must have.
        columns: maps our column names to the file's, for data sets that name them differently.
        defaults: values for columns the files do not have, e.g. ``{"qa_type": "MC"}`` for an MC set.
        skip_bad_rows: skip rows with a missing, empty, overlong or mistyped field or an undecodable
            image (counted and logged) instead of stopping with an error that names the file and the row.
        max_text_chars: the longest text field accepted; longer ones are bad rows (a prompt of that
            size would not fit the model's context anyway).
    """

    def __init__(
        self,
        path: str | Path,
        kind: str = "triplet",
        columns: dict[str, str] | None = None,
        defaults: dict[str, str] | None = None,
        skip_bad_rows: bool = False,
        max_text_chars: int = 20_000,
    ) -> None:
        self.defaults = dict(defaults or {})
        self.columns = {name: (columns or {}).get(name, name) for name in columns_of(kind) if name not in self.defaults}
        self.skip_bad_rows = skip_bad_rows
        self.max_text_chars = max_text_chars
        self.files = data_files(path)
        self.index: list[tuple[int, int, Any]] = []  # (file, row number, where: byte offset or (group, row))
        self.skipped = 0  # rows left out at opening
        self._group_cache: tuple[int, int, list[dict[str, Any]]] | None = None
        for position, file in enumerate(self.files):
            rows = (_jsonl_rows(file) if file.suffix == ".jsonl"
                    else _parquet_rows(file, list(self.columns.values())))
            for number, where, row in rows:
                problem = self._problem(row)
                if problem is None:
                    self.index.append((position, number, where))
                elif skip_bad_rows:
                    self.skipped += 1
                elif number == 0 and problem.startswith(MISSING):
                    raise DataError(self._absent_columns(file, row))
                else:
                    raise DataError(f"{file}, row {number}: {problem} {SKIP_HINT}")
        if self.skipped:
            log.warning("skipped %d row(s) with missing fields in %s", self.skipped, path)

    def __len__(self) -> int:
        return len(self.index)

    def _absent_columns(self, file: Path, first: dict[str, Any]) -> str:
        """A file whose first row lacks columns: most likely the whole file names them otherwise."""
        absent = {ours: theirs for ours, theirs in self.columns.items() if first.get(theirs) is None}
        example = ", ".join(f"{ours}: <your column>" for ours in absent)
        return (f"{file}: no column(s) {sorted(absent.values())} in its first row (it has {sorted(first)}). Name "
                f"yours with data.columns ({{{example}}}), or give every row a value with data.defaults")

    def _problem(self, row: dict[str, Any]) -> str | None:
        """What is wrong with a row's fields (images are checked when decoded), or None."""
        missing = [theirs for theirs in self.columns.values() if row.get(theirs) is None]
        if missing:
            return f"{MISSING} {missing}"
        for ours, theirs in self.columns.items():
            if ours not in TEXT_COLUMNS:
                continue
            value = row[theirs]
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                return f"column {theirs!r} must be text, got {type(value).__name__}"
            if not str(value).strip():
                return f"column {theirs!r} is empty"
            if ours == "qa_solution" and not solution_answer(str(value)):
                return f"column {theirs!r} has an empty <answer> block: nothing to grade answers against"
            if len(str(value)) > self.max_text_chars:
                return (f"column {theirs!r} has {len(str(value)):,} characters, more than "
                        f"data.max_text_chars = {self.max_text_chars:,}")
        return None

    def _row(self, position: int, where: Any) -> dict[str, Any]:
        file = self.files[position]
        if file.suffix == ".jsonl":
            with file.open("rb") as handle:
                handle.seek(where)
                return json.loads(handle.readline().decode("utf-8"))
        group, offset = where
        if self._group_cache is None or self._group_cache[:2] != (position, group):
            import pyarrow.parquet as pq

            table = pq.ParquetFile(file).read_row_group(group, columns=list(self.columns.values()))
            self._group_cache = (position, group, table.to_pylist())
        return self._group_cache[2][offset]

    def __getitem__(self, index: int) -> Example:
        """The example; with ``skip_bad_rows``, an undecodable image passes on to the next readable row.

        Passing on (rather than dropping) keeps every batch full, so all ranks of a distributed run
        do the same work per step; the example says how many rows it passed over, for the logs.
        """
        for skipped in range(len(self)):
            example = self._read((index + skipped) % len(self))
            if example is not None:
                example.skipped = skipped
                return example
        raise DataError(f"no row of {self.files[0].parent} has a readable image")

    def _read(self, index: int) -> Example | None:
        """The example at ``index``, or None for an undecodable image when ``skip_bad_rows``."""
        position, number, where = self.index[index]
        file = self.files[position]
        row = self._row(position, where)
        values = {**self.defaults, **{ours: row[theirs] for ours, theirs in self.columns.items()}}
        try:
            values["real_image"] = decode_image(values["real_image"], file.parent)
        except (OSError, ValueError) as err:
            if self.skip_bad_rows:
                log.warning("%s, row %d: skipped, cannot read column %r: %s", file, number,
                            self.columns["real_image"], err)
                return None
            raise DataError(f"{file}, row {number}: cannot read column {self.columns['real_image']!r}: {err} "
                            f"{SKIP_HINT}") from err
        return Example(**{k: v if k == "real_image" else str(v) for k, v in values.items()})
