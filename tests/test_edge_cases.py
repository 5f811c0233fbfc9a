"""Regressions from an adversarial review of ingestion: each case once lost records,
crashed, or misreported. Every one now keeps what is good and says what is not."""

from __future__ import annotations

import csv
import gzip
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import SAMPLES, quarantined, rows, run, write_jsonl


def canonical(rid: str, **extra: object) -> dict[str, object]:
    return {
        "request_id": rid,
        "ts": "2026-04-22T09:00:00Z",
        "account_id": "a",
        "model": "m",
        **extra,
    }


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "distillguard.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )


def _span(sid: str, **attrs: dict[str, object]) -> dict[str, object]:
    base = {
        "gen_ai.operation.name": {"stringValue": "chat"},
        "gen_ai.request.model": {"stringValue": "m"},
        "user.id": {"stringValue": "u"},
    }
    values = [{"key": k, "value": v} for k, v in {**base, **attrs}.items()]
    return {"spanId": sid, "startTimeUnixNano": "1776849330000000000", "attributes": values}


def _otlp(*spans: dict[str, object]) -> dict[str, object]:
    return {"resourceSpans": [{"scopeSpans": [{"spans": list(spans)}]}]}


def test_odd_values_cost_only_their_own_record(tmp_path: Path) -> None:
    nested = '{"text": ' * 990 + '"deep"' + "}" * 990  # deeper than Python's recursion limit
    too_deep: object = "x"
    for _ in range(300):
        too_deep = {"k": too_deep}
    path = write_jsonl(
        tmp_path / "o.jsonl",
        [
            _otlp(
                _span(
                    "00000000000000a1", **{"http.response.status_code": {"doubleValue": "Infinity"}}
                ),
                _span("00000000000000a2"),
            ),
            _otlp(
                _span(
                    "00000000000000a3",
                    **{
                        "gen_ai.input.messages": {
                            "stringValue": '[{"role": "user", "content": ' + nested + "}]"
                        }
                    },
                )
            ),
            _otlp(_span("00000000000000a4")),
        ],
    )
    run(path, tmp_path / "s")
    assert {"00000000000000a2", "00000000000000a4"} <= set(rows(tmp_path / "s"))
    deep = write_jsonl(
        tmp_path / "d.jsonl", [canonical("x1", account_id=too_deep), canonical("x2")]
    )
    summary = run(deep, tmp_path / "t")
    assert set(rows(tmp_path / "t")) == {"x2"} and summary.quarantined["wrong_type"] == 1
    assert "omitted" in quarantined(tmp_path / "t")[0]["record"]


def test_a_numeric_join_key_is_text(tmp_path: Path) -> None:
    obs = {
        "id": "g1",
        "traceId": 12345,
        "type": "GENERATION",
        "startTime": "2026-04-22T09:00:00Z",
        "model": "m",
        "input": "hi",
    }
    trace = {
        "id": 12345,
        "projectId": "p",
        "timestamp": "2026-04-22T09:00:00Z",
        "name": "t",
        "userId": "u-1",
    }
    run(write_jsonl(tmp_path / "l.jsonl", [obs, trace]), tmp_path / "s")
    assert rows(tmp_path / "s")["g1"]["account_id"] == "u-1"


def test_naive_times_are_utc_whatever_the_machine_zone(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "t.jsonl",
        [canonical("n1", ts="2024-05-01T23:30:00"), canonical("n2", ts="2024-05-01")],
    )
    done = cli("ingest", str(path), "--store", str(tmp_path / "s"), TZ="Asia/Tokyo")
    assert done.returncode == 0, done.stderr
    stored = rows(tmp_path / "s")
    assert stored["n1"]["ts"].isoformat() == "2024-05-01T23:30:00+00:00"
    assert stored["n2"]["ts"].isoformat() == "2024-05-01T00:00:00+00:00"


def test_one_id_on_two_days_gives_the_same_store_in_one_run_or_two(tmp_path: Path) -> None:
    first = write_jsonl(tmp_path / "1.jsonl", [canonical("dup", ts="2024-05-01T10:00:00Z")])
    second = write_jsonl(tmp_path / "2.jsonl", [canonical("dup", ts="2024-05-02T10:00:00Z")])
    run([first, second], tmp_path / "together")
    run(first, tmp_path / "apart")
    run(second, tmp_path / "apart")
    from distillguard.store import Store

    assert (
        Store(tmp_path / "together").read().num_rows
        == Store(tmp_path / "apart").read().num_rows
        == 2
    )


def test_a_crash_in_the_first_run_does_not_brick_the_store(tmp_path: Path) -> None:
    store = tmp_path / "s"
    source = write_jsonl(tmp_path / "a.jsonl", [canonical("c1")])
    script = textwrap.dedent(f"""
        import os, distillguard.store as s
        s.atomic_write = lambda *a, **k: os._exit(9)
        from distillguard.ingest import Options, ingest
        ingest([{str(source)!r}], {str(store)!r}, Options())
    """)
    assert subprocess.run([sys.executable, "-c", script]).returncode == 9
    assert run(source, store).stored == 1


def test_set_fills_only_what_the_join_left_empty(tmp_path: Path) -> None:
    run(
        SAMPLES / "batch",
        tmp_path / "s",
        constants={"account_id": "org", "ts": "2020-01-01T00:00:00Z"},
    )
    assert {r["ts"].year for r in rows(tmp_path / "s").values()} == {2026}


def test_accounts_refuse_an_exchange_format(tmp_path: Path) -> None:
    done = cli(
        "ingest",
        str(SAMPLES / "logs" / "otel_genai_current.jsonl"),
        "--table",
        "accounts",
        "--format",
        "otel",
        "--store",
        str(tmp_path / "s"),
    )
    assert done.returncode == 2 and "--format otel reads exchanges" in done.stderr


def test_numbers_that_cannot_be_kept_exactly_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    path.write_text(
        '{"request_id": 99999999999999999999999, "ts": "2026-04-22", "account_id": "a",'
        ' "model": "m"}\n' + json.dumps(canonical("ok")) + "\n"
    )
    summary = run(path, tmp_path / "s")
    assert set(rows(tmp_path / "s")) == {"ok"} and summary.quarantined["wrong_type"] == 1


def test_pretty_printed_documents_and_byte_order_marks(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    records = [canonical(f"p{i}", tags=["x", "y"]) for i in range(3)]
    (tmp_path / "in" / "pretty.json").write_text(
        json.dumps({"object": "list", "data": records}, indent=2)
    )
    bom = b"\xef\xbb\xbf"
    (tmp_path / "in" / "bom.jsonl").write_bytes(bom + json.dumps(canonical("b1")).encode() + b"\n")
    (tmp_path / "in" / "bom.json").write_bytes(bom + json.dumps([canonical("b2")]).encode())
    (tmp_path / "in" / "empty.json").write_text("[]")
    summary = run(tmp_path / "in", tmp_path / "s")
    assert set(rows(tmp_path / "s")) == {"p0", "p1", "p2", "b1", "b2"}
    assert not summary.quarantined and summary.skipped["no_records"] == 1


def test_parquet_with_nanoseconds_decimals_and_gzip(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    table = pa.table(
        {
            "request_id": ["q1", "q2"],
            "account_id": ["a", "a"],
            "model": ["m", "m"],
            "ts": pa.array([1776849330123456789, 1776849331000000001], pa.timestamp("ns")),
            "input_tokens": pa.array([Decimal("12"), Decimal("7")], pa.decimal128(10, 0)),
            "end_time": pa.array([1, 2], pa.timestamp("ns")),
        }
    )
    pq.write_table(table, tmp_path / "in" / "spark.parquet")
    packed = gzip.compress((tmp_path / "in" / "spark.parquet").read_bytes())
    table2 = table.set_column(0, "request_id", pa.array(["g1", "g2"]))
    pq.write_table(table2, tmp_path / "plain.parquet")
    (tmp_path / "in" / "packed.parquet.gz").write_bytes(
        gzip.compress((tmp_path / "plain.parquet").read_bytes())
    )
    assert packed  # the first file stays plain
    run(tmp_path / "in", tmp_path / "s")
    stored = rows(tmp_path / "s")
    assert set(stored) == {"q1", "q2", "g1", "g2"}
    assert stored["q1"]["ts"].microsecond == 123456 and stored["q1"]["input_tokens"] == 12


def test_csv_shapes_keep_the_raw_row_and_refuse_ambiguous_headers(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text(
        "\n\nrequest_id,ts,account_id,model\nk1,2026-04-22,a,m\nk2,2026-04-22,a\n"
    )
    summary = run(tmp_path / "a.csv", tmp_path / "s")
    assert set(rows(tmp_path / "s")) == {"k1"} and summary.quarantined["csv_shape"] == 1
    assert quarantined(tmp_path / "s")[0]["record"] == "k2,2026-04-22,a"
    (tmp_path / "b.csv").write_text("request_id,ts,model,model,account_id\nz,2026-04-22,m,n,a\n")
    summary = run(tmp_path / "b.csv", tmp_path / "t")
    assert (
        summary.quarantined["csv_shape"] == 1
        and "repeats column(s) model" in quarantined(tmp_path / "t")[0]["detail"]
    )


def test_a_mapped_message_list_held_as_json_text_is_flattened(tmp_path: Path) -> None:
    messages = json.dumps(
        [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "the question"}]
    )
    with open(tmp_path / "m.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(
            [["id", "when", "org", "engine", "messages"], ["m1", "2026-04-22", "a", "m", messages]]
        )
    mapping = {
        "request_id": "id",
        "ts": "when",
        "account_id": "org",
        "model": "engine",
        "prompt_text": "messages",
        "system_text": "messages",
    }
    run(tmp_path / "m.csv", tmp_path / "s", mapping=mapping)
    row = rows(tmp_path / "s")["m1"]
    assert (row["prompt_text"], row["system_text"]) == ("the question", "Be terse.")


def test_otel_booleans_written_as_text(tmp_path: Path) -> None:
    span = _span("00000000000000b1", **{"gen_ai.request.stream": {"boolValue": "false"}})
    run(write_jsonl(tmp_path / "b.jsonl", [_otlp(span)]), tmp_path / "s")
    assert rows(tmp_path / "s")["00000000000000b1"]["stream"] is False


def test_rows_left_out_by_joins_are_counted(tmp_path: Path) -> None:
    summary = run(SAMPLES / "logs" / "langfuse_traces.jsonl", tmp_path / "s")
    assert summary.stored == 0 and summary.skipped["context_without_exchange"] == 3
    out = (SAMPLES / "batch" / "batch_output.jsonl").read_text()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "out.jsonl").write_text(out + out.splitlines()[0] + "\n")
    (tmp_path / "b" / "in.jsonl").write_text((SAMPLES / "batch" / "batch_input.jsonl").read_text())
    summary = run(tmp_path / "b", tmp_path / "t", constants={"account_id": "o"})
    assert summary.stored == 2 and summary.skipped["repeated_companion"] == 1


@pytest.mark.parametrize(
    ("setup", "args", "code", "message"),
    [
        ("file", ["--store", "{tmp}/afile"], 5, "a file is in the way"),
        ("file", ["--store", "{tmp}/afile/sub"], 5, "a file is in the way"),
        (None, ["--store", "{tmp}/s", "--memory-limit", "lots"], 2, "--memory-limit"),
        ("badmap", ["--store", "{tmp}/s", "--map-file", "{tmp}/map.yaml"], 2, "not UTF-8"),
    ],
)
def test_more_user_mistakes_are_one_line(
    tmp_path: Path, setup: str | None, args: list[str], code: int, message: str
) -> None:
    (tmp_path / "afile").write_text("x")
    (tmp_path / "map.yaml").write_bytes(b"ts: \xff\xfe\n")
    source = write_jsonl(tmp_path / "in.jsonl", [canonical("r")])
    done = cli("ingest", str(source), *[a.format(tmp=tmp_path) for a in args])
    assert done.returncode == code and message in done.stderr and "Traceback" not in done.stderr


def test_a_store_missing_a_listed_file_is_reported(tmp_path: Path) -> None:
    run(write_jsonl(tmp_path / "in.jsonl", [canonical("r")]), tmp_path / "s")
    next((tmp_path / "s" / "exchanges").rglob("*.parquet")).unlink()
    done = cli("inspect", str(tmp_path / "s"))
    assert done.returncode == 5 and "missing" in done.stderr and "Traceback" not in done.stderr


def test_input_that_is_all_bad_exits_3_and_keeps_the_quarantine(tmp_path: Path) -> None:
    (tmp_path / "junk.bin").write_bytes(bytes(range(256)))
    done = cli("ingest", str(tmp_path / "junk.bin"), "--store", str(tmp_path / "s"))
    assert done.returncode == 3 and "nothing in the input could be read" in done.stderr
    assert quarantined(tmp_path / "s")[0]["reason"] == "unrecognised_file"
    # records that are read but all quarantined (another format named): exit 3
    bedrock = cli("ingest", str(write_jsonl(tmp_path / "in.jsonl", [canonical("r")])),
                  "--store", str(tmp_path / "s2"), "--format", "bedrock")  # fmt: skip
    assert bedrock.returncode == 3 and "wrong --format?" in bedrock.stderr
    (tmp_path / "odd.jsonl").write_text('{"resourceSpans": 5}\n')
    assert "Traceback" not in cli("inspect", str(tmp_path / "odd.jsonl")).stderr


def test_negative_counts_and_stores_inside_input_folders(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    write_jsonl(tmp_path / "logs" / "a.jsonl", [canonical("n1", input_tokens=-5), canonical("n2")])
    summary = run(tmp_path / "logs", tmp_path / "logs" / "store")
    assert summary.quarantined["wrong_type"] == 1
    again = run(tmp_path / "logs", tmp_path / "logs" / "store")  # its own files are not input
    assert again.records_read == 2 and not again.quarantined.get("unrecognised_format")
    other = run(tmp_path / "logs", tmp_path / "elsewhere")  # nor are another store's
    assert other.records_read == 2


def _resource(*spans: dict[str, object], **attrs: dict[str, object]) -> dict[str, object]:
    values = [{"key": k, "value": v} for k, v in attrs.items()]
    return {"resource": {"attributes": values}, "scopeSpans": [{"spans": list(spans)}]}


def test_a_malformed_part_of_an_otel_line_costs_only_itself(tmp_path: Path) -> None:
    line = {
        "resourceSpans": [
            _resource(_span("00000000000000c1")),
            None,
            {"scopeSpans": ["not a scope"]},
            {"scopeSpans": [{"spans": 5}]},
            _resource(_span("00000000000000c2"), **{"n": {"intValue": "x"}}),
            _resource(_span("00000000000000c3")),
        ],
        "resourceLogs": [5],
    }
    summary = run(write_jsonl(tmp_path / "o.jsonl", [line]), tmp_path / "s")
    assert set(rows(tmp_path / "s")) == {"00000000000000c1", "00000000000000c3"}
    assert sorted(q["detail"] for q in quarantined(tmp_path / "s")) == [
        "resourceLogs[0] is an int, expected an object",
        "resourceSpans[1] is null, expected an object",
        "resourceSpans[2].scopeSpans[0] is a str, expected an object",
        "resourceSpans[3].scopeSpans[0].spans is an int, expected a list",
        "resourceSpans[4].resource: attribute 'n': expected an integer, got 'x'",
    ]
    assert summary.quarantined == {"wrong_type": 5}


def test_an_adapter_failing_part_way_keeps_the_rows_it_gave(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distillguard.ingest.adapters.otel import OtelAdapter

    given = OtelAdapter.rows

    def failing(self: OtelAdapter, value: object) -> Iterator[object]:
        yield from given(self, value)
        raise KeyError("late")

    monkeypatch.setattr(OtelAdapter, "rows", failing)
    summary = run(SAMPLES / "logs" / "otel_genai_current.jsonl", tmp_path / "s")
    assert summary.stored == 2 and summary.quarantined == {"wrong_type": 1}


def test_records_of_no_exchange_in_an_otel_file_are_counted(tmp_path: Path) -> None:
    source = tmp_path / "o.jsonl"
    source.write_text(
        (SAMPLES / "logs" / "otel_genai_current.jsonl").read_text()
        + "".join(
            json.dumps(r) + "\n"
            for r in [canonical("c1"), {"foo": 1}, {"resourceSpans": None}, {"resourceSpans": []}]
        )
    )
    summary = run(source, tmp_path / "s")
    assert summary.records_read == 5 and summary.stored == 2
    assert summary.quarantined == {"unrecognised_format": 2}
    assert summary.skipped == {"not_an_exchange": 1, "empty_record": 2}


def test_otel_forced_on_another_format_exits_3(tmp_path: Path) -> None:
    done = cli(
        "ingest",
        str(SAMPLES / "mapped" / "gateway_export.csv"),
        "--format",
        "otel",
        "--store",
        str(tmp_path / "s"),
    )
    assert done.returncode == 3 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_otel_numbers_that_are_not_integers_are_quarantined(tmp_path: Path) -> None:
    tokens = "gen_ai.usage.input_tokens"
    spans = [
        _span("00000000000000d1", **{tokens: {"intValue": 42.9}}),
        _span("00000000000000d2", **{tokens: {"intValue": True}}),
        _span("00000000000000d3", **{tokens: {"intValue": "12"}}),
        _span("00000000000000d4", **{tokens: {"intValue": 7}}),
    ]
    summary = run(write_jsonl(tmp_path / "o.jsonl", [_otlp(*spans)]), tmp_path / "s")
    stored = rows(tmp_path / "s")
    assert {k: r["input_tokens"] for k, r in stored.items()} == {
        "00000000000000d3": 12,
        "00000000000000d4": 7,
    }
    assert summary.quarantined == {"wrong_type": 2}
    assert all(tokens in q["detail"] for q in quarantined(tmp_path / "s"))


def test_an_otel_message_list_that_cannot_be_read_is_quarantined(tmp_path: Path) -> None:
    messages, answers = "gen_ai.input.messages", "gen_ai.output.messages"
    spans = [
        _span("00000000000000e1", **{messages: {"stringValue": '[{"role": "user"'}}),
        _span("00000000000000e2", **{messages: {"stringValue": '{"role": "user"}'}}),
        _span("00000000000000e3", **{messages: {"stringValue": "[[1]]"}}),
        _span("00000000000000e5", **{answers: {"stringValue": '{"role": "assistant"}'}}),
        _span(
            "00000000000000e4",
            **{messages: {"stringValue": '[{"role": "user", "content": "fine"}]'}},
        ),
    ]
    summary = run(write_jsonl(tmp_path / "o.jsonl", [_otlp(*spans)]), tmp_path / "s")
    assert {k: r["prompt_text"] for k, r in rows(tmp_path / "s").items()} == {
        "00000000000000e4": "fine"
    }
    assert summary.quarantined == {"wrong_type": 4}
    details = [q["detail"] for q in quarantined(tmp_path / "s")]
    assert sum(messages in d for d in details) == 3 and sum(answers in d for d in details) == 1
