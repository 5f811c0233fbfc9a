"""Every exchange through the gateway, in the canonical schema, in rolling Parquet files.

Rows are buffered and written every ROLL_ROWS rows or ROLL_SECONDS seconds to
`day=YYYY-MM-DD/part-<time>-<n>.parquet` (written, then renamed, so readers never see
half a file), pseudonymised like ingestion: identifiers as keyed tokens, addresses
reduced to their prefix. The folder is then a store's exchanges that `detect` reads.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distillguard.privacy import Pseudonymiser
from distillguard.schema import EXCHANGES

ROLL_ROWS = 5_000
ROLL_SECONDS = 30.0
DAY_MICROS = 86_400 * 10**6


class Recorder:
    """Rows are pseudonymised as they are added and kept column by column, so a flush
    (in a worker thread) only converts whole columns to Arrow in C++ and writes: it
    holds the GIL in a few short pieces rather than stalling the requests being served
    while it walks Python rows."""

    def __init__(self, folder: str | Path, key: bytes | None = None) -> None:
        self.folder = Path(folder)
        self.pseudonymiser = Pseudonymiser(key)
        self._columns = _empty()
        self._count = 0
        self._since = time.monotonic()
        self._lock = threading.Lock()
        self.written = 0
        # Arrow imports pandas the first time it converts a datetime (half a second,
        # holding the GIL): done here, at start, rather than in the first flush, where
        # it stalled the requests being served.
        pa.array([datetime.now(UTC)])

    def add(self, row: dict[str, Any]) -> bool:
        """Buffer a row (its `ts` in microseconds since the epoch, UTC: converting
        datetimes took a third of a flush); whether the buffer is due to be flushed."""
        row = self.pseudonymiser.apply_row(row, "exchanges")
        with self._lock:
            for name, values in self._columns.items():
                values.append(row.get(name))
            self._count += 1
            return self._count >= ROLL_ROWS or time.monotonic() - self._since > ROLL_SECONDS

    def flush(self) -> int:
        """Write the buffered rows (safe to call from a worker thread)."""
        with self._lock:
            columns, count, self._columns, self._count = self._columns, self._count, _empty(), 0
            self._since = time.monotonic()
        if not count:
            return 0
        micros = np.asarray(columns.pop("ts"), dtype=np.int64)
        arrays = [
            pa.array(micros).cast(f.type) if f.name == "ts" else pa.array(columns[f.name], f.type)
            for f in EXCHANGES
        ]
        table = pa.Table.from_arrays(arrays, schema=EXCHANGES)
        days = micros // DAY_MICROS
        for day in np.unique(days):
            part = table.filter(pa.array(days == day))
            folder = self.folder / f"day={datetime.fromtimestamp(day * 86400, UTC):%Y-%m-%d}"
            folder.mkdir(parents=True, exist_ok=True)
            name = f"part-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.parquet"
            tmp = folder / f".{name}.tmp"
            pq.write_table(part, tmp)
            tmp.replace(folder / name)
        self.written += count
        return count


def _empty() -> dict[str, list[Any]]:
    return {f.name: [] for f in EXCHANGES}
