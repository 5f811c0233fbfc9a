"""Temporary Parquet files a run writes before it commits, in bounded memory.

`Stager` buffers mapped rows and flushes them in batches of bounded size. `DaySink`
splits validated rows by UTC day as they stream past, so the commit step can write each
day on its own: a partitioned write of all days at once would hold one row-group buffer
per day and outgrow any fixed memory limit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from distillguard.ingest.readers import printable_name

BATCH_ROWS = 8192
BATCH_BYTES = 64 * 1024 * 1024
MAX_OPEN_WRITERS = 128


class Stager:
    """Buffers mapped rows and writes them as Parquet files of bounded size."""

    def __init__(self, folder: Path, schema: pa.Schema) -> None:
        self.folder = folder
        self.schema = schema
        self.rows: list[dict[str, Any]] = []
        self.bytes = 0
        self.count = 0
        self.parts = 0
        folder.mkdir(parents=True, exist_ok=True)

    def add(self, row: dict[str, Any], size: int) -> None:
        if row.get("_source"):
            row["_source"] = printable_name(row["_source"])
        row["_seq"] = self.count
        self.count += 1
        self.rows.append(row)
        self.bytes += size
        if len(self.rows) >= BATCH_ROWS or self.bytes >= BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        table = pa.Table.from_pylist(self.rows, schema=self.schema)
        pq.write_table(table, self.folder / f"part-{self.parts:06d}.parquet", compression="lz4")
        self.parts += 1
        self.rows = []
        self.bytes = 0


class DaySink:
    """Writes validated rows to `folder/day=YYYY-MM-DD/part-N.parquet`, streaming."""

    def __init__(self, folder: Path, *, by_day: bool = True) -> None:
        self.folder = folder
        self.by_day = by_day
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.parts = 0

    def write(self, table: pa.Table) -> None:
        if not self.by_day:
            self._writer("all", table.schema).write_table(table)
            return
        days = pc.strftime(table.column("ts"), format="%Y-%m-%d", locale="C")
        for day in pc.unique(days).to_pylist():
            part = table.filter(pc.equal(days, day))
            self._writer(f"day={day}", table.schema).write_table(part)

    def _writer(self, key: str, schema: pa.Schema) -> pq.ParquetWriter:
        writer = self.writers.get(key)
        if writer is None:
            if len(self.writers) >= MAX_OPEN_WRITERS:
                self.close()  # a later batch of that day opens a new part file
            folder = self.folder / key
            folder.mkdir(parents=True, exist_ok=True)
            self.parts += 1
            path = folder / f"part-{self.parts:06d}.parquet"
            writer = pq.ParquetWriter(path, schema, compression="lz4")
            self.writers[key] = writer
        return writer

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers = {}
