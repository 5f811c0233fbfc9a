"""Content features of a stream of record batches, in parallel, in bounded memory.

Featurisation is the hot stage (regular expressions, MinHash) and is a pure function of
one batch, so batches go to a pool of worker processes, each as an Arrow file the worker
maps rather than pickled through a pipe, and each worker writes its batch's features to
its own Parquet file; only file names come back. At most two batches per worker are in
flight, so memory does not grow with the input. Workers are spawned, never forked: the
parent holds a DuckDB connection and its threads. Python's rule for spawned workers
applies to scripts that call `detect()`: their entry needs `if __name__ == "__main__":`.
Without it the workers cannot start; we then say so on stderr and featurise in this
process instead of failing. The workers carry a name that `detect()` checks, so that the
run such a script starts in each of them stops before it makes any scratch (killed
half-way when the pool broke, it left its work folder behind).
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from distillguard.features.content import featurise

IN_FLIGHT_PER_WORKER = 2
WORKER_NAME = "distillguard-feature-worker"
MAX_WORKERS = 1024  # processes: past any machine's cores they cost only memory


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


Transform = Callable[[pa.RecordBatch], pa.RecordBatch]


class _Worker(multiprocessing.context.SpawnProcess):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.name = f"{WORKER_NAME}-{self.name}"  # the child has it before it imports


class _Spawn(multiprocessing.context.SpawnContext):
    Process = _Worker


def in_worker() -> bool:
    """Whether this process is one of our feature workers."""
    return multiprocessing.current_process().name.startswith(WORKER_NAME)


class Pool:
    """Worker processes kept for a whole run: an incremental run digests one input file
    at a time, and starting workers (an interpreter, NumPy, the compiled loops) costs
    seconds each time."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._executor: ProcessPoolExecutor | None = None

    def map_to(
        self,
        batches: Callable[[], Iterable[pa.RecordBatch]],
        folder: Path,
        function: Transform = featurise,
    ) -> int:
        folder.mkdir(parents=True, exist_ok=True)
        if self.workers > 1:
            stream = batches()
            try:
                return self._in_pool(stream, folder, function)
            except BrokenProcessPool:
                _close(stream)  # half read: an engine refuses a new query while it is open
                print(
                    "distillguard: feature workers could not start (a script that calls "
                    'detect() needs `if __name__ == "__main__":`); continuing in one process',
                    file=sys.stderr,
                )
                self.close()
                self.workers = 1
                shutil.rmtree(folder)
                folder.mkdir(parents=True)
        count = 0
        for count, batch in enumerate(batches(), start=1):
            _write(batch, folder / f"part-{count:06d}.parquet", function)
        return count

    def _in_pool(self, batches: Iterable[pa.RecordBatch], folder: Path, function: Transform) -> int:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=_Spawn(), initializer=_deaf_to_ctrl_c
            )
        pending: deque[Future[str]] = deque()
        count = 0
        spool = Path(tempfile.mkdtemp(prefix="distillguard-batches-"))
        try:
            for count, batch in enumerate(batches, start=1):
                if len(pending) >= self.workers * IN_FLIGHT_PER_WORKER:
                    pending.popleft().result()
                handed = _hand_over(batch, spool / f"{count:06d}.arrow")
                part = folder / f"part-{count:06d}.parquet"
                pending.append(self._executor.submit(_write_handed, handed, part, function))
            while pending:
                pending.popleft().result()
        finally:
            shutil.rmtree(spool, ignore_errors=True)
        return count

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)
            self._executor = None


def _deaf_to_ctrl_c() -> None:
    """Ctrl-C at a terminal reaches every process of the group: each worker printed its
    own KeyboardInterrupt traceback. The run stops them when it stops."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _close(stream: Iterable[pa.RecordBatch]) -> None:
    close = getattr(stream, "close", None)
    if close is not None:
        close()


def _hand_over(batch: pa.RecordBatch, path: Path) -> Path:
    """A batch written for a worker as an Arrow IPC file: one copy into the page cache,
    which the worker maps without copying. Pickled through the pool's pipe, a batch was
    copied over and over, at a third to three quarters of the cost of featurising it on a
    day of light users (docs/performance.md, change 45). The batches hold prompts: their
    folder is readable by this user only (mkdtemp) and goes when the pool's work ends."""
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return path


def _write_handed(handed: Path, path: Path, function: Transform) -> str:
    """In a worker: `_write` of the batch handed over at `handed`, which then goes."""
    with pa.memory_map(str(handed)) as source:
        written = _write(pa.ipc.open_file(source).get_batch(0), path, function)
    handed.unlink()
    return written


def _write(batch: pa.RecordBatch, path: Path, function: Transform) -> str:
    tmp = path.with_suffix(".tmp")
    pq.write_table(pa.Table.from_batches([function(batch)]), tmp)
    tmp.replace(path)
    return str(path)
