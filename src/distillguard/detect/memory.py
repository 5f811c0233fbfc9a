"""The detection process's memory: what it gives back between stages, what it peaked at.

A stage frees most of what it built (the profiles once their signals are kept, the
engine's scratch tables once the edges are out), but freed is not returned. Arrow's
allocator keeps freed pages for reuse, the C allocator keeps freed heap below its top,
and cycles of Python objects wait for the collector; none of that is reused by the next
stage's large allocations (Leiden's graph is allocated by igraph, in fresh mappings),
so it counts twice at the run's peak (docs/performance.md, change 43).
"""

from __future__ import annotations

import ctypes
import gc
import resource
import sys
from collections.abc import Callable
from functools import cache

import pyarrow as pa


def release() -> None:
    """Hand memory that nothing holds any longer back to the system: collect Python's
    cycles, empty Arrow's pool of free pages, trim the C heap. Tens of milliseconds."""
    gc.collect()
    pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None where the C library has none (macOS, musl)."""
    try:
        return getattr(ctypes.CDLL(None), "malloc_trim", None)
    except OSError:
        return None


def peak() -> dict[str, int]:
    """Peak resident memory so far, in MiB, of this process and of its largest finished
    child (a feature worker): a nightly job's memory is watched as its time is."""
    unit = 1 << 20 if sys.platform == "darwin" else 1 << 10  # ru_maxrss: bytes or KiB
    return {
        "main": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // unit,
        "largest_worker": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // unit,
    }
