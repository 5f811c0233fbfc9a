"""The engines the relational stages run on, behind one small interface.

Detection is SQL over a few named relations (exchange digests, evidence, ...). The
SQL is written once, in DuckDB's dialect; DuckDB runs it as written, and the Spark
engine translates each statement with SQLGlot, so both engines run the same code.
Content features are the one stage that is not SQL: a pure function of a record batch
(the exchange's digest), run in a local process pool (DuckDB) or through `mapInArrow`
(Spark).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from distillguard.errors import UsageError

ENGINES = ("duckdb", "spark")


class Engine(Protocol):
    """What the detection stages ask of an engine. Statements may create temporary
    tables (`CREATE OR REPLACE TEMP TABLE`), which each engine materialises its way."""

    name: str

    def run(self, sql: str) -> None:
        """Run one or more statements separated by semicolons."""

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        """A query's rows, for small results."""

    def arrow(self, sql: str) -> pa.Table:
        """A query's result as an Arrow table."""

    def register(self, name: str, table: pa.Table) -> None:
        """Make a small Arrow table queryable as `name`."""

    def unregister(self, name: str) -> None: ...

    def has(self, name: str) -> bool:
        """Whether a table or view called `name` exists."""

    def columns(self, relation: str) -> list[str]: ...

    def parquet_view(self, name: str, files: list[Path | str]) -> None:
        """A view over Parquet files whose schemas may differ (columns matched by name)."""

    def digest(self, relation: str, folder: Path | str, workers: int) -> None:
        """Digests (features/digest.py) of the rows of `relation`, written as Parquet
        under `folder`."""

    def digests_done(self) -> None:
        """No more digests this run: workers kept between them can go, and with them
        their memory, before the relational stages need it."""

    def scratch_folder(self, name: str, local: Path) -> str:
        """Where intermediate files called `name` go (`local` unless the engine has
        shared scratch storage)."""

    def close(self) -> None: ...


def open_engine(name: str, work: Path, memory_limit: str, cores: int = 2, **options: Any) -> Engine:
    """The engine called `name`, using `work` for its spill and intermediate files (Spark
    keeps its local scratch per process instead) and `cores` processes where it runs
    locally."""
    if name == "duckdb":
        from distillguard.engines.duck import DuckEngine

        return DuckEngine.open(work, memory_limit)
    if name == "spark":
        from distillguard.engines.spark import SparkEngine

        return SparkEngine(memory_limit, cores=cores, **options)
    raise UsageError(f"--engine takes one of {', '.join(ENGINES)}, not {name!r}")
