"""Langfuse observation exports: the public API (camelCase), blob-storage exports
(snake_case JSONL, CSV or Parquet) and their trace rows.

Only GENERATION observations are exchanges. The API's observations omit the user and
session, which live on the trace; the enriched blob export copies them onto each row.
When a traces file is ingested in the same run, traces join observations on the trace
id and fill account, end user and conversation; traces alone produce no exchanges.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from distillguard.ingest.adapters.bodies import request_fields, response_fields
from distillguard.ingest.adapters.common import (
    Reject,
    as_obj,
    count,
    first,
    flatten_chat,
    messages_of,
    obj,
    text_of,
)

ACCOUNT_KEYS = ("account_id", "tenant_id", "organization_id", "org_id", "customer_id")
BODY_KEYS = ("messages", "choices", "role")


def _pick(value: Mapping[str, Any], camel: str, snake: str) -> Any:
    return first(value.get(camel), value.get(snake))


class LangfuseAdapter:
    name = "langfuse"
    table = "exchanges"

    def sniff(self, value: Any) -> bool:
        if not isinstance(value, dict):
            return False
        observation = (
            ("traceId" in value or "trace_id" in value)
            and "type" in value
            and ("startTime" in value or "start_time" in value)
        )
        trace = {"id", "timestamp", "name"} <= value.keys() and (
            "projectId" in value or "project_id" in value
        )
        return observation or trace

    def rows(self, value: Any) -> Iterator[dict[str, Any] | Reject | None]:
        if "type" not in value:
            yield _trace(value)
        elif str(value.get("type")).upper() == "GENERATION":
            yield _generation(value)
        else:
            yield None


def _generation(obs: Mapping[str, Any]) -> dict[str, Any]:
    params = obj(_pick(obs, "modelParameters", "model_parameters"))
    asked = _input(_structured(obs.get("input")))
    output = _structured(obs.get("output"))
    answered = response_fields(output) if not isinstance(output, str) else {}
    usage = obj(first(_pick(obs, "usageDetails", "usage_details"), obs.get("usage")))
    metadata = obj(obs.get("metadata"))
    user = _pick(obs, "userId", "user_id")
    trace_id = _pick(obs, "traceId", "trace_id")
    return {
        **{k: v for k, v in asked.items() if v is not None},
        "response_text": first(answered.get("response_text"), text_of(output)),
        "request_id": obs.get("id"),
        "ts": _pick(obs, "startTime", "start_time"),
        "account_id": first(*(metadata.get(k) for k in ACCOUNT_KEYS), user),
        "end_user_id": user,
        "model": first(obs.get("model"), obs.get("provided_model_name"), asked.get("model")),
        "max_tokens": first(
            params.get("max_tokens"),
            params.get("max_completion_tokens"),
            params.get("maxTokens"),
            asked.get("max_tokens"),
        ),
        "temperature": first(params.get("temperature"), asked.get("temperature")),
        "input_tokens": first(
            usage.get("input"),
            usage.get("promptTokens"),
            obs.get("promptTokens"),
            answered.get("input_tokens"),
        ),
        "output_tokens": first(
            usage.get("output"), obs.get("completionTokens"), answered.get("output_tokens")
        ),
        "reasoning_tokens": first(
            usage.get("output_reasoning_tokens"),
            usage.get("reasoning"),
            answered.get("reasoning_tokens"),
        ),
        "tools_declared": first(
            count(obs.get("tool_definitions")) or None, asked.get("tools_declared")
        ),
        "tool_calls": first(count(obs.get("tool_calls")), answered.get("tool_calls")),
        "conversation_id": _pick(obs, "sessionId", "session_id"),
        "status": 500 if str(obs.get("level") or "").upper() == "ERROR" else 200,
        "_join_key": trace_id,
        "_side": "a" if trace_id else None,
    }


def _structured(value: Any) -> Any:
    """Input or output as Langfuse wrote it. Its CSV and Parquet exports hold them as
    JSON text, so text is read as a structure when it parses to a shape Langfuse writes
    there (a message list, a message, a request or response body); any other text is
    the prompt or answer itself, JSON or not."""
    if not isinstance(value, str):
        return value
    messages = messages_of(value)
    if messages is not None:
        return messages
    parsed = as_obj(value)
    if isinstance(parsed, dict) and any(k in parsed for k in BODY_KEYS):
        return parsed
    return value


def _input(value: Any) -> dict[str, Any]:
    if isinstance(value, list):
        prompt, system, turns = flatten_chat(value)
        return {
            "prompt_text": prompt,
            "system_text": system,
            "turn_index": turns,
            "operation": "chat",
        }
    if isinstance(value, dict):
        return (
            request_fields(value)
            if ("messages" in value or "input" in value)
            else {"prompt_text": text_of(value)}
        )
    if isinstance(value, str):
        return {"prompt_text": value, "turn_index": 0}
    return {}


def _trace(trace: Mapping[str, Any]) -> dict[str, Any]:
    metadata = obj(trace.get("metadata"))
    user = _pick(trace, "userId", "user_id")
    return {
        "account_id": first(*(metadata.get(k) for k in ACCOUNT_KEYS), user),
        "end_user_id": user,
        "conversation_id": _pick(trace, "sessionId", "session_id"),
        "_join_key": trace.get("id"),
        "_side": "ctx",
    }
