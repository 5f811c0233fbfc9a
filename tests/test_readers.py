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


def test_a_cut_or_foreign_first_line_does_not_decide_the_container(tmp_path: Path) -> None:
    """A rotated log starts mid-record: the first line is junk or half an object, and the
    records after it may each be longer than the sniffed head."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "tail.jsonl").write_bytes(
        lines(b'rotated: tail of previous line"}', *(record(f"t{i}") for i in range(5)))
    )
    big = [record(f"b{i}", prompt_text="x" * 70_000) for i in range(3)]
    (tmp_path / "in" / "cut.jsonl").write_bytes(lines(b'{"request_id":"cut","ts":"2026-04', *big))
    (tmp_path / "in" / "one.jsonl").write_bytes(lines(b'[{"role": "user"}]}', record("o1")))
    summary = run(tmp_path / "in", tmp_path / "s")
    assert set(rows(tmp_path / "s")) == {*(f"t{i}" for i in range(5)), "b0", "b1", "b2", "o1"}
    assert dict(summary.quarantined) == {"invalid_json": 3}
    assert {q["line"] for q in quarantined(tmp_path / "s")} == {1}


def test_pretty_printed_documents_are_still_documents(tmp_path: Path) -> None:
    items = [json.loads(record(f"p{i}")) for i in range(4)]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.json").write_text(json.dumps(items, indent=2))
    lines_of_items = "[\n" + ",\n".join(json.dumps(i) for i in items) + "\n]\n"
    (tmp_path / "in" / "b.json").write_text(lines_of_items.replace("p", "q"))
    first = json.dumps(items[0]).replace("p", "r")
    wrapped = json.dumps({"data": [{}, {}]}, indent=1)  # its last item, "  {}", parses alone
    (tmp_path / "in" / "c.json").write_text(wrapped.replace("{}", first, 1))
    run(tmp_path / "in", tmp_path / "s")
    assert {r[0] for r in rows(tmp_path / "s")} == {"p", "q", "r"}


def test_a_record_holding_a_list_named_like_a_wrapper_is_a_record(tmp_path: Path) -> None:
    """`results`, `data` or `items` inside a pretty-printed record are its fields, wherever
    they stand; a wrapper with those names still gives its items."""
    (tmp_path / "in").mkdir()
    before = [json.dumps(json.loads(record(f"r{i}", results=[])), indent=2) for i in range(3)]
    (tmp_path / "in" / "before.json").write_text("\n".join(before))
    after = json.dumps({"data": [{"k": 1}], **json.loads(record("late"))}, indent=2)
    (tmp_path / "in" / "after.json").write_text(after)
    wrapper = {"object": "list", "data": [json.loads(record("w1")), json.loads(record("w2"))]}
    (tmp_path / "in" / "wrapper.json").write_text(json.dumps(wrapper, indent=2))
    summary = run(tmp_path / "in", tmp_path / "s")
    assert set(rows(tmp_path / "s")) == {"r0", "r1", "r2", "late", "w1", "w2"}
    assert summary.records_read == 6 and not summary.quarantined
