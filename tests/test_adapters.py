"""Each adapter on sample records written from the products' public schemas.

The bundled samples express one coding exchange (request id req-7f3a9c01) in every
format; each format must map it to the same canonical values, as far as that format
carries them. Other records check what is specific to each product.
"""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SAMPLES, quarantined, rows, run, write_jsonl

LOGS = SAMPLES / "logs"
SHARED = "req-7f3a9c01"
REFERENCE: dict[str, Any] = {
    "request_id": SHARED,
    "ts": datetime(2026, 4, 22, 9, 15, 30, tzinfo=UTC),
    "account_id": "org-harbor",
    "model": "gpt-oss-120b",
    "prompt_text": (
        "Write a Python function that merges two sorted lists. "
        "Explain your reasoning step by step before the code."
    ),
    "system_text": "You are a careful senior engineer.",
    "end_user_id": "user-17",
    "ip": "203.0.113.45",
    "ip_prefix": "203.0.113.0/24",
    "user_agent": "python-httpx/0.27.0",
    "input_tokens": 42,
    "output_tokens": 128,
    "reasoning_tokens": 64,
    "reasoning_requested": True,
    "max_tokens": 1024,
    "temperature": 0.2,
    "tools_declared": 1,
    "tool_calls": 0,
    "conversation_id": "conv-9",
    "turn_index": 0,
    "status": 200,
    "stream": False,
}
NETWORK = {"ip", "ip_prefix", "user_agent"}
# What each format carries of the reference exchange (everything else must match).
NOT_CARRIED: dict[str, set[str]] = {
    "otel_genai_current.jsonl": set(),
    "litellm_standard_payload.jsonl": set(),
    "litellm_spendlogs.json": set(),
    "bedrock_invocations.jsonl": NETWORK | {"reasoning_tokens", "stream"},
    "helicone_export.jsonl": NETWORK,
    "langfuse_observations.jsonl": NETWORK | {"reasoning_requested", "tools_declared", "stream"},
    "batch": NETWORK | {"conversation_id", "stream"},
    "mapped": {
        "system_text",
        "end_user_id",
        "user_agent",
        "reasoning_tokens",
        "reasoning_requested",
        "max_tokens",
        "temperature",
        "tools_declared",
        "tool_calls",
        "conversation_id",
        "turn_index",
        "status",
        "stream",
    },
}


def _ingest_format(name: str, store: Path) -> dict[str, dict[str, Any]]:
    if name == "batch":
        run(SAMPLES / "batch", store, constants={"account_id": "org-harbor"})
    elif name == "mapped":
        from distillguard.ingest.adapters.mapped import load_mapping

        mapping = load_mapping(str(SAMPLES / "gateway_export.mapping.yaml"), [])
        run(SAMPLES / "mapped", store, mapping=mapping)
    elif name == "langfuse_observations.jsonl":
        run([LOGS / name, LOGS / "langfuse_traces.jsonl"], store)
    else:
        run(LOGS / name, store)
    return rows(store)


@pytest.mark.parametrize("name", sorted(NOT_CARRIED))
def test_the_same_exchange_maps_to_the_same_row_in_every_format(name: str, tmp_path: Path) -> None:
    row = _ingest_format(name, tmp_path / "store")[SHARED]
    expected = {k: v for k, v in REFERENCE.items() if k not in NOT_CARRIED[name]}
    got = {k: row[k] for k in expected}
    assert got == expected
    if name != "mapped":
        assert row["response_text"].startswith("Reasoning: walk both lists")


def test_otel_current_conventions_skip_tool_spans_and_count_turns(tmp_path: Path) -> None:
    summary = run(LOGS / "otel_genai_current.jsonl", tmp_path / "s")
    stored = rows(tmp_path / "s")
    assert summary.skipped["not_an_exchange"] == 1  # the execute_tool span
    agent_step = stored["req-7f3a9c02"]
    assert agent_step["turn_index"] == 1  # one earlier assistant (tool call) turn
    assert agent_step["prompt_text"] == REFERENCE["prompt_text"]
    assert agent_step["response_text"] == "All three tests pass."


def test_otel_older_conventions(tmp_path: Path) -> None:
    run(LOGS / "otel_genai_legacy.jsonl", tmp_path / "s")
    stored = rows(tmp_path / "s")
    events = stored["b1b2c3d4e5f60718"]  # event era: span id stands in for a response id
    assert events["prompt_text"] == "How do I reset my router?"
    assert events["system_text"] == "Answer in one line."
    assert events["response_text"] == "Hold the reset button for ten seconds."
    assert (events["input_tokens"], events["output_tokens"]) == (31, 9)
    assert events["account_id"] == "cust-204"
    openllmetry = stored["chatcmpl-lentil"]
    assert openllmetry["prompt_text"] == "Something quick with lentils?"
    assert openllmetry["response_text"] == "Try a red lentil dal."
    assert openllmetry["tools_declared"] == 1 and openllmetry["account_id"] == "u-77"
    inference = stored["d1b2c3d4e5f60718"]  # OpenInference
    assert inference["model"] == "gpt-4.1-mini"
    assert inference["prompt_text"] == "Where is my order A-19?"
    assert inference["tool_calls"] == 1 and inference["conversation_id"] == "sess-5e1"
    assert (inference["max_tokens"], inference["temperature"]) == (256, 0.1)


def test_litellm_failure_carries_the_error_code(tmp_path: Path) -> None:
    run(LOGS / "litellm_standard_payload.jsonl", tmp_path / "s")
    assert rows(tmp_path / "s")["req-7f3a9c10"]["status"] == 429


def test_litellm_spendlogs_csv_and_naive_timestamps(tmp_path: Path) -> None:
    run(LOGS / "litellm_spendlogs.csv", tmp_path / "s")
    stored = rows(tmp_path / "s")
    assert stored["chatcmpl-spend-csv-1"]["ts"] == datetime(
        2026, 4, 23, 8, 0, 1, 500000, tzinfo=UTC
    )
    second = stored["chatcmpl-spend-csv-2"]
    assert second["account_id"] == "org-lighthouse" and second["user_agent"] == "curl/8.5.0"
    assert second["prompt_text"] is None and second["output_tokens"] == 2048


def test_bedrock_converse_and_throttling(tmp_path: Path) -> None:
    run(LOGS / "bedrock_invocations.jsonl", tmp_path / "s")
    stored = rows(tmp_path / "s")
    converse = stored["bd-converse-0002"]
    assert converse["account_id"] == "arn:aws:iam::111122223333:user/ci-bot"
    assert converse["system_text"] == "Summarise in one line."
    assert (converse["max_tokens"], converse["output_tokens"]) == (300, 14)
    assert stored["bd-converse-0003"]["status"] == 429


def test_langfuse_traces_fill_account_and_are_not_exchanges(tmp_path: Path) -> None:
    summary = run(
        [LOGS / "langfuse_observations.jsonl", LOGS / "langfuse_traces.jsonl"], tmp_path / "s"
    )
    stored = rows(tmp_path / "s")
    assert set(stored) == {SHARED, "lf-gen-0002"}  # not the SPAN, not the orphan trace
    assert stored["lf-gen-0002"]["account_id"] == "org-seaside"  # from the trace's metadata
    assert stored["lf-gen-0002"]["conversation_id"] == "sess-77"
    assert summary.skipped["not_an_exchange"] == 1


def test_openai_batch_joins_requests_and_results_across_files(tmp_path: Path) -> None:
    run(SAMPLES / "batch", tmp_path / "s", constants={"account_id": "org-x"})
    responses = rows(tmp_path / "s")["req_51c3aa90"]
    assert responses["operation"] == "responses" and responses["model"] == "o4-mini"
    assert responses["system_text"] == "Classify the ticket."
    assert responses["prompt_text"] == "VPN drops every ten minutes."
    assert (responses["reasoning_tokens"], responses["max_tokens"]) == (96, 400)
    assert responses["response_text"] == "network"


def test_openai_batch_without_account_says_how_to_fix(tmp_path: Path) -> None:
    from tests.conftest import quarantined

    summary = run(SAMPLES / "batch", tmp_path / "s")
    assert summary.stored == 0 and summary.quarantined["missing_field"] == 2
    assert all("--set account_id" in q["detail"] for q in quarantined(tmp_path / "s"))


def test_helicone_without_account_property_uses_the_user(tmp_path: Path) -> None:
    run(LOGS / "helicone_export.jsonl", tmp_path / "s")
    other = rows(tmp_path / "s")["hel-0002"]
    assert other["account_id"] == "cust-4410" and other["response_text"] == "Monday."


def test_otel_message_events_in_a_logs_file_fill_their_span(tmp_path: Path) -> None:
    """The 1.28-1.36 conventions log message events as log records, beside the spans."""
    span = {
        "traceId": "ab" * 16,
        "spanId": "00aa11bb22cc33dd",
        "startTimeUnixNano": "1776849330000000000",
        "attributes": [
            {"key": k, "value": {"stringValue": v}}
            for k, v in {
                "gen_ai.operation.name": "chat",
                "gen_ai.system": "openai",
                "gen_ai.request.model": "gpt-4o",
                "user.id": "u-9",
            }.items()
        ],
    }

    def event(name: str, body: dict[str, Any]) -> dict[str, Any]:
        values = [{"key": k, "value": {"stringValue": v}} for k, v in body.items()]
        return {
            "timeUnixNano": "1776849330000000100",
            "eventName": name,
            "traceId": "ab" * 16,
            "spanId": "00aa11bb22cc33dd",
            "body": {"kvlistValue": {"values": values}},
        }

    logs = {
        "resourceLogs": [
            {
                "scopeLogs": [
                    {
                        "logRecords": [
                            event("gen_ai.system.message", {"content": "Be brief."}),
                            event("gen_ai.user.message", {"content": "Name a prime."}),
                            {
                                **event("gen_ai.choice", {"finish_reason": "stop"}),
                                "body": {
                                    "kvlistValue": {
                                        "values": [
                                            {
                                                "key": "message",
                                                "value": {
                                                    "kvlistValue": {
                                                        "values": [
                                                            {
                                                                "key": "content",
                                                                "value": {"stringValue": "Seven."},
                                                            }
                                                        ]
                                                    }
                                                },
                                            }
                                        ]
                                    }
                                },
                            },
                        ]
                    }
                ]
            }
        ]
    }
    spans = tmp_path / "spans.jsonl"
    spans.write_text(json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}) + "\n")
    events = tmp_path / "logs.jsonl"
    events.write_text(json.dumps(logs) + "\n")
    run([spans, events], tmp_path / "s")
    row = rows(tmp_path / "s")["00aa11bb22cc33dd"]
    assert (row["prompt_text"], row["system_text"], row["response_text"]) == (
        "Name a prime.",
        "Be brief.",
        "Seven.",
    )


# Prompts and answers that are JSON themselves (coding and agentic traffic often is):
# each must be stored as the text that was sent, never parsed.
JSON_TEXTS = [
    '{"task": "classify", "input": "I love it"}',
    '{"text": "inner", "label": "x"}',
    "[1, 2, 3]",
]
WHEN = "2026-04-22T09:15:30Z"


def _helicone(i: int, text: str) -> dict[str, Any]:
    return {
        "request_id": f"j{i}",
        "request_created_at": WHEN,
        "request_user_id": "u",
        "request_body": {"model": "m", "messages": [{"role": "user", "content": text}]},
        "response_body": {"choices": [{"message": {"role": "assistant", "content": text}}]},
    }


def _otel_parts(i: int, text: str) -> dict[str, Any]:
    def messages(role: str) -> str:
        return json.dumps([{"role": role, "parts": [{"type": "text", "content": text}]}])

    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "m",
        "user.id": "u",
        "gen_ai.input.messages": messages("user"),
        "gen_ai.output.messages": messages("assistant"),
    }
    return _otel_span(i, attrs)


def _openllmetry(i: int, text: str) -> dict[str, Any]:
    attrs = {
        "gen_ai.system": "openai",
        "gen_ai.request.model": "m",
        "user.id": "u",
        "gen_ai.prompt.0.role": "user",
        "gen_ai.prompt.0.content": text,
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.content": text,
    }
    return _otel_span(i, attrs)


def _otel_span(i: int, attrs: dict[str, str]) -> dict[str, Any]:
    span = {
        "spanId": f"{i:016x}",
        "startTimeUnixNano": "1776849330000000000",
        "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attrs.items()],
    }
    return {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}


def _langfuse(i: int, text: str) -> dict[str, Any]:
    return {
        "id": f"j{i}",
        "traceId": "t",
        "type": "GENERATION",
        "startTime": WHEN,
        "model": "m",
        "userId": "u",
        "input": text,
        "output": text,
    }


def _payload(i: int, text: str) -> dict[str, Any]:
    return {
        "id": f"j{i}",
        "call_type": "acompletion",
        "startTime": 1776849330.0,
        "model": "m",
        "metadata": {"user_api_key_team_id": "t"},
        "model_parameters": {},
        "messages": [{"role": "user", "content": text}],
        "response": {"choices": [{"message": {"role": "assistant", "content": text}}]},
    }


def _responses_body(i: int, text: str) -> dict[str, Any]:
    record = _helicone(i, text)
    record["request_body"] = {"model": "m", "input": text, "instructions": text}
    return record


def _anthropic_body(i: int, text: str) -> dict[str, Any]:
    record = _helicone(i, text)
    record["request_body"]["system"] = text
    record["response_body"] = {"type": "message", "content": [{"type": "text", "text": text}]}
    return record


def _openinference(i: int, text: str) -> dict[str, Any]:
    attrs = {
        "openinference.span.kind": "LLM",
        "llm.model_name": "m",
        "user.id": "u",
        "input.value": text,
        "output.value": text,
    }
    return _otel_span(i, attrs)


WITH_SYSTEM = {"_responses_body", "_anthropic_body"}


@pytest.mark.parametrize(
    "build",
    [
        _helicone,
        _otel_parts,
        _openllmetry,
        _openinference,
        _langfuse,
        _payload,
        _responses_body,
        _anthropic_body,
    ],
)
def test_text_that_reads_as_json_is_stored_as_sent(build: Any, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [build(i, t) for i, t in enumerate(JSON_TEXTS)])
    run(source, tmp_path / "s")
    stored = rows(tmp_path / "s")
    assert {rid: r["prompt_text"] for rid, r in stored.items()} == {
        rid: JSON_TEXTS[i] for i, rid in enumerate(sorted(stored))
    }
    assert all(r["response_text"] == r["prompt_text"] for r in stored.values())
    if build.__name__ in WITH_SYSTEM:
        assert all(r["system_text"] == r["prompt_text"] for r in stored.values())


def test_a_mapped_cell_that_reads_as_json_is_the_prompt(tmp_path: Path) -> None:
    with open(tmp_path / "m.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(
            [["id", "when", "org", "engine", "prompt"]]
            + [[f"m{i}", WHEN, "a", "m", text] for i, text in enumerate(JSON_TEXTS)]
        )
    mapping = {
        "request_id": "id",
        "ts": "when",
        "account_id": "org",
        "model": "engine",
        "prompt_text": "prompt",
    }
    summary = run(tmp_path / "m.csv", tmp_path / "s", mapping=mapping)
    assert not summary.quarantined
    assert {r["request_id"]: r["prompt_text"] for r in rows(tmp_path / "s").values()} == {
        f"m{i}": text for i, text in enumerate(JSON_TEXTS)
    }


def test_one_field_mapped_to_prompt_and_system_splits_lists_and_keeps_text_the_prompt(
    tmp_path: Path,
) -> None:
    """`messages` mapped to both columns: a message list gives each its turn; a record
    whose field is plain text has a prompt and no system prompt, not the text twice."""
    records = [
        {"id": "l", "when": WHEN, "org": "a", "engine": "m", "messages": [
            {"role": "system", "content": "be terse"}, {"role": "user", "content": "sort"}]},
        {"id": "t", "when": WHEN, "org": "a", "engine": "m", "messages": "sort this list"},
    ]  # fmt: skip
    write_jsonl(tmp_path / "m.jsonl", records)
    mapping = {"request_id": "id", "ts": "when", "account_id": "org", "model": "engine",
               "prompt_text": "messages", "system_text": "messages"}  # fmt: skip
    run(tmp_path / "m.jsonl", tmp_path / "s", mapping=mapping)
    stored = {
        r["request_id"]: (r["prompt_text"], r["system_text"]) for r in rows(tmp_path / "s").values()
    }
    assert stored == {"l": ("sort", "be terse"), "t": ("sort this list", None)}


def test_json_parts_are_read_where_a_field_holds_them_and_other_json_is_text(
    tmp_path: Path,
) -> None:
    """OpenLLMetry writes multimodal content, and the current conventions write system
    instructions, as JSON text of typed parts: those are structures. Any other JSON
    text in the same fields is what was sent."""
    parts = json.dumps([{"type": "text", "text": "look"}, {"type": "image_url"}])
    system_parts = json.dumps([{"type": "text", "content": "Be brief."}])
    spans = [_openllmetry(0, parts), _openllmetry(1, "[1, 2, 3]")]
    for i, system in ((2, system_parts), (3, '{"text": "inner"}')):
        span = _otel_parts(i, "hi")
        span["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"].append(
            {"key": "gen_ai.system_instructions", "value": {"stringValue": system}}
        )
        spans.append(span)
    run(write_jsonl(tmp_path / "in.jsonl", spans), tmp_path / "s")
    stored = rows(tmp_path / "s")
    assert [stored[f"{i:016x}"]["prompt_text"] for i in (0, 1)] == ["look", "[1, 2, 3]"]
    assert [stored[f"{i:016x}"]["system_text"] for i in (2, 3)] == [
        "Be brief.",
        '{"text": "inner"}',
    ]


def test_a_failed_batch_request_is_quarantined_as_failed(tmp_path: Path) -> None:
    """An error file's line (and an output line with an error body) has no response and
    so no time: the request is quarantined as failed, not as a request whose result
    line is missing, and the batch line's id is not taken for its API request id."""
    (tmp_path / "b").mkdir()
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    requests = [
        {"custom_id": c, "method": "POST", "url": "/v1/chat/completions", "body": body}
        for c in ("t1", "t2", "t3")
    ]
    write_jsonl(tmp_path / "b" / "in.jsonl", requests)
    write_jsonl(
        tmp_path / "b" / "errors.jsonl",
        [
            {
                "id": "batch_req_2",
                "custom_id": "t2",
                "response": None,
                "error": {"code": "server_error", "message": "x"},
            },
            {
                "id": "batch_req_3",
                "custom_id": "t3",
                "response": {
                    "status_code": 400,
                    "request_id": "req_3",
                    "body": {"error": {"message": "bad", "type": "invalid_request_error"}},
                },
                "error": None,
            },
        ],
    )
    summary = run(tmp_path / "b", tmp_path / "s", constants={"account_id": "org"})
    assert summary.stored == 0 and summary.quarantined == {"missing_field": 3}
    details = {q["record"].get("status"): q for q in quarantined(tmp_path / "s")}
    assert "needs its result line" in details[None]["detail"]  # t1: no result at all
    assert "failed with status 500" in details[500]["detail"]
    assert details[500]["record"].get("request_id") is None
    assert "failed with status 400" in details[400]["detail"]
    assert details[400]["record"]["request_id"] == "req_3"
