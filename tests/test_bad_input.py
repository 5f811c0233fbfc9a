"""Bad input gets a clear answer and nothing is lost: every rejected record is in the
quarantine with its file, line and reason, and the good records around it are stored."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distillguard.ingest.readers import read_jsonl
from tests.conftest import quarantined, rows, run, write_jsonl


def canonical(i: int, **extra: object) -> dict[str, object]:
    return {
        "request_id": f"r{i}",
        "ts": "2026-04-22T09:00:00Z",
        "account_id": "a",
        "model": "m",
        "prompt_text": f"prompt {i}",
        **extra,
    }


def test_each_kind_of_bad_record_is_quarantined_with_its_reason(tmp_path: Path) -> None:
    source = tmp_path / "mixed.jsonl"
    lines = [
        json.dumps(canonical(1)).encode(),
        b'{"request_id": "r2", "ts": "2026-04-22T09:00:00Z", "account_',  # truncated
        json.dumps(canonical(3, input_tokens="lots")).encode(),  # wrong type
        json.dumps(
            {"request_id": "r4", "ts": "2026-04-22T09:00:00Z", "account_id": "a", "model": None}
        ).encode(),  # missing required value
        json.dumps(canonical(5)).encode()[:-2] + b'\xff\xfe"}',  # invalid UTF-8
        json.dumps(canonical(6, ts="not a time")).encode(),
        b"[1, 2, 3]",  # JSON, but not a record
        json.dumps(canonical(8)).encode(),
    ]
    source.write_bytes(b"\n".join(lines) + b"\n")
    summary = run(source, tmp_path / "s", format="canonical")
    assert set(rows(tmp_path / "s")) == {"r1", "r8"}
    assert dict(summary.quarantined) == {
        "invalid_json": 1,
        "wrong_type": 3,
        "missing_field": 1,
        "invalid_utf8": 1,
    }
    by_line = {q["line"]: q for q in quarantined(tmp_path / "s")}
    assert set(by_line) == {2, 3, 4, 5, 6, 7}
    assert by_line[3]["detail"].startswith("input_tokens")
    assert by_line[5]["reason"] == "invalid_utf8" and "\\xff" in by_line[5]["record"]
    assert by_line[2]["offset"] == len(lines[0]) + 1
    assert all(q["source"] == str(source) for q in by_line.values())
    assert summary.records_read == 8


def test_an_account_id_with_a_control_character_is_quarantined(tmp_path: Path) -> None:
    """Detection names an end user's traffic inside an account with U+001F; an account
    id holding it (or any control character) is a broken record, not an account."""
    source = tmp_path / "ids.jsonl"
    ids = ["org\x1fteam", "tab\there", "plain", "with spaces", "\u00e9quipe"]
    write_jsonl(source, [canonical(i, account_id=a) for i, a in enumerate(ids)])
    summary = run(source, tmp_path / "s", format="canonical")
    assert set(rows(tmp_path / "s")) == {"r2", "r3", "r4"}
    assert dict(summary.quarantined) == {"wrong_type": 2}
    assert all(
        q["detail"].startswith("account_id: ") and "control" in q["detail"]
        for q in quarantined(tmp_path / "s")
    )


def test_timestamps_in_several_formats_and_zones(tmp_path: Path) -> None:
    stamps = [
        "2026-04-22T11:00:00+02:00",
        "2026-04-22T09:00:00Z",
        "2026-04-22 09:00:00",
        "1776848400",
        "1776848400000",
        "1776848400000000000",
        "Wed, 22 Apr 2026 09:00:00 GMT",
        "2026-04-22T04:00:00-05:00",
        "2026-04-22 09:00:00.000 UTC",
    ]
    records = [canonical(i, ts=ts) for i, ts in enumerate(stamps)]
    run(write_jsonl(tmp_path / "t.jsonl", records), tmp_path / "s")
    assert {r["ts"].isoformat() for r in rows(tmp_path / "s").values()} == {
        "2026-04-22T09:00:00+00:00"
    }


def test_ten_megabyte_prompts_are_stored_whole(tmp_path: Path) -> None:
    big = "x" * (10 * 1024 * 1024)
    run(
        write_jsonl(tmp_path / "big.jsonl", [canonical(1, prompt_text=big), canonical(2)]),
        tmp_path / "s",
    )
    stored = rows(tmp_path / "s")
    assert len(stored["r1"]["prompt_text"]) == len(big) and "r2" in stored


def test_a_line_beyond_the_record_limit_is_skipped_not_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("distillguard.ingest.readers.MAX_RECORD_BYTES", 1000)
    path = write_jsonl(tmp_path / "l.jsonl", [canonical(1, prompt_text="y" * 5000), canonical(2)])
    summary = run(path, tmp_path / "s")
    assert summary.quarantined["record_too_large"] == 1 and set(rows(tmp_path / "s")) == {"r2"}


def test_empty_binary_and_unrecognised_files_do_not_stop_the_run(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "empty.jsonl").write_bytes(b"")
    (tmp_path / "in" / "blank.jsonl").write_bytes(b"\n\n  \n")
    (tmp_path / "in" / "image.bin").write_bytes(bytes(range(256)) * 10)
    write_jsonl(tmp_path / "in" / "other.jsonl", [{"hello": "world"}])
    write_jsonl(tmp_path / "in" / "good.jsonl", [canonical(1)])
    summary = run(tmp_path / "in", tmp_path / "s")
    assert set(rows(tmp_path / "s")) == {"r1"}
    assert summary.skipped["empty_file"] == 2
    assert summary.quarantined["unrecognised_file"] == 1
    assert summary.quarantined["unrecognised_format"] == 1


def test_gzip_and_truncated_gzip(tmp_path: Path) -> None:
    data = "".join(json.dumps(canonical(i)) + "\n" for i in range(50)).encode()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "ok.jsonl.gz").write_bytes(gzip.compress(data))
    other = "".join(json.dumps(canonical(i, request_id=f"c{i}")) + "\n" for i in range(50))
    (tmp_path / "in" / "cut.jsonl.gz").write_bytes(gzip.compress(other.encode())[:-40])
    summary = run(tmp_path / "in", tmp_path / "s")
    stored = rows(tmp_path / "s")
    assert {f"r{i}" for i in range(50)} <= set(stored)
    assert summary.quarantined["unreadable_file"] == 1
    assert 0 < sum(k.startswith("c") for k in stored) < 50  # what was readable is kept


def test_corrupt_parquet_and_csv_shape_errors(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    table = pa.Table.from_pylist([canonical(1), canonical(2)])
    pq.write_table(table, tmp_path / "in" / "good.parquet")
    broken = (tmp_path / "in" / "good.parquet").read_bytes()
    (tmp_path / "in" / "broken.parquet").write_bytes(broken[:4] + b"\x00" * 64 + broken[-200:])
    (tmp_path / "in" / "rows.csv").write_text(
        "request_id,ts,account_id,model\nc1,2026-04-22T09:00:00Z,a,m\nc2,2026-04-22,a\n"
        "c3,2026-04-22T09:00:00Z,a,m,extra\n",
        encoding="utf-8",
    )
    summary = run(tmp_path / "in", tmp_path / "s")
    assert set(rows(tmp_path / "s")) == {"r1", "r2", "c1"}
    assert summary.quarantined["csv_shape"] == 2 and summary.quarantined["unreadable_file"] == 1


def test_csv_with_invalid_utf8_keeps_the_other_rows(tmp_path: Path) -> None:
    path = tmp_path / "u.csv"
    path.write_bytes(
        b"request_id,ts,account_id,model,prompt_text\n"
        b"u1,2026-04-22T09:00:00Z,a,m,caf\xe9\nu2,2026-04-22T09:00:00Z,a,m,ok\n"
    )
    summary = run(path, tmp_path / "s")
    assert set(rows(tmp_path / "s")) == {"u2"} and summary.quarantined["invalid_utf8"] == 1


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.binary(max_size=200), max_size=20))
def test_the_jsonl_reader_never_raises_and_accounts_for_every_line(
    tmp_path: Path, chunks: list[bytes]
) -> None:
    lines = [c.replace(b"\n", b" ") for c in chunks]
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(b"\n".join(lines))
    records = list(read_jsonl(path, "fuzz"))
    assert all(r.error is None or r.value is None for r in records)
    if not any(r.error == "unreadable_file" for r in records):
        counted = [lines[0].strip().removeprefix(b"\xef\xbb\xbf"), *lines[1:]] if lines else []
        assert len(records) == sum(1 for line in counted if line.strip())
