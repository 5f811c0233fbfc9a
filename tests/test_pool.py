"""The feature pool: batches handed to worker processes as Arrow files, parts written
by the workers, nothing left behind."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distillguard.features import pool as pool_module
from distillguard.features.pool import Pool


def _batches() -> list[pa.RecordBatch]:
    return [pa.record_batch({"n": list(range(i * 10, i * 10 + 10))}) for i in range(7)]


def double(batch: pa.RecordBatch) -> pa.RecordBatch:
    return pa.record_batch({"n": pa.compute.multiply(batch.column(0), 2)})


def refuse_the_fourth(batch: pa.RecordBatch) -> pa.RecordBatch:
    if batch.column(0)[0].as_py() == 30:
        raise ValueError("the fourth batch")
    return batch


def detect_here(batch: pa.RecordBatch) -> pa.RecordBatch:
    """What an unguarded script does in a worker: it runs detect() as it is imported,
    here on the traffic the batch names. Making scratch is recorded, and stops it."""
    from distillguard.detect import detect
    from distillguard.errors import UsageError

    made: list[str] = []

    def record(*args: object, **kwargs: object) -> str:
        made.append("scratch")
        raise RuntimeError("detect() went on to make scratch")

    tempfile.mkdtemp = record  # type: ignore[assignment]  # this worker's, for this call
    try:
        detect(batch.column(0)[0].as_py(), "findings")
    except (UsageError, RuntimeError) as stopped:
        return pa.record_batch({"stopped": [str(stopped)], "made": [len(made)]})
    raise AssertionError("detect() ran in a feature worker")


@pytest.fixture
def temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the pool hands batches over, watched."""
    folder = tmp_path / "temp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def pool() -> Iterator[Pool]:
    workers = Pool(2)
    yield workers
    workers.close()


def test_workers_write_each_batch_s_part_in_order(tmp_path: Path, temp: Path, pool: Pool) -> None:
    written = pool.map_to(_batches, tmp_path / "parts", double)
    parts = sorted((tmp_path / "parts").glob("*.parquet"))
    assert written == len(parts) == 7
    values = [v for p in parts for v in pq.read_table(p).column("n").to_pylist()]
    assert values == [2 * n for n in range(70)]
    assert list(temp.iterdir()) == []  # the handed-over batches are gone


def test_a_worker_s_failure_reaches_the_caller_and_nothing_is_left(
    tmp_path: Path, temp: Path, pool: Pool
) -> None:
    with pytest.raises(ValueError, match="the fourth batch"):
        pool.map_to(_batches, tmp_path / "parts", refuse_the_fourth)
    assert list(temp.iterdir()) == []


def test_batches_wait_for_their_worker_where_only_this_user_can_read_them(
    tmp_path: Path, temp: Path, pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """They hold prompts."""
    modes: list[int] = []
    hand_over = pool_module._hand_over

    def watched(batch: pa.RecordBatch, path: Path) -> Path:
        modes.append(path.parent.stat().st_mode & 0o777)
        return hand_over(batch, path)

    monkeypatch.setattr(pool_module, "_hand_over", watched)
    pool.map_to(_batches, tmp_path / "parts", double)
    assert modes == [0o700] * 7


def test_detect_in_a_feature_worker_stops_before_it_makes_scratch(
    tmp_path: Path, temp: Path, pool: Pool
) -> None:
    from distillguard.schema import EXCHANGES, conform

    traffic = tmp_path / "exchanges.parquet"
    row = {"request_id": "r", "ts": 0, "account_id": "a", "model": "m", "prompt_text": "hi"}
    pq.write_table(conform(pa.Table.from_pylist([row]), EXCHANGES), traffic)
    named = pa.record_batch({"traffic": [str(traffic)]})
    pool.map_to(lambda: [named], tmp_path / "parts", detect_here)
    (result,) = pq.read_table(tmp_path / "parts" / "part-000001.parquet").to_pylist()
    assert "__main__" in result["stopped"] and result["made"] == 0
