"""The relational steps of ingestion, run in DuckDB over staged Parquet files.

Joining partial rows, de-duplicating request ids against the store and writing one
file per day are set operations over the whole input; DuckDB does them out of core
under a memory limit, so the input size never decides the memory used.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import duckdb
import pyarrow as pa

from distillguard.errors import UsageError
from distillguard.schema import ACCOUNTS, EXCHANGES

META = ["_source", "_line", "_offset", "_format", "_seq"]
READ_BATCH = 16384
# Row groups of bounded bytes: DuckDB buffers a whole row group before writing it.
ROW_GROUPS = "ROW_GROUP_SIZE 65536, ROW_GROUP_SIZE_BYTES '32MB'"


MEMORY = re.compile(r"^\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$", re.IGNORECASE)


def check_memory_limit(limit: str) -> None:
    if not MEMORY.match(limit):
        raise UsageError(f"--memory-limit takes a size such as 512MB or 2GiB, not {limit!r}")


def connect(memory_limit: str, spill: Path) -> duckdb.DuckDBPyConnection:
    spill.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(
        config={
            "memory_limit": memory_limit,
            "temp_directory": str(spill),
            "preserve_insertion_order": False,
            "threads": 2,
            # DuckDB's allocator otherwise keeps what a query freed (0.5 GB after one
            # profile-sized grouping), where the graph stage cannot use it.
            "allocator_background_threads": True,
        }
    )
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")  # progress is ours to show, on stderr
    return con


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _glob(folder: Path, pattern: str = "*.parquet") -> str:
    """The files under `folder` matching `pattern`, as a SQL list: listed here, since
    DuckDB's glob would read `[` and `]` in a folder's name (`logs [prod]`) as a set of
    characters and find nothing. None found: the pattern, for DuckDB to say so."""
    files = sorted(folder.glob(pattern))
    return sql_list(files) if files else "'" + str(folder / pattern).replace("'", "''") + "'"


def sql_list(files: Sequence[Path | str]) -> str:
    return "[" + ", ".join("'" + str(f).replace("'", "''") + "'" for f in files) + "]"


def resolve(
    folder: Path, schema: pa.Schema, memory_limit: str, spill: Path
) -> tuple[dict[str, int], Iterator[pa.RecordBatch]]:
    """Staged rows with partial rows joined on (_format, _join_key), streamed.

    Also returns what the join leaves out, so every mapped row stays accounted for:
    companions repeated under one key, and context rows (traces, log events) whose
    exchange was not in the input.
    """
    con = connect(memory_limit, spill)
    con.execute(f"CREATE VIEW staged AS SELECT * FROM read_parquet({_glob(folder)})")
    columns = [*schema.names, *META]
    plain = ", ".join(quote(c) for c in columns)
    left_out = {"repeated_companion": 0, "context_without_exchange": 0}
    if _count(con, "SELECT count(*) FROM staged WHERE _side IS NOT NULL"):
        left_out["repeated_companion"] = _count(
            con,
            """
            SELECT count(*) - count(DISTINCT (_format, _join_key))
            FROM staged WHERE _side IN ('b', 'ctx')""",
        )
        left_out["context_without_exchange"] = _count(
            con,
            """
            SELECT count(*) FROM (SELECT DISTINCT _format, _join_key FROM staged
                                  WHERE _side = 'ctx') c
            WHERE NOT EXISTS (SELECT 1 FROM staged m WHERE m._side = 'a'
                              AND m._join_key = c._join_key AND m._format = c._format)""",
        )
        merged = ", ".join(f"coalesce(m.{quote(c)}, c.{quote(c)}) AS {quote(c)}" for c in columns)
        sql = f"""
            SELECT {merged}
            FROM (SELECT * FROM staged WHERE _side = 'a') m
            FULL OUTER JOIN (
                SELECT * FROM staged WHERE _side IN ('b', 'ctx')
                QUALIFY row_number() OVER (PARTITION BY _format, _join_key ORDER BY _seq) = 1
            ) c ON m._join_key = c._join_key AND m._format = c._format
            WHERE m._seq IS NOT NULL OR c._side = 'b'
            UNION ALL
            SELECT {plain} FROM staged WHERE _side IS NULL
        """
    else:
        sql = f"SELECT {plain} FROM staged"
    return left_out, _stream(con, sql)


def _stream(con: duckdb.DuckDBPyConnection, sql: str) -> Iterator[pa.RecordBatch]:
    try:
        yield from arrow_reader(con.sql(sql), READ_BATCH)
    finally:
        con.close()


def write_days(
    folder: Path, existing: list[Path], out: Path, memory_limit: str, spill: Path
) -> tuple[int, int]:
    """Write new exchanges to `out/day=YYYY-MM-DD/`, one day at a time.

    `folder` holds validated rows already split by day. A request_id already in the
    store, or seen earlier in this input, is a duplicate; only the stored days the
    input touches are consulted. Returns (stored, duplicates).
    """
    con = connect(memory_limit, spill)
    try:
        days = sorted(p.name for p in folder.iterdir() if p.name.startswith("day="))
        everything = _glob(folder, "*/*.parquet")
        con.execute(f"CREATE VIEW v AS SELECT * FROM read_parquet({everything})")
        touched = [f for f in existing if f.parent.name in days]
        seen = ""
        if touched:
            con.execute(
                f"CREATE VIEW stored AS SELECT request_id FROM read_parquet({sql_list(touched)})"
            )
            seen = "WHERE NOT EXISTS (SELECT 1 FROM stored s WHERE s.request_id = v.request_id)"
        con.execute(f"""
            CREATE TEMP TABLE keep AS
            SELECT min(_seq) AS _seq, arg_min(strftime(ts, '%Y-%m-%d'), _seq) AS day
            FROM v {seen} GROUP BY request_id, strftime(ts, '%Y-%m-%d')""")
        total = _count(con, "SELECT count(*) FROM v")
        kept = _count(con, "SELECT count(*) FROM keep")
        columns = ", ".join(quote(c) for c in EXCHANGES.names)
        for day in days:
            date = day.removeprefix("day=")
            if not _count(con, f"SELECT count(*) FROM keep WHERE day = '{date}'"):
                continue
            (out / day).mkdir(parents=True, exist_ok=True)
            target = str(out / day / "part-0.parquet").replace("'", "''")
            con.execute(f"""
                COPY (SELECT {columns} FROM read_parquet({_glob(folder / day)})
                      WHERE _seq IN (SELECT _seq FROM keep WHERE day = '{date}'))
                TO '{target}' (FORMAT parquet, COMPRESSION zstd, {ROW_GROUPS})""")
        return kept, total - kept
    finally:
        con.close()


def merge_accounts(
    folder: Path, existing: list[Path], target: Path, memory_limit: str, spill: Path
) -> tuple[int, int]:
    """Upsert accounts by account_id (the latest record wins); returns (changed, unchanged)."""
    con = connect(memory_limit, spill)
    columns = ", ".join(quote(c) for c in ACCOUNTS.names)
    rows = _glob(folder, "*/*.parquet")
    try:
        con.execute(f"""
            CREATE TEMP TABLE new AS SELECT {columns} FROM read_parquet({rows})
            QUALIFY row_number() OVER (PARTITION BY account_id ORDER BY _seq DESC) = 1""")
        total = _count(con, f"SELECT count(*) FROM read_parquet({rows})")
        if existing:
            con.execute(
                f"CREATE TEMP TABLE old AS SELECT {columns} FROM read_parquet({sql_list(existing)})"
            )
        else:
            con.execute(f"CREATE TEMP TABLE old AS SELECT {columns} FROM new LIMIT 0")
        changed = _count(con, "SELECT count(*) FROM (SELECT * FROM new EXCEPT SELECT * FROM old)")
        out = str(target).replace("'", "''")
        con.execute(f"""
            COPY (SELECT * FROM new UNION ALL
                  SELECT * FROM old WHERE account_id NOT IN (SELECT account_id FROM new))
            TO '{out}' (FORMAT parquet, COMPRESSION zstd, {ROW_GROUPS})""")
        return changed, total - changed
    finally:
        con.close()


def arrow_reader(relation: duckdb.DuckDBPyRelation, rows: int) -> pa.RecordBatchReader:
    """A streaming Arrow reader over a relation (DuckDB 2 renamed the 1.x method)."""
    method = getattr(relation, "to_arrow_reader", None) or relation.fetch_arrow_reader
    reader: pa.RecordBatchReader = method(rows)
    return reader


def _count(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    rows = con.execute(sql).fetchall()  # fetchall: DuckDB 2 refuses work after a partial fetch
    return int(rows[0][0]) if rows else 0
