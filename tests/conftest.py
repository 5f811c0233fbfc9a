"""Shared fixtures: the bundled samples, a fresh store per test, and small helpers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from distillguard.ingest import Options, Summary, ingest
from distillguard.store import Store

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "distillguard" / "samples"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


def run(paths: list[Path] | Path, store: Path, **options: Any) -> Summary:
    if isinstance(paths, Path):
        paths = [paths]
    return ingest(paths, store, Options(**options))


def rows(store: Path) -> dict[str, dict[str, Any]]:
    """Stored exchanges by request_id."""
    return {r["request_id"]: r for r in Store(store).read().to_pylist()}


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def quarantined(store: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted((store / "quarantine").glob("*.jsonl")):
        out.extend(json.loads(line) for line in path.read_text().splitlines())
    return out


def free_port() -> int:
    """A TCP port nothing listens on, for a server a test starts on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, seconds: float) -> bool:
    """Whether something listens on loopback `port` within `seconds` (a server a test
    started as a process takes a while on a loaded machine)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def two_campaigns(name: str, seed: int, days: int, coders: int, education: int = 0) -> Any:
    """A small scenario: people, a reseller, a coding campaign and a reasoning campaign
    half of whose traffic goes through the reseller."""
    from distillguard.simulate.scenario import Campaign, Population, ProxyMix, Scenario

    people = {"developer": 25, "chat": 50, "education": education, "reseller": 1}
    return Scenario(
        name=name,
        seed=seed,
        days=days,
        legitimate=[Population(k, v) for k, v in people.items() if v],
        campaigns=[
            Campaign(id="coders", accounts=coders, capability="coding"),
            Campaign(
                id="resold",
                accounts=8,
                capability="reasoning",
                proxy_mix=ProxyMix(resellers=1, share=0.5),
            ),
        ],
    )


def stopped_after_features(
    args: list[str], stop: signal.Signals, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run `distillguard ARGS` in a process group of its own, signal the whole group as
    a scheduler or a terminal does once the features stage ends, and return the exit
    code and what stderr said after that stage."""
    run = subprocess.Popen(
        [sys.executable, "-m", "distillguard.cli", *args],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert run.stderr is not None
    said = next((line for line in iter(run.stderr.readline, "") if "features done" in line), "")
    os.killpg(run.pid, stop)
    _, err = run.communicate(timeout=120)
    assert said, err
    return run.returncode, err.strip()
