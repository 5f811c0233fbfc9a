"""Running the gateway: one process, or several on one port.

One Python process proxies about a thousand requests a second on one core before its
queue grows; more traffic needs more processes. With `--workers N` the gateway starts N
processes that each bind the port with SO_REUSEPORT, so the kernel spreads connections
over them. They share account state through Redis, as replicas on several machines do
(a process-local store would see a fraction of each account), and their Prometheus
metrics through prometheus_client's multiprocess mode, so /metrics on any of them
counts them all.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distillguard.errors import UsageError
from distillguard.features.pool import MAX_WORKERS
from distillguard.gateway import spans

METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"
SHUTDOWN_SECONDS = 60.0  # requests in flight (a long stream) may finish within this


def run(config: Any, host: str, port: int, workers: int = 1) -> int:
    """Serve until interrupted; the exit code."""
    if not 1 <= workers <= MAX_WORKERS:
        raise UsageError(f"--workers takes 1 to {MAX_WORKERS} processes, not {workers}")
    if workers > 1 and not config.redis:
        raise UsageError(
            "--workers above 1 needs --redis: the workers share account state through it"
        )
    _check(config)
    if workers == 1:
        serve(config, host, port, reuse_port=False)
        return 0
    metrics = tempfile.mkdtemp(prefix="distillguard-metrics-")
    os.environ[METRICS_DIR] = metrics  # read by prometheus_client as the workers import it
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=serve, args=(config, host, port, True), name=f"gateway-{i}")
        for i in range(workers)
    ]
    stopping = _stop_on_signals()
    try:
        for process in processes:
            process.start()
        return _supervise(processes, stopping)
    finally:
        for process in processes:  # one SIGTERM each; a worker ignores any after its first
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(timeout=SHUTDOWN_SECONDS + 15)
            if process.is_alive():
                process.kill()
                process.join()
        shutil.rmtree(metrics, ignore_errors=True)


def _check(config: Any) -> None:
    """Refuse in this process what every worker would otherwise fail on, each with a
    traceback."""
    if config.otel_endpoint:
        spans.require()
    if config.findings and Path(config.findings).exists() and not Path(config.findings).is_dir():
        raise UsageError(f"--findings {config.findings}: a file, not the folder detect writes")
    if config.record:
        try:
            Path(config.record).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"--record {config.record}: cannot write there ({exc})") from None


def _stop_on_signals() -> threading.Event:
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    return stopping


def _supervise(
    processes: Sequence[multiprocessing.process.BaseProcess], stopping: threading.Event
) -> int:
    """Wait until interrupted (0) or until a worker dies (1: the others are stopped)."""
    while not stopping.wait(0.2):
        dead = [p for p in processes if not p.is_alive()]
        if dead:
            print(f"distillguard: gateway worker {dead[0].name} exited", file=sys.stderr)
            return 1
    return 0


def serve(config: Any, host: str, port: int, reuse_port: bool) -> None:
    """One gateway process, on libuv's event loop, until SIGTERM or SIGINT. The first
    signal starts a graceful stop (requests in flight finish, the recording is flushed,
    spans are sent); later ones do not cut it short, which matters when a terminal or a
    service manager signals the workers and the supervisor forwards the signal too."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    steady_memory()
    try:
        import uvloop  # libuv's event loop: about twice asyncio's request rate

        start: Any = uvloop.run
    except ImportError:
        start = asyncio.run
    start(_serve(config, host, port, reuse_port))


def steady_memory() -> None:
    """Arrow allocates from the C library's heap in the gateway rather than its default
    mimalloc. The recording converts and writes a few MB a second; mimalloc hands freed
    pages back to the system at once and faults them in again, and on a VM that costs
    kernel time which stalls the serving thread: measured at 1,000 requests a second
    with 2 KB prompts, the recording's conversions in the serving thread took up to
    65-75 ms (90th percentile 12-13 ms) and a flush 60-114 ms of kernel time; with the
    C library's heap up to 6-13 ms (90th percentile 2.2-2.9 ms) and 0-10 ms."""
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())


async def _serve(config: Any, host: str, port: int, reuse_port: bool) -> None:
    from distillguard.gateway.server import Running

    running = Running(config, host, port, reuse_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await running.start()
    except OSError as exc:
        await running.stop(grace=0)  # the matching process, the recording: all closed
        raise UsageError(f"--listen {host}:{port}: {exc.strerror or exc}") from None
    try:
        await stop.wait()
    finally:
        await running.stop(SHUTDOWN_SECONDS)
