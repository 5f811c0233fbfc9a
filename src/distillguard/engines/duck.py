"""The DuckDB engine: one process, out of core under a memory limit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from distillguard.errors import InputError
from distillguard.features.digest import READ, digest
from distillguard.features.pool import Pool
from distillguard.ingest.engine import arrow_reader, connect, sql_list

FEATURE_BATCH = 65_536


class DuckEngine:
    name = "duckdb"

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self._pool: Pool | None = None

    @classmethod
    def open(cls, work: Path, memory_limit: str) -> DuckEngine:
        return cls(connect(memory_limit, work / "spill"))

    def run(self, sql: str) -> None:
        self.con.execute(sql)

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return self.con.execute(sql).fetchall()

    def arrow(self, sql: str) -> pa.Table:
        relation = self.con.sql(sql)
        table = (
            relation.to_arrow_table() if hasattr(relation, "to_arrow_table") else relation.arrow()
        )
        return table if isinstance(table, pa.Table) else pa.Table.from_batches(table)

    def register(self, name: str, table: pa.Table) -> None:
        self.con.register(name, table)

    def unregister(self, name: str) -> None:
        self.con.unregister(name)

    def has(self, name: str) -> bool:
        found = self.con.execute(
            """SELECT 1 FROM duckdb_views() WHERE NOT internal AND view_name = $1
               UNION ALL SELECT 1 FROM duckdb_tables() WHERE table_name = $1""",
            [name],
        ).fetchall()
        return bool(found)

    def columns(self, relation: str) -> list[str]:
        return [r[0] for r in self.con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()]

    def parquet_view(self, name: str, files: list[Path | str]) -> None:
        """Folders stand for the Parquet files in them."""
        paths = [
            part
            for f in files
            for part in (sorted(Path(f).glob("*.parquet")) if Path(f).is_dir() else [f])
        ]
        if not paths:
            raise InputError("no exchanges to analyse: the input holds no rows")
        self.con.execute(
            f"CREATE OR REPLACE VIEW {name} AS "
            f"SELECT * FROM read_parquet({sql_list(paths)}, union_by_name = true)"
        )

    def scratch_folder(self, name: str, local: Path) -> str:
        return str(local)

    def digest(self, relation: str, folder: Path | str, workers: int) -> None:
        select = f"SELECT {', '.join(READ)} FROM {relation}"
        if self._pool is None:
            self._pool = Pool(workers)
        self._pool.map_to(
            lambda: arrow_reader(self.con.sql(select), FEATURE_BATCH), Path(folder), digest
        )

    def digests_done(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def close(self) -> None:
        self.digests_done()
        self.con.close()
