"""Simulated exchanges written as product logs, so ingestion is exercised end to end.

`otel` writes OTLP/JSON lines (GenAI semantic conventions 1.37+), `litellm` writes
StandardLoggingPayload lines. Ingesting either folder must give back the canonical rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import orjson
import pyarrow as pa

SPANS_PER_LINE = 200


class _Lines:
    """Lines written beside `name` and renamed to it at the end, so a run that stops
    half-way leaves an earlier run's file whole."""

    def __init__(self, folder: Path, name: str) -> None:
        self.made = not folder.exists()  # removed again by abandon()
        folder.mkdir(parents=True, exist_ok=True)
        self.path, self.tmp = folder / name, folder / f".{name}.tmp"
        self.handle: IO[bytes] = open(self.tmp, "wb")  # noqa: SIM115 - closed in finish()

    def finish(self) -> None:
        self.handle.close()

    def publish(self) -> None:
        self.tmp.replace(self.path)

    def abandon(self) -> None:
        self.handle.close()
        self.tmp.unlink(missing_ok=True)
        if self.made and not any(self.tmp.parent.iterdir()):
            self.tmp.parent.rmdir()


class OtelExporter(_Lines):
    def __init__(self, folder: Path) -> None:
        super().__init__(folder, "traces.jsonl")

    def write(self, table: pa.Table) -> None:
        rows = table.to_pylist()
        for start in range(0, len(rows), SPANS_PER_LINE):
            spans = [_span(r) for r in rows[start : start + SPANS_PER_LINE]]
            line = {
                "resourceSpans": [
                    {
                        "resource": {"attributes": [_kv("service.name", "sim")]},
                        "scopeSpans": [{"spans": spans}],
                    }
                ]
            }
            self.handle.write(orjson.dumps(line) + b"\n")


def _kv(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    return {"key": key, "value": {"stringValue": str(value)}}


def _span(row: dict[str, Any]) -> dict[str, Any]:
    messages = [{"role": "user", "parts": [{"type": "text", "content": row["prompt_text"]}]}]
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": row["model"],
        "gen_ai.response.id": row["request_id"],
        "account.id": row["account_id"],
        "user.id": row["end_user_id"],
        "client.address": row["ip"],
        "user_agent.original": row["user_agent"],
        "gen_ai.input.messages": orjson.dumps(messages).decode(),
        "gen_ai.usage.input_tokens": row["input_tokens"],
        "gen_ai.usage.output_tokens": row["output_tokens"],
        "gen_ai.request.max_tokens": row["max_tokens"],
        "gen_ai.request.temperature": row["temperature"],
        "gen_ai.conversation.id": row["conversation_id"],
        "http.response.status_code": row["status"],
    }
    if row["system_text"]:
        attrs["gen_ai.system_instructions"] = orjson.dumps(
            [{"type": "text", "content": row["system_text"]}]
        ).decode()
    nanos = int(row["ts"].timestamp()) * 10**9 + row["ts"].microsecond * 1000
    return {
        "spanId": row["request_id"],
        "startTimeUnixNano": str(nanos),
        "kind": 3,
        "name": f"chat {row['model']}",
        "attributes": [_kv(k, v) for k, v in attrs.items() if v is not None],
    }


class LiteLLMExporter(_Lines):
    def __init__(self, folder: Path) -> None:
        super().__init__(folder, "standard_logging_payload.jsonl")

    def write(self, table: pa.Table) -> None:
        for row in table.to_pylist():
            messages = (
                [{"role": "system", "content": row["system_text"]}] if row["system_text"] else []
            )
            messages.append({"role": "user", "content": row["prompt_text"]})
            payload = {
                "id": row["request_id"],
                "call_type": "acompletion",
                "startTime": row["ts"].timestamp(),
                "model": row["model"],
                "model_group": row["model"],
                "prompt_tokens": row["input_tokens"],
                "completion_tokens": row["output_tokens"],
                "end_user": row["end_user_id"] or "",
                "requester_ip_address": row["ip"],
                "user_agent": row["user_agent"],
                "metadata": {
                    "user_api_key_team_id": row["account_id"],
                    "user_api_key_hash": row["api_key_id"],
                },
                "messages": messages,
                "status": "success" if row["status"] == 200 else "failure",
                "model_parameters": {
                    "max_tokens": row["max_tokens"],
                    "temperature": row["temperature"],
                },
                "trace_id": row["conversation_id"],
            }
            self.handle.write(orjson.dumps(payload) + b"\n")


EXPORTERS = {"otel": OtelExporter, "litellm": LiteLLMExporter}
