"""Which files a window reads: a file is left out only when its footer proves that
none of its exchanges falls in the window."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from distillguard.detect.inputs import in_window

START = datetime(2026, 4, 1, tzinfo=UTC)
moments = st.integers(0, 10 * 86_400 * 10**6).map(lambda us: START + timedelta(microseconds=us))


def _file(folder: Path, name: str, times: list[datetime], unit: str = "us", **options) -> Path:
    path = folder / name
    kind = pa.timestamp(unit, tz="UTC")
    table = pa.table(
        {"request_id": [str(i) for i in range(len(times))], "ts": pa.array(times, kind)}
    )
    pq.write_table(table, path, row_group_size=3, **options)
    return path


@settings(max_examples=60, deadline=None)
@given(
    times=st.lists(moments, min_size=1, max_size=12),
    since=st.none() | moments,
    until=st.none() | moments,
    unit=st.sampled_from(["ms", "us", "ns"]),
)
def test_a_file_with_an_exchange_in_the_window_is_always_read(
    times: list[datetime], since: datetime | None, until: datetime | None, unit: str
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        if unit == "ms":  # a millisecond column holds whole milliseconds
            times = [t.replace(microsecond=t.microsecond // 1000 * 1000) for t in times]
        path = _file(Path(folder), "day.parquet", times, unit)
        low, high = since.isoformat() if since else None, until.isoformat() if until else None
        inside = any((since is None or t >= since) and (until is None or t < until) for t in times)
        kept = in_window([path], low, high) == [path]
        assert kept or not inside
        if since is None and until is None:
            assert kept


def test_files_wholly_outside_are_left_out_and_unknown_ones_kept(tmp_path: Path) -> None:
    day = [START + timedelta(hours=h) for h in range(24)]
    early = _file(tmp_path, "early.parquet", day)
    late = _file(tmp_path, "late.parquet", [t + timedelta(days=1) for t in day])
    blind = _file(tmp_path, "blind.parquet", day, write_statistics=False)
    files = [early, late, blind]
    since = (START + timedelta(days=1)).isoformat()
    assert in_window(files, since, None) == [late, blind]
    assert in_window(files, None, since) == [early, blind]
    assert in_window(files, None, None) == files
    assert in_window(["s3a://bucket/day.parquet"], since, None) == ["s3a://bucket/day.parquet"]
