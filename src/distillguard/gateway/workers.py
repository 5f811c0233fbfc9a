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

import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from distillguard.errors import UsageError

METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"


def run(config: Any, host: str, port: int, workers: int = 1) -> int:
    """Serve until interrupted; the exit code."""
    if workers < 1:
        raise UsageError("--workers takes a positive number of processes")
    if workers > 1 and not config.redis:
        raise UsageError(
            "--workers above 1 needs --redis: the workers share account state through it"
        )
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
    try:
        for process in processes:
            process.start()
        return _supervise(processes)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join(timeout=10)
        shutil.rmtree(metrics, ignore_errors=True)


def _supervise(processes: Sequence[multiprocessing.process.BaseProcess]) -> int:
    """Wait until interrupted (0) or until a worker dies (1: the others are stopped)."""
    stopping = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping:
        dead = [p for p in processes if not p.is_alive()]
        if dead:
            print(f"distillguard: gateway worker {dead[0].name} exited", file=sys.stderr)
            return 1
        time.sleep(0.2)
    return 0


def serve(config: Any, host: str, port: int, reuse_port: bool) -> None:
    """One gateway process: the app on libuv's event loop until SIGTERM or SIGINT."""
    from aiohttp import web

    from distillguard.gateway.server import build

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        import uvloop  # libuv's event loop: about twice asyncio's request rate

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = None
    web.run_app(
        build(config),
        host=host,
        port=port,
        reuse_port=reuse_port or None,
        access_log=None,
        print=None,
        loop=loop,
    )
