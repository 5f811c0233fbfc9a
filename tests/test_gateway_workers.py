"""`gateway --workers N`: several processes on one port, one account state (Redis), one
set of metrics, a clean stop; and the refusal to split state without Redis."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
import redis

from tests.conftest import free_port, wait_for_port
from tests.test_gateway import ACCOUNT, CHAT, KEY, REDIS, _Redis

ROOT = Path(__file__).resolve().parents[1]


def _listeners(pid: int, port: int, count: int) -> list[psutil.Process]:
    """The gateway's processes listening on `port`, once `count` of them are (or after
    a minute: a loaded machine takes a while to start interpreters)."""
    deadline = time.monotonic() + 60
    while True:
        found = [
            child
            for child in psutil.Process(pid).children()
            if any(
                c.laddr.port == port and c.status == psutil.CONN_LISTEN
                for c in child.net_connections("tcp")
            )
        ]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def _call(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    """One request on its own connection, so the kernel may pick any worker."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    answer = response.status, response.read()
    connection.close()
    return answer


@pytest.mark.skipif(REDIS is None, reason="redis-server is not installed (make test installs it)")
def test_workers_share_the_port_the_state_and_the_metrics(tmp_path: Path) -> None:
    store = _Redis(tmp_path)
    store.start()
    up, port = free_port(), free_port()
    upstream = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "loopback.py"), "upstream", str(up)]
    )
    command = [sys.executable, "-m", "distillguard.cli", "gateway", "--workers", "2"]
    command += ["--upstream", f"http://127.0.0.1:{up}", "--listen", f"127.0.0.1:{port}"]
    command += ["--redis", f"redis://127.0.0.1:{store.port}/0", "--record", str(tmp_path / "rec")]
    gateway = subprocess.Popen(command, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert wait_for_port(up, 60)
        listening = _listeners(gateway.pid, port, 2)
        assert len(listening) == 2
        body = json.dumps(CHAT).encode()
        statuses = [_call(port, "POST", "/v1/chat/completions", body)[0] for _ in range(40)]
        assert statuses == [200] * 40
        shared = redis.Redis(port=store.port).hget(f"dg:acct:{ACCOUNT}", "exchanges")
        assert shared is not None and int(shared) == 40
        for _ in range(4):  # whichever worker answers counts both
            status, metrics = _call(port, "GET", "/metrics")
            assert status == 200
            assert b'distillguard_requests_total{route="/v1/chat/completions"} 40.0' in metrics
        # Ctrl-C reaches the whole process group: every worker and the supervisor, which
        # signals the workers again; the recording must still be flushed on the way out.
        os.killpg(os.getpgid(gateway.pid), signal.SIGINT)
        assert gateway.wait(timeout=90) == 0
        assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in listening)
        recorded = sum(pq.read_metadata(f).num_rows for f in (tmp_path / "rec").rglob("*.parquet"))
        assert recorded == 40
    finally:
        if gateway.poll() is None:
            gateway.kill()
        upstream.terminate()
        store.stop()


def test_workers_without_redis_are_refused() -> None:
    command = [sys.executable, "-m", "distillguard.cli", "gateway", "--workers", "2"]
    command += ["--upstream", "http://127.0.0.1:9", "--listen", f"127.0.0.1:{free_port()}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--redis" in done.stderr and "Traceback" not in done.stderr
