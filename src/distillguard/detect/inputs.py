"""What detection reads: the input files, their digests, the accounts.

Every stage after content features reads digests (features/digest.py), one folder per
input file. With a cache folder (`detect --cache`) a file's digest is kept under a key
of the file's path, size, modification time, footer and the digest version, so a
nightly run over a store digests only the days that are new or changed and reuses the
rest; a run without a cache digests everything in one pass. Either way the later
stages see the same rows, so the findings are the same. A cache serves one input:
digests of files no longer in it (a day re-ingested, a file removed) are deleted. A
cache folder holds nothing else, and a folder that holds anything else is refused as a
cache, so a mistyped `--cache` never deletes what is not a digest.

A window (`detect --since/--until`) bounds a nightly run over a long store: a file
whose footer shows every exchange outside the window is neither read nor digested, and
its cached digest stays for the windows that do cover it.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import re
import shutil
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from distillguard.engines import Engine
from distillguard.errors import InputError, SchemaError, UsageError
from distillguard.features.digest import VERSION
from distillguard.listing import files_under
from distillguard.schema import EXCHANGES
from distillguard.store import MANIFEST, Store, exclusive

LOCK = ".lock"  # held by the run using the cache
PARTS = "_parts.json"  # in each entry: its Parquet parts and sizes (Spark skips "_" names)
ENTRY = re.compile(r"[0-9a-f]{24}|\.[0-9a-f]{24}\.partial")  # a file's digests (`_key`)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SQL_TYPES = {
    "string": "VARCHAR",
    "int64": "BIGINT",
    "int32": "INTEGER",
    "double": "DOUBLE",
    "bool": "BOOLEAN",
    "timestamp[us, tz=UTC]": "TIMESTAMPTZ",
}

File = Path | str  # a local path, or an object-storage URI the engine reads


def inputs(path: File) -> tuple[list[File], list[File]]:
    """Exchange and account Parquet files of a store, a simulator folder or a file; an
    object-storage URI (s3a://, gs://, abfss://, hdfs://) is passed to the engine as is."""
    if is_uri(path):
        return [str(path)], []
    source = Path(path)
    if (source / MANIFEST).is_file():
        store = Store(source)
        return [*store.files("exchanges")], [*store.files("accounts")]
    if source.is_file():
        return [source], []
    if (source / "exchanges.parquet").is_file():
        accounts = source / "accounts.parquet"
        return [source / "exchanges.parquet"], [accounts] if accounts.is_file() else []
    if (source / ".staging").is_dir():
        raise InputError(
            f"{source}: a store whose first ingest has not committed (no {MANIFEST} yet): "
            "wait for it to end, or if it was killed, ingest again"
        )
    if listed(source):
        files = [f for f in files_under(source) if f.suffix == ".parquet"]
        if files:
            return [*files], []
    raise InputError(
        f"{source}: no store, exchanges.parquet or Parquet files to read "
        "(ingest log files first with `distillguard ingest`)"
    )


def listed(path: File) -> bool:
    """Whether `path` is a folder whose every Parquet file, however deep, is input (not a
    store, whose manifest names its files, nor a simulator's output)."""
    if is_uri(path):
        return False
    source = Path(path)
    return (
        source.is_dir()
        and not (source / MANIFEST).is_file()
        and not (source / "exchanges.parquet").is_file()
    )


def reading(source: File) -> AbstractContextManager[None]:
    """Hold a store's files while a run reads them (see `Store.reading`); other
    sources need no holding."""
    local = not is_uri(source) and (Path(source) / MANIFEST).is_file()
    return Store(source).reading() if local else contextlib.nullcontext()


def is_uri(path: File) -> bool:
    return isinstance(path, str) and "://" in path


def readable(files: list[File]) -> None:
    """Refuse, by name, a local input that is not whole Parquet (a copy cut short,
    another format): its footer costs little to read, and a run is better refused at
    the start than stopped in the middle."""
    for file in files:
        problem = None if is_uri(file) else _unreadable(Path(file))
        if problem:
            raise InputError(f"{file}: {problem}")


def exchanges_only(files: list[File]) -> None:
    """Refuse, by name, a local file without the required exchange columns (every
    Parquet file of a folder is read as exchanges, and another table there, scores or
    matches, would otherwise fail the run half-way, unnamed), or with a column no
    exchange has: a list or a struct, or times as bare numbers, which would be read as
    microseconds (1970) alone and fail beside a file of timestamps."""
    for file in files:
        if is_uri(file):
            continue
        lacking = _lacking(Path(file))
        if lacking:
            raise InputError(
                f"{file}: not exchanges (no {', '.join(lacking)}); every Parquet file of "
                "the input is read as exchanges: move other tables out of it"
            )
        for field in pq.read_schema(file):
            if field.name in EXCHANGES.names and not _fits(field.type, field.name):
                numbers = pa.types.is_integer(field.type) or pa.types.is_floating(field.type)
                raise InputError(
                    f"{file}: its column {field.name} is {field.type}, which no exchange "
                    "has: ingest the logs with `distillguard ingest`, which "
                    + ("reads times given as epoch numbers" if numbers else "stores what fits")
                    + " and quarantines the rest"
                )


def _fits(kind: pa.DataType, name: str) -> bool:
    """Whether a column of type `kind` can be read as the canonical column `name`
    (a time as a timestamp, a date or ISO 8601 text; anything else as any scalar)."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if pa.types.is_nested(kind):
        return False
    if pa.types.is_timestamp(EXCHANGES.field(name).type):
        text = pa.types.is_string(kind) or pa.types.is_large_string(kind)
        return pa.types.is_timestamp(kind) or pa.types.is_date(kind) or text
    return True


def not_among_logs(flag: str, target: Path) -> None:
    """Refuse a Parquet output (scores, matches) beside exchange logs: detect reads every
    Parquet file of a folder it is given, and the next nightly run would stop at this
    one. A few neighbours' footers tell; a store or a simulator folder names its files."""
    folder = target.resolve().parent
    if not listed(folder):
        return
    neighbours = (p for p in sorted(folder.glob("*.parquet")) if p.resolve() != target.resolve())
    for neighbour in itertools.islice(neighbours, 3):
        if _unreadable(neighbour) is None and not _lacking(neighbour):
            raise UsageError(
                f"{flag} {target} would lie among the exchange logs of {folder} (such as "
                f"{neighbour.name}), where detect reads every Parquet file: write it elsewhere"
            )


def _lacking(file: Path) -> list[str]:
    """The required exchange columns that the Parquet file lacks."""
    names = pq.read_schema(file).names
    return [f.name for f in EXCHANGES if not f.nullable and f.name not in names]


def _unreadable(file: Path) -> str | None:
    """Why the Parquet file's footer cannot be read, or None when it can."""
    try:
        pq.read_metadata(file)
    except pa.ArrowException:
        return "not a readable Parquet file (damaged, or another format)"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    return None


TIME_UNITS = {"milliseconds": 1_000, "microseconds": 1}  # to microseconds; ns below


def in_window(files: list[File], since: str | None, until: str | None) -> list[File]:
    """The files that may hold exchanges in [since, until). A local file is left out
    only when its footer's statistics put every `ts` outside; without statistics it
    is kept, and the engine's filter decides row by row."""
    low = _micros(since) if since else None
    high = _micros(until) if until else None
    return [f for f in files if is_uri(f) or not _outside(_span(Path(f)), low, high)]


def _outside(span: tuple[int, int] | None, low: int | None, high: int | None) -> bool:
    if span is None:
        return False
    return (low is not None and span[1] < low) or (high is not None and span[0] >= high)


def _span(file: Path) -> tuple[int, int] | None:
    """The earliest and latest `ts` in a Parquet file, in microseconds since the
    epoch, from its footer; None when the footer does not tell."""
    meta = pq.read_metadata(file)
    where = [k for k in range(meta.num_columns) if meta.schema.column(k).path == "ts"]
    if not where or not meta.num_row_groups:
        return None
    lows, highs = [], []
    for group in range(meta.num_row_groups):
        column = meta.row_group(group).column(where[0])
        stats = column.statistics
        if stats is None or not stats.has_min_max or column.physical_type != "INT64":
            return None
        unit = json.loads(stats.logical_type.to_json()).get("timeUnit")
        if unit == "nanoseconds":
            lows.append(stats.min_raw // 1_000)
            highs.append(stats.max_raw // 1_000)
        elif unit in TIME_UNITS:
            lows.append(stats.min_raw * TIME_UNITS[unit])
            highs.append(stats.max_raw * TIME_UNITS[unit])
        else:
            return None
    return min(lows), max(highs)


def digests(
    db: Engine,
    files: list[File],
    work: Path,
    cache: Path | None,
    workers: int,
    held: list[File] | None = None,
) -> tuple[list[File], dict[str, int]]:
    """Digest folders covering `files`; how many files were digested and how many
    reused from the cache. Cached digests of `held` files (the whole input, of which
    `files` may be a window) are kept."""
    counts = {"digested_files": 0, "reused_files": 0}
    if cache is None or any(is_uri(f) for f in files):
        folder = db.scratch_folder("digests", work / "digests")
        load(db, "raw", files, EXCHANGES)
        db.digest("raw", folder, workers)
        counts["digested_files"] = len(files)
        return [folder], counts
    folders: list[File] = []
    for file in files:
        path = Path(file)
        target = cache / _key(path, db.name)
        if target.is_dir() and not _whole(target):
            # The cache is derived data: a damaged entry is never a reason to stop.
            warning = f"the cached digest of {path} is damaged; digesting it again"
            print(f"distillguard: {warning}", file=sys.stderr)
            shutil.rmtree(target)
        if not target.is_dir():
            load(db, "raw", [path], EXCHANGES)
            partial = cache / f".{target.name}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            db.digest("raw", partial, workers)
            _list_parts(partial)
            partial.replace(target)
            counts["digested_files"] += 1
        else:
            counts["reused_files"] += 1
        folders.append(target)
    kept = {cache / _key(Path(f), db.name) for f in held or []} | set(folders)
    for stale in set(cache.iterdir()) - kept:  # superseded, broken
        if ENTRY.fullmatch(stale.name):
            shutil.rmtree(stale, ignore_errors=True)
    return folders, counts


def empty_columns(files: list[File]) -> list[str]:
    """The optional exchange columns that no file holds a value of: absent, or null in
    every row by the footers' statistics (a mapping that named a field the logs do not
    have stores such a column, and the signals that read it see nothing). A file whose
    footer does not tell, or an object-storage URI, counts as holding every column."""
    empty = {f.name for f in EXCHANGES if f.nullable}
    for file in files:
        if is_uri(file):
            return []
        empty &= _empty_in(Path(file))
    return [name for name in EXCHANGES.names if name in empty]


def _empty_in(file: Path) -> set[str]:
    meta = pq.read_metadata(file)
    if not meta.num_rows:  # holds no value of any column, statistics or not
        return set(EXCHANGES.names)
    where = {meta.schema.column(k).path: k for k in range(meta.num_columns)}
    empty = set(EXCHANGES.names) - set(where)
    for name, k in where.items():
        chunks = [meta.row_group(g).column(k) for g in range(meta.num_row_groups)]
        if all(c.statistics and c.statistics.null_count == c.num_values for c in chunks):
            empty.add(name)
    return empty


def hold(cache: Path) -> AbstractContextManager[None]:
    """One run at a time per cache: a second would take the first one's digests for
    stale ones and delete them, or write the same file's digest beside it."""
    if (cache / MANIFEST).exists():
        raise UsageError(f"--cache {cache} is a store: give the cache a folder of its own")
    foreign = sorted(_foreign(cache))
    if foreign:
        raise UsageError(
            f"--cache {cache} holds {foreign[0]}, which is not a digest this cache made: "
            "give the cache a folder of its own (it deletes the digests it no longer needs)"
        )
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--cache {cache}: cannot make it ({exc.strerror})") from None
    busy = f"--cache {cache} is in use by another detect run: run one at a time, or one cache each"
    return exclusive(cache / LOCK, busy)


def _foreign(cache: Path) -> Iterator[str]:
    """What the cache holds that it did not make; hidden files (.DS_Store) and a disk's
    lost+found do not count, and are never pruned."""
    if cache.is_dir():
        for entry in cache.iterdir():
            ignored = entry.name.startswith(".") or entry.name == "lost+found"
            if not ignored and not ENTRY.fullmatch(entry.name):
                yield entry.name


def _key(file: Path, engine: str) -> str:
    """What names a file's digest: its path, size and modification time, as `make` and
    `rsync` judge a file changed, and its Parquet footer (the row groups' sizes, counts
    and statistics), for a file rewritten in place with its size and time kept (`cp -p`,
    `touch -r`, a clock coarser than the writes); and the engine that wrote it, whose
    types differ (Spark has no unsigned integers: its hashes are signed, DuckDB's not),
    so a nightly job that changes engine digests again rather than mixing the two."""
    stat = file.stat()
    footer = hashlib.sha256(_footer(file)).hexdigest()
    text = f"{VERSION}|{engine}|{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{footer}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _list_parts(entry: Path) -> None:
    """Name an entry's Parquet parts and their sizes in it, so that a part lost later
    (a cleaner of old files, a copy cut short) is seen, not read as a day with fewer
    exchanges."""
    parts = {p.name: p.stat().st_size for p in sorted(entry.glob("*.parquet"))}
    (entry / PARTS).write_text(json.dumps(parts))


def _whole(entry: Path) -> bool:
    """Whether a cached entry holds every part it was written with, each readable and
    of its size, and no other."""
    try:
        listed = json.loads((entry / PARTS).read_text())
    except (OSError, ValueError):
        return False
    present = {p.name: p for p in entry.glob("*.parquet")}
    if not isinstance(listed, dict) or set(listed) != set(present):
        return False
    return all(
        present[name].stat().st_size == size and _unreadable(present[name]) is None
        for name, size in listed.items()
    )


def _footer(file: Path) -> bytes:
    """The bytes of a Parquet file's footer (a few KB), read from its end."""
    with file.open("rb") as stream:
        stream.seek(-8, 2)
        length = int.from_bytes(stream.read(4), "little")
        stream.seek(-8 - length, 2)
        return stream.read(length)


def load(
    db: Engine,
    name: str,
    files: list[File],
    schema: pa.Schema,
    since: str | None = None,
    until: str | None = None,
) -> list[str]:
    """The view `name` over Parquet files, with null columns for the optional columns
    the input lacks (the signals that need them then see nothing), and only rows in
    [since, until); a missing required column is refused, named. Returns the missing."""
    db.parquet_view(f"{name}_files", files)
    present = set(db.columns(f"{name}_files"))
    absent = [f for f in schema if f.name not in present]
    required = [f.name for f in absent if not f.nullable]
    if required:
        raise SchemaError(f"the {name} lack required column(s): {', '.join(required)}")
    filler = nulls(absent)
    bounds = [f"epoch_us(ts) >= {_micros(since)}"] if since else []
    bounds += [f"epoch_us(ts) < {_micros(until)}"] if until else []
    window = f" WHERE {' AND '.join(bounds)}" if bounds else ""
    db.run(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT *{filler} FROM {name}_files{window}")
    return [f.name for f in absent]


def nulls(absent: list[pa.Field]) -> str:
    """Select-list items giving each absent column as typed NULLs, so queries bind."""
    return "".join(f", CAST(NULL AS {SQL_TYPES[str(f.type)]}) AS {f.name}" for f in absent)


def _micros(moment: str) -> int:
    return (datetime.fromisoformat(moment) - EPOCH) // timedelta(microseconds=1)
