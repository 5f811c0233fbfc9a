"""Readers under hostile input (a fuzz sweep's findings): a flaw in one record costs that
record alone, is quarantined with its reason, and never hides the records beside it."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import quarantined, rows, run


def record(rid: str, **extra: object) -> bytes:
    fields = {"request_id": rid, "ts": "2026-04-22T09:15:30Z", "account_id": "a", "model": "m"}
    return json.dumps({**fields, **extra}).encode()


def lines(*records: bytes) -> bytes:
    return b"".join(r + b"\n" for r in records)


def test_a_nul_byte_costs_its_line_not_the_file(tmp_path: Path) -> None:
    nul = record("n", prompt_text="a").replace(b'"a"}', b'"a\x00b"}')
    path = tmp_path / "f.jsonl"
    path.write_bytes(lines(record("g1"), nul, record("g2")))
    summary = run(path, tmp_path / "s")
    assert set(rows(tmp_path / "s")) == {"g1", "g2"}
    assert dict(summary.quarantined) == {"invalid_json": 1}
    assert quarantined(tmp_path / "s")[0]["line"] == 2
