"""One error hierarchy; each error knows the exit code the CLI returns for it.

User mistakes (bad arguments, unreadable input, an incompatible store) are
DistillguardError subclasses and are reported in one line without a stack trace.
Anything else is a bug and exits with INTERNAL.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

OK = 0
INTERNAL = 1
USAGE = 2
INPUT = 3
BAD_RATIO = 4
STORE = 5
ENGINE = 6
REMOTE = 7
INTERRUPTED = 130  # 128 + SIGINT, as shells report it
TERMINATED = 143  # 128 + SIGTERM

EXIT_CODES = {
    OK: "success",
    INTERNAL: "internal error (a bug: please report it with the command line)",
    USAGE: "usage error: bad arguments, mapping or key file, a --memory-limit too small",
    INPUT: "input error: a path does not exist, nothing in it could be read, or every record "
    "was quarantined (without --max-bad-ratio)",
    BAD_RATIO: "too many bad records: the quarantined share exceeded --max-bad-ratio",
    STORE: "store error: locked by another writer, from an incompatible version, key mismatch, "
    "or a full disk (scratch, staging, findings, a simulation)",
    ENGINE: "engine error: the engine could not start (no Java, no pyspark, no cluster)",
    REMOTE: "remote error: a TAXII server could not be reached, or refused some or all objects",
    INTERRUPTED: "interrupted (Ctrl-C): scratch removed, nothing committed",
    TERMINATED: "terminated (SIGTERM, as a scheduler's timeout sends): scratch removed, "
    "nothing committed",
}


class DistillguardError(Exception):
    """Base of the errors a user can act on."""

    exit_code = INTERNAL


class UsageError(DistillguardError):
    exit_code = USAGE


class InputError(DistillguardError):
    exit_code = INPUT


class SchemaError(DistillguardError):
    exit_code = INPUT


class StoreError(DistillguardError):
    exit_code = STORE


class BadRatioError(DistillguardError):
    exit_code = BAD_RATIO


class EngineError(DistillguardError):
    exit_code = ENGINE


class RemoteError(DistillguardError):
    exit_code = REMOTE


class Terminated(BaseException):
    """SIGTERM, raised where the process is: like Ctrl-C's KeyboardInterrupt, it passes
    every `except Exception` and runs every `finally` (scratch removed, locks let go),
    where the default action would end the process on the spot."""


class Interrupted(BaseException):
    """Ctrl-C while the Spark engine runs: KeyboardInterrupt's twin, raised in its place
    because py4j, catching a KeyboardInterrupt in a call to the JVM, logs its traceback
    and leaves Spark unable to stop cleanly."""


_asked: list[type[BaseException]] = []  # the stops signals asked for, this command


def ask_stop(stop: type[BaseException]) -> None:
    """Remember that a signal asked the command to stop with `stop`. Raised where the
    process is, it can be swallowed: DuckDB turns it into its own 'query interrupted'
    error, py4j drops it inside a finaliser. The command still ends as asked."""
    _asked.append(stop)


def stop_asked() -> type[BaseException] | None:
    return _asked[-1] if _asked else None


def unless_stopped() -> None:
    """Raise the stop a signal asked for, if one did: called before anything is
    committed, so that a swallowed signal never lets a run replace what it should leave."""
    if _asked:
        raise _asked[-1]


def forget_stops() -> None:
    _asked.clear()
    _committed.clear()


_held = threading.local()  # per thread: how deep in stops_held blocks it is
_committed: list[bool] = []  # the command made a commit (its output is whole)


def _depth() -> int:
    return getattr(_held, "depth", 0)


def stop_here(stop: type[BaseException]) -> None:
    """What a signal handler does: remember the stop, and raise it where the process is,
    unless a commit is under way there, which raises it once it has ended."""
    ask_stop(stop)
    if not _depth():
        raise stop


def note_commit() -> None:
    """Called as a commit completes (a store's manifest, an output's files renamed), so
    that a stop coming after it is not reported as having left nothing committed."""
    _committed.append(True)


def committed() -> bool:
    return bool(_committed)


@contextmanager
def stops_held() -> Iterator[None]:
    """A commit's few instants (renames, a folder's flush to disk), which a stop raised
    half-way would leave half done: a store's manifest naming files its undo deleted, one
    run's findings beside another's. A stop asked meanwhile (by our handlers, or by
    Ctrl-C under Python's own) is raised once the main thread's outermost block has
    ended; signals are the main thread's, so other threads' blocks raise none."""
    outermost = not _depth() and threading.current_thread() is threading.main_thread()
    own = outermost and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    caught: list[int] = []
    asked = len(_asked)
    if own:
        signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    _held.depth = _depth() + 1
    try:
        yield
    finally:
        _held.depth -= 1
        if own:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    if outermost and (caught or len(_asked) > asked):
        raise _asked[-1] if len(_asked) > asked else KeyboardInterrupt


def on_signal(signum: int, handler: Any) -> Any:
    """Install `handler` for `signum` and return the one it replaces (None off the main
    thread, where Python sets no handlers: a caller running commands in threads)."""
    if handler is None or threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signum, handler)


def yaml_error(exc: Exception) -> str:
    """A YAML parser's error on one line (where, and what), as errors are reported."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem
