"""Shared fixtures: the bundled samples, a fresh store per test, and small helpers."""

from __future__ import annotations

import json
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
