"""What is in a store, or in a log file before it is ingested; never any prompt text.

For a store: rows, days, time range, accounts, models, operations, how full each
column is, and past runs with their quarantine reasons. For a file: the container and
format detected, and how the first records map (fill rate per canonical column).
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from distillguard.detect.inputs import readable
from distillguard.errors import InputError
from distillguard.ingest import engine
from distillguard.ingest.adapters import detect
from distillguard.ingest.adapters.common import Reject
from distillguard.ingest.readers import READERS, sniff_kind
from distillguard.ingest.values import BadValue, coerce
from distillguard.schema import EXCHANGES
from distillguard.store import MANIFEST, Store

FILE_SAMPLE = 1000


def inspect(path: str | Path) -> dict[str, Any]:
    target = Path(path)
    if (target / MANIFEST).is_file():
        return inspect_store(Store(target))
    if target.is_file():
        return inspect_file(target)
    raise InputError(f"{target}: neither a store (no {MANIFEST}) nor a file")


def inspect_store(store: Store) -> dict[str, Any]:
    """A store's contents, read while holding its files (a commit meanwhile deleted the
    accounts file it had listed, and the store looked damaged)."""
    with store.reading():
        return _described(store)


def _described(store: Store) -> dict[str, Any]:
    manifest = store.manifest()
    files = store.files("exchanges")
    readable([*files, *store.files("accounts")])  # a damaged part named, before any query
    report: dict[str, Any] = {
        "store": str(store.root),
        "format_version": manifest.version,
        "pseudonymised": manifest.pseudonymised,
        "key_id": manifest.key_id,
        "runs": len(manifest.runs),
        "days": store.days(),
        "exchanges": _exchange_stats(files),
        "accounts_table_rows": _count_rows(store.files("accounts")),
        "quarantined_by_reason": _quarantine_totals(manifest.runs),
    }
    return report


def _exchange_stats(files: list[Path]) -> dict[str, Any]:
    if not files:
        return {"rows": 0}
    spill = Path(tempfile.mkdtemp(prefix="distillguard-"))
    con = engine.connect("512MB", spill)
    try:
        con.execute(f"CREATE VIEW x AS SELECT * FROM read_parquet({engine.sql_list(files)})")
        iso = "'%Y-%m-%dT%H:%M:%S.%fZ'"
        row = con.execute(
            f"""SELECT count(*), strftime(min(ts), {iso}), strftime(max(ts), {iso}),
                count(DISTINCT account_id), count(DISTINCT end_user_id) FROM x"""
        ).fetchall()[0]
        fills = con.execute(
            "SELECT " + ", ".join(f"count({engine.quote(c)})" for c in EXCHANGES.names) + " FROM x"
        ).fetchall()[0]
        models = con.execute(
            "SELECT model, count(*) n FROM x GROUP BY 1 ORDER BY 2 DESC LIMIT 10"
        ).fetchall()
        ops = con.execute("SELECT operation, count(*) FROM x GROUP BY 1 ORDER BY 2 DESC").fetchall()
    finally:
        con.close()
        shutil.rmtree(spill, ignore_errors=True)
    total = int(row[0])
    return {
        "rows": total,
        "first_ts": row[1],
        "last_ts": row[2],
        "accounts": int(row[3]),
        "end_users": int(row[4]),
        "models": {str(m): int(n) for m, n in models},
        "operations": {str(o): int(n) for o, n in ops},
        "column_fill": {
            c: round(int(n) / total, 4) for c, n in zip(EXCHANGES.names, fills, strict=True)
        },
    }


def _count_rows(files: list[Path]) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def _quarantine_totals(runs: list[dict[str, Any]]) -> dict[str, int]:
    totals: Counter[str] = Counter()
    for run in runs:
        totals.update(run.get("quarantined_by_reason") or {})
    return dict(totals)


def inspect_file(path: Path) -> dict[str, Any]:
    kind = sniff_kind(path)
    report: dict[str, Any] = {
        "file": str(path),
        "container": kind.container,
        "compressed": kind.compressed,
        "bytes": path.stat().st_size,
    }
    if kind.container not in READERS:
        return report
    records: list[Any] = []
    errors: Counter[str] = Counter()
    try:
        for record in READERS[kind.container](path, str(path)):
            if record.error:
                errors[record.error] += 1
            else:
                records.append(record.value)
            if len(records) + sum(errors.values()) >= FILE_SAMPLE:
                break
    except Exception as exc:  # a container that breaks (corrupt Parquet, for instance)
        raise InputError(f"{path}: unreadable {kind.container} file: {str(exc)[:200]}") from None
    adapter = detect(records[:20])
    report.update(
        format=adapter.name if adapter else None,
        sampled=len(records) + sum(errors.values()),
        unreadable=dict(errors),
    )
    if adapter is None:
        return report
    fills: Counter[str] = Counter()
    rows = 0
    for value in records:
        try:
            outputs = list(adapter.rows(value))
        except Reject as reject:
            errors[reject.reason] += 1
            continue
        except Exception:  # the same odd records ingest quarantines as wrong_type
            errors["wrong_type"] += 1
            continue
        for out in outputs:
            if isinstance(out, Reject):
                errors[out.reason] += 1
            elif out is not None:
                try:
                    row = coerce(out)
                except BadValue:
                    errors["wrong_type"] += 1
                    continue
                rows += 1
                fills.update(k for k, v in row.items() if v is not None and not k.startswith("_"))
    report.update(
        rows=rows,
        problems=dict(errors),
        column_fill={c: round(fills[c] / rows, 4) if rows else 0.0 for c in EXCHANGES.names},
    )
    return report
