"""The store: idempotent ingestion, all-or-nothing commits, one writer, versioned."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from distillguard.errors import (
    StoreError,
    Terminated,
    committed,
    forget_stops,
    stop_here,
    stops_held,
)
from distillguard.store import Store, atomic_write, exclusive, replacing, replacing_all, shared
from tests.conftest import SAMPLES, rows, run, write_jsonl


def records(n: int, prefix: str = "r", day: int = 22) -> list[dict[str, object]]:
    return [
        {
            "request_id": f"{prefix}{i}",
            "ts": f"2026-04-{day}T{i % 24:02d}:00:00Z",
            "account_id": f"acct-{i % 3}",
            "model": "m",
        }
        for i in range(n)
    ]


def test_the_same_file_twice_adds_nothing(tmp_path: Path) -> None:
    first = run(SAMPLES / "logs", tmp_path / "s")
    again = run(SAMPLES / "logs", tmp_path / "s")
    assert first.stored > 0 and again.stored == 0
    assert again.duplicates == first.stored + first.duplicates
    assert len(rows(tmp_path / "s")) == first.stored
    assert Store(tmp_path / "s").read().num_rows == first.stored


def test_duplicates_within_one_input_and_across_days(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", records(30) + records(5))
    summary = run(path, tmp_path / "s")
    assert (summary.stored, summary.duplicates) == (30, 5)
    later = write_jsonl(tmp_path / "b.jsonl", records(10, day=23) + records(10, prefix="n", day=23))
    summary = run(later, tmp_path / "s")
    # De-duplication is scoped to the days an input touches: the r* ids logged again
    # with another day's timestamp are stored there (documented in the store module).
    assert summary.stored == 20
    store = Store(tmp_path / "s")
    assert store.days() == ["2026-04-22", "2026-04-23"]
    assert all(p.parent.name.startswith("day=") for p in store.files("exchanges"))


@pytest.mark.parametrize("folder", ["logs [prod]", "a*b?{c}", "it's"])
def test_a_store_under_a_folder_named_like_a_pattern_takes_ingests(
    tmp_path: Path, folder: str
) -> None:
    """`[prod]` is a set of characters to a glob: the staged files are listed, not
    globbed, so the store takes its first ingest and the next."""
    store = tmp_path / folder / "store"
    first = run(write_jsonl(tmp_path / "a.jsonl", records(30)), store)
    later = run(write_jsonl(tmp_path / "b.jsonl", records(10, prefix="n", day=23)), store)
    assert (first.stored, later.stored) == (30, 10)
    assert Store(store).read().num_rows == 40


def test_a_failed_run_commits_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run(write_jsonl(tmp_path / "a.jsonl", records(5)), tmp_path / "s")
    before = (tmp_path / "s" / "manifest.json").read_bytes()

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("distillguard.store.atomic_write", boom)
    with pytest.raises(RuntimeError):
        run(write_jsonl(tmp_path / "b.jsonl", records(5, prefix="x")), tmp_path / "s")
    assert (tmp_path / "s" / "manifest.json").read_bytes() == before
    assert set(rows(tmp_path / "s")) == {f"r{i}" for i in range(5)}
    assert len(list((tmp_path / "s" / "exchanges").rglob("*.parquet"))) == 1


def test_a_crash_before_the_manifest_rename_leaves_a_readable_store(tmp_path: Path) -> None:
    """A process killed after moving its files into place, before committing."""
    store = tmp_path / "s"
    run(write_jsonl(tmp_path / "a.jsonl", records(5)), store)
    new = write_jsonl(tmp_path / "b.jsonl", records(5, prefix="x", day=23))
    script = textwrap.dedent(f"""
        import os, distillguard.store as s
        s.atomic_write = lambda *a, **k: os._exit(9)
        from distillguard.ingest import Options, ingest
        ingest([{str(new)!r}], {str(store)!r}, Options())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert done.returncode == 9
    orphans = [p for p in (store / "exchanges").rglob("*.parquet") if "2026-04-23" in str(p)]
    assert orphans, "the simulated crash should leave uncommitted files behind"
    assert set(rows(store)) == {f"r{i}" for i in range(5)}  # readers see the last commit
    summary = run(new, store)  # the next writer cleans up and redoes the work
    assert summary.stored == 5 and len(rows(store)) == 10
    assert not any(p.exists() for p in orphans)


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    """A second writer is refused; one that finds the lock held for an instant (a
    reader's reclaim of retired files) tries for a second first, and writes."""
    import threading
    import time

    store = Store(tmp_path / "s")
    with store.transaction(None), pytest.raises(StoreError, match="another process"):
        run(write_jsonl(tmp_path / "a.jsonl", records(2)), tmp_path / "s")
    with exclusive(store.root / ".lock", "held for an instant"):
        writer = threading.Thread(
            target=run, args=(write_jsonl(tmp_path / "b.jsonl", records(2)), store.root)
        )
        writer.start()
        time.sleep(0.3)
    writer.join(10)
    assert store.read().num_rows == 2


def test_stores_of_another_version_or_foreign_folders_are_refused(tmp_path: Path) -> None:
    run(write_jsonl(tmp_path / "a.jsonl", records(2)), tmp_path / "s")
    manifest = tmp_path / "s" / "manifest.json"
    body = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**body, "version": 99}))
    with pytest.raises(StoreError, match=r"version 99.*upgrade distillguard"):
        rows(tmp_path / "s")
    for edited in ("1", True, 1.0, 0, None):  # a marker edited by hand is no version
        manifest.write_text(json.dumps({**body, "version": edited}))
        with pytest.raises(StoreError, match=r"damaged: version .* is none we wrote"):
            rows(tmp_path / "s")
    manifest.write_text(json.dumps(body))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not empty"):
        run(tmp_path / "a.jsonl", tmp_path / "other")


def test_accounts_table_upserts_by_account(tmp_path: Path) -> None:
    first = [
        {
            "account_id": "a1",
            "created_at": "2026-04-01",
            "signup_channel": "education",
            "signup_ip": "198.51.100.20",
            "verification": "email",
        },
        {"account_id": "a2", "created_at": "2026-04-01", "signup_channel": "self-serve"},
    ]
    run(write_jsonl(tmp_path / "acc.jsonl", first), tmp_path / "s", table="accounts")
    again = run(tmp_path / "acc.jsonl", tmp_path / "s", table="accounts")
    assert (again.stored, again.duplicates) == (0, 2)
    changed = [{**first[0], "verification": "kyc"}]
    summary = run(write_jsonl(tmp_path / "acc2.jsonl", changed), tmp_path / "s", table="accounts")
    table = {r["account_id"]: r for r in Store(tmp_path / "s").read("accounts").to_pylist()}
    assert summary.stored == 1 and table["a1"]["verification"] == "kyc" and "a2" in table
    assert table["a1"]["signup_ip_prefix"] == "198.51.100.0/24"
    assert len(Store(tmp_path / "s").files("accounts")) == 1


def test_a_file_superseded_while_read_stays_until_no_one_reads(tmp_path: Path) -> None:
    """A detect run listed the accounts file, and a new accounts table deleted it before
    the run opened it. The file now stays while a run reads the store, is not taken for
    a killed run's leftovers, and goes when the last reader is out (retired files used
    to pile up while nightly runs overlapped, until a commit found no reader)."""
    store = Store(tmp_path / "s")
    account = {"account_id": "a1", "created_at": "2026-04-01", "signup_channel": "x"}
    run(write_jsonl(tmp_path / "a.jsonl", [account]), store.root, table="accounts")
    (read,) = store.files("accounts")
    with store.reading():
        changed = [{**account, "signup_channel": "y"}]
        run(write_jsonl(tmp_path / "b.jsonl", changed), store.root, table="accounts")
        assert read.is_file() and store.manifest().retired == [str(read.relative_to(store.root))]
        changed = [{**account, "signup_channel": "z"}]
        run(write_jsonl(tmp_path / "c.jsonl", changed), store.root, table="accounts")
        assert read.is_file() and len(store.manifest().retired) == 2
        with store.reading():  # another run, which ends first
            pass
        assert read.is_file() and len(store.manifest().retired) == 2
    assert store.manifest().retired == [] and not read.exists()  # the last reader out
    with store.reading():
        run(write_jsonl(tmp_path / "d.jsonl", [account]), store.root, table="accounts")
    assert store.manifest().retired == []
    assert {p.name for p in (store.root / "accounts").iterdir()} == {
        p.name for p in store.files("accounts")
    }
    assert store.read("accounts")["signup_channel"].to_pylist() == ["x"]


def test_a_replacement_interrupted_half_way_leaves_the_old_file_and_no_temporary(
    tmp_path: Path,
) -> None:
    target = tmp_path / "campaigns.json"
    atomic_write(target, b"old")
    with pytest.raises(Terminated), replacing(target) as tmp:
        tmp.write_bytes(b"half")
        raise Terminated  # SIGTERM, as the CLI raises it
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == [target.name]
    with replacing(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and len(list(tmp_path.iterdir())) == 1


def test_files_replaced_together_change_all_or_none_and_the_last_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = [tmp_path / n for n in ("a", "b", "summary")]
    for path in names:
        path.write_bytes(b"old")
    with pytest.raises(Terminated), replacing_all(*names) as temporaries:
        for tmp in temporaries[:2]:
            tmp.write_bytes(b"new")
        raise Terminated  # before the last was written
    assert [p.read_bytes() for p in names] == [b"old"] * 3 and len(list(tmp_path.iterdir())) == 3
    renamed: list[str] = []
    rename = os.replace

    def recording(source: Path, target: Path) -> None:
        renamed.append(Path(target).name)
        rename(source, target)

    monkeypatch.setattr(os, "replace", recording)
    with replacing_all(*names) as temporaries:
        for tmp in temporaries:
            tmp.write_bytes(b"new")
        assert renamed == []  # nothing replaced while the block runs
    assert renamed == ["a", "b", "summary"] and [p.read_bytes() for p in names] == [b"new"] * 3


@pytest.mark.parametrize("handler", ["ours", "python's"])
def test_a_stop_between_the_renames_waits_for_the_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, handler: str
) -> None:
    """SIGINT after the first of three findings files was renamed: raised there, it left
    one run's accounts beside another's campaigns. Under our handler or Python's own
    (a caller without ours), the set is replaced whole and the stop raised after."""
    names = [tmp_path / n for n in ("a", "b", "summary")]
    for path in names:
        path.write_bytes(b"old")
    rename = os.replace

    def signalled(source: Path, target: Path) -> None:
        rename(source, target)
        if Path(target).name == "a":
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(os, "replace", signalled)
    ours = handler == "ours"
    previous = signal.signal(
        signal.SIGINT,
        (lambda *_: stop_here(KeyboardInterrupt)) if ours else signal.default_int_handler,
    )
    try:
        with pytest.raises(KeyboardInterrupt), replacing_all(*names) as temporaries:
            for tmp in temporaries:
                tmp.write_bytes(b"new")
        assert committed()
    finally:
        signal.signal(signal.SIGINT, previous)
        forget_stops()
    assert [p.read_bytes() for p in names] == [b"new"] * 3
    assert signal.getsignal(signal.SIGINT) is previous


def test_a_commit_in_another_thread_does_not_hold_the_main_threads_stops(
    tmp_path: Path,
) -> None:
    """How deep in commits a thread is was one count for all threads: a gateway thread
    committing made the main thread's own commit leave Python's Ctrl-C handler in place,
    and our handlers not raise at all."""
    import threading

    inside, leave = threading.Event(), threading.Event()

    def commit() -> None:
        with stops_held():
            inside.set()
            leave.wait(5)

    other = threading.Thread(target=commit)
    other.start()
    inside.wait(5)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # a library caller's
    try:
        with pytest.raises(KeyboardInterrupt), stops_held():
            os.kill(os.getpid(), signal.SIGINT)
            (tmp_path / "renamed").write_bytes(b"")  # still runs: the stop waits
        assert (tmp_path / "renamed").exists()
        with pytest.raises(Terminated):
            stop_here(Terminated)  # not inside a commit on this thread
    finally:
        signal.signal(signal.SIGINT, previous)
        leave.set()
        other.join(5)
        forget_stops()


def test_a_reader_leaving_takes_no_writer_lock_unless_files_wait_and_keeps_permissions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every reader leaving took the store's writer lock to look for retired files, and
    an ingest starting then was turned away; a reclaim under another umask made the
    manifest private."""
    from distillguard import store as stores

    run(SAMPLES / "logs", tmp_path / "s")
    store = Store(tmp_path / "s")
    taken: list[str] = []
    lock = stores.exclusive

    def recording(path: Path, *args: object, **kwargs: object) -> object:
        taken.append(Path(path).name)
        return lock(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(stores, "exclusive", recording)
    with store.reading():
        pass
    assert taken == []
    manifest = store.root / "manifest.json"
    manifest.chmod(0o664)
    account = {"account_id": "a1", "created_at": "2026-04-01", "signup_channel": "x"}
    run(write_jsonl(tmp_path / "a.jsonl", [account]), store.root, table="accounts")
    with store.reading():
        run(write_jsonl(tmp_path / "b.jsonl", [account]), store.root, table="accounts")
        assert store.manifest().retired
        mask = os.umask(0o077)
    try:
        assert store.manifest().retired == []  # the last reader out
    finally:
        os.umask(mask)
    assert (manifest.stat().st_mode & 0o777) == 0o664


def test_a_reader_that_may_not_write_the_readers_file_still_holds_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A detect run on a read-only mount (or as a service user) cannot open the readers
    file to write; it locks it opened to read, so an ingest meanwhile retires the
    accounts file the run reads instead of deleting it. Fault injected: root writes
    through any permission."""
    import builtins

    from distillguard import store as stores

    real = builtins.open
    readers_only = {"on": False}

    def read_only(file: object, mode: str = "r", *args: object, **kwargs: object) -> object:
        if readers_only["on"] and str(file).endswith(".readers") and mode != "r":
            raise PermissionError(13, "Permission denied")
        return real(file, mode, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(stores, "open", read_only, raising=False)
    account = {"account_id": "a1", "created_at": "2026-04-01", "signup_channel": "x"}
    run(write_jsonl(tmp_path / "a.jsonl", [account]), tmp_path / "s", table="accounts")
    store = Store(tmp_path / "s")
    (first,) = store.files("accounts")
    readers_only["on"] = True  # the writer may write it; this reader may not
    with stores.shared(store.root / ".readers"):
        readers_only["on"] = False
        run(write_jsonl(tmp_path / "b.jsonl", [account]), store.root, table="accounts")
        assert first.is_file() and store.manifest().retired


def test_a_writer_deletes_only_what_a_killed_run_left(tmp_path: Path) -> None:
    """A folder laid out like a store but with no manifest (the user's own logs in
    exchanges/, a store whose manifest was lost) is refused, not emptied; in a store,
    files no run of ours would have named survive the clean-up."""
    mine = tmp_path / "mine"
    (mine / "exchanges").mkdir(parents=True)
    write_jsonl(mine / "exchanges" / "logs.jsonl", records(2))
    with pytest.raises(StoreError, match=r"no manifest\.json"):
        run(mine / "exchanges" / "logs.jsonl", mine)
    assert (mine / "exchanges" / "logs.jsonl").is_file()
    store = tmp_path / "s"
    run(write_jsonl(tmp_path / "a.jsonl", records(2)), store)
    parts = sorted(store.rglob("part-*.parquet"))
    kept = store / "exchanges" / "README.txt"
    kept.write_text("my notes")
    run(write_jsonl(tmp_path / "b.jsonl", records(2, prefix="x")), store)
    assert kept.read_text() == "my notes"
    (store / "manifest.json").unlink()
    with pytest.raises(StoreError, match="manifest was lost"):
        run(tmp_path / "a.jsonl", store)
    assert all(p.is_file() for p in parts) and kept.is_file()


def test_a_writer_that_must_wait_says_so_and_locks_a_mount_refuses_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A detect run whose findings a report is reading waited without a word; a mount
    without locks (NFS without its lock service) failed readers with a traceback: they
    now read (no writer can lock there), and writers are refused in one line."""
    import errno
    import fcntl
    import threading

    lock, done = tmp_path / ".lock", threading.Event()

    def write() -> None:
        with exclusive(lock, "--out f is being read or written", wait=True):
            done.set()

    with shared(lock):
        writer = threading.Thread(target=write)
        writer.start()
        assert not done.wait(0.5)
    writer.join(5)
    assert done.is_set()
    assert capsys.readouterr().err == "distillguard: waiting: --out f is being read or written\n"

    def no_locks(handle: object, how: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with shared(lock):  # no writer can lock there either: the reader reads
        pass
    with pytest.raises(StoreError, match=r"cannot lock .*No locks"), exclusive(lock, "a writer"):
        pass
    (tmp_path / "s").mkdir()
    with Store(tmp_path / "s")._unread() as unread:
        assert not unread  # superseded files are kept for any reader
