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
import os
import shutil
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
import pyarrow as pa

from distillguard.ingest.jsondoc import Cut, Screen, Suspect, cut_items

MAX_RECORD_BYTES = 64 * 1024 * 1024  # larger records are quarantined, not loaded
SNIFF_BYTES = 64 * 1024
SNIFF_LINES = 20  # lines after the first that tell JSON Lines from a document
BOM = b"\xef\xbb\xbf"
WRAPPERS = {"resourceSpans", "resourceLogs"}  # OTLP members kept around each item
LISTS = WRAPPERS | {"data", "records", "logs", "items", "results", "observations", "traces"}
RECORD_FIELDS = {  # a top-level object with one of these is a record, not a wrapper
    "request_id",
    "requestId",
    "custom_id",
    "ts",
    "account_id",
    "messages",
    "prompt_text",
    "response_text",
    "spanId",
    "startTime",
}
LAYOUT_EVENTS = 20_000  # parse events looked at past a wrapper's list for record fields
CHUNK = 1 << 20
CONTROL_BYTES = bytes([*range(0x09), *range(0x0E, 0x20)])  # not tab, newline, CR, FF


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
    stream = zlib.decompressobj(wbits=31)
    if compressed:  # decompress only the start; a truncated file still sniffs
        try:
            head = stream.decompress(head, SNIFF_BYTES)
        except zlib.error:
            return FileKind("binary", compressed)
    if head.startswith(b"PAR1"):
        return FileKind("parquet", compressed)
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not text and compressed and not stream.eof:
        return FileKind("jsonl", compressed)  # cut short, in its header even: the reader says so
    if not text:
        return FileKind("empty", compressed)
    if _looks_binary(head):
        return FileKind("binary", compressed)
    first = text.split(b"\n", 1)[0]
    longer_than_head = first == text and len(head) == SNIFF_BYTES
    if text[:1] in (b"{", b"[") and (longer_than_head or _parses(first)):
        return FileKind("jsonl" if text[:1] == b"{" else "json", compressed)
    if _later_lines_are_records(path):
        return FileKind("jsonl", compressed)  # the first line is cut (a rotated log) or junk
    if text[:1] in (b"{", b"["):
        return FileKind("json", compressed)
    if len(head) < SNIFF_BYTES and _parses(text):
        return FileKind("json", compressed)  # a lone JSON value: read, then refused as no record
    return FileKind("csv", compressed)


def _looks_binary(head: bytes) -> bool:
    """Binary content is dense with control bytes; a text log has them on a bad line or
    two at most, and those lines are quarantined by the reader, not the whole file."""
    if b"\x00" not in head:
        return False
    controls = len(head) - len(head.translate(None, CONTROL_BYTES))
    lines = head.split(b"\n")
    marked = sum(1 for line in lines if len(line.translate(None, CONTROL_BYTES)) < len(line))
    return controls * 32 >= len(head) or marked * 2 > len(lines)


def _later_lines_are_records(path: Path) -> bool:
    """JSON Lines whose first line does not parse: most of the next lines are JSON objects.

    Lines are read whole, however long (within the record limit), so records over the
    sniffed head still count; a pretty-printed document's lines rarely parse alone.
    """
    votes = [body[:1] == b"{" and _parses(body) for body in _head_lines(path)][1:]
    return sum(votes) * 2 > len(votes)


def _head_lines(path: Path) -> Iterator[bytes]:
    """The first non-blank lines of a file, stripped, each whole and within one record's
    size in all; a line cut by that budget or a broken stream ends them."""
    budget = MAX_RECORD_BYTES
    count = 0
    try:
        with open_binary(path) as handle:
            while count <= SNIFF_LINES and budget > 0:
                line = handle.readline(budget + 1)
                budget -= len(line)
                if not line or budget < 0:
                    return
                if line.strip():
                    count += 1
                    yield line.strip()
    except (EOFError, OSError, zlib.error):
        return


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
                if number == 1 and body.startswith(BOM):
                    body = body[len(BOM) :]
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
    """Records from one JSON document: the items of a top-level array, of a list member
    such as `data` or `resourceSpans`, or the whole value.

    ijson streams a sound document fast behind a Screen; at the first flaw (a number
    beyond 64 bits, bytes that are not UTF-8, a lone surrogate, nesting past orjson's
    limit, a document cut short) the rest is cut item by item and each item judged as a
    JSON line is, so the flaw costs its own item. A broken gzip stream is unreadable_file.
    """
    import ijson

    prefix, wrap = _document_layout(path)
    count = 0
    try:
        with open_binary(path) as handle:
            _skip_bom(handle)
            screen = Screen(handle, len(prefix.split(".")) if prefix else 0)
            for item in ijson.items(screen, prefix, use_float=True, multiple_values=True):
                count += 1
                screen.settle()
                yield Record(source, count, None, value={wrap: [item]} if wrap else item)
        return
    except (ijson.JSONError, UnicodeDecodeError, ValueError, Suspect):
        pass
    except (EOFError, OSError, zlib.error) as exc:
        yield _broken_off(source, count, exc)
        return
    yield from _read_carefully(path, source, prefix, wrap, count)


def _read_carefully(
    path: Path, source: str, prefix: str, wrap: str | None, skip: int
) -> Iterator[Record]:
    """The items after the first `skip`, each parsed alone (see jsondoc)."""
    count = skip
    try:
        with open_binary(path) as handle:
            _skip_bom(handle)
            for cut in cut_items(handle, prefix, skip, MAX_RECORD_BYTES):
                count = cut.number
                yield _cut_record(cut, source, wrap)
    except (EOFError, OSError, zlib.error) as exc:
        yield _broken_off(source, count, exc)


def _cut_record(cut: Cut, source: str, wrap: str | None) -> Record:
    if cut.problem is not None or cut.body is None:
        return Record(
            source, cut.number, cut.offset, error=cut.reason, detail=cut.problem, raw=cut.body
        )
    record = parse_json_line(cut.body, source, cut.number, cut.offset)
    if wrap and record.error is None:
        record.value = {wrap: [record.value]}
    return record


def _broken_off(source: str, count: int, exc: BaseException) -> Record:
    return Record(
        source,
        count + 1,
        None,
        error="unreadable_file",
        detail=f"reading stopped after item {count}: {str(exc)[:160]}",
    )


def _skip_bom(handle: IO[bytes]) -> None:
    if handle.read(len(BOM)) != BOM:
        handle.seek(0)


def _document_layout(path: Path) -> tuple[str, str | None]:
    """Where the records are: ('item', None) for an array, ('key.item', wrapper) for a
    list member of a top-level object, ('', None) for the whole value.

    A top-level object carrying a record's own fields is a record even when it holds a
    list named like a wrapper's (`results`, `data`); its keys after that list are looked
    at too, within a budget, since reading them all would read a wrapper's records twice.
    """
    import ijson

    try:
        with open_binary(path) as handle:
            first = handle.read(SNIFF_BYTES).lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
            if first != b"{":
                return ("item" if first == b"[" else ""), None
            handle.seek(0)
            _skip_bom(handle)
            screen = Screen(handle, 0)
            events = ijson.parse(screen)
            next(events)
            return _wrapper_layout(events, screen)
    except (
        Suspect,
        ijson.JSONError,
        StopIteration,
        UnicodeDecodeError,
        ValueError,
        EOFError,
        OSError,
        zlib.error,
    ):
        pass
    return "", None


def _wrapper_layout(
    events: Iterator[tuple[str, str, Any]], screen: Screen
) -> tuple[str, str | None]:
    key = found = None
    budget = LAYOUT_EVENTS
    depth = 1
    for prefix, event, value in events:
        depth += event in ("start_map", "start_array")
        depth -= event in ("end_map", "end_array")
        screen.settle(depth)
        if prefix == "" and event == "map_key":
            if value in RECORD_FIELDS:
                return "", None
            key = value
        elif found is None and key in LISTS and prefix == key and event == "start_array":
            found = key
        budget -= found is not None
        if budget < 0 or (prefix == "" and event == "end_map"):
            break
    if found is None:
        return "", None
    return f"{found}.item", found if found in WRAPPERS else None


def read_csv(path: Path, source: str) -> Iterator[Record]:
    """One Record per CSV row as a dict; blank cells are null, bad UTF-8 is flagged.

    Blank lines before the header are skipped; a header that repeats a column name is
    refused, since a later cell would silently hide an earlier one.
    """
    csv.field_size_limit(sys.maxsize)
    with open_binary(path) as binary:
        first = binary.read(SNIFF_BYTES).lstrip(b"\r\n").split(b"\n", 1)[0]
        delimiter = "\t" if first.count(b"\t") > first.count(b",") else ","
    with open_binary(path) as binary:
        text = io.TextIOWrapper(binary, encoding="utf-8-sig", errors="surrogateescape", newline="")
        lines = _RowLines(text)
        reader = csv.reader(lines, delimiter=delimiter, strict=True)
        header: list[str] | None = None
        while True:
            lines.start_row()
            try:
                fields = next(reader)
            except StopIteration:
                return
            except (csv.Error, _RowTooLong) as exc:
                yield _malformed(source, lines, exc)
                continue
            if not any(f.strip() for f in fields):
                continue
            if header is None:
                header = [f.strip() for f in fields]
                repeated = sorted({h for h in header if header.count(h) > 1})
                if repeated:
                    yield Record(
                        source,
                        lines.first,
                        None,
                        error="csv_shape",
                        detail=f"the header repeats column(s) {', '.join(repeated)}",
                    )
                    return
                continue
            yield _csv_record(fields, header, source, lines.first, delimiter)


class _RowTooLong(Exception):
    pass


class _RowLines:
    """The file's lines for the CSV reader, remembering those of the row being read: a
    row the reader refuses (an unterminated quote swallowed the rest of the file) costs
    its first line only, and the lines after it are read again as rows of their own."""

    def __init__(self, text: IO[str]) -> None:
        self.text = text
        self.number = 0  # lines read from the file
        self.row: list[tuple[int, str]] = []
        self.again: list[tuple[int, str]] = []  # to be read again, last first
        self.size = 0

    def start_row(self) -> None:
        self.row, self.size = [], 0

    @property
    def first(self) -> int:
        return self.row[0][0] if self.row else self.number

    def __iter__(self) -> _RowLines:
        return self

    def __next__(self) -> str:
        if self.again:
            numbered = self.again.pop()
        else:
            line = self.text.readline()
            if not line:
                raise StopIteration
            self.number += 1
            numbered = (self.number, line)
        self.row.append(numbered)
        self.size += len(numbered[1])
        if self.size > MAX_RECORD_BYTES:
            raise _RowTooLong
        return numbered[1]

    def refused(self) -> None:
        """Read the refused row's lines but its first again."""
        self.again.extend(reversed(self.row[1:]))


def _malformed(source: str, lines: _RowLines, exc: Exception) -> Record:
    too_long = isinstance(exc, _RowTooLong)
    line = lines.first
    raw = None if too_long or not lines.row else lines.row[0][1].encode("utf-8", "surrogateescape")
    lines.refused()
    return Record(
        source,
        line,
        None,
        raw=raw,
        error="record_too_large" if too_long else "csv_shape",
        detail=(
            f"a row runs past {MAX_RECORD_BYTES} bytes (an unterminated quote?)"
            if too_long
            else f"malformed CSV: {exc}"
        ),
    )


def _csv_record(
    fields: list[str], header: list[str], source: str, line: int, delimiter: str
) -> Record:
    raw = delimiter.join(fields).encode("utf-8", "surrogateescape")
    if len(fields) != len(header):
        more = "more" if len(fields) > len(header) else "fewer"
        return Record(
            source,
            line,
            None,
            error="csv_shape",
            raw=raw,
            detail=f"row has {len(fields)} fields, {more} than the {len(header)} in the header",
        )
    if any(_has_surrogate(value) for value in fields):
        return Record(
            source, line, None, error="invalid_utf8", detail="invalid UTF-8 in a cell", raw=raw
        )
    values = {k: (v if v != "" else None) for k, v in zip(header, fields, strict=True)}
    return Record(source, line, None, value=values)


def _has_surrogate(value: str) -> bool:
    try:
        value.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def read_parquet(path: Path, source: str, batch_rows: int = 4096) -> Iterator[Record]:
    """One Record per Parquet row, read a row group batch at a time.

    Nanosecond timestamps (Spark's and pandas' default) are cut to microseconds, the
    canonical precision, so rows convert without pandas. Gzip-wrapped Parquet is first
    decompressed to a temporary file, since Parquet needs random access.
    """
    import tempfile

    import pyarrow.parquet as pq

    with tempfile.TemporaryFile() as scratch:
        if _is_gzip(path):
            with gzip.GzipFile(path, "rb") as packed:
                shutil.copyfileobj(packed, scratch, CHUNK)
            scratch.seek(0)
            parquet = pq.ParquetFile(scratch)
        else:
            parquet = pq.ParquetFile(path)
        number = 0
        for batch in parquet.iter_batches(batch_size=batch_rows):
            for row in _rows(_micro(batch)):
                number += 1
                if isinstance(row, str):
                    yield Record(source, number, None, error="wrong_type", detail=row)
                else:
                    yield Record(source, number, None, value=row)


def _rows(batch: pa.RecordBatch) -> list[dict[str, Any] | str]:
    """The batch's rows as dicts; a row holding a value Python cannot hold (a timestamp
    past year 9999) becomes the text of its problem, its neighbours still rows."""
    try:
        return batch.to_pylist()
    except (ValueError, OverflowError):
        return [_row(batch.slice(i, 1)) for i in range(batch.num_rows)]


def _row(one: pa.RecordBatch) -> dict[str, Any] | str:
    try:
        return one.to_pylist()[0]
    except (ValueError, OverflowError):
        for name, column in zip(one.schema.names, one.columns, strict=True):
            try:
                column.to_pylist()
            except (ValueError, OverflowError) as exc:
                late = pa.types.is_timestamp(column.type) or pa.types.is_date(column.type)
                return f"{name}: {str(exc)[:100]}" + (" (a time past year 9999)" if late else "")
        raise


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def _micro(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Cast nanosecond timestamps (top-level columns) to microseconds."""
    fields = batch.schema
    columns = []
    for i, field in enumerate(fields):
        column = batch.column(i)
        if pa.types.is_timestamp(field.type) and field.type.unit == "ns":
            column = column.cast(pa.timestamp("us", tz=field.type.tz), safe=False)
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, names=fields.names)


READERS = {
    "jsonl": read_jsonl,
    "json": read_json_document,
    "csv": read_csv,
    "parquet": read_parquet,
}


def printable_name(source: str) -> str:
    """A file name as stored and printed: bytes that are not UTF-8 (kept by the OS as
    surrogates) written as \\xNN escapes, since Parquet, JSON and stdout take UTF-8 only."""
    return os.fsencode(source).decode("utf-8", "backslashreplace")


def decode_bytes(raw: bytes) -> str:
    """Text for a quarantine file: UTF-8 where valid, with invalid bytes escaped."""
    return codecs.decode(raw, "utf-8", "backslashreplace")
