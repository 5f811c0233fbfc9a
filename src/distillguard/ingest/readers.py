"""Streaming readers: every input file becomes a sequence of Records, never a whole load.

A reader never raises for bad content. A line that is not JSON, holds invalid UTF-8 or
is too long becomes a Record carrying an error code, with its line number, byte offset
and raw bytes, so the pipeline can quarantine it and go on. Only a file that cannot be
opened at all is reported as a file-level error.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

MAX_RECORD_BYTES = 64 * 1024 * 1024  # larger records are quarantined, not loaded
SNIFF_BYTES = 64 * 1024
CHUNK = 1 << 20


@dataclass(slots=True)
class Record:
    """One raw record and where it came from; `error` is set when it could not be parsed."""

    source: str
    line: int | None
    offset: int | None
    value: Any = None
    error: str | None = None
    detail: str | None = None
    raw: bytes | None = None


@dataclass(slots=True)
class FileKind:
    """What a file holds at the container level: jsonl, json, csv, parquet, empty, binary."""

    container: str
    compressed: bool = False


def open_binary(path: Path) -> IO[bytes]:
    """Open a file for reading, transparently decompressing gzip."""
    handle: IO[bytes] = open(path, "rb")  # noqa: SIM115 - returned to the caller
    if handle.read(2) == b"\x1f\x8b":
        handle.close()
        return gzip.GzipFile(path, "rb")  # type: ignore[return-value]
    handle.seek(0)
    return handle


def sniff_kind(path: Path) -> FileKind:
    """Tell the container from the first bytes of the file (after gzip, if any)."""
    with open(path, "rb") as raw:
        head = raw.read(SNIFF_BYTES)
    compressed = head[:2] == b"\x1f\x8b"
    if compressed:  # decompress only the start; a truncated file still sniffs
        try:
            head = zlib.decompressobj(wbits=31).decompress(head, SNIFF_BYTES)
        except zlib.error:
            return FileKind("binary", compressed)
    if head.startswith(b"PAR1"):
        return FileKind("parquet", compressed)
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not text:
        return FileKind("empty", compressed)
    if b"\x00" in head:
        return FileKind("binary", compressed)
    if text[:1] == b"[":
        return FileKind("json", compressed)
    if text[:1] == b"{":
        return FileKind("jsonl" if _looks_like_lines(text) else "json", compressed)
    return FileKind("csv", compressed)


def _looks_like_lines(text: bytes) -> bool:
    """JSON Lines, unless the start reads as one pretty-printed document."""
    lines = text.split(b"\n")
    if len(lines) == 1 or _parses(lines[0]):
        return True  # a first line longer than the sniffed head, or a whole object
    return any(_parses(line) for line in lines[1:-1][:50])


def _parses(line: bytes) -> bool:
    try:
        orjson.loads(line)
        return True
    except orjson.JSONDecodeError:
        return False


def read_jsonl(path: Path, source: str) -> Iterator[Record]:
    """One Record per non-blank line, with 1-based line number and byte offset.

    A compressed stream that breaks off ends the file with one `unreadable_file` Record.
    """
    number = offset = 0
    try:
        with open_binary(path) as handle:
            while True:
                line = handle.readline(MAX_RECORD_BYTES + 1)
                if not line:
                    return
                number += 1
                start = offset
                offset += len(line)
                if len(line) > MAX_RECORD_BYTES and not line.endswith(b"\n"):
                    offset += _skip_line(handle)
                    yield Record(
                        source,
                        number,
                        start,
                        error="record_too_large",
                        detail=f"line is longer than {MAX_RECORD_BYTES} bytes",
                    )
                    continue
                body = line.strip()
                if body:
                    yield parse_json_line(body, source, number, start)
    except (EOFError, OSError, zlib.error) as exc:
        yield Record(
            source,
            number + 1,
            None,
            error="unreadable_file",
            detail=f"reading stopped after line {number}: {exc}",
        )


def _skip_line(handle: IO[bytes]) -> int:
    skipped = 0
    while True:
        chunk = handle.readline(CHUNK)
        skipped += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return skipped


def parse_json_line(body: bytes, source: str, line: int | None, offset: int | None) -> Record:
    try:
        return Record(source, line, offset, value=orjson.loads(body))
    except orjson.JSONDecodeError as exc:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as utf:
            return Record(
                source,
                line,
                offset,
                error="invalid_utf8",
                detail=f"invalid UTF-8 at byte {utf.start}",
                raw=body,
            )
        return Record(source, line, offset, error="invalid_json", detail=str(exc)[:200], raw=body)


def read_json_document(path: Path, source: str) -> Iterator[Record]:
    """Records from one JSON document: the items of a top-level array, of a 'data' or
    'resourceSpans' member, or the whole object. Streams with ijson; a parse error
    ends the file with one error Record saying where."""
    import ijson

    prefix, wrap = _document_layout(path)
    count = 0
    try:
        with open_binary(path) as handle:
            for item in ijson.items(handle, prefix, use_float=True, multiple_values=True):
                count += 1
                value = {wrap: [item]} if wrap else item
                yield Record(source, count, None, value=value)
    except (ijson.JSONError, UnicodeDecodeError, ValueError) as exc:
        reason = "invalid_utf8" if isinstance(exc, UnicodeDecodeError) else "invalid_json"
        yield Record(
            source,
            count + 1,
            None,
            error=reason,
            detail=f"document unreadable after item {count}: {str(exc)[:160]}",
        )


def _document_layout(path: Path) -> tuple[str, str | None]:
    import ijson

    try:
        with open_binary(path) as handle:
            events = ijson.parse(handle)
            _, first_event, _ = next(events)
            if first_event == "start_array":
                return "item", None
            _, event, key = next(events)
            if event == "map_key" and key == "resourceSpans":
                return "resourceSpans.item", "resourceSpans"
            if event == "map_key" and key in ("data", "records", "logs"):
                return f"{key}.item", None
    except (ijson.JSONError, StopIteration, UnicodeDecodeError, ValueError):
        pass
    return "", None


def read_csv(path: Path, source: str) -> Iterator[Record]:
    """One Record per CSV row as a dict; blank cells are null, bad UTF-8 is flagged."""
    csv.field_size_limit(sys.maxsize)
    with open_binary(path) as binary:
        first = binary.readline(SNIFF_BYTES)
        delimiter = "\t" if first.count(b"\t") > first.count(b",") else ","
    with open_binary(path) as binary:
        text = io.TextIOWrapper(binary, encoding="utf-8-sig", errors="surrogateescape", newline="")
        reader = csv.DictReader(text, delimiter=delimiter)
        header = list(reader.fieldnames or [])
        for row in reader:
            yield _csv_record(row, header, source, reader.line_num)


def _csv_record(row: dict[Any, Any], header: list[str], source: str, line: int) -> Record:
    if None in row:
        return Record(
            source,
            line,
            None,
            error="csv_shape",
            detail=f"row has more fields than the {len(header)} in the header",
        )
    if any(v is None for v in row.values()):
        return Record(
            source,
            line,
            None,
            error="csv_shape",
            detail=f"row has fewer fields than the {len(header)} in the header",
        )
    for value in row.values():
        if _has_surrogate(value):
            raw = ",".join(v or "" for v in row.values()).encode("utf-8", "surrogateescape")
            return Record(
                source, line, None, error="invalid_utf8", detail="invalid UTF-8 in a cell", raw=raw
            )
    return Record(source, line, None, value={k: (v if v != "" else None) for k, v in row.items()})


def _has_surrogate(value: str) -> bool:
    try:
        value.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def read_parquet(path: Path, source: str, batch_rows: int = 4096) -> Iterator[Record]:
    """One Record per Parquet row, read a row group batch at a time."""
    import pyarrow.parquet as pq

    number = 0
    parquet = pq.ParquetFile(path)
    for batch in parquet.iter_batches(batch_size=batch_rows):
        for row in batch.to_pylist():
            number += 1
            yield Record(source, number, None, value=row)


READERS = {
    "jsonl": read_jsonl,
    "json": read_json_document,
    "csv": read_csv,
    "parquet": read_parquet,
}


def decode_bytes(raw: bytes) -> str:
    """Text for a quarantine file: UTF-8 where valid, with invalid bytes escaped."""
    return codecs.decode(raw, "utf-8", "backslashreplace")
