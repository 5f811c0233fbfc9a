"""An operator's accounts file, read into the canonical accounts table.

Sign-up scoring and `detect --accounts` take the table as operators have it: Parquet,
CSV or JSON Lines, gzipped or not, written by pandas, a warehouse export or a
spreadsheet. Text formats are read as ingest reads records: every value as written (an
id "0000005" stays that, not the number 5), a blank as no value, sign-up times in any
form `to_ts` takes, mixed within a column.
"""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq

from distillguard.errors import InputError, SchemaError
from distillguard.ingest.values import to_ts
from distillguard.schema import ACCOUNTS, conform


def read_accounts(path: str | Path) -> pa.Table:
    """The accounts table in a file (see the module doc), in the canonical schema."""
    source = Path(path)
    if not source.is_file():
        raise InputError(f"{source}: no such accounts file")
    kind = source.name.lower().removesuffix(".gz")
    try:
        if kind.endswith(".parquet"):
            table = pq.read_table(source)
        elif kind.endswith(".csv"):
            text = pcsv.ConvertOptions(column_types=dict.fromkeys(ACCOUNTS.names, pa.string()))
            table = pcsv.read_csv(source, convert_options=text)
        elif kind.endswith((".jsonl", ".json", ".ndjson")):
            table = _json_lines(source)
        else:
            raise InputError(f"{source}: accounts must be Parquet, CSV or JSON Lines")
    except (pa.ArrowInvalid, OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise InputError(f"{source}: cannot read accounts: {exc}") from None
    table = _sign_up_times(_as_text(table), str(source))
    return conform(table, ACCOUNTS, name=str(source))


def _json_lines(source: Path) -> pa.Table:
    """JSON Lines by Arrow's reader with every canonical column as text (its guesses
    would make an id "2026-03-01" a date, a 20-digit id a float, and skip the range
    check of times); line by line when a value is not text (an epoch time, a numeric
    id), or the file starts with a byte-order mark."""
    text = pa.schema([(name, pa.string()) for name in ACCOUNTS.names])
    options = pjson.ParseOptions(explicit_schema=text, unexpected_field_behavior="ignore")
    try:
        table = pjson.read_json(source, parse_options=options)
        table.validate(full=True)  # bytes that are not UTF-8 pass the reader
        return table
    except pa.ArrowInvalid:
        pass
    columns: dict[str, list[Any]] = {name: [] for name in ACCOUNTS.names}
    opener = gzip.open if source.suffix.lower() == ".gz" else open
    with opener(source, "rt", encoding="utf-8-sig") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                raise InputError(
                    f"{source}: line {number} is not JSON (JSON Lines: one object a line)"
                ) from None
            if not isinstance(record, dict):
                raise InputError(f"{source}: line {number} is not a JSON object")
            for name, values in columns.items():
                value = record.get(name)
                scalar = value is None or name == "created_at" or isinstance(value, str)
                values.append(value if scalar else json.dumps(value))
    times = _times(columns.pop("created_at"), str(source))
    table = pa.table({name: pa.array(values, pa.string()) for name, values in columns.items()})
    return table.append_column("created_at", times)


def _as_text(table: pa.Table) -> pa.Table:
    """The canonical text columns as text (an id a JSON reader took for a number), a
    blank as no value (as ingest stores it): a blank card would otherwise be one card
    shared by every account without one."""
    for field in ACCOUNTS:
        if field.name not in table.column_names or field.type != pa.string():
            continue
        column = table.column(field.name)
        if pa.types.is_integer(column.type) or pa.types.is_boolean(column.type):
            column = column.cast(pa.string())
        if pa.types.is_string(column.type):  # blank or only spaces, as ingest reads it
            blank = pc.equal(pc.utf8_trim_whitespace(column), "")
            column = pc.if_else(blank, pa.scalar(None, pa.string()), column)
        table = table.set_column(table.column_names.index(field.name), field.name, column)
    return table


def _sign_up_times(table: pa.Table, name: str) -> pa.Table:
    """`created_at` given as text or epoch numbers read as ingest reads times (ISO 8601
    of any precision and zone, RFC 2822, seconds to nanoseconds by magnitude): a CSV's
    column is text, and Arrow's own cast takes neither nine decimals nor epoch seconds."""
    if "created_at" not in table.column_names:
        return table
    column = table.column("created_at")
    kind = column.type
    if not (pa.types.is_string(kind) or pa.types.is_integer(kind) or pa.types.is_floating(kind)):
        return table
    at = table.column_names.index("created_at")
    return table.set_column(at, "created_at", _times(column.to_pylist(), name))


def _times(values: list[Any], name: str) -> pa.Array:
    times = []
    for row, value in enumerate(values, 1):
        try:
            blank = value is None or (isinstance(value, str) and not value.strip())
            times.append(None if blank else to_ts(value))
        except ValueError as exc:
            raise SchemaError(f"{name}: created_at of row {row}: {exc}") from None
    return pa.array(times, pa.timestamp("us", "UTC"))
