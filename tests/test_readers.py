"""Readers under hostile input (a fuzz sweep's findings): a flaw in one record costs that
record alone, is quarantined with its reason, and never hides the records beside it."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import ijson
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from distillguard.ingest.jsondoc import Screen, cut_items
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


def document(*items: bytes, wrap: str | None = None) -> bytes:
    body = b"[\n" + b",\n".join(items) + b"\n]"
    return b'{"object": "list", "%s": %s}' % (wrap.encode(), body) if wrap else body


def test_a_number_beyond_64_bits_in_a_document_costs_nothing(tmp_path: Path) -> None:
    """yajl stops at such a number; the items after it are cut out and read alone."""
    (tmp_path / "in").mkdir()
    big = record("a", trace_id=18446744073709551615).replace(b"1844", b"99991844")
    (tmp_path / "in" / "f.json").write_bytes(document(big, record("b"), record("c")))
    wrapped = document(record("w1"), big.replace(b'"a"', b'"w2"'), record("w3"), wrap="data")
    (tmp_path / "in" / "w.json").write_bytes(wrapped)
    summary = run(tmp_path / "in", tmp_path / "s")
    assert set(rows(tmp_path / "s")) == {"a", "b", "c", "w1", "w2", "w3"}
    assert not summary.quarantined


def test_nesting_past_the_limit_costs_its_item_and_little_memory(tmp_path: Path) -> None:
    deep = b"[" * 2000 + b"]" * 2000
    path = tmp_path / "f.json"
    path.write_bytes(document(record("g1"), deep, record("g2")))
    summary = run(path, tmp_path / "s")
    assert set(rows(tmp_path / "s")) == {"g1", "g2"}
    (entry,) = quarantined(tmp_path / "s")
    assert entry["reason"] == "invalid_json" and "deeper than 1024" in entry["detail"]
    assert entry["line"] == 2 and summary.records_read == 3
    path.write_bytes(document(record("g1"), b"[" * 30_000 + b"]" * 30_000))
    script = (
        "import sys; from pathlib import Path;"
        "from distillguard.ingest.readers import read_json_document as r;"
        "list(r(Path(sys.argv[1]), 'f'));"
        "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))"
    )  # this process's peak (ru_maxrss would keep the forking test runner's, ~1 GB)
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True)
    assert done.returncode == 0 and int(done.stdout) < 400_000  # KiB; ijson alone took 2.3 GB


def test_lone_surrogates_are_refused_alike_in_documents_and_lines(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    lone = record("x", prompt_text="a").replace(b'"a"}', b'"a\\ud800b"}')
    pair = record("emoji", prompt_text="a").replace(b'"a"}', b'"\\ud83d\\ude00"}')
    (tmp_path / "in" / "f.json").write_bytes(document(record("d1"), lone, pair))
    (tmp_path / "in" / "one.jsonl").write_bytes(lines(lone.replace(b'"x"', b'"y"')))
    (tmp_path / "in" / "two.jsonl").write_bytes(lines(lone.replace(b'"x"', b'"z"'), record("l1")))
    summary = run(tmp_path / "in", tmp_path / "s")
    stored = rows(tmp_path / "s")
    assert set(stored) == {"d1", "emoji", "l1"} and stored["emoji"]["prompt_text"] == "\U0001f600"
    assert dict(summary.quarantined) == {"invalid_json": 3}


def test_invalid_utf8_in_a_document_costs_its_item(tmp_path: Path) -> None:
    bad = record("u", prompt_text="caf").replace(b'caf"', b'caf\xe9"')
    path = tmp_path / "f.json"
    path.write_bytes(document(record("g1"), bad, record("g2")))
    summary = run(path, tmp_path / "s")
    assert set(rows(tmp_path / "s")) == {"g1", "g2"}
    assert dict(summary.quarantined) == {"invalid_utf8": 1}
    assert "\\xe9" in quarantined(tmp_path / "s")[0]["record"]


class Trickle(io.BytesIO):
    """A stream that hands out a few bytes at a time, to cut items across reads."""

    def __init__(self, data: bytes, step: int) -> None:
        super().__init__(data)
        self.step = step

    def read(self, size: int | None = -1) -> bytes:
        return super().read(min(self.step, size) if size and size > 0 else self.step)


values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=10,
)


@settings(max_examples=150, deadline=None)
@given(st.lists(values, max_size=6), st.sampled_from([None, 1, 2]), st.integers(1, 40))
def test_the_careful_cut_gives_the_items_ijson_gives(
    items: list[object], indent: int | None, step: int
) -> None:
    for prefix, doc in (
        ("item", json.dumps(items, indent=indent)),
        ("data.item", json.dumps({"meta": {"k": [1, {"a": "]"}]}, "data": items}, indent=indent)),
        ("", "\n".join(json.dumps(i, indent=indent) for i in [*items, {}] if isinstance(i, dict))),
    ):
        expected = list(ijson.items(io.BytesIO(doc.encode()), prefix, multiple_values=True))
        cuts = list(cut_items(Trickle(doc.encode(), step), prefix, 0, 1 << 20))
        assert [c.problem for c in cuts] == [None] * len(cuts)
        assert [orjson.loads(c.body) for c in cuts if c.body] == expected
        level = len(prefix.split(".")) if prefix else 0
        screened = Screen(Trickle(doc.encode(), step + 24), level)  # files read 64 KiB
        assert list(ijson.items(screened, prefix, multiple_values=True)) == expected


def test_a_gzip_file_cut_inside_its_header_is_unreadable_not_empty(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    packed = gzip.compress(lines(*(record(f"g{i}") for i in range(50))))
    (tmp_path / "in" / "cut.jsonl.gz").write_bytes(packed[:15])
    (tmp_path / "in" / "empty.jsonl.gz").write_bytes(gzip.compress(b""))
    (tmp_path / "in" / "ok.jsonl").write_bytes(lines(record("ok")))
    summary = run(tmp_path / "in", tmp_path / "s")
    assert summary.quarantined["unreadable_file"] == 1 and summary.skipped["empty_file"] == 1
    assert quarantined(tmp_path / "s")[0]["source"].endswith("cut.jsonl.gz")


def test_a_timestamp_out_of_range_in_parquet_costs_its_row(tmp_path: Path) -> None:
    n = 5000
    ts = [1776849330 + i for i in range(n)]
    ts[4500] = 300_000_000_000  # year 11476
    table = pa.table(
        {
            "request_id": [f"p{i}" for i in range(n)],
            "ts": pa.array(ts, pa.timestamp("s", tz="UTC")),
            "account_id": ["a"] * n,
            "model": ["m"] * n,
        }
    )
    pq.write_table(table, tmp_path / "x.parquet")
    summary = run(tmp_path / "x.parquet", tmp_path / "s")
    assert summary.stored == n - 1 and dict(summary.quarantined) == {"wrong_type": 1}
    (entry,) = quarantined(tmp_path / "s")
    assert entry["line"] == 4501 and entry["detail"].startswith("ts: ")


def test_a_file_name_that_is_not_utf8_is_stored_escaped(tmp_path: Path) -> None:
    name = os.fsdecode(b"log\xff.jsonl")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / name).write_bytes(lines(record("a"), b"not json", record("b")))
    summary = run(tmp_path / "in", tmp_path / "s")
    assert set(rows(tmp_path / "s")) == {"a", "b"} and summary.quarantined["invalid_json"] == 1
    assert quarantined(tmp_path / "s")[0]["source"].endswith("log\\xff.jsonl")


def test_an_unterminated_quote_in_csv_costs_its_line(tmp_path: Path) -> None:
    """The quote swallowed every row after it, uncounted; the rows after its line are
    now read again as rows, and a legitimately quoted line break still joins lines."""
    head = "request_id,ts,account_id,model,prompt_text\n"
    row = "{},2026-04-22T09:15:30Z,a,m,{}\n"
    path = tmp_path / "f.csv"
    path.write_text(
        head
        + row.format("c1", "hi")
        + row.format("c2", '"unterminated')
        + row.format("c3", '"two\nlines"')
        + row.format("c4", "hi")
    )
    summary = run(path, tmp_path / "s")
    stored = rows(tmp_path / "s")
    assert set(stored) == {"c1", "c3", "c4"} and stored["c3"]["prompt_text"] == "two\nlines"
    assert dict(summary.quarantined) == {"csv_shape": 1}
    assert quarantined(tmp_path / "s")[0]["line"] == 3
