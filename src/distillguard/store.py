"""The canonical store: Parquet files on disk, listed in one manifest.

Layout (readable by DuckDB, Spark or pyarrow as a hive-partitioned dataset):

    STORE/manifest.json                      what is committed (the only source of truth)
    STORE/exchanges/day=YYYY-MM-DD/part-*.parquet
    STORE/accounts/part-*.parquet
    STORE/quarantine/<run>.jsonl             records that could not be stored, with reasons

A run writes everything under `.staging/`, moves finished files into place and then
replaces the manifest with one atomic rename: until that rename nothing is committed,
and a crash at any point leaves the previous manifest intact. Files that a crashed run
moved into place but never committed are not in the manifest; readers ignore them and
the next writer deletes them (files named as a run names them, nothing else). A folder
laid out like a store whose manifest is missing is refused, never emptied. One writer
at a time holds `.lock`.

A request_id is unique within its day: ingestion skips ids already stored in the days
its input touches, so re-ingesting a file adds nothing while the check reads only
those days. The same id logged again with a timestamp on another day is kept.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import stat
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.dataset as ds

from distillguard.errors import StoreError, note_commit, stops_held, unless_stopped
from distillguard.schema import TABLES, conform

FORMAT = "distillguard-store"
VERSION = 1
MANIFEST = "manifest.json"
READERS = ".readers"  # held shared by each run reading the store
WRITER_PATIENCE = 1.0  # seconds a writer tries for the lock: a reader's reclaim holds it briefly
OWN = {".lock", READERS, ".staging", "exchanges", "accounts", "quarantine", MANIFEST}
RUN = r"\d{8}T\d{6}-[0-9a-f]{8}"  # Transaction.id, in the name of each file a run places
RUN_ID = re.compile(RUN)
RUN_FILE = re.compile(
    rf"exchanges/day=\d{{4}}-\d{{2}}-\d{{2}}/part-{RUN}-.+\.parquet"
    rf"|accounts/part-{RUN}\.parquet|quarantine/{RUN}\.jsonl"
)


def is_store(folder: Path) -> bool:
    """Whether `folder` holds a distillguard store: a manifest.json of ours, not any."""
    try:
        body = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(body, dict) and body.get("format") == FORMAT


def in_store(path: Path) -> bool:
    """Whether `path` is a store or lies inside one: no output of ours belongs there."""
    return any(is_store(folder) for folder in (path, *path.resolve().parents))


@contextmanager
def replacing(path: Path, mark: bool = True) -> Iterator[Path]:
    """A temporary name beside `path` to write to; it becomes `path` when the block
    ends, so readers see the old or the new file, never half. If the block fails (or
    is interrupted), the temporary file goes and `path` is as it was. `mark`: the file
    is the command's output (a stop after it is said not to have lost it)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield tmp
        with stops_held():
            os.replace(tmp, path)
            _fsync(path.parent)
            if mark:
                note_commit()
    except BaseException:
        tmp.unlink(missing_ok=True)  # gone already once renamed
        raise


@contextmanager
def replacing_all(*paths: Path) -> Iterator[list[Path]]:
    """`replacing` for files that belong together (one run's findings): none replaces
    its old file until every one is written, and the last is replaced last, so a write
    that fails (a full disk, a timeout) leaves the old set whole, not a mix of runs."""
    renaming = ExitStack()  # stops held from the first rename to the last
    with renaming, ExitStack() as stack:  # entered last to first, so left first to last
        temporaries = [stack.enter_context(replacing(path)) for path in reversed(paths)][::-1]
        yield temporaries
        for written in temporaries:  # on disk before any name points at it
            _fsync(written)
        renaming.enter_context(stops_held())


def atomic_write(path: Path, data: bytes, mark: bool = True) -> None:
    """Write `data` to `path` so that readers see the old or the new file, never half;
    the new file keeps the old one's permissions (a store shared with a group stays so)."""
    with replacing(path, mark) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        with contextlib.suppress(FileNotFoundError):
            os.chmod(handle.fileno(), stat.S_IMODE(path.stat().st_mode))
        os.fsync(handle.fileno())


def _holds(path: Path, body: bytes) -> bool:
    try:
        return path.read_bytes() == body
    except OSError:
        return False


def _fsync(path: Path) -> None:
    """Flush a file, or a folder's entries, to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Manifest:
    version: int = VERSION
    key_id: str | None = None
    pseudonymised: bool = False
    exchanges: list[str] = field(default_factory=list)
    accounts: list[str] = field(default_factory=list)
    quarantine: list[str] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)  # superseded while being read

    def to_json(self) -> bytes:
        body = {"format": FORMAT, **self.__dict__}
        return json.dumps(body, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, where: Path) -> Manifest:
        try:
            body = json.loads(data)
        except ValueError:
            raise StoreError(f"{where} is not a distillguard manifest (not JSON)") from None
        if not isinstance(body, dict) or body.get("format") != FORMAT:
            raise StoreError(f"{where} is not a distillguard manifest")
        version = body.get("version")
        if type(version) is not int or version < 1:  # "1", true, 1.0: an edited marker
            raise StoreError(f"{where} is damaged: version {json.dumps(version)} is none we wrote")
        if version != VERSION:
            newer = version > VERSION
            remedy = "upgrade distillguard" if newer else "an older distillguard reads it"
            raise StoreError(
                f"{where} is a store of format version {version}; this distillguard reads "
                f"version {VERSION} ({remedy}, or ingest the logs into a new store)"
            )
        body.pop("format")
        known = {k: v for k, v in body.items() if k in cls.__dataclass_fields__}
        lists = ("exchanges", "accounts", "quarantine", "runs", "retired")
        if any(not isinstance(known.get(k, []), list) for k in lists):
            raise StoreError(f"{where} is damaged: its file lists are not lists")
        return cls(**known)


@contextmanager
def exclusive(
    lock: Path, busy: str, *, wait: bool = False, patience: float = 0.0
) -> Iterator[None]:
    """Hold the file `lock` (made if absent) for one process at a time; another gets a
    StoreError saying `busy` (after trying for `patience` seconds, for holders that hold
    it for an instant), or with `wait` says it waits (`busy` saying for what) and waits
    its turn. The kernel lets go if the holder dies."""
    with ExitStack() as held:
        try:
            handle = held.enter_context(open(lock, "a+"))
            try:
                _lock_within(handle, patience)
            except BlockingIOError:
                if not wait:
                    raise
                print(f"distillguard: waiting: {busy}", file=sys.stderr, flush=True)
                fcntl.flock(handle, fcntl.LOCK_EX)
        except BlockingIOError:
            raise StoreError(busy) from None
        except OSError as exc:  # not writable, a folder in the way, no locks on this mount
            raise StoreError(f"cannot lock {lock}: {exc.strerror}") from None
        yield


def _lock_within(handle: IO[str], patience: float) -> None:
    """Lock `handle` exclusively, trying for `patience` seconds; BlockingIOError after."""
    deadline = time.monotonic() + patience
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


@contextmanager
def shared(lock: Path) -> Iterator[None]:
    """Hold the file `lock` shared with other readers, while no writer holds it (see
    `exclusive`); in a folder we may not write to, or on a mount without locks, no
    writer can hold it either, and the block runs without it."""
    try:
        handle = _lockable(lock)
    except OSError:
        yield
        return
    with handle:
        with contextlib.suppress(OSError):  # no locks on this mount (NFS without its
            fcntl.flock(handle, fcntl.LOCK_SH)  # lock service): no writer runs either
        yield


def _lockable(lock: Path) -> IO[str]:
    """The file `lock` opened to be locked: made if absent, else opened to read when it
    may not be written (a read-only mount, a service user beside the store's owner),
    since a lock needs no more. A reader that held no lock would have a writer delete
    the file it was about to read."""
    try:
        return open(lock, "a+")
    except OSError:
        return open(lock)


class Store:
    """A store folder; reading needs no lock, writing goes through `transaction()`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def exists(self) -> bool:
        return (self.root / MANIFEST).is_file()

    def manifest(self) -> Manifest:
        path = self.root / MANIFEST
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"{self.root} is a file, not a store folder")
        if not path.is_file():
            foreign = (
                [p.name for p in self.root.iterdir() if p.name not in OWN]
                if (self.root.exists())
                else []
            )
            if foreign:
                raise StoreError(
                    f"{self.root} is not empty and holds no distillguard manifest "
                    f"(found {', '.join(sorted(foreign)[:3])})"
                )
            staged = self.root / ".staging"
            killed = {p.name for p in staged.iterdir()} if staged.is_dir() else set()
            held = next((f for f in self._files() if not self._left_by(f, killed)), None)
            if held is not None:
                raise StoreError(
                    f"{self.root} holds {held.relative_to(self.root)} but no {MANIFEST}: a store "
                    "whose manifest was lost (restore it from a backup) or not a store at all; "
                    "if a first ingest into it was killed, remove the folder and ingest again"
                )
            return Manifest()  # new, or what a killed first run left (removed by _recover)
        return Manifest.from_json(path.read_bytes(), path)

    def files(self, table: str) -> list[Path]:
        """The committed Parquet files of `table` ('exchanges' or 'accounts')."""
        files = [self.root / rel for rel in getattr(self.manifest(), table)]
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise StoreError(
                f"{self.root} lists {len(missing)} {table} file(s) that are "
                f"missing, e.g. {missing[0]}; restore them from a backup"
            )
        return files

    def batches(
        self, table: str = "exchanges", columns: list[str] | None = None, batch_rows: int = 65536
    ) -> Iterator[pa.RecordBatch]:
        """Stream a table's committed rows in the canonical schema, a batch at a time."""
        schema = TABLES[table]
        files = self.files(table)
        if not files:
            return
        dataset = ds.dataset([str(f) for f in files], format="parquet")
        wanted = columns or schema.names
        for batch in dataset.to_batches(columns=wanted, batch_size=batch_rows):
            conformed = conform(pa.Table.from_batches([batch]), _select(schema, wanted), name=table)
            yield from conformed.to_batches()

    def read(self, table: str = "exchanges", columns: list[str] | None = None) -> pa.Table:
        """A whole table in memory: for small stores and tests; use `batches` otherwise."""
        schema = _select(TABLES[table], columns or TABLES[table].names)
        return pa.Table.from_batches(list(self.batches(table, columns)), schema=schema)

    def days(self) -> list[str]:
        return sorted(
            {Path(rel).parent.name.removeprefix("day=") for rel in self.manifest().exchanges}
        )

    @contextmanager
    def transaction(self, key_id: str | None) -> Iterator[Transaction]:
        """Lock the store, clean up after any crashed run, and commit on success only."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise StoreError(f"cannot make a store at {self.root}: a file is in the way") from None
        busy = f"{self.root} is being written by another process"
        with exclusive(self.root / ".lock", busy, patience=WRITER_PATIENCE):
            manifest = self.manifest()
            _check_key(manifest, key_id, self.root)
            self._recover(manifest)
            txn = Transaction(self, manifest, key_id)
            try:
                yield txn
                txn.commit()
            finally:
                shutil.rmtree(txn.staging, ignore_errors=True)
                if not txn.committed:
                    txn.undo()

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Hold the store's files for a run that reads them: a commit that supersedes a
        file (a new accounts table) deletes it only when no run is reading, and else
        leaves it to the last reader out. (A detect run listed the old accounts file and
        found it gone.) Readers never wait but for a commit's instant."""
        try:
            with shared(self.root / READERS):
                yield
        finally:
            self._reclaim()

    def _reclaim(self) -> None:
        """Delete the files commits retired while runs read them, if no run reads now
        and no writer is at work (its commit will). Only when there are any (for that
        instant the writer's lock is taken: a writer starting then tries for a second)
        and only by the manifest's owner (a reader would make a shared store its own)."""
        try:
            path = self.root / MANIFEST
            if path.stat().st_uid != os.geteuid() or not self.manifest().retired:
                return
            with exclusive(self.root / ".lock", "a writer"), self._unread() as unread:
                manifest = self.manifest()
                if not unread or not manifest.retired:
                    return
                retired, manifest.retired = manifest.retired, []
                with stops_held():
                    atomic_write(self.root / MANIFEST, manifest.to_json(), mark=False)
                    for name in retired:
                        (self.root / name).unlink(missing_ok=True)
        except (StoreError, OSError):
            pass

    @contextmanager
    def _unread(self) -> Iterator[bool]:
        """Whether no run is reading the store, held so while the block runs."""
        try:
            handle = _lockable(self.root / READERS)
        except OSError:  # cannot be opened at all: keep what a reader may read
            yield False
            return
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # a reader holds it (or locks fail here): keep what it may read
                yield False
                return
            yield True

    def _left_by(self, path: Path, runs: set[str]) -> bool:
        """Whether `path` was placed by one of `runs` (killed before it committed: its
        staging folder is still there)."""
        name = str(path.relative_to(self.root))
        run = RUN_ID.search(name)
        return bool(RUN_FILE.fullmatch(name)) and run is not None and run.group() in runs

    def _files(self) -> Iterator[Path]:
        for table in ("exchanges", "accounts", "quarantine"):
            yield from (p for p in (self.root / table).rglob("*") if p.is_file())

    def _recover(self, manifest: Manifest) -> None:
        """Delete what a killed run moved into place without committing: files named as
        a run names them and not in the manifest, nothing else."""
        committed = {*manifest.exchanges, *manifest.accounts, *manifest.quarantine}
        committed |= set(manifest.retired)
        for path in self._files():
            name = str(path.relative_to(self.root))
            if name not in committed and RUN_FILE.fullmatch(name):
                path.unlink()
        # Last: until the files are gone, the staging folder says whose they were.
        shutil.rmtree(self.root / ".staging", ignore_errors=True)


def _select(schema: pa.Schema, names: list[str]) -> pa.Schema:
    return pa.schema([schema.field(n) for n in names])


def _check_key(manifest: Manifest, key_id: str | None, root: Path) -> None:
    if not manifest.runs:
        return
    if manifest.pseudonymised and key_id is None:
        raise StoreError(f"{root} holds pseudonymised data: pass the same --hmac-key-file")
    if not manifest.pseudonymised and key_id is not None:
        raise StoreError(
            f"{root} holds data that was not pseudonymised: use a new store "
            "for keyed ingestion, or drop --hmac-key-file"
        )
    if manifest.key_id != key_id:
        raise StoreError(
            f"{root} was pseudonymised with key id {manifest.key_id}, this run's "
            f"key has id {key_id}: identifiers would not match"
        )


class Transaction:
    """Files staged by one run; moved into the store and listed in the manifest at commit."""

    def __init__(self, store: Store, manifest: Manifest, key_id: str | None) -> None:
        self.store = store
        self.manifest = manifest
        self.id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
        self.staging = store.root / ".staging" / self.id
        self.staging.mkdir(parents=True)
        self.key_id = key_id
        self.committed = False
        self._placed: list[Path] = []

    def place(self, table: str, source: Path, relative: str) -> None:
        """Move a finished file into the store (not yet committed)."""
        target = self.store.root / table / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
        self._placed.append(target)
        rel = str(target.relative_to(self.store.root))
        listing: list[str] = getattr(self.manifest, table)
        listing.append(rel)

    def replace_all(self, table: str, source: Path, relative: str) -> list[Path]:
        """Place a file that supersedes every committed file of `table`; returns the old ones."""
        old = [self.store.root / rel for rel in getattr(self.manifest, table)]
        setattr(self.manifest, table, [])
        self.place(table, source, relative)
        self._superseded = old
        return old

    def log(self, run: dict[str, Any]) -> None:
        self.manifest.runs.append({"id": self.id, **run})

    def commit(self) -> None:
        unless_stopped()
        self.manifest.key_id = self.key_id
        self.manifest.pseudonymised = self.key_id is not None
        root = self.store.root
        superseded = [str(p.relative_to(root)) for p in getattr(self, "_superseded", [])]
        retired = [*self.manifest.retired, *superseded]
        with stops_held(), self.store._unread() as unread:
            self.manifest.retired = [] if unread else retired
            body = self.manifest.to_json()
            try:
                atomic_write(root / MANIFEST, body)
            finally:  # failing after its rename (a folder's flush), it still committed
                self.committed = _holds(root / MANIFEST, body)
            for name in retired if unread else []:
                (root / name).unlink(missing_ok=True)

    def undo(self) -> None:
        for path in self._placed:
            path.unlink(missing_ok=True)
