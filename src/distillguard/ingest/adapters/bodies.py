"""Request and response bodies of the major LLM APIs, reduced to canonical fields.

Several log formats embed the raw API bodies (LiteLLM, OpenAI batch files, Helicone,
Bedrock, Langfuse), so each API's body shape is read here once: OpenAI chat
completions, legacy completions, the Responses API, Anthropic messages and Bedrock
Converse. The functions sniff the shape from the keys, not from the URL.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from distillguard.ingest.adapters.common import (
    as_obj,
    count,
    first,
    flatten_chat,
    obj,
    role_of,
    text_of,
)


def request_fields(body: Any) -> dict[str, Any]:
    """Canonical fields found in an API request body (any of the supported APIs)."""
    body = as_obj(body)
    if not isinstance(body, dict):
        return {}
    if "input" in body and "messages" not in body:
        prompt, system, turns = _responses_input(body.get("input"))
        system = first(text_of(body.get("instructions")), system)
        operation = "responses" if not _is_embedding(body) else "embeddings"
    else:
        prompt, system, turns = flatten_chat(body.get("messages"))
        system = first(text_of(body.get("system")), system)
        if prompt is None and body.get("prompt") is not None:
            prompt, turns = text_of(body.get("prompt")), 0
            operation = "completion"
        else:
            operation = "messages" if _anthropic_style(body) else "chat"
    inference = obj(body.get("inferenceConfig"))
    return {
        "model": body.get("model"),
        "prompt_text": prompt,
        "system_text": system,
        "turn_index": turns,
        "operation": operation,
        "max_tokens": first(
            body.get("max_completion_tokens"),
            body.get("max_output_tokens"),
            body.get("max_tokens"),
            inference.get("maxTokens"),
            body.get("max_tokens_to_sample"),
        ),
        "temperature": first(body.get("temperature"), inference.get("temperature")),
        "tools_declared": _tools_declared(body),
        "reasoning_requested": reasoning_requested(body),
        "stream": body.get("stream"),
        "end_user_id": first(
            body.get("safety_identifier"), body.get("user"), _get(body, "metadata", "user_id")
        ),
        "conversation_id": first(
            _conversation(body.get("conversation")), body.get("previous_response_id")
        ),
    }


def response_fields(body: Any) -> dict[str, Any]:
    """Canonical fields found in an API response body (any of the supported APIs)."""
    body = as_obj(body)
    if isinstance(body, list):  # streamed chunks logged as a list
        return _chunks(body)
    if not isinstance(body, dict):
        return {"response_text": text_of(body)} if isinstance(body, str) else {}
    usage = obj(body.get("usage"))
    text, calls = _response_text(body)
    return {
        "response_text": text,
        "tool_calls": calls,
        "input_tokens": first(
            usage.get("prompt_tokens"), usage.get("input_tokens"), usage.get("inputTokens")
        ),
        "output_tokens": first(
            usage.get("completion_tokens"), usage.get("output_tokens"), usage.get("outputTokens")
        ),
        "reasoning_tokens": first(
            _get(usage, "completion_tokens_details", "reasoning_tokens"),
            _get(usage, "output_tokens_details", "reasoning_tokens"),
        ),
        "response_model": body.get("model"),
        "response_id": body.get("id"),
        "created": first(body.get("created"), body.get("created_at")),
    }


def reasoning_requested(body: Mapping[str, Any]) -> bool | None:
    """Whether the request asked for extended thinking or a reasoning effort."""
    effort = first(body.get("reasoning_effort"), _get(body, "reasoning", "effort"))
    if effort is not None:
        return str(effort).lower() not in ("none", "minimal")
    for source in (body, obj(body.get("additionalModelRequestFields"))):
        for key in ("thinking", "reasoning_config"):
            setting = as_obj(source.get(key))
            if isinstance(setting, dict):
                return setting.get("type") == "enabled" or bool(setting.get("budget_tokens"))
    return None


def _get(value: Any, *keys: str) -> Any:
    for key in keys:
        value = as_obj(value)
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _is_embedding(body: Mapping[str, Any]) -> bool:
    return "encoding_format" in body or "dimensions" in body


def _anthropic_style(body: Mapping[str, Any]) -> bool:
    """Anthropic messages put the system prompt beside the messages; Converse adds
    inferenceConfig; OpenAI chat keeps the system prompt inside the messages."""
    if "anthropic_version" in body:
        return True
    return body.get("system") is not None and "inferenceConfig" not in body


def _conversation(value: Any) -> Any:
    return value.get("id") if isinstance(value, dict) else value


def _responses_input(items: Any) -> tuple[str | None, str | None, int | None]:
    """Responses API input: a string (the prompt as sent), or a list of messages and
    typed items."""
    if isinstance(items, str):
        return items, None, 0
    if not isinstance(items, list):
        return None, None, None
    messages = [
        i
        for i in items
        if isinstance(i, dict)
        and role_of(i) in ("user", "system", "developer", "assistant", "message")
    ]
    normalised = [{"role": i.get("role") or "user", "content": i.get("content")} for i in messages]
    return flatten_chat(normalised)


def _tools_declared(body: Mapping[str, Any]) -> int | None:
    tools = body.get("tools")
    if tools is None and isinstance(body.get("toolConfig"), Mapping):
        tools = body["toolConfig"].get("tools")
    if tools is None:
        tools = body.get("functions")
    return count(tools)


def _response_text(body: Mapping[str, Any]) -> tuple[str | None, int | None]:
    choices = body.get("choices")
    if isinstance(choices, list) and choices:  # OpenAI chat / completions
        choice = obj(choices[0])
        message = obj(choice.get("message"))
        text = first(text_of(message.get("content")), choice.get("text"))
        return text, count(message.get("tool_calls")) or 0
    output = body.get("output")
    if isinstance(output, list):  # Responses API
        texts = [
            text_of(item.get("content"))
            for item in output
            if isinstance(item, dict) and item.get("type") == "message"
        ]
        calls = sum(
            1
            for item in output
            if isinstance(item, dict) and str(item.get("type", "")).endswith("_call")
        )
        return "\n".join(t for t in texts if t) or None, calls
    if isinstance(output, dict):  # Bedrock Converse
        blocks = _get(output, "message", "content")
        return _blocks_text(blocks)
    if "role" in body and "content" in body and "type" not in body:  # one chat message
        return text_of(body.get("content")), count(body.get("tool_calls")) or 0
    if isinstance(body.get("content"), list):  # Anthropic messages
        return _blocks_text(body["content"])
    return text_of(
        first(body.get("completion"), body.get("generation"), body.get("outputText"))
    ), None


def _blocks_text(blocks: Any) -> tuple[str | None, int | None]:
    if not isinstance(blocks, list):
        return None, None
    texts = []
    calls = 0
    for block in blocks:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "tool_use" or "toolUse" in block:
            calls += 1
        elif block.get("type", "text") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
    return "\n".join(texts) or None, calls


def _chunks(chunks: list[Any]) -> dict[str, Any]:
    """Text and usage from a list of streamed events (Anthropic, OpenAI, Converse)."""
    texts: list[str] = []
    fields: dict[str, Any] = {}
    for chunk in chunks:
        chunk = as_obj(chunk)
        if not isinstance(chunk, dict):
            continue
        delta = obj(chunk.get("delta"))
        text = first(delta.get("text"), _get(chunk, "contentBlockDelta", "delta", "text"))
        choices = chunk.get("choices")
        if text is None and isinstance(choices, list) and choices and isinstance(choices[0], dict):
            text = _get(choices[0], "delta", "content")
        if isinstance(text, str):
            texts.append(text)
        usage = first(
            chunk.get("usage"), _get(chunk, "message", "usage"), _get(chunk, "metadata", "usage")
        )
        if isinstance(usage, dict):
            fields["input_tokens"] = first(
                usage.get("input_tokens"),
                usage.get("prompt_tokens"),
                usage.get("inputTokens"),
                fields.get("input_tokens"),
            )
            fields["output_tokens"] = first(
                usage.get("output_tokens"),
                usage.get("completion_tokens"),
                usage.get("outputTokens"),
                fields.get("output_tokens"),
            )
    fields["response_text"] = "".join(texts) or None
    fields["stream"] = True
    return fields
