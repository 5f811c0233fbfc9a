"""OpenAI Batch API files: request lines and result lines, joined on `custom_id`.

A batch input line holds the request (prompt, model, limits, `safety_identifier`); its
result line, in a separate output or error file, holds the answer, usage, the API
request id and the time. Each side becomes a partial row keyed by `custom_id`; the
pipeline joins them in the engine, so neither file is held in memory. Batch files
name no account: pass `--set account_id=…` for the organisation that ran the batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from distillguard.ingest.adapters.bodies import request_fields, response_fields
from distillguard.ingest.adapters.common import Reject, first, obj

URL_OPERATIONS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completion",
    "/v1/responses": "responses",
    "/v1/embeddings": "embeddings",
}
HINTS = {"account_id": "batch files name no account: add --set account_id=ORG"}


class OpenAIBatchAdapter:
    name = "openai-batch"
    table = "exchanges"
    hints = HINTS

    def sniff(self, value: Any) -> bool:
        if not isinstance(value, dict) or "custom_id" not in value:
            return False
        return ("body" in value and "url" in value) or "response" in value or "error" in value

    def rows(self, value: Any) -> Iterator[dict[str, Any] | Reject | None]:
        custom_id = value.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            yield Reject("missing_field", "custom_id is missing or not text")
            return
        if "body" in value:
            yield {**_request(value), "_join_key": custom_id, "_side": "a"}
        else:
            yield {**_result(value), "_join_key": custom_id, "_side": "b"}


def _request(line: Mapping[str, Any]) -> dict[str, Any]:
    fields = {k: v for k, v in request_fields(line.get("body")).items() if v is not None}
    operation = URL_OPERATIONS.get(str(line.get("url") or "").split("?")[0])
    return {**fields, "operation": first(operation, fields.get("operation"))}


def _result(line: Mapping[str, Any]) -> dict[str, Any]:
    """The result side of a request. A failed request (an error file's line, or an
    error body) has no response: its status says so, and the batch line's own id does
    not stand in for the API request id it never got."""
    response = obj(line.get("response"))
    body = obj(response.get("body"))
    error = line.get("error") if isinstance(line.get("error"), Mapping) else None
    failed = error is not None or "error" in body
    fields = response_fields(body) if not failed else {}
    return {
        "request_id": first(response.get("request_id"), None if failed else line.get("id")),
        "ts": fields.get("created"),
        "model": fields.get("response_model"),
        "response_text": fields.get("response_text"),
        "tool_calls": fields.get("tool_calls"),
        "input_tokens": fields.get("input_tokens"),
        "output_tokens": fields.get("output_tokens"),
        "reasoning_tokens": fields.get("reasoning_tokens"),
        "status": first(response.get("status_code"), 500 if failed else None),
    }
