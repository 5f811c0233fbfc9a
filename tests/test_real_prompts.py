"""Real people's prompts (../shared/data) survive every format and container whole.

Public prompt sets carry what hand-written samples miss: code blocks, unicode, quotes,
commas and newlines inside CSV cells, very long texts. Each prompt is written as the
products would log it, ingested, and must come back byte for byte.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA, rows, run, write_jsonl

ARENA = SHARED_DATA / "arena_hard" / "arena-hard-v2.0_question.jsonl"
ALPACA = SHARED_DATA / "alpaca_eval" / "alpaca_eval.jsonl"

pytestmark = pytest.mark.skipif(
    not (ARENA.exists() and ALPACA.exists()),
    reason="../shared/data (public prompt sets) is not present beside the project",
)


def prompts() -> list[str]:
    texts = [
        json.loads(line)["prompt"] for line in ARENA.read_text(encoding="utf-8").split("\n") if line
    ]
    texts += [
        json.loads(line)["instruction"]
        for line in ALPACA.read_text(encoding="utf-8").split("\n")
        if line
    ]
    return [t for t in texts if t.strip()]


def _otel(i: int, prompt: str) -> dict[str, object]:
    messages = json.dumps([{"role": "user", "parts": [{"type": "text", "content": prompt}]}])
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "m",
        "user.id": f"u{i % 9}",
        "gen_ai.input.messages": messages,
    }
    span = {
        "spanId": f"{i:016x}",
        "startTimeUnixNano": str(1776849330 * 10**9 + i),
        "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attrs.items()],
    }
    return {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}


def _litellm(i: int, prompt: str) -> dict[str, object]:
    return {
        "id": f"l{i}",
        "call_type": "acompletion",
        "startTime": 1776849330.0 + i,
        "model": "m",
        "model_parameters": {},
        "metadata": {"user_api_key_team_id": "t"},
        "messages": [{"role": "user", "content": prompt}],
    }


def _helicone(i: int, prompt: str) -> dict[str, object]:
    return {
        "request_id": f"h{i}",
        "request_created_at": "2026-04-22 09:15:30.000",
        "request_user_id": "u",
        "request_model": "m",
        "request_body": {"model": "m", "messages": [{"role": "user", "content": prompt}]},
    }


@pytest.mark.parametrize(
    "render", [_otel, _litellm, _helicone], ids=["otel", "litellm", "helicone"]
)
def test_prompts_round_trip_through_json_formats(render, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    texts = prompts()
    path = write_jsonl(tmp_path / "in.jsonl", [render(i, p) for i, p in enumerate(texts)])
    summary = run(path, tmp_path / "s")
    assert summary.stored == len(texts) and not summary.quarantined
    stored = sorted(r["prompt_text"] for r in rows(tmp_path / "s").values())
    assert stored == sorted(texts)


def test_prompts_round_trip_through_csv_with_a_mapping(tmp_path: Path) -> None:
    texts = prompts()
    with open(tmp_path / "in.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "when", "org", "engine", "text"])
        for i, text in enumerate(texts):
            writer.writerow([f"c{i}", 1776849330 + i, "org", "m", text])
    mapping = {
        "request_id": "id",
        "ts": "when",
        "account_id": "org",
        "model": "engine",
        "prompt_text": "text",
    }
    summary = run(tmp_path / "in.csv", tmp_path / "s", mapping=mapping)
    assert summary.stored == len(texts) and not summary.quarantined
    assert sorted(r["prompt_text"] for r in rows(tmp_path / "s").values()) == sorted(texts)
