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

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from distillguard.privacy import Pseudonymiser
from distillguard.schema import EXCHANGES, conform

ROLL_ROWS = 5_000
ROLL_SECONDS = 30.0


class Recorder:
    def __init__(self, folder: str | Path, key: bytes | None = None) -> None:
        self.folder = Path(folder)
        self.pseudonymiser = Pseudonymiser(key)
        self._rows: list[dict[str, Any]] = []
        self._since = time.monotonic()
        self._lock = threading.Lock()
        self.written = 0
        # Arrow imports pandas the first time it converts a datetime (half a second,
        # holding the GIL): done here, at start, rather than in the first flush, where
        # it stalled the requests being served.
        pa.array([datetime.now(UTC)])

    def add(self, row: dict[str, Any]) -> bool:
        """Buffer a row; whether the buffer is due to be flushed."""
        with self._lock:
            self._rows.append(row)
            return len(self._rows) >= ROLL_ROWS or time.monotonic() - self._since > ROLL_SECONDS

    def flush(self) -> int:
        """Write the buffered rows (safe to call from a worker thread)."""
        with self._lock:
            rows, self._rows = self._rows, []
            self._since = time.monotonic()
        if not rows:
            return 0
        table = self.pseudonymiser.apply(
            conform(pa.Table.from_pylist(rows), EXCHANGES), "exchanges"
        )
        days = pc.strftime(table.column("ts"), format="%Y-%m-%d").to_pylist()
        for day in sorted(set(days)):
            part = table.filter(pa.array([d == day for d in days]))
            folder = self.folder / f"day={day}"
            folder.mkdir(parents=True, exist_ok=True)
            name = f"part-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.parquet"
            tmp = folder / f".{name}.tmp"
            pq.write_table(part, tmp)
            tmp.replace(folder / name)
        self.written += len(rows)
        return len(rows)
