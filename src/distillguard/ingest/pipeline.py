"""Ingestion: log files in, committed canonical rows out, nothing lost on the way.

Four steps, each streaming:
1. read and map: each file's records go through the adapter its content matched;
   parse and mapping failures go to the quarantine; mapped rows are staged to Parquet
   in bounded batches;
2. resolve: partial rows from two files (batch requests and results, Langfuse
   observations and traces) are joined in DuckDB;
3. validate: rows missing a required column are quarantined, the rest pseudonymised;
4. commit: DuckDB drops request_ids already stored or repeated in the input, and
   writes one Parquet file per day; the store's manifest then commits all at once.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from distillguard.errors import InputError, UsageError
from distillguard.ingest import engine
from distillguard.ingest.adapters import FORMATS, Adapter, MappedAdapter, Reject, detect, make
from distillguard.ingest.quarantine import Quarantine
from distillguard.ingest.readers import READERS, Record, sniff_kind
from distillguard.ingest.staging import DaySink, Stager
from distillguard.ingest.values import BadValue, coerce
from distillguard.listing import files_under
from distillguard.privacy import Pseudonymiser
from distillguard.schema import TABLES, required
from distillguard.store import MANIFEST, Store, Transaction

SNIFF_RECORDS = 20
META = [
    ("_source", pa.string()),
    ("_line", pa.int64()),
    ("_offset", pa.int64()),
    ("_format", pa.string()),
    ("_join_key", pa.string()),
    ("_side", pa.string()),
    ("_seq", pa.int64()),
]


@dataclass
class Options:
    format: str | None = None
    table: str = "exchanges"
    mapping: dict[str, str] = field(default_factory=dict)
    constants: dict[str, str] = field(default_factory=dict)
    key: bytes | None = None
    progress: bool = False
    memory_limit: str = "512MB"


@dataclass
class Summary:
    files: list[dict[str, Any]] = field(default_factory=list)
    records_read: int = 0
    rows_mapped: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    quarantined: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    stored: int = 0
    run_id: str | None = None
    quarantine_file: str | None = None
    filled: set[str] = field(default_factory=set)  # mapped columns some record filled
    unfilled: dict[str, str] = field(default_factory=dict)  # column: the field none had

    @property
    def bad_ratio(self) -> float:
        total = self.stored + self.duplicates + sum(self.quarantined.values())
        return sum(self.quarantined.values()) / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "files": self.files,
            "records_read": self.records_read,
            "rows_mapped": self.rows_mapped,
            "stored": self.stored,
            "duplicates_skipped": self.duplicates,
            "quarantined": sum(self.quarantined.values()),
            "quarantined_by_reason": dict(self.quarantined),
            "skipped_by_reason": dict(self.skipped),
            "bad_ratio": round(self.bad_ratio, 6),
            "quarantine_file": self.quarantine_file,
            "mapped_fields_not_found": self.unfilled,
        }


def ingest(paths: Iterable[str | Path], store_root: str | Path, options: Options) -> Summary:
    """Read every file under `paths` into the store at `store_root`; see the module doc."""
    files = expand(paths, Path(store_root))
    if options.table not in ("exchanges", "accounts"):
        raise UsageError(f"--table takes exchanges or accounts, not {options.table!r}")
    if options.format and options.format not in FORMATS:
        raise UsageError(f"unknown --format {options.format!r}; known: {', '.join(FORMATS)}")
    if options.mapping:
        MappedAdapter(options.mapping, options.table)  # checks the column names up front
        if options.format:
            raise UsageError(
                f"--format {options.format} and a mapping (--map, --map-file) both given: "
                "a mapping reads plain records, a format a product's; give one"
            )
    unknown = [c for c in options.constants if c not in TABLES[options.table].names]
    if unknown:
        raise UsageError(f"--set names unknown {options.table} column(s): {', '.join(unknown)}")
    typed_constants(options)
    if options.table != "exchanges" and options.format not in (None, "canonical"):
        raise UsageError(
            f"--format {options.format} reads exchanges; the {options.table} "
            "table takes canonical columns or a --map"
        )
    engine.check_memory_limit(options.memory_limit)
    pseudonymiser = Pseudonymiser(options.key)
    store = Store(store_root)
    summary = Summary()
    with store.transaction(pseudonymiser.key_id) as txn:
        summary.run_id = txn.id
        quarantine = Quarantine(txn.staging / "quarantine.jsonl")
        staged = _stage(files, options, txn, quarantine, summary)
        if summary.rows_mapped:  # a mistyped field leaves its column empty: say which
            summary.unfilled = {
                c: f
                for c, f in options.mapping.items()
                if c not in summary.filled and c not in options.constants  # --set fills it
            }
        validated = _validate(staged, options, txn, quarantine, pseudonymiser, summary)
        if options.table == "exchanges":
            _commit_exchanges(validated, txn, summary, options)
        else:
            _commit_accounts(validated, txn, summary, options)
        quarantine.close()
        summary.quarantined = quarantine.reasons
        if quarantine.count:
            txn.place("quarantine", quarantine.path, f"{txn.id}.jsonl")
            summary.quarantine_file = str(store.root / "quarantine" / f"{txn.id}.jsonl")
        txn.log(
            {
                "table": options.table,
                **{
                    k: v
                    for k, v in summary.to_dict().items()
                    if k not in ("run_id", "quarantine_file")
                },
            }
        )
    return summary


def _inside_store(file: Path, top: Path, store: Path | None) -> bool:
    """True for files of a distillguard store found under an input folder."""
    if store is not None and file.resolve().is_relative_to(store.resolve()):
        return True
    folder = file.parent
    while True:
        if (folder / MANIFEST).is_file() and (folder / ".lock").exists():
            return True
        if folder == top or top not in folder.parents:
            return False
        folder = folder.parent


def expand(paths: Iterable[str | Path], store: Path | None = None) -> list[Path]:
    """Files named, and files inside folders named (hidden ones skipped, linked folders
    followed, one that cannot be read named), in order.

    A store inside an input folder (the one written to, or any other) is not input.
    """
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(files_under(path, skip=(".",)))
            files = [f for f in files if not _inside_store(f, path, store)]
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(f"{path}: no such file or folder")
    if not files:
        raise InputError("no input files found")
    return files


# -- step 1: read and map -------------------------------------------------------------


def staging_schema(table: str) -> pa.Schema:
    base = TABLES[table]
    fields = [pa.field(f.name, f.type, nullable=True) for f in base]
    return pa.schema(fields + [pa.field(n, t) for n, t in META])


def _stage(
    files: list[Path], options: Options, txn: Transaction, quarantine: Quarantine, summary: Summary
) -> Stager:
    stager = Stager(txn.staging / "mapped", staging_schema(options.table))
    progress = _progress(files, options.progress)
    for path in files:
        done = _Progress(progress)
        summary.files.append(_stage_file(path, options, stager, quarantine, summary, done))
        progress.update(_bytes(path) - done.reported)
    progress.close()
    stager.flush()
    return stager


class _Progress:
    """Advances the byte progress bar from record offsets inside one file."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar
        self.reported = 0

    def at(self, offset: int | None) -> None:
        if offset is not None and offset - self.reported > 1 << 24:
            self.bar.update(offset - self.reported)
            self.reported = offset


def _stage_file(
    path: Path,
    options: Options,
    stager: Stager,
    quarantine: Quarantine,
    summary: Summary,
    progress: _Progress,
) -> dict[str, Any]:
    source = str(path)
    try:
        kind = sniff_kind(path)
    except OSError as exc:
        quarantine.add(source, None, None, "unreadable_file", exc.strerror or str(exc))
        return {"path": source, "format": None, "records": 0, "note": "unreadable"}
    if kind.container == "empty":
        summary.skipped["empty_file"] += 1
        return {"path": source, "format": None, "records": 0, "note": "empty file"}
    if kind.container == "binary":
        quarantine.add(
            source,
            None,
            None,
            "unrecognised_file",
            "binary content that is neither Parquet nor gzip",
        )
        return {"path": source, "format": None, "records": 0, "note": "binary file"}
    records = READERS[kind.container](path, source)
    try:
        head, adapter = _choose_adapter(records, options, source)
    except Exception as exc:  # a corrupt Parquet footer, for instance
        quarantine.add(source, None, None, "unreadable_file", str(exc)[:300])
        return {"path": source, "format": None, "records": 0, "note": "unreadable"}
    if adapter is None:
        quarantine.add(
            source,
            None,
            None,
            "unrecognised_format",
            "no adapter recognises these records; pass --format, or --map "
            "COLUMN=FIELD for plain files",
        )
        return {"path": source, "format": None, "records": 0, "note": "unrecognised"}
    before = summary.records_read
    try:
        for record in _chain(head, records):
            summary.records_read += 1
            _map_record(record, adapter, options, stager, quarantine, summary)
            if not kind.compressed:
                progress.at(record.offset)
    except Exception as exc:  # the container broke mid-file (e.g. truncated gzip/Parquet)
        quarantine.add(
            source,
            None,
            None,
            "unreadable_file",
            f"reading stopped after {summary.records_read - before} records: {str(exc)[:200]}",
        )
    if summary.records_read == before:
        summary.skipped["no_records"] += 1
    if isinstance(adapter, MappedAdapter):
        summary.filled |= adapter.filled
    return {
        "path": source,
        "format": adapter.name,
        "container": kind.container,
        "compressed": kind.compressed,
        "records": summary.records_read - before,
    }


def _chain(head: list[Record], rest: Iterator[Record]) -> Iterator[Record]:
    yield from head
    yield from rest


def _choose_adapter(
    records: Iterator[Record], options: Options, source: str
) -> tuple[list[Record], Adapter | None]:
    if options.mapping:
        return [], MappedAdapter(options.mapping, options.table)
    if options.format:
        return [], make(options.format, options.table)
    head: list[Record] = []
    for record in records:
        head.append(record)
        if sum(1 for r in head if r.error is None) >= SNIFF_RECORDS:
            break
    samples = [r.value for r in head if r.error is None]
    if not samples:
        return head, make("canonical", options.table)
    return head, detect(samples, options.table)


def _map_record(
    record: Record,
    adapter: Adapter,
    options: Options,
    stager: Stager,
    quarantine: Quarantine,
    summary: Summary,
) -> None:
    if record.error is not None:
        quarantine.add_record(record)
        return
    outputs = _outputs(adapter, record.value)
    if not outputs:
        summary.skipped["empty_record"] += 1
    for output in outputs:
        if output is None:
            summary.skipped["not_an_exchange"] += 1
            continue
        if isinstance(output, Reject):
            quarantine.add(
                record.source,
                record.line,
                record.offset,
                output.reason,
                output.detail,
                _raw(record),
            )
            continue
        try:
            row = coerce(output, options.table)
        except BadValue as bad:
            quarantine.add(
                record.source, record.line, record.offset, "wrong_type", str(bad), _raw(record)
            )
            continue
        row.update(
            _source=record.source, _line=record.line, _offset=record.offset, _format=adapter.name
        )
        summary.rows_mapped += 1
        stager.add(row, _size(row))


def _outputs(adapter: Adapter, value: Any) -> list[dict[str, Any] | Reject | None]:
    """The adapter's outputs for one record. An adapter that fails part-way through a
    record (an export line of many spans) keeps what it gave before, and the failure
    is one Reject: one odd record never costs the rest of its file. (Collected before
    they are converted: interleaving the two costs a tenth of the mapping time.)"""
    outputs: list[dict[str, Any] | Reject | None] = []
    try:
        outputs.extend(adapter.rows(value))
    except Reject as reject:
        outputs.append(reject)
    except Exception as exc:
        detail = f"record does not have the {adapter.name} shape: {type(exc).__name__}: {exc}"
        outputs.append(Reject("wrong_type", detail[:300]))
    return outputs


def _raw(record: Record) -> Any:
    return record.raw if record.raw is not None else record.value


def _size(row: dict[str, Any]) -> int:
    """Approximate bytes a staged row holds: its text columns dominate."""
    texts = (row.get("prompt_text"), row.get("response_text"), row.get("system_text"))
    return 256 + sum(len(t) for t in texts if t)


def _bytes(file: Path) -> int:
    """A file's size for the progress bar; one that cannot be read (a dead link) is
    quarantined when it is read, so it counts nothing here."""
    try:
        return file.stat().st_size
    except OSError:
        return 0


def _progress(files: list[Path], enabled: bool) -> Any:
    from tqdm import tqdm

    total = sum(_bytes(p) for p in files)
    return tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        desc="ingest",
        file=sys.stderr,
        disable=not enabled,
        leave=False,
    )


# -- steps 2 and 3: resolve and validate ----------------------------------------------


HINTS = {
    ("openai-batch", "account_id"): "batch files name no account: add --set account_id=ORG",
    ("openai-batch", "ts"): "a batch request line needs its result line in the same run",
    ("otel", "account_id"): "the span has no account.id, tenant.id or user.id attribute: "
    "add --set account_id=… or a --map",
}


def _validate(
    stager: Stager,
    options: Options,
    txn: Transaction,
    quarantine: Quarantine,
    pseudonymiser: Pseudonymiser,
    summary: Summary,
) -> Path:
    """Join partial rows, quarantine rows missing a required column, pseudonymise."""
    out = txn.staging / "valid"
    out.mkdir()
    if stager.count == 0:
        return out
    schema = TABLES[options.table]
    needed = required(schema)
    left_out, batches = engine.resolve(
        stager.folder, schema, options.memory_limit, txn.staging / "duck"
    )
    summary.skipped.update({k: n for k, n in left_out.items() if n})
    sink = DaySink(out, by_day=options.table == "exchanges")
    constants = typed_constants(options)
    for batch in batches:
        table = _fill(pa.Table.from_batches([batch]), constants)
        missing = [pc.is_null(table.column(c)) for c in needed]
        bad = missing[0]
        for mask in missing[1:]:
            bad = pc.or_(bad, mask)
        if pc.any(bad).as_py():
            _quarantine_missing(table.filter(bad), needed, quarantine)
            table = table.filter(pc.invert(bad))
        if table.num_rows == 0:
            continue
        sink.write(pseudonymiser.apply(table, options.table))
    sink.close()
    return out


def typed_constants(options: Options) -> dict[str, Any]:
    """`--set` values converted to their columns' types (a UsageError if they cannot be)."""
    try:
        return coerce(options.constants, options.table)
    except BadValue as bad:
        raise UsageError(f"--set {bad}") from None


def _fill(table: pa.Table, constants: dict[str, Any]) -> pa.Table:
    """Fill empty cells with the `--set` constants, after partial rows were joined."""
    for name, value in constants.items():
        index = table.schema.get_field_index(name)
        field = table.schema.field(index)
        filled = pc.fill_null(table.column(index), pa.scalar(value, field.type))
        table = table.set_column(index, field, filled)
    return table


def _hint(row: dict[str, Any], absent: list[str]) -> str:
    """How the format explains the first of the missing columns it can explain. A batch
    request whose result line reports a failure has no time because it failed, not
    because its result line is missing."""
    form, status = str(row.get("_format")), row.get("status")
    if form == "openai-batch" and "ts" in absent and (status or 0) >= 400:
        return (
            f"the batch result line reports the request failed with status {status}; "
            "a failed request has no response, so no time"
        )
    return next((HINTS[(form, c)] for c in absent if (form, c) in HINTS), "")


def _quarantine_missing(table: pa.Table, needed: list[str], quarantine: Quarantine) -> None:
    for row in table.to_pylist():
        absent = [c for c in needed if row.get(c) is None]
        hint = _hint(row, absent)
        detail = f"missing {', '.join(absent)}" + (f" ({hint})" if hint else "")
        record = {k: v for k, v in row.items() if not k.startswith("_") and v is not None}
        quarantine.add(
            row.get("_source") or "",
            row.get("_line"),
            row.get("_offset"),
            "missing_field",
            detail,
            record,
        )


# -- step 4: commit -------------------------------------------------------------------


def _commit_exchanges(folder: Path, txn: Transaction, summary: Summary, options: Options) -> None:
    if not any(folder.iterdir()):
        return
    existing = txn.store.files("exchanges")
    out = txn.staging / "days"
    kept, duplicates = engine.write_days(
        folder, existing, out, options.memory_limit, txn.staging / "duck"
    )
    summary.stored, summary.duplicates = kept, duplicates
    for path in sorted(out.rglob("*.parquet")):
        day = path.parent.name
        txn.place("exchanges", path, f"{day}/part-{txn.id}-{path.stem}.parquet")


def _commit_accounts(folder: Path, txn: Transaction, summary: Summary, options: Options) -> None:
    if not any(folder.iterdir()):
        return
    existing = txn.store.files("accounts")
    target = txn.staging / "accounts.parquet"
    kept, duplicates = engine.merge_accounts(
        folder, existing, target, options.memory_limit, txn.staging / "duck"
    )
    summary.stored, summary.duplicates = kept, duplicates
    txn.replace_all("accounts", target, f"part-{txn.id}.parquet")
