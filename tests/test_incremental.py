"""Incremental runs: after a new day of logs, detection with a cache digests only that
day and finds exactly what a full run over everything finds."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from distillguard.cli import main
from distillguard.detect import detect
from distillguard.errors import StoreError
from distillguard.ingest import Options, ingest
from distillguard.simulate import simulate
from distillguard.simulate.scenario import Campaign, Population, Scenario
from distillguard.store import exclusive

NEW_DAY = datetime(2026, 4, 24, tzinfo=UTC)


@pytest.fixture(scope="module")
def days(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Simulated traffic of three days, split into the first two and the third."""
    folder = tmp_path_factory.mktemp("days")
    scenario = Scenario(
        name="days",
        seed=9,
        days=3,
        legitimate=[Population("developer", 30), Population("chat", 60)],
        campaigns=[Campaign(id="coders", accounts=15, capability="coding")],
    )
    simulate(scenario, folder / "sim")
    table = pq.read_table(folder / "sim" / "exchanges.parquet")
    new = pc.greater_equal(table.column("ts"), NEW_DAY)
    pq.write_table(table.filter(pc.invert(new)), folder / "history.parquet")
    pq.write_table(table.filter(new), folder / "new-day.parquet")
    return folder


def _same(one: Path, two: Path) -> None:
    assert (one / "campaigns.json").read_text() == (two / "campaigns.json").read_text()
    for name in ("accounts.parquet", "exchanges.parquet"):
        assert pq.read_table(one / name).equals(pq.read_table(two / name)), name


def _entries(cache: Path) -> list[Path]:
    return [p for p in cache.iterdir() if p.name != ".lock"]


def test_a_new_day_reuses_the_digests_of_history(days: Path, tmp_path: Path) -> None:
    store, cache = tmp_path / "store", tmp_path / "cache"
    accounts = days / "sim" / "accounts.parquet"
    ingest([days / "history.parquet"], store, Options())
    first = detect(store, tmp_path / "night1", accounts=accounts, cache=cache)
    assert (first["digested_files"], first["reused_files"]) == (2, 0)

    ingest([days / "new-day.parquet"], store, Options())
    second = detect(store, tmp_path / "night2", accounts=accounts, cache=cache)
    assert (second["digested_files"], second["reused_files"]) == (1, 2)
    assert second["campaigns"] >= 1

    full = detect(store, tmp_path / "full", accounts=accounts)
    assert (full["digested_files"], full["reused_files"]) == (3, 0)
    _same(tmp_path / "night2", tmp_path / "full")
    assert len(_entries(cache)) == 3


def test_a_changed_day_is_digested_again(days: Path, tmp_path: Path) -> None:
    store, cache = tmp_path / "store", tmp_path / "cache"
    ingest([days / "history.parquet"], store, Options())
    detect(store, tmp_path / "a", cache=cache)
    stored = sorted(store.rglob("day=*/*.parquet"))[-1]
    table = pq.read_table(stored)
    pq.write_table(table.slice(0, table.num_rows // 2), stored)  # a day rewritten
    again = detect(store, tmp_path / "b", cache=cache)
    assert (again["digested_files"], again["reused_files"]) == (1, 1)
    detect(store, tmp_path / "c")
    _same(tmp_path / "b", tmp_path / "c")
    assert len(_entries(cache)) == 2  # the superseded digest is gone


def test_a_day_rewritten_with_its_size_and_time_kept_is_digested_again(
    days: Path, tmp_path: Path
) -> None:
    """`cp -p` or `touch -r` over a day keeps its size and modification time; the
    cache must still not serve the old day's digests."""
    day, cache = tmp_path / "day.parquet", tmp_path / "cache"
    table = pq.read_table(days / "new-day.parquet")
    plain = {"compression": "none", "use_dictionary": False}  # sizes that cannot differ
    pq.write_table(table, day, **plain)
    detect(day, tmp_path / "a", cache=cache)
    size, when = day.stat().st_size, day.stat().st_mtime_ns
    later = pc.add(table.column("ts"), pa.scalar(timedelta(minutes=1)))
    where = table.schema.get_field_index("ts")
    pq.write_table(table.set_column(where, table.schema.field(where), later), day, **plain)
    os.utime(day, ns=(when, when))
    assert (day.stat().st_size, day.stat().st_mtime_ns) == (size, when)
    again = detect(day, tmp_path / "b", cache=cache)
    assert (again["digested_files"], again["reused_files"]) == (1, 0)
    detect(day, tmp_path / "c")
    _same(tmp_path / "b", tmp_path / "c")


def test_the_cache_flag_on_the_command_line(days: Path, tmp_path: Path) -> None:
    args = ["detect", str(days / "history.parquet"), "--cache", str(tmp_path / "c")]
    assert main([*args, "--out", str(tmp_path / "f1")]) == 0
    assert main([*args, "--out", str(tmp_path / "f2")]) == 0
    _same(tmp_path / "f1", tmp_path / "f2")
    (tmp_path / "not-a-folder").write_text("x")
    bad = ["detect", str(days / "history.parquet"), "--cache", str(tmp_path / "not-a-folder")]
    assert main([*bad, "--out", str(tmp_path / "f3")]) == 2
    under_a_file = str(tmp_path / "not-a-folder" / "cache")
    assert main([*bad[:-1], under_a_file, "--out", str(tmp_path / "f4")]) == 2


def test_a_store_of_another_version_is_refused_by_name(
    days: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    store = tmp_path / "store"
    ingest([days / "history.parquet"], store, Options())
    manifest = store / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "version": 0}))
    assert main(["detect", str(store), "--out", str(tmp_path / "f")]) == 5
    err = capsys.readouterr().err
    assert "version 0" in err and "Traceback" not in err


def test_a_cache_in_use_by_another_run_is_refused_untouched(
    days: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two runs on one cache would delete each other's digests as stale: the second is
    refused, says why, and leaves the cache as it was."""
    cache = tmp_path / "cache"
    args = ["detect", str(days / "history.parquet"), "--cache", str(cache)]
    assert main([*args, "--out", str(tmp_path / "f1")]) == 0
    before = sorted(str(p) for p in cache.rglob("*"))
    with exclusive(cache / ".lock", "held by this test"):
        assert main([*args, "--out", str(tmp_path / "f2")]) == 5
        with pytest.raises(StoreError, match="in use by another detect run"):
            detect(days / "history.parquet", tmp_path / "f3", cache=cache)
    err = capsys.readouterr().err
    assert "in use by another detect run" in err and "Traceback" not in err
    assert sorted(str(p) for p in cache.rglob("*")) == before
    assert not (tmp_path / "f2").exists()
    assert main([*args, "--out", str(tmp_path / "f4")]) == 0  # free again once let go
    _same(tmp_path / "f1", tmp_path / "f4")
    nothing = ["--until", "2000-01-01", "--out", str(tmp_path / "f5")]
    assert main([*args, *nothing]) == 3  # a run that fails lets go too
    assert main([*args, "--out", str(tmp_path / "f6")]) == 0


def test_a_cache_that_cannot_be_locked_or_is_a_store_is_refused(
    days: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = str(days / "history.parquet")
    (tmp_path / "cache" / ".lock").mkdir(parents=True)  # something in the lock's way
    out = ["--out", str(tmp_path / "f")]
    assert main(["detect", source, "--cache", str(tmp_path / "cache"), *out]) == 5
    store = tmp_path / "store"
    ingest([days / "history.parquet"], store, Options())
    assert main(["detect", source, "--cache", str(store), *out]) == 2
    err = capsys.readouterr().err
    assert "cannot lock" in err and "is a store" in err and "Traceback" not in err
    assert not (tmp_path / "f").exists()


def test_a_damaged_input_is_refused_by_name(
    days: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cut = tmp_path / "in" / "cut-short.parquet"
    cut.parent.mkdir()
    cut.write_bytes((days / "history.parquet").read_bytes()[:5000])  # a copy cut short
    for extra in ([], ["--cache", str(tmp_path / "c")]):
        assert main(["detect", str(cut.parent), "--out", str(tmp_path / "f"), *extra]) == 3
        err = capsys.readouterr().err
        assert "cut-short.parquet: not a readable Parquet file" in err and "Traceback" not in err
    assert not (tmp_path / "f").exists() and not (tmp_path / "c").exists()


def test_a_damaged_cache_entry_is_digested_again(
    days: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The cache is derived data: a part cut short (a full disk, a bad copy) costs that
    file's digest, never the run."""
    cache = tmp_path / "cache"
    first = detect(days / "history.parquet", tmp_path / "f1", cache=cache)
    part = sorted(cache.rglob("*.parquet"))[0]
    part.write_bytes(part.read_bytes()[:1000])
    again = detect(days / "history.parquet", tmp_path / "f2", cache=cache)
    assert (again["digested_files"], again["reused_files"]) == (1, 0)
    assert "is damaged; digesting it again" in capsys.readouterr().err
    _same(tmp_path / "f1", tmp_path / "f2")
    assert first["campaigns"] == again["campaigns"]


@pytest.mark.parametrize("loss", ["a part removed", "every part removed", "a part added"])
def test_a_cache_entry_that_lost_or_gained_a_part_is_digested_again(
    days: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], loss: str
) -> None:
    """An entry whose part went (a cleaner of old files) would read as a day with no
    exchanges, and findings a day short; one with a stray part as a day doubled."""
    cache = tmp_path / "cache"
    detect(days / "history.parquet", tmp_path / "f1", cache=cache)
    (entry,) = _entries(cache)
    parts = sorted(entry.glob("*.parquet"))
    if loss == "a part added":
        pq.write_table(pq.read_table(parts[0]), entry / "part-9.parquet")
    else:
        for part in parts if loss == "every part removed" else parts[:1]:
            part.unlink()
    again = detect(days / "history.parquet", tmp_path / "f2", cache=cache)
    assert (again["digested_files"], again["reused_files"]) == (1, 0)
    assert "is damaged; digesting it again" in capsys.readouterr().err
    _same(tmp_path / "f1", tmp_path / "f2")


def test_a_cache_keeps_apart_the_digests_of_each_engine(days: Path) -> None:
    """Spark's digests hold signed hashes, DuckDB's unsigned ones: a nightly job that
    switches engine must not read one engine's days beside the other's."""
    from distillguard.detect.inputs import _key

    history = days / "history.parquet"
    assert _key(history, "duckdb") != _key(history, "spark")
    assert _key(history, "duckdb") == _key(history, "duckdb")


def test_a_window_reads_only_the_days_it_covers(days: Path, tmp_path: Path) -> None:
    """A nightly run over the last days of a long store: the day before the window is
    neither read nor digested, its cached digest stays, and the findings are those of
    the window's exchanges alone."""
    store, cache = tmp_path / "store", tmp_path / "cache"
    ingest([days / "history.parquet", days / "new-day.parquet"], store, Options())
    full = detect(store, tmp_path / "full", cache=cache)
    assert full["digested_files"] == 3
    since = "2026-04-23T12:00:00+00:00"  # the first day outside, the second in half
    night = detect(store, tmp_path / "night", cache=cache, since=since)
    assert (night["files_outside_window"], night["reused_files"]) == (1, 2)
    assert len(_entries(cache)) == 3  # the day outside keeps its digest
    table = pq.read_table(days / "sim" / "exchanges.parquet")
    recent = table.filter(pc.greater_equal(table.column("ts"), datetime.fromisoformat(since)))
    pq.write_table(recent, tmp_path / "recent.parquet")
    detect(tmp_path / "recent.parquet", tmp_path / "alone")
    _same(tmp_path / "night", tmp_path / "alone")
    assert night["campaigns"] >= 1


def test_a_window_is_checked(
    days: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = ["detect", str(days / "history.parquet"), "--out", str(tmp_path / "f")]
    assert main([*source, "--since", "not-a-date"]) == 2
    assert main([*source, "--since", "2026-04-23", "--until", "2026-04-23"]) == 2
    assert main([*source, "--since", "2030-01-01"]) == 3  # nothing in it: no file read
    err = capsys.readouterr().err
    assert "--since" in err and "is not before --until" in err
    assert "no exchanges to analyse from 2030-01-01" in err and "Traceback" not in err
    assert not (tmp_path / "f").exists()
