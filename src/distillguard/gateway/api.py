"""The three APIs the gateway speaks: what a request asks, what an error looks like, and
how reasoning is taken out of a reply.

OpenAI (chat completions, responses) and Anthropic (messages) differ in where the
prompt, the system prompt and the reasoning sit, and in the error shape a client's SDK
expects; each difference is a small pure function here, tested on hand-built bodies.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

ROUTES = {
    "/v1/chat/completions": "openai",
    "/v1/responses": "openai",
    "/v1/messages": "anthropic",
}


@dataclass
class Ask:
    """What one request asks, in the canonical schema's terms."""

    api: str
    operation: str
    model: str
    prompt: str
    system: str | None
    stream: bool
    reasoning: bool
    max_tokens: int | None
    tools: int
    end_user: str | None = None


def error(api: str, status: int, message: str) -> dict[str, Any]:
    """An error body as the API's own clients parse it."""
    if api == "anthropic":
        kinds = {
            400: "invalid_request_error",
            401: "authentication_error",
            403: "permission_error",
            404: "not_found_error",
            413: "request_too_large",
            429: "rate_limit_error",
        }
        return {
            "type": "error",
            "error": {"type": kinds.get(status, "api_error"), "message": message},
        }
    kinds = {
        400: "invalid_request_error",
        401: "invalid_request_error",
        403: "permission_error",
        404: "invalid_request_error",
        413: "invalid_request_error",
        429: "rate_limit_exceeded",
    }
    return {"error": {"message": message, "type": kinds.get(status, "api_error"), "code": None}}


def parse(path: str, body: dict[str, Any]) -> Ask:
    """What the request body at `path` asks; ValueError if it is not such a request."""
    api = ROUTES[path]
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ValueError("`model` is required")
    system: str | None
    if path == "/v1/responses":
        prompt, system = text_of(body.get("input")), text_of(body.get("instructions"))
        reasoning = bool(body.get("reasoning"))
        limit = body.get("max_output_tokens")
    elif api == "anthropic":
        messages = _messages(body)
        prompt = last_user(messages)
        system = text_of(body.get("system"))
        reasoning = _field(body, "thinking").get("type") == "enabled"
        limit = body.get("max_tokens")
    else:
        messages = _messages(body)
        prompt = last_user(messages)
        system = (
            "\n".join(
                text_of(m.get("content"))
                for m in messages
                if m.get("role") in ("system", "developer")
            )
            or None
        )
        reasoning = body.get("reasoning_effort") is not None or bool(body.get("reasoning"))
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
    tools = body.get("tools")
    return Ask(
        api=api,
        operation=path.rsplit("/", 1)[-1],
        model=model,
        prompt=prompt,
        system=system or None,
        stream=bool(body.get("stream")),
        reasoning=reasoning,
        max_tokens=_count(limit),
        tools=len(tools) if isinstance(tools, list) else 0,
        end_user=_end_user(body),
    )


def _count(value: Any) -> int | None:
    """A token limit as recorded: a whole number in int64's range, else none (JSON's
    true is not a count, and a client may send any number)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63:
        return value
    return None


def _end_user(body: dict[str, Any]) -> str | None:
    """The end user a reseller or app names: OpenAI's `user`, Anthropic's metadata."""
    user = body.get("user") or _field(body, "metadata").get("user_id")
    return str(user) if user else None


def _field(body: dict[str, Any], name: str) -> dict[str, Any]:
    """An object-valued field; ValueError (a 400 for the client) if it is something else."""
    value = body.get(name) or {}
    if not isinstance(value, dict):
        raise ValueError(f"`{name}` must be an object")
    return value


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ValueError("`messages` must be a list of messages")
    return messages


def last_user(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            return text_of(m.get("content"))
    return ""


def text_of(content: Any) -> str:
    """Text of a string, a list of content parts, or an input list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(t for t in (text_of(p) for p in content) if t)
    if isinstance(content, dict):
        for key in ("text", "content", "input_text"):
            if key in content:
                return text_of(content[key])
    return ""


REASONING_KEYS = ("reasoning_content", "reasoning", "reasoning_details", "thinking")
THINKING_BLOCKS = ("thinking", "redacted_thinking")


def without_reasoning(body: Any) -> Any:
    """A reply (or one streamed event) with the model's reasoning taken out: OpenAI's
    reasoning fields on messages and deltas and reasoning output items, Anthropic's
    thinking blocks."""
    if isinstance(body, list):
        return [without_reasoning(v) for v in body if not _is_reasoning_item(v)]
    if not isinstance(body, dict):
        return body
    return {
        k: without_reasoning(v)
        for k, v in body.items()
        if k not in REASONING_KEYS or (k == "reasoning" and isinstance(v, dict) and "effort" in v)
    }


def _is_reasoning_item(value: Any) -> bool:
    return isinstance(value, dict) and (
        value.get("type") == "reasoning" or value.get("type") in THINKING_BLOCKS
    )


def stream_event_without_reasoning(data: str, dropped: set[int]) -> str | None:
    """One SSE `data:` payload with reasoning removed, or None to drop the event.
    `dropped` remembers Anthropic content-block indexes that are thinking blocks."""
    try:
        event = json.loads(data)
    except ValueError:
        return data  # [DONE] and anything else not JSON passes as is
    if not isinstance(event, dict):
        return data
    block = event.get("content_block")
    kind, index = event.get("type"), int(event.get("index", -1))
    if (
        kind == "content_block_start"
        and isinstance(block, dict)
        and block.get("type") in THINKING_BLOCKS
    ):
        dropped.add(index)
        return None
    if kind in ("content_block_delta", "content_block_stop") and index in dropped:
        return None
    item = event.get("item")
    if isinstance(item, dict) and item.get("type") == "reasoning":
        return None
    if str(event.get("type", "")).startswith("response.reasoning"):
        return None
    return json.dumps(without_reasoning(event), separators=(",", ":"))
