"""Field helpers shared by the adapters: safe navigation and message flattening.

Every product nests messages differently (OpenAI parts, Anthropic blocks, Bedrock
Converse blocks, OTel GenAI parts). They all reduce to the same three facts the
canonical row keeps: the last user turn, the system prompt, and how deep the
conversation is (the number of earlier model turns).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

SYSTEM_ROLES = {"system", "developer"}
MODEL_ROLES = {"assistant", "model", "ai"}


class Reject(Exception):
    """A record (or one span of it) that cannot be mapped; `reason` is a short code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def as_obj(value: Any) -> Any:
    """Parse a JSON string that holds an object or array (CSV cells, OTel attributes).

    Only for fields that hold a structure: message text is literal and never goes
    through here (a coding prompt is often JSON itself).
    """
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def obj(value: Any) -> Mapping[str, Any]:
    """`value` as a mapping (parsing JSON text), or an empty one when it is anything else."""
    value = as_obj(value)
    return value if isinstance(value, dict) else {}


INDEX = re.compile(r"-?[0-9]+")


def dig(value: Any, *path: str | int) -> Any:
    """value[path[0]][path[1]]…, parsing JSON strings on the way; None when absent."""
    for step in path:
        value = as_obj(value)
        if isinstance(value, list) and isinstance(step, str) and INDEX.fullmatch(step):
            step = int(step)  # a mapping's path, given as text, indexing a list
        if isinstance(step, int):
            if not isinstance(value, list) or not -len(value) <= step < len(value):
                return None
            value = value[step]
        elif isinstance(value, dict):
            value = value.get(step)
        else:
            return None
    return value


def first(*values: Any) -> Any:
    """The first value that is neither None nor an empty string."""
    for value in values:
        if value is not None and value != "":
            return value
    return None


def need_mapping(value: Any, what: str) -> Mapping[str, Any]:
    value = as_obj(value)
    if not isinstance(value, dict):
        raise Reject("wrong_type", f"{what} is a {type(value).__name__}, expected an object")
    return value


def text_of(content: Any) -> str | None:
    """The plain text in a message's content, whatever the product's shape.

    A string is the text as sent, even when it reads as JSON.
    """
    if content is None:
        return None
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        for key in ("text", "content", "input_text", "output_text", "value"):
            if key in content:
                return text_of(content[key])
        return None
    if isinstance(content, list):
        pieces = [t for t in (text_of(part) for part in content if _is_text_part(part)) if t]
        return "\n".join(pieces) if pieces else None
    return None


def text_or_parts(value: Any) -> str | None:
    """Text of a field holding either plain text or a JSON-encoded list of typed parts
    (OTel `gen_ai.system_instructions`, OpenLLMetry multimodal content). Text counts as
    parts only when it parses to that shape; any other text is literal."""
    if isinstance(value, str):
        parsed = as_obj(value)
        return text_of(parsed) if _is_parts(parsed) else value
    return text_of(value)


def messages_of(value: Any) -> list[Any] | None:
    """A message list, or one held as JSON text (a CSV cell, a string attribute).

    Text that parses to anything but a list of messages (objects with a role) is not
    a message list: it is a prompt that happens to be JSON.
    """
    if isinstance(value, list):
        return value
    if isinstance(value, str) and value[:1] == "[":
        parsed = as_obj(value)
        if (
            isinstance(parsed, list)
            and parsed
            and all(isinstance(m, dict) and "role" in m for m in parsed)
        ):
            return parsed
    return None


def _is_parts(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(p, dict) and "type" in p for p in value)
    )


def _is_text_part(part: Any) -> bool:
    if isinstance(part, str):
        return True
    if not isinstance(part, dict):
        return False
    kind = part.get("type")
    return kind is None or kind in ("text", "input_text", "output_text")


def role_of(message: Mapping[str, Any]) -> str:
    return str(message.get("role") or message.get("type") or "").lower()


def flatten_chat(messages: Any) -> tuple[str | None, str | None, int | None]:
    """(last user turn, system prompt, number of earlier model turns) of a message list;
    text that is not a message list is the prompt itself."""
    if not isinstance(messages, list):
        listed = messages_of(messages)
        if listed is None:
            return (messages, None, 0) if isinstance(messages, str) else (None, None, None)
        messages = listed
    prompt = None
    system = []
    model_turns = 0
    for message in messages:
        if not isinstance(message, dict):
            continue
        role = role_of(message)
        body = message.get("content", message.get("parts"))
        if role in SYSTEM_ROLES:
            text = text_of(body)
            if text:
                system.append(text)
        elif role in ("user", "human"):
            text = text_of(body)
            if text is not None:
                prompt = text
        elif role in MODEL_ROLES:
            model_turns += 1
    return prompt, "\n".join(system) if system else None, model_turns


def count(value: Any) -> int | None:
    """Length of a list (tools declared, tool calls); None when absent."""
    value = as_obj(value)
    if value is None:
        return None
    if isinstance(value, list):
        return len(value)
    if isinstance(value, dict):
        return len(value)
    return None


def count_where(items: Iterable[Any], key: str, values: set[str]) -> int:
    return sum(1 for item in items if isinstance(item, dict) and item.get(key) in values)


def http_status(value: Any) -> int | None:
    """An HTTP-like status from a product's status field ('success', 'failure', 200)."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text.isdigit():
        return int(text)
    return {"success": 200, "ok": 200, "failure": 500, "error": 500}.get(text)
