"""Reading an output back: only complete files, file by file.

The writer renames a file into place once it is whole, so every reader lists files through
:func:`parquet_files`, which skips temporary names a killed run may have left.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from operators.dataset.schema import TEMP_PREFIX
from operators.io import filesystem, join


def is_temp_name(path: str) -> bool:
    return path.rstrip("/").rsplit("/", 1)[-1].startswith(TEMP_PREFIX)


def parquet_files(output: str, folder: str) -> tuple[Any, list[str]]:
    """The filesystem and the complete Parquet files under ``output/folder``, sorted."""
    fs, root = filesystem(join(output, folder))
    if not fs.exists(root):
        return fs, []
    return fs, sorted(p for p in fs.ls(root, detail=False)
                      if p.endswith(".parquet") and not is_temp_name(p))


def iter_tables(output: str, folder: str, columns: list[str]) -> Iterator[pa.Table]:
    """One table per complete file under ``output/folder``, holding those of ``columns`` the
    file has (a file written before a stage existed lacks its columns). Memory: one file."""
    fs, files = parquet_files(output, folder)
    for path in files:
        with fs.open(path, "rb") as f:
            parquet = pq.ParquetFile(f)
            present = [c for c in columns if c in parquet.schema_arrow.names]
            yield parquet.read(columns=present)


def read_column_values(output: str, folder: str, columns: list[str]) -> list[dict]:
    """Rows of ``columns`` from every complete file under ``output/folder``, as Python dicts.
    Holds them all: for small outputs and tests; large readers use :func:`iter_tables`."""
    rows: list[dict] = []
    for table in iter_tables(output, folder, columns):
        rows.extend(table.to_pylist())
    return rows
