"""The Spark engine (local mode) finds exactly what DuckDB finds, on a small store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from distillguard.cli import main
from distillguard.detect import detect
from distillguard.engines.spark import SPARK_DIGEST, digest_signed, translate
from distillguard.features.digest import digest
from distillguard.ingest import Options, ingest
from distillguard.simulate import simulate
from tests.conftest import stopped_after_features, two_campaigns


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("spark")
    scenario = two_campaigns("spark", seed=5, days=2, coders=12, education=20)
    simulate(scenario, folder / "sim")
    ingest([folder / "sim" / "exchanges.parquet"], folder / "store", Options())
    ingest([folder / "sim" / "accounts.parquet"], folder / "store", Options(table="accounts"))
    return folder / "store"


@pytest.mark.slow
def test_spark_local_mode_finds_what_duckdb_finds(store: Path, tmp_path: Path) -> None:
    trusted = ["education"]  # the students' channel: the trusted accounts' query runs too
    duck = detect(store, tmp_path / "duckdb", trusted_channels=trusted)
    scratch = tmp_path / "scratch"  # as a cluster's shared storage would be named
    scratch.mkdir()
    spark = detect(
        store,
        tmp_path / "spark",
        engine="spark",
        engine_options={"scratch": scratch.as_uri()},
        trusted_channels=trusted,
    )
    assert not any(scratch.iterdir())  # intermediate files are removed
    assert spark["engine"] == "spark" and duck["engine"] == "duckdb"
    assert duck["campaigns"] >= 2 and duck["flagged_substreams"] > 0
    assert (tmp_path / "spark" / "campaigns.json").read_text() == (
        tmp_path / "duckdb" / "campaigns.json"
    ).read_text()
    for name in ("accounts.parquet", "exchanges.parquet"):
        assert pq.read_table(tmp_path / "spark" / name).equals(
            pq.read_table(tmp_path / "duckdb" / name)
        ), name
    same = ("campaigns", "nodes", "linked_nodes", "edges", "flagged_accounts", "threshold")
    same += ("trusted_accounts", "held_back")
    assert {k: spark[k] for k in same} == {k: duck[k] for k in same}
    assert duck["trusted_accounts"] > 0


@pytest.mark.slow
def test_spark_reuses_its_cached_digests(store: Path, tmp_path: Path) -> None:
    """A nightly Spark run with --cache digests each day once and finds what DuckDB
    finds without it; the second night, over a window of the last day, reads only it."""
    files = sorted(store.rglob("day=*/*.parquet"))
    last = files[-1].parent.name.removeprefix("day=")
    for night, since in (("one", None), ("two", last)):
        duck = detect(store, tmp_path / f"duckdb-{night}", since=since)
        spark = detect(
            store, tmp_path / night, engine="spark", cache=tmp_path / "cache", since=since
        )
        done = (spark["digested_files"], spark["reused_files"], spark["files_outside_window"])
        assert done == ((len(files), 0, 0) if night == "one" else (0, 1, len(files) - 1))
        assert (tmp_path / night / "campaigns.json").read_text() == (
            tmp_path / f"duckdb-{night}" / "campaigns.json"
        ).read_text()
        assert duck["campaigns"] >= 1


@pytest.mark.slow
def test_spark_reads_a_uri_as_it_would_object_storage(store: Path, tmp_path: Path) -> None:
    """Input named by URI (s3a://, gs://, here file://) is listed and read by Spark itself,
    with no cache and the window applied row by row: the findings are DuckDB's over the
    same store and window."""
    days = sorted(p.name.removeprefix("day=") for p in (store / "exchanges").glob("day=*"))
    accounts = next(store.rglob("accounts/**/*.parquet"))
    duck = detect(store, tmp_path / "duckdb", since=days[-1])
    spark = detect(
        (store / "exchanges").as_uri() + "/",
        tmp_path / "spark",
        accounts=accounts.as_uri(),
        engine="spark",
        cache=tmp_path / "cache",
        since=days[-1],
    )
    assert spark["reused_files"] == 0
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [".lock"]  # no digest kept
    assert duck["campaigns"] >= 1
    assert (tmp_path / "spark" / "campaigns.json").read_text() == (
        tmp_path / "duckdb" / "campaigns.json"
    ).read_text()
    assert pq.read_table(tmp_path / "spark" / "accounts.parquet").equals(
        pq.read_table(tmp_path / "duckdb" / "accounts.parquet")
    )


@pytest.mark.slow
def test_spark_runs_in_one_process_leave_no_scratch(store: Path, tmp_path: Path) -> None:
    """Spark keeps the local folder of a process's first session for the life of its
    JVM. Two runs in one process (a scheduler's worker, this test session) leave nothing
    in the temporary folder, and Spark's scratch there is readable by this user only.
    The second run asks for more driver memory than the JVM started with: it says so."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    script = (
        "import os, stat, sys, tempfile\n"
        "from distillguard.detect import detect\n"
        "for night, memory in (('one', '1GB'), ('two', '2GB')):\n"
        f"    detect({str(store)!r}, {str(tmp_path)!r} + '/' + night, engine='spark',\n"
        "           memory_limit=memory)\n"
        "    left = os.scandir(tempfile.gettempdir())\n"
        "    modes = {stat.S_IMODE(os.stat(p.path).st_mode) for p in left}\n"
        "    print(night, len(modes), modes == {0o700})\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "TMPDIR": str(scratch)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["one", "1", "True", "two", "1", "True"]
    assert not any(scratch.iterdir())
    warned = [line for line in done.stderr.splitlines() if "keeps the settings" in line]
    assert len(warned) == 1 and "spark.driver.memory 1024m (asked 2048m)" in warned[0]


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_spark_run_stopped_by_its_process_group_ends_in_one_line(
    store: Path, tmp_path: Path, stop: signal.Signals
) -> None:
    """A scheduler's timeout signals the whole process group (Ctrl-C at a terminal, too).
    The JVM used to die under the running query, printing pages of Java and py4j stack
    traces; now the run cancels its jobs, stops Spark and says one line, at once."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    args = ["detect", str(store), "--engine", "spark", "--out", str(tmp_path / "f")]
    returncode, err = stopped_after_features(args, stop, {**os.environ, "TMPDIR": str(scratch)})
    code, line = (143, "terminated") if stop == signal.SIGTERM else (130, "interrupted")
    assert returncode == code and err == f"distillguard: {line}; nothing was committed"
    assert not (tmp_path / "f").exists() and not any(scratch.iterdir())


@pytest.mark.slow
def test_a_library_run_stopped_at_its_findings_leaves_no_stop_behind(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Called from Python (a notebook: Python's own Ctrl-C handler), a Spark run whose
    findings were being renamed when Ctrl-C came ends its renames, then raises; the
    caller's next command commits (the stop used to stay asked and stop it)."""
    import signal

    from distillguard.errors import Interrupted

    rename = os.replace

    def signalled(source: str | Path, target: str | Path) -> None:
        rename(source, target)
        if Path(target).name == "accounts.parquet":
            os.kill(os.getpid(), signal.SIGINT)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        monkeypatch.setattr(os, "replace", signalled)
        with pytest.raises((Interrupted, KeyboardInterrupt)):
            detect(store, tmp_path / "f", engine="spark")
        monkeypatch.setattr(os, "replace", rename)
        assert json.loads((tmp_path / "f" / "summary.json").read_text())["engine"] == "spark"
        ingest([store / "exchanges"], tmp_path / "next", Options())  # not stopped
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.slow
def test_spark_runs_in_an_application_the_process_already_has(
    store: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In a notebook or a Spark job the process already runs an application: detection
    runs in a session of its own there, finds what DuckDB finds (not reading the
    application's own table called accounts), and leaves the application running with
    its settings, views and cache as they were."""
    from pyspark.sql import SparkSession

    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)  # its Python workers have ours
    builder = SparkSession.builder.master("local[1]").appName("theirs")
    theirs = builder.config("spark.sql.warehouse.dir", str(tmp_path / "warehouse")).getOrCreate()
    try:
        theirs.conf.set("spark.sql.session.timeZone", "America/New_York")
        theirs.range(2).createOrReplaceTempView("their_view")
        theirs.range(2).write.saveAsTable("accounts")  # theirs, and not an accounts table
        detect(store, tmp_path / "duckdb")
        asked = {"master": "local[2]", "conf": {"spark.executor.memory": "2g"}}
        detect(store, tmp_path / "spark", engine="spark", engine_options=asked)
        assert (tmp_path / "spark" / "campaigns.json").read_text() == (
            tmp_path / "duckdb" / "campaigns.json"
        ).read_text()
        assert theirs.range(3).count() == 3  # not stopped
        assert theirs.conf.get("spark.sql.session.timeZone") == "America/New_York"
        assert sorted(t.name for t in theirs.catalog.listTables()) == ["accounts", "their_view"]
        assert theirs.sparkContext._jsc.getPersistentRDDs().size() == 0  # checkpoints let go
        (said,) = [line for line in capsys.readouterr().err.splitlines() if "Spark" in line]
        assert "running in this process's Spark application (master local[1])" in said
        assert "--spark-master local[2]" in said and "spark.executor.memory" in said
    finally:
        theirs.stop()


def test_the_spark_digest_keeps_every_hash_bit(store: Path) -> None:
    """Spark has no unsigned integers: the same 64 bits travel as int64."""
    table = pq.read_table(next(store.rglob("day=*/*.parquet"))).slice(0, 200)
    batch = table.combine_chunks().to_batches()[0]
    plain = digest(batch)
    (signed,) = digest_signed(iter([batch]))
    assert signed.schema == SPARK_DIGEST

    def as_signed(v: int | None) -> int | None:
        return None if v is None else (v - 2**64 if v >= 2**63 else v)

    assert signed.column("prompt_hash").to_pylist() == [
        as_signed(v) for v in plain.column("prompt_hash").to_pylist()
    ]
    assert signed.column("template_bands").to_pylist() == [
        [as_signed(v) for v in bands] for bands in plain.column("template_bands").to_pylist()
    ]
    assert any(v >= 2**63 for v in plain.column("prompt_hash").to_pylist() if v is not None)


def test_our_sql_translates_for_spark() -> None:
    (statement,) = translate("SELECT epoch_us(ts), list_sort(list(DISTINCT p)) FROM t")
    sql = statement.sql(dialect="spark")
    assert "UNIX_MICROS(ts)" in sql and "ARRAY_SORT" in sql
    (temp,) = translate("CREATE OR REPLACE TEMP TABLE x AS SELECT 1")
    assert temp.kind == "TABLE"


def test_spark_without_java_says_what_is_missing(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    code = main(["detect", str(store), "--out", str(tmp_path / "f"), "--engine", "spark"])
    err = capsys.readouterr().err
    assert code == 6 and "JAVA_HOME" in err and "bin/java" in err
    assert "Traceback" not in err
    assert not (tmp_path / "f").exists()


def test_a_bad_spark_setting_is_a_usage_error(store: Path, tmp_path: Path) -> None:
    args = ["detect", str(store), "--out", str(tmp_path / "f"), "--engine", "spark"]
    assert main([*args, "--spark-conf", "no-equals-sign"]) == 2
    assert main(["detect", "s3a://bucket/logs/", "--out", str(tmp_path / "f")]) == 2
    with pytest.raises(SystemExit) as exit_:
        main(["detect", str(store), "--out", str(tmp_path / "f"), "--engine", "flink"])
    assert exit_.value.code == 2


@pytest.mark.slow
def test_flagged_parts_join_on_spark_as_on_duckdb(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The merge's pair counts and anchors (bands held by more parts than pairs are
    counted for, over the pair budget) give the same campaigns on both engines."""
    import random

    from distillguard.campaigns import merge
    from distillguard.campaigns.merge import WIDE, parts_to_join

    monkeypatch.setattr(merge, "PAIR_BUDGET", 0)
    from distillguard.engines import open_engine
    from tests.test_merge import _engine

    r = random.Random(5)
    rows = [
        (f"p{i}", "template", f"tb:{k}") for i in range(3 * WIDE) for k in r.sample(range(12), 7)
    ]
    rows += [(f"q{i}", "template", f"tb:q{k}") for i in range(4) for k in range(3)]
    parts = {node: i for i, node in enumerate(sorted({row[0] for row in rows}))}
    duck = _engine(rows)
    expected = parts_to_join(duck, parts)
    assert len(set(expected)) == 2  # the p campaign and the q one
    spark = open_engine("spark", tmp_path, "1GB", cores=1)
    try:
        for table in ("node_ids", "linked"):
            spark.register(table, duck.arrow(f"SELECT * FROM {table}"))
        assert parts_to_join(spark, parts) == expected
    finally:
        spark.close()
