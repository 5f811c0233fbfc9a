"""Commands never write over what they read: findings, digests and reports that would
replace or pollute their input are refused before any work, and findings are replaced
whole or not at all."""

from __future__ import annotations

import fcntl
import json
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from distillguard.cli import main
from distillguard.detect import detect, run
from distillguard.detect.inputs import ENTRY
from distillguard.ingest import Options, ingest
from distillguard.schema import FINDINGS_LOCK
from distillguard.simulate import simulate
from tests.conftest import two_campaigns


@pytest.fixture(scope="module")
def days(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulator folder, its exchanges as two files, and findings."""
    folder = tmp_path_factory.mktemp("outputs")
    simulate(two_campaigns("outputs", seed=4, days=2, coders=12), folder / "sim")
    table = pq.read_table(folder / "sim" / "exchanges.parquet")
    half = table.num_rows // 2
    pq.write_table(table.slice(0, half), folder / "history.parquet")
    pq.write_table(table.slice(half), folder / "new-day.parquet")
    detect(folder / "sim", folder / "findings")
    return folder


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_findings_or_cache_folder_that_would_harm_the_input_is_refused_first(
    days: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Findings written over the input (a simulator's exchanges.parquet), into a store,
    or under a folder whose every Parquet file is read would destroy it or be read as
    exchanges by the next run; so would digests there. Refused before any work, with
    the input as it was."""
    sim = tmp_path / "sim"
    sim.mkdir()
    for name in ("exchanges.parquet", "accounts.parquet"):
        (sim / name).write_bytes((days / "sim" / name).read_bytes())
    logs = tmp_path / "logs" / "day=2026-04-22"
    logs.mkdir(parents=True)
    (logs / "part.parquet").write_bytes((days / "history.parquet").read_bytes())
    store = tmp_path / "store"
    ingest([days / "new-day.parquet"], store, Options())
    (tmp_path / "a-file").write_text("")
    other_sim = tmp_path / "other-sim"
    other_sim.mkdir()
    (other_sim / "labels.parquet").write_bytes((days / "sim" / "labels.parquet").read_bytes())
    logs_of_mine = tmp_path / "mine"
    logs_of_mine.mkdir()
    (logs_of_mine / "ops-notes.txt").write_text("not findings")
    before = _snapshot(tmp_path)
    refused = {
        "which detect did not write": [str(sim), "--out", str(other_sim)],
        "holds ops-notes.txt": [str(sim), "--out", str(logs_of_mine)],
        "--cache {} is a store or inside one".format(store / "c"): [
            str(sim),
            "--out",
            str(tmp_path / "f"),
            "--cache",
            str(store / "c"),
        ],
        "a file, not a folder": [str(sim), "--out", str(tmp_path / "a-file")],
        "its accounts.parquet would replace the input": [str(sim), "--out", str(sim)],
        "its exchanges.parquet would replace": [str(sim / "exchanges.parquet"), "--out", str(sim)],
        "is a store or inside one": [str(sim), "--out", str(store)],
        "inside": [str(tmp_path / "logs"), "--out", str(logs / "findings")],
        "--cache": [str(tmp_path / "logs"), "--out", str(tmp_path / "f"), "--cache", str(logs)],
        "inside --cache": [
            str(sim),
            "--out",
            str(tmp_path / "c" / "f"),
            "--cache",
            str(tmp_path / "c"),
        ],
        "a-file is a file": [str(sim), "--out", str(tmp_path / "a-file" / "f")],
        "inside one": [str(sim), "--out", str(store / "findings")],
    }
    for said, args in refused.items():
        assert main(["detect", *args, "--quiet"]) == 2, said
        err = capsys.readouterr().err
        assert said in err and "Traceback" not in err, (said, err)
    assert _snapshot(tmp_path) == before
    assert not (tmp_path / "f").exists()


def test_findings_may_go_to_a_new_volume_or_a_folder_with_hidden_files(
    days: Path, tmp_path: Path
) -> None:
    """A fresh ext4 volume holds lost+found; a desktop adds .DS_Store: neither is
    something findings would harm."""
    volume = tmp_path / "volume"
    (volume / "lost+found").mkdir(parents=True)
    (volume / ".DS_Store").write_bytes(b"")
    assert main(["detect", str(days / "history.parquet"), "--out", str(volume), "--quiet"]) == 0
    assert (volume / "summary.json").is_file() and (volume / "lost+found").is_dir()


def test_a_cache_never_deletes_what_it_did_not_make(days: Path, tmp_path: Path) -> None:
    """A mistyped --cache (the home folder, the logs' folder) is refused, not pruned; a
    cache's own superseded digests still go."""
    folder = tmp_path / "mine"
    (folder / "photos").mkdir(parents=True)
    code = main(["detect", str(days / "history.parquet"), "--out", str(tmp_path / "f"),
                 "--cache", str(folder), "--quiet"])  # fmt: skip
    assert code == 2 and (folder / "photos").is_dir() and not (tmp_path / "f").exists()
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / ".DS_Store").write_bytes(b"")  # what a desktop or a disk adds is no obstacle
    (cache / "lost+found").mkdir()
    detect(days / "history.parquet", tmp_path / "f1", cache=cache)
    assert (cache / ".DS_Store").is_file() and (cache / "lost+found").is_dir()
    (first,) = [p.name for p in cache.iterdir() if ENTRY.fullmatch(p.name)]
    (cache / ("0" * 24)).mkdir()  # a digest of a file no longer in the input
    detect(days / "history.parquet", tmp_path / "f2", cache=cache)
    assert [p.name for p in cache.iterdir() if ENTRY.fullmatch(p.name)] == [first]


def test_findings_are_replaced_together(
    days: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run whose writing fails half-way (a full disk) leaves the previous findings
    whole, not one run's accounts beside another's campaigns, and no temporary files."""
    out = tmp_path / "f"
    detect(days / "history.parquet", out)
    before = _snapshot(out)
    write = pq.write_table

    def full_disk(table: object, where: object, *args: object, **kwargs: object) -> None:
        if ".exchanges.parquet." in str(where):  # the second of the two Parquet files
            raise OSError(28, "No space left on device")
        write(table, where, *args, **kwargs)

    monkeypatch.setattr(pq, "write_table", full_disk)
    args = ["detect", str(days / "new-day.parquet"), "--out", str(out), "--quiet"]
    assert main(args) == 5
    err = capsys.readouterr().err
    assert "No space left on device" in err and "as they were" in err and "Traceback" not in err
    assert _snapshot(out) == before


def test_two_runs_ending_together_write_their_findings_in_turn(days: Path, tmp_path: Path) -> None:
    """A nightly run that overtakes the last one waits for the other's write to end,
    so the folder holds one run's four files, never a mix of both."""
    out = tmp_path / "f"
    detect(days / "history.parquet", out)
    mine = {
        "accounts": pq.read_table(days / "findings" / "accounts.parquet"),
        "exchanges": pq.read_table(days / "findings" / "exchanges.parquet"),
        "campaigns": json.loads((days / "findings" / "campaigns.json").read_text()),
        "summary": {"run": "overtaking"},
    }
    with open(out / FINDINGS_LOCK, "a+") as other:  # the other run, writing now
        fcntl.flock(other, fcntl.LOCK_EX)
        writer = threading.Thread(target=run._write, args=(out, mine))
        writer.start()
        writer.join(timeout=1)
        assert writer.is_alive() and "overtaking" not in (out / "summary.json").read_text()
    writer.join()
    assert json.loads((out / "summary.json").read_text()) == {"run": "overtaking"}
    assert pq.read_table(out / "accounts.parquet").equals(mine["accounts"])


def test_a_report_reads_one_runs_findings(
    days: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A report gathered while detect replaced the findings could pair one run's
    campaigns with another's flagged exchanges; it waits for the write to end."""
    import distillguard.report as report

    written = threading.Event()
    gathered_after: list[bool] = []
    gather = report.gather

    def gathering(*args: object) -> object:
        gathered_after.append(written.is_set())
        return gather(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(report, "gather", gathering)
    out = tmp_path / "report.html"
    with open(days / "findings" / FINDINGS_LOCK, "a+") as detecting:
        fcntl.flock(detecting, fcntl.LOCK_EX)
        reporter = threading.Thread(target=report.write_report, args=(days / "findings", out))
        reporter.start()
        reporter.join(timeout=0.5)
        written.set()
    reporter.join()
    assert gathered_after == [True] and out.is_file()


def test_an_out_file_that_a_command_reads_is_refused(
    days: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Scores written over the accounts they score, a report or an export over the
    findings it reads, an evaluation over the labels, any of them given a folder:
    refused, the input untouched. A file in a folder not yet made is written."""
    sim, findings = days / "sim", days / "findings"
    accounts, truth = str(sim / "accounts.parquet"), str(sim / "truth.json")
    before = _snapshot(days)
    refused = [
        ["signup-risk", "--accounts", accounts, "--out", accounts],
        ["report", str(findings), "--out", str(findings / "campaigns.json")],
        ["intel", "export", str(findings), "--out", str(findings / "summary.json")],
        ["eval", "--findings", str(findings), "--labels", str(sim), "--out", truth],
    ]  # fmt: skip
    for args in refused:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert "is a file this command reads" in err and "Traceback" not in err
    key = tmp_path / "sharing.key"
    key.write_bytes(b"k" * 32)
    series = tmp_path / "series" / "2026-04-23"
    series.mkdir(parents=True)
    for name in ("accounts.parquet", "summary.json"):
        (series / name).write_bytes((findings / name).read_bytes())
    store = tmp_path / "store"
    ingest([days / "history.parquet"], store, Options())
    detect(store, tmp_path / "on-store")
    before_store = _snapshot(store)
    refused += [
        ["intel", "export", str(findings), "--key-file", str(key), "--out", str(key)],
        ["eval", "--findings", str(findings), "--labels", str(sim), "--series",
         str(series.parent), "--out", str(series / "accounts.parquet")],
        ["report", str(tmp_path / "on-store"), "--out", str(store / "manifest.json")],
    ]  # fmt: skip
    for args in refused[4:]:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert "this command reads" in err or "inside a store" in err, err
    assert _snapshot(store) == before_store
    for args in (["intel", "export", str(findings)], ["signup-risk", "--accounts", accounts]):
        assert main([*args, "--out", str(sim)]) == 2
        assert "is a folder" in capsys.readouterr().err
    assert _snapshot(days) == before
    bundle = tmp_path / "new" / "bundle.json"
    assert main(["intel", "export", str(findings), "--out", str(bundle)]) == 0
    assert bundle.is_file()
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "manifest.json").write_text('{"name": "a web app"}')  # not a store
    elsewhere = ["intel", "export", str(findings), "--out", str(tmp_path / "site" / "b.json")]
    assert main(elsewhere) == 0


def test_a_simulation_into_findings_a_store_or_a_file_is_refused(
    days: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    ingest([days / "history.parquet"], store, Options())
    (tmp_path / "a-file").write_text("")
    before = _snapshot(days), _snapshot(tmp_path)
    for out, said in (
        (days / "findings", "findings"),
        (store, "a store"),
        (tmp_path / "a-file", "a file"),
    ):
        assert main(["simulate", "--scenario", "demo", "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert said in err and "Traceback" not in err, err
    assert (_snapshot(days), _snapshot(tmp_path)) == before


def test_another_table_among_the_logs_is_named(
    days: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Scores or matches written into the logs' folder are read as exchanges next run:
    the run stops at once and names the file."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "day1.parquet").write_bytes((days / "history.parquet").read_bytes())
    (logs / "scores.parquet").write_bytes((days / "sim" / "accounts.parquet").read_bytes())
    assert main(["detect", str(logs), "--out", str(tmp_path / "f"), "--quiet"]) == 3
    err = capsys.readouterr().err
    assert f"{logs / 'scores.parquet'}: not exchanges" in err and "Traceback" not in err
    assert not (tmp_path / "f").exists()


def test_scores_and_matches_are_not_written_among_the_logs(
    days: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """...where the next nightly detect would read them as exchanges; beside a
    simulator's files (read by name) they are welcome."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "day1.parquet").write_bytes((days / "history.parquet").read_bytes())
    bundle = tmp_path / "bundle.json"
    assert main(["intel", "export", str(days / "findings"), "--out", str(bundle)]) == 0
    accounts = str(days / "sim" / "accounts.parquet")
    before = _snapshot(logs)
    for args in (
        ["signup-risk", "--accounts", accounts, "--out", str(logs / "scores.parquet")],
        ["intel", "match", str(bundle), str(logs), "--out", str(logs)],
    ):
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert "among the exchange logs" in err and "day1.parquet" in err, err
    assert _snapshot(logs) == before
    beside = tmp_path / "sim"
    beside.mkdir()
    (beside / "exchanges.parquet").write_bytes((days / "history.parquet").read_bytes())
    assert main(["signup-risk", "--accounts", accounts, "--out", str(beside / "s.parquet")]) == 0
    assert main(["intel", "match", str(bundle), str(logs), "--out", str(beside)]) == 0
    assert (beside / "matches.parquet").is_file() and (beside / "report.json").is_file()


def test_a_column_no_exchange_has_is_named(
    days: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Times as bare numbers were read as microseconds (campaigns seen in 1970), and a
    list of prompts beside text ones failed half-way with a traceback: both are named
    first. An account id as a number beside text ones is read."""
    table = pq.read_table(days / "history.parquet")
    epoch = pc.divide(table["ts"].cast(pa.int64()), 1_000_000)
    cases = {
        "ts": table.set_column(table.schema.get_field_index("ts"), "ts", epoch),
        "prompt_text": table.set_column(
            table.schema.get_field_index("prompt_text"),
            "prompt_text",
            pa.array([["a", "b"]] * table.num_rows),
        ),
    }
    for column, odd in cases.items():
        logs = tmp_path / column
        logs.mkdir()
        pq.write_table(table.slice(0, 10), logs / "a.parquet")
        pq.write_table(odd, logs / "b.parquet")
        assert main(["detect", str(logs), "--out", str(tmp_path / "f"), "--quiet"]) == 3
        err = capsys.readouterr().err
        assert f"b.parquet: its column {column} is" in err and "Traceback" not in err, err
    logs = tmp_path / "numbered"
    logs.mkdir()
    pq.write_table(table, logs / "a.parquet")
    few = table.slice(0, 5)
    for name, values in (("request_id", ["n1", "n2", "n3", "n4", "n5"]), ("account_id", range(5))):
        few = few.set_column(few.schema.get_field_index(name), name, pa.array(values))
    pq.write_table(few, logs / "b.parquet")
    assert main(["detect", str(logs), "--out", str(tmp_path / "f"), "--quiet"]) == 0


def test_two_simulations_into_one_folder_do_not_mix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both wrote the same temporary names: one failed with a traceback and the folder
    held one seed's exchanges beside the other's accounts. The second now waits for
    nothing and writes nothing: exit 5."""
    out = tmp_path / "sim"
    out.mkdir()
    with open(out / ".lock", "a+") as other:  # the first simulation, writing
        fcntl.flock(other, fcntl.LOCK_EX)
        args = ["simulate", "--scenario", "demo", "--scale", "0.05", "--days", "1"]
        assert main([*args, "--out", str(out), "--quiet"]) == 5
    err = capsys.readouterr().err
    assert "being written by another simulation" in err and "Traceback" not in err
    assert [p.name for p in out.iterdir()] == [".lock"]


def test_a_full_disk_is_one_line(tmp_path: Path) -> None:
    """Scratch, staging or a simulation filling the disk was a traceback and exit 1.
    (A file-size limit stands in for the full disk: the write fails with EFBIG.)"""
    import resource
    import subprocess
    import sys

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    done = subprocess.run(
        [sys.executable, "-m", "distillguard.cli", "simulate", "--scenario", "demo",
         "--scale", "0.2", "--days", "2", "--out", str(tmp_path / "sim"), "--quiet"],
        preexec_fn=small_files,
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert done.returncode == 5, done.stderr
    assert done.stderr.startswith("distillguard: error: no space left on the disk")
    assert "Traceback" not in done.stderr
    assert not [p.name for p in (tmp_path / "sim").iterdir() if p.name != ".lock"]
