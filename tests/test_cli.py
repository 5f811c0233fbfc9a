"""The command line: documented exit codes, JSON for machines, no stack traces for
user mistakes, and no prompt text in what it prints."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distillguard.cli import main
from tests.conftest import SAMPLES, write_jsonl

PROMPT_FRAGMENT = "merges two sorted lists"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "distillguard.cli", *args], capture_output=True, text=True
    )


def test_ingest_prints_json_summary_and_inspect_describes_the_store(tmp_path: Path) -> None:
    done = cli("ingest", str(SAMPLES / "logs"), "--store", str(tmp_path / "s"), "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["stored"] == 13 and summary["quarantined"] == 4
    assert summary["quarantined_by_reason"]["invalid_json"] == 1
    inspected = cli("inspect", str(tmp_path / "s"), "--format", "json")
    report = json.loads(inspected.stdout)
    assert report["exchanges"]["rows"] == 13 and report["days"] == ["2026-04-22", "2026-04-23"]
    text = cli("inspect", str(tmp_path / "s"))
    for output in (done.stdout, done.stderr, inspected.stdout, text.stdout):
        assert PROMPT_FRAGMENT not in output


def test_inspect_a_file_before_ingesting_it(tmp_path: Path) -> None:
    done = cli("inspect", str(SAMPLES / "logs" / "bedrock_invocations.jsonl"), "--json")
    report = json.loads(done.stdout)
    assert report["format"] == "bedrock" and report["rows"] == 3
    assert report["column_fill"]["prompt_text"] == 1.0 and PROMPT_FRAGMENT not in done.stdout


def test_max_bad_ratio_sets_exit_code_4(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = SAMPLES / "logs" / "bad_records.jsonl"
    assert main(["ingest", str(bad), "--store", str(tmp_path / "a"), "--max-bad-ratio", "0.5"]) == 4
    assert "above --max-bad-ratio" in capsys.readouterr().err
    assert main(["ingest", str(bad), "--store", str(tmp_path / "b"), "--max-bad-ratio", "1"]) == 0


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["ingest", "missing.jsonl", "--store", "S"], 3, "no such file"),
        (["ingest", "IN", "--store", "S", "--format", "nope"], 2, "unknown --format"),
        (["ingest", "IN", "--store", "S", "--map", "bogus=x"], 2, "unknown exchanges column"),
        (["ingest", "IN", "--store", "S", "--map", "nonsense"], 2, "COLUMN=VALUE"),
        (["ingest", "IN", "--store", "S", "--set", "nope=1"], 2, "unknown exchanges column"),
        (["ingest", "IN", "--store", "S", "--hmac-key-file", "absent"], 2, "cannot read the key"),
        (["ingest", "IN", "--store", "S", "--map-file", "absent.yaml"], 2, "mapping file"),
        (["ingest", "IN", "--store", "S", "--max-bad-ratio", "7"], 2, "between 0 and 1"),
        (["ingest", "IN", "--store", "S", "--format", "otel", "--map", "ts=t"], 2, "give one"),
        (["inspect", "nowhere"], 3, "neither a store"),
        (["detect", "IN", "--out", "F", "--workers", "99999999999"], 2, "1 to 1024"),
        (["eval", "--findings", "F", "--labels", "L", "--series", "nope"], 3, "no such folder"),
        (["simulate", "--scenario", "demo", "--out", "IN/sub"], 2, "cannot make it"),
        (["simulate", "--scenario", "demo", "--out", "X", "--scale", "1e12"], 2, "the maximum"),
        (["simulate", "--scenario", "demo", "--out", "X", "--days", "100000"], 2, "the maximum"),
        (["gateway", "--upstream", "http://127.0.0.1:9", "--workers", "99999999999"], 2, "1 to"),
        (["gateway", "--upstream", "http://127.0.0.1:99999"], 2, "Port out of range"),
        (["gateway", "--upstream", "http://[::1"], 2, "Invalid IPv6 URL"),
        (["intel", "pull", "--collection", "notaurl", "--out", "X"], 2, "--collection takes"),
        (
            ["intel", "pull", "--collection", "http://127.0.0.1:9/c/", "--out", "X"],
            2,
            "not a TAXII",
        ),
        (["gateway", "--upstream", "http://h", "--redis", "notaurl"], 2, "--redis takes"),
        (["gateway", "--upstream", "http://h", "--findings", "IN"], 2, "a file, not the folder"),
        (["gateway", "--upstream", "http://h", "--listen", "127.0.0.1:99999"], 2, "HOST:PORT"),
    ],
)
def test_user_mistakes_get_one_line_and_a_documented_code(
    tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    write_jsonl(
        tmp_path / "IN", [{"request_id": "r", "ts": "2026-04-22", "account_id": "a", "model": "m"}]
    )
    done = subprocess.run(
        [sys.executable, "-m", "distillguard.cli", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == code, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr


def test_a_mapped_field_no_record_has_is_said_and_a_list_index_reaches_in(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistyped field stores its column empty, which detection would then find
    nothing in: ingest names it. A number in a path indexes a list."""
    record = {
        "id": "r1",
        "at": "2026-04-22T10:00:00Z",
        "org": "a",
        "model": "m",
        "body": {"messages": [{"role": "user", "content": "write a parser"}]},
    }
    write_jsonl(tmp_path / "log.jsonl", [record])
    base = ["ingest", str(tmp_path / "log.jsonl"), "--json", "--quiet"]
    fields = ["--map", "request_id=id", "--map", "ts=at", "--map", "account_id=org"]
    typo = [*base, "--store", str(tmp_path / "s1"), *fields, "--map", "prompt_text=body.message"]
    assert main(typo) == 0
    captured = capsys.readouterr()
    assert "no record has the mapped field 'body.message', so prompt_text is empty" in (
        captured.err
    )
    assert json.loads(captured.out)["mapped_fields_not_found"] == {"prompt_text": "body.message"}
    indexed = "prompt_text=body.messages.0.content"
    assert main([*base, "--store", str(tmp_path / "s2"), *fields, "--map", indexed]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["mapped_fields_not_found"] == {}
    assert "no record has" not in captured.err
    (part,) = (tmp_path / "s2").rglob("day=*/*.parquet")
    assert pq.read_table(part).column("prompt_text").to_pylist() == ["write a parser"]


def test_mapping_paths_keep_keys_that_look_like_numbers_and_unsaid_what_is_filled(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ "01" is a key, not the list index 1; -1 indexes from the end; a field that is
    there but holds no system turn, or a column --set fills, is no mistyped field."""
    record = {
        "id": "r1",
        "at": "2026-04-22T10:00:00Z",
        "org": "a",
        "model": "m",
        "attrs": {"01": "key-a", "²": "odd"},
        "body": {
            "messages": [{"role": "user", "content": "one"}, {"role": "user", "content": "two"}]
        },
    }
    write_jsonl(tmp_path / "log.jsonl", [record])
    mapping = {"request_id": "id", "ts": "at", "account_id": "org", "model": "model",
               "api_key_id": "attrs.01", "end_user_id": "attrs.²",
               "prompt_text": "body.messages.-1.content", "system_text": "body.messages",
               "user_agent": "absent"}  # fmt: skip
    args = ["ingest", str(tmp_path / "log.jsonl"), "--store", str(tmp_path / "s"), "--quiet"]
    pairs = [f"--map={column}={field}" for column, field in mapping.items()]
    assert main([*args, *pairs, "--set", "user_agent=curl", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["mapped_fields_not_found"] == {}
    assert "no record has" not in captured.err
    (part,) = (tmp_path / "s").rglob("day=*/*.parquet")
    (row,) = pq.read_table(part).to_pylist()
    assert (row["api_key_id"], row["end_user_id"], row["prompt_text"]) == ("key-a", "odd", "two")
    assert row["system_text"] is None and row["user_agent"] == "curl"


def test_a_locked_store_is_exit_code_5(tmp_path: Path) -> None:
    from distillguard.store import Store

    write_jsonl(
        tmp_path / "in.jsonl",
        [{"request_id": "r", "ts": "2026-04-22", "account_id": "a", "model": "m"}],
    )
    with Store(tmp_path / "s").transaction(None):
        done = cli("ingest", str(tmp_path / "in.jsonl"), "--store", str(tmp_path / "s"))
    assert done.returncode == 5 and "another process" in done.stderr


def test_bad_yaml_mapping_and_usage_errors(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text("columns: [not, a, mapping]\n")
    done = cli(
        "ingest",
        str(SAMPLES / "mapped"),
        "--store",
        str(tmp_path / "s"),
        "--map-file",
        str(tmp_path / "m.yaml"),
    )
    assert done.returncode == 2 and "must map column names" in done.stderr
    assert cli("ingest").returncode == 2  # argparse: missing arguments


def test_an_error_a_library_raises_while_terminating_still_exits_143(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A library catches the SIGTERM raised in its call and raises its own error (DuckDB's
    'query interrupted', without the cause), or drops it in a finaliser."""
    from distillguard import cli
    from distillguard.errors import Terminated

    def stopped(args: object) -> int:
        with contextlib.suppress(Terminated):
            cli._terminate(signal.SIGTERM, None)
        raise RuntimeError("Query interrupted")

    monkeypatch.setattr(cli, "_detect", stopped)
    assert main(["detect", str(tmp_path), "--out", str(tmp_path / "f")]) == 143
    err = capsys.readouterr().err
    assert "terminated; nothing was committed" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("kind", "error", "code"),
    [
        ("IOException", 'IO Error: Could not write file "p.parquet": No space left on device', 5),
        ("OutOfMemoryException", "Out of Memory Error: failed to offload data block of size "
         "256.0 KiB (1.4 MiB/1.4 MiB used). This limit was set by the 'max_temp_directory_size' "
         "setting.", 5),
        ("ValueError", "Could not convert 'make: write error: No space left on device'", 1),
    ],
)  # fmt: skip
def test_duckdb_filling_the_disk_is_exit_5_in_one_line(
    kind: str,
    error: str,
    code: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """DuckDB says a full disk in its own exceptions, not as an OSError: writing a
    store's staging file was a traceback (exit 1), and a full TMPDIR while spilling
    said to raise --memory-limit (exit 2). A bug whose message quotes the words (a
    value, a prompt) stays a bug."""
    import duckdb

    from distillguard import cli

    def failing(args: object) -> int:
        raise getattr(duckdb, kind, ValueError)(error)

    monkeypatch.setattr(cli, "_detect", failing)
    args = ["detect", str(tmp_path), "--out", str(tmp_path / "f"), "--memory-limit", "40MB"]
    assert main(args) == code
    err = capsys.readouterr().err
    full = err.startswith("distillguard: error: no space left on the disk")
    assert full == (code == 5) and ("Traceback" in err) == (code == 1)


def test_a_stop_at_the_commit_lets_it_end_whole_and_the_next_command_start_unasked(
    small: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A scheduler's SIGTERM lands right after the store's manifest is renamed into place
    (the folder's flush to disk): the run used to undo, deleting the files the new
    manifest names, and say nothing was committed. Now the commit ends, the store is
    whole and the run says so. Then a Ctrl-C stops a command, and the caller's next
    command (a notebook, a test session) commits."""
    from distillguard import store as stores
    from distillguard.ingest import Options, ingest
    from distillguard.simulate import run as simulation

    flush = stores._fsync

    def signalled(path: Path) -> None:
        flush(path)
        if (Path(path) / "manifest.json").is_file():
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(stores, "_fsync", signalled)
    args = ["ingest", str(small / "exchanges.parquet"), "--store", str(tmp_path / "s")]
    assert main([*args, "--quiet"]) == 143
    said = capsys.readouterr().err.strip()
    assert said == "distillguard: terminated; what it committed before stopping is whole"
    monkeypatch.setattr(stores, "_fsync", flush)
    commit = stores.Transaction.commit

    def then_signalled(self: stores.Transaction) -> None:  # after the commit's instants
        commit(self)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(stores.Transaction, "commit", then_signalled)
    assert main([*args[:-1], str(tmp_path / "s2"), "--quiet"]) == 143
    assert "what it committed before stopping is whole" in capsys.readouterr().err
    assert stores.Store(tmp_path / "s2").files("exchanges")
    monkeypatch.setattr(stores.Transaction, "commit", commit)
    files = stores.Store(tmp_path / "s").files("exchanges")  # every file it names is there
    assert (
        sum(pq.read_metadata(f).num_rows for f in files)
        == pq.read_metadata(small / "exchanges.parquet").num_rows
    )

    counted = simulation._count

    def interrupted(row: object, plan: object, facts: simulation.Facts) -> None:
        if facts.exchanges == 10:
            os.kill(os.getpid(), signal.SIGINT)
        counted(row, plan, facts)

    monkeypatch.setattr(simulation, "_count", interrupted)
    stopped = ["simulate", "--scenario", "demo", "--scale", "0.02", "--days", "1"]
    assert main([*stopped, "--out", str(tmp_path / "sim"), "--quiet"]) == 130
    ingest([small / "exchanges.parquet"], tmp_path / "again", Options())  # not stopped


def test_a_signal_while_starting_or_shutting_down_is_one_line_or_nothing(
    small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Handlers were set after the parser was built (its adapters import pyarrow and
    pandas: most of a second), so a scheduler's signal then killed the command without a
    word, or Ctrl-C printed a traceback. A signal while the interpreter shuts down, the
    command's work done, killed it silently too, and a committed ingest looked failed."""
    from distillguard import cli

    built = cli.build_parser

    def signalled() -> object:
        os.kill(os.getpid(), signal.SIGTERM)
        return built()

    monkeypatch.setattr(cli, "build_parser", signalled)
    assert main(["inspect", str(tmp_path)]) == 143
    assert capsys.readouterr().err == "distillguard: terminated; nothing was committed\n"
    script = (
        "import atexit, os, signal, sys\n"
        "from distillguard import cli\n"
        "atexit.register(lambda: os.kill(os.getpid(), signal.SIGTERM))  # at shutdown\n"
        f"sys.argv = ['distillguard', 'ingest', {str(small / 'exchanges.parquet')!r},\n"
        f"            '--store', {str(tmp_path / 's')!r}, '--quiet']\n"
        "cli.run()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0 and not done.stderr


def test_building_the_parser_loads_no_pipeline() -> None:
    """Every command builds the parser, which lists the adapters' formats; importing
    the ingest pipeline for that (Arrow datasets, pandas) took most of a second of each
    command's start, before it could answer even --help."""
    script = (
        "import sys\n"
        "from distillguard.cli import build_parser\n"
        "build_parser()\n"
        "print(sorted(m for m in ('pandas', 'distillguard.ingest.pipeline') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def test_inspect_holds_the_store_it_describes(
    small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new accounts table committed while inspect read the store deleted the file it
    had listed: the healthy store was reported damaged ("restore from a backup")."""
    from distillguard import inspect
    from distillguard.ingest import Options, ingest

    store = tmp_path / "s"
    ingest([small / "exchanges.parquet"], store, Options())
    ingest([small / "accounts.parquet"], store, Options(table="accounts"))
    check = inspect.readable

    def overtaken(files: list[Path]) -> None:
        ingest([small / "accounts.parquet"], store, Options(table="accounts"))
        check(files)

    monkeypatch.setattr(inspect, "readable", overtaken)
    assert main(["inspect", str(store), "--format", "json"]) == 0


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulator folder of a day of the demo scenario at 2 %."""
    sim = tmp_path_factory.mktemp("small")
    assert main(["simulate", "--scenario", "demo", "--scale", "0.02", "--days", "1",
                 "--out", str(sim), "--quiet"]) == 0  # fmt: skip
    return sim


def test_too_little_memory_for_duckdb_is_one_line_and_exit_2(
    small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for args in (
        ["detect", str(small), "--out", str(tmp_path / "f"), "--memory-limit", "30MB", "--quiet"],
        ["ingest", str(small / "exchanges.parquet"), "--store", str(tmp_path / "s"),
         "--memory-limit", "8MB", "--quiet"],
    ):  # fmt: skip
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert "ran out of memory within --memory-limit" in err and "Traceback" not in err
    assert not (tmp_path / "f").exists() and not (tmp_path / "s" / "manifest.json").exists()


@pytest.mark.parametrize(
    "column, value", [("ts", "Write a haiku"), ("ts", None), ("account_id", None)]
)
def test_values_detect_cannot_read_are_an_input_error(
    small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], column: str, value: object
) -> None:
    """Parquet with the canonical names but a value that does not fit (ingest would have
    quarantined it): exit 3 naming the column or the type, never the value (it may be a
    prompt's text), and no findings."""
    table = pq.read_table(small / "exchanges.parquet")
    values = table.column(column).to_pylist()
    values[2] = value
    kind = pa.string() if isinstance(value, str) else table.schema.field(column).type
    if isinstance(value, str):
        values = [v if isinstance(v, str) else str(v) for v in values]
    bad = table.set_column(table.schema.get_field_index(column), column, pa.array(values, kind))
    pq.write_table(bad, tmp_path / "bad.parquet")
    assert main(["detect", str(tmp_path / "bad.parquet"), "--out", str(tmp_path / "f")]) == 3
    err = capsys.readouterr().err
    named = "does not parse as timestamp" if value else f"'{column}'"
    assert "do not fit the canonical schema" in err and named in err
    assert "haiku" not in err
    assert "Traceback" not in err and not (tmp_path / "f").exists()


def test_inspect_names_a_damaged_part_of_a_store(
    small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "s"
    assert main(["ingest", str(small / "exchanges.parquet"), "--store", str(store), "--quiet"]) == 0
    part = sorted(store.rglob("part-*.parquet"))[0]
    part.write_bytes(part.read_bytes()[:1000])  # a copy cut short
    capsys.readouterr()
    assert main(["inspect", str(store)]) == 3
    err = capsys.readouterr().err
    assert f"{part}: not a readable Parquet file" in err and "Traceback" not in err
