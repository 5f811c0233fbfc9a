"""The quarantine: every record that could not be stored, with where it was and why.

One JSON line per rejected record: source file, line (or item/row number), byte
offset when known, a reason code, a human detail, and the record itself (raw bytes
decoded with invalid UTF-8 escaped, or the partly mapped row). The file may hold prompt
text and raw identifiers: protect it like the logs it came from.
"""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime
from pathlib import Path
from typing import IO, Any

import orjson

from distillguard.ingest.readers import Record, decode_bytes, printable_name

MAX_KEPT_BYTES = 1 << 20  # a record larger than this is referenced, not copied


class Quarantine:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.reasons: Counter[str] = Counter()
        self._handle: IO[bytes] | None = None

    @property
    def count(self) -> int:
        return sum(self.reasons.values())

    def add(
        self,
        source: str,
        line: int | None,
        offset: int | None,
        reason: str,
        detail: str,
        record: Any = None,
    ) -> None:
        self.reasons[reason] += 1
        entry = {
            "source": printable_name(source),
            "line": line,
            "offset": offset,
            "reason": reason,
            "detail": detail,
            "record": _keepable(record),
        }
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        try:
            line_bytes = orjson.dumps(entry, default=_default)
        except (TypeError, orjson.JSONEncodeError) as exc:  # e.g. nesting deeper than 254
            entry["record"] = {
                "omitted": f"record could not be written as JSON ({exc}); "
                "see the source file at this line"
            }
            line_bytes = orjson.dumps(entry, default=_default)
        self._handle.write(line_bytes + b"\n")

    def add_record(self, record: Record) -> None:
        kept = decode_bytes(record.raw) if record.raw is not None else record.value
        self.add(
            record.source,
            record.line,
            record.offset,
            record.error or "unknown",
            record.detail or "",
            kept,
        )

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _keepable(record: Any) -> Any:
    if isinstance(record, str | bytes) and len(record) > MAX_KEPT_BYTES:
        return {"omitted": f"{len(record)} bytes; see the source file at this line"}
    return record


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return decode_bytes(value)
    return str(value)
