"""OpenTelemetry GenAI spans from OTLP/JSON trace files.

One line of a Collector `file` exporter (or one pretty-printed document) is an
ExportTraceServiceRequest holding many spans; each LLM span becomes one exchange and
every other span (tools, agents, HTTP) is skipped. Four generations of attribute names
are read, newest first: GenAI semconv 1.37+ (`gen_ai.input.messages`,
`gen_ai.provider.name`), the event era (`gen_ai.user.message`, `gen_ai.choice` span
events and `gen_ai.content.prompt`), OpenLLMetry's indexed `gen_ai.prompt.{i}.*`, and
OpenInference's `llm.*`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from distillguard.ingest.adapters.common import (
    Reject,
    as_obj,
    count,
    first,
    flatten_chat,
    messages_of,
    obj,
    text_of,
    text_or_parts,
)
from distillguard.ingest.values import to_int

LLM_OPERATIONS = {
    "chat": "chat",
    "text_completion": "completion",
    "completion": "completion",
    "generate_content": "chat",
    "embeddings": "embeddings",
    "embedding": "embeddings",
    "responses": "responses",
    "messages": "messages",
}
LLM_KINDS = {"LLM", "EMBEDDING"}
SPAN_LEVELS = (("resourceSpans",), ("scopeSpans", "instrumentationLibrarySpans"), ("spans",))
LOG_LEVELS = (("resourceLogs",), ("scopeLogs",), ("logRecords",))
ACCOUNT_KEYS = (
    "account.id",
    "tenant.id",
    "organization.id",
    "org.id",
    "customer.id",
    "enduser.id",
    "user.id",
    "traceloop.association.properties.user_id",
)
END_USER_KEYS = (
    "user.id",
    "enduser.id",
    "enduser.pseudo.id",
    "traceloop.association.properties.user_id",
    "llm.user",
)
CONVERSATION_KEYS = (
    "gen_ai.conversation.id",
    "session.id",
    "gen_ai.thread.id",
    "traceloop.association.properties.session_id",
)


class OtelAdapter:
    name = "otel"
    table = "exchanges"

    def sniff(self, value: Any) -> bool:
        return isinstance(value, dict) and ("resourceSpans" in value or "resourceLogs" in value)

    def rows(self, value: Any) -> Iterator[dict[str, Any] | Reject | None]:
        if not self.sniff(value):
            yield Reject(
                "unrecognised_format",
                "not an OTLP/JSON export: no resourceSpans or resourceLogs",
            )
            return
        if "resourceLogs" in value:
            yield from _event_rows(value)
        for found in _leaf_lists(value, SPAN_LEVELS):
            if isinstance(found, Reject):
                yield found
                continue
            path, spans, resource = found
            for index, span in enumerate(spans):
                yield _span_row(span, resource, path, index)


def _span_row(span: Any, resource: Mapping[str, Any], path: str, index: int) -> Any:
    """One span's row, or a Reject naming where the span sits in its export line (the
    path is spelled out only then: a line holds thousands of spans)."""
    if not isinstance(span, dict):
        return _not_an_object(f"{path}[{index}]", span)
    try:
        return exchange_of(span, resource)
    except Reject as reject:
        return Reject(reject.reason, f"{path}[{index}]: {reject.detail}")
    except (AttributeError, TypeError, ValueError) as exc:
        return Reject("wrong_type", f"{path}[{index}] is malformed: {exc}")


def _leaf_lists(
    export: Mapping[str, Any], levels: tuple[tuple[str, ...], ...]
) -> Iterator[tuple[str, list[Any], dict[str, Any]] | Reject]:
    """Each scope's list of spans (or log records) with its path and its resource's
    attributes.

    A malformed part of the line (a list that is not one, an item that is not an
    object, a resource attribute that cannot be decoded) becomes one Reject naming it
    and costs only what it holds, never its siblings.
    """
    for where, holder in _objects(export, levels[0], ""):
        if isinstance(holder, Reject):
            yield holder
            continue
        try:
            resource = attributes(_get(holder, "resource", "attributes"))
        except ValueError as exc:
            yield Reject("wrong_type", f"{where}.resource: {exc}")
            continue
        for scope_where, scope in _objects(holder, levels[1], where):
            if isinstance(scope, Reject):
                yield scope
                continue
            path, leaves = _listed(scope, levels[2], scope_where)
            yield leaves if isinstance(leaves, Reject) else (path, leaves, resource)


def _objects(
    parent: Mapping[str, Any], keys: tuple[str, ...], where: str
) -> Iterator[tuple[str, dict[str, Any] | Reject]]:
    """Each object listed under `keys` with its path, or a Reject in its place."""
    path, items = _listed(parent, keys, where)
    if isinstance(items, Reject):
        yield path, items
        return
    for index, item in enumerate(items):
        here = f"{path}[{index}]"
        yield here, item if isinstance(item, dict) else _not_an_object(here, item)


def _listed(
    parent: Mapping[str, Any], keys: tuple[str, ...], where: str
) -> tuple[str, list[Any] | Reject]:
    """(path, items) of the list under the first of `keys` that `parent` fills. Absent or
    null is an empty list, as proto3 JSON reads it; anything else is a Reject naming it."""
    key = next((k for k in keys if parent.get(k)), keys[0])
    items = parent.get(key)
    path = f"{where}.{key}" if where else key
    if items is None:
        return path, []
    if not isinstance(items, list):
        return path, Reject("wrong_type", f"{path} is {_kind(items)}, expected a list")
    return path, items


def _not_an_object(path: str, item: Any) -> Reject:
    return Reject("wrong_type", f"{path} is {_kind(item)}, expected an object")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def exchange_of(span: Mapping[str, Any], resource: Mapping[str, Any]) -> dict[str, Any] | None:
    """The canonical row of one span, or None when the span is not an LLM call."""
    attrs = {**resource, **attributes(span.get("attributes"))}
    operation = _operation(attrs)
    if operation is None:
        return None
    params = obj(attrs.get("llm.invocation_parameters"))
    prompt, system, turns = _input(attrs, span.get("events") or [])
    response, tool_calls = _output(attrs, span.get("events") or [])
    own_id = span_id(span.get("spanId"))
    return {
        "_join_key": _event_key(span),  # message events logged as log records join here
        "_side": "a" if own_id else None,
        "request_id": first(attrs.get("gen_ai.response.id"), own_id),
        "ts": span.get("startTimeUnixNano"),
        "account_id": first(*(attrs.get(k) for k in ACCOUNT_KEYS)),
        "model": first(
            attrs.get("gen_ai.request.model"),
            attrs.get("llm.request.model_name"),
            params.get("model"),
            attrs.get("llm.model_name"),
            attrs.get("gen_ai.response.model"),
        ),
        "prompt_text": prompt,
        "end_user_id": first(*(attrs.get(k) for k in END_USER_KEYS)),
        "ip": attrs.get("client.address"),
        "user_agent": attrs.get("user_agent.original"),
        "operation": operation,
        "system_text": system,
        "response_text": response,
        "input_tokens": first(
            attrs.get("gen_ai.usage.input_tokens"),
            attrs.get("gen_ai.usage.prompt_tokens"),
            attrs.get("llm.token_count.prompt"),
        ),
        "output_tokens": first(
            attrs.get("gen_ai.usage.output_tokens"),
            attrs.get("gen_ai.usage.completion_tokens"),
            attrs.get("llm.token_count.completion"),
        ),
        "reasoning_tokens": first(
            attrs.get("gen_ai.usage.reasoning.output_tokens"),
            attrs.get("gen_ai.usage.reasoning_tokens"),
            attrs.get("llm.token_count.completion_details.reasoning"),
        ),
        "reasoning_requested": _reasoning_requested(attrs, params),
        "max_tokens": first(
            attrs.get("gen_ai.request.max_tokens"),
            params.get("max_completion_tokens"),
            params.get("max_tokens"),
        ),
        "temperature": first(attrs.get("gen_ai.request.temperature"), params.get("temperature")),
        "tools_declared": _tools_declared(attrs),
        "tool_calls": tool_calls,
        "conversation_id": first(*(attrs.get(k) for k in CONVERSATION_KEYS)),
        "turn_index": turns,
        "status": _status(attrs, span.get("status")),
        "stream": first(
            attrs.get("gen_ai.request.stream"), attrs.get("llm.is_streaming"), params.get("stream")
        ),
    }


def attributes(items: Any) -> dict[str, Any]:
    """OTLP KeyValue list to a plain dict of Python values; a ValueError names the
    attribute whose value cannot be decoded."""
    if isinstance(items, dict):  # some exporters write attributes as an object
        return dict(items)
    if items is not None and not isinstance(items, list):
        raise ValueError(f"attributes are {_kind(items)}, expected a list")
    out: dict[str, Any] = {}
    try:
        for item in items or []:
            if isinstance(item, dict) and "key" in item:
                out[item["key"]] = any_value(item.get("value"))
    except (AttributeError, TypeError, ValueError) as exc:
        raise ValueError(f"attribute {str(item['key'])[:100]!r}: {exc}") from None
    return out


def any_value(value: Any) -> Any:
    """Decode an OTLP AnyValue (stringValue, intValue as text, arrayValue, kvlistValue…).

    An intValue that is a fraction or a boolean is refused (a ValueError), as the
    canonical columns refuse it, rather than cut to an integer.
    """
    if not isinstance(value, dict):
        return value
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        raw = value["intValue"]
        if type(raw) is str:
            try:
                return int(raw)
            except ValueError:
                pass
        return to_int(raw)
    if "doubleValue" in value:
        raw = value["doubleValue"]
        if type(raw) is bool:
            raise ValueError("expected a number, got a boolean")
        return float(raw)
    if "boolValue" in value:
        flag = value["boolValue"]
        return flag if isinstance(flag, bool) else str(flag).strip().lower() == "true"
    if "arrayValue" in value:
        return [any_value(v) for v in (value["arrayValue"] or {}).get("values") or []]
    if "kvlistValue" in value:
        return attributes((value["kvlistValue"] or {}).get("values"))
    if "bytesValue" in value:
        return value["bytesValue"]
    return None


def span_id(value: Any) -> str | None:
    """Span ids are hex in OTLP/JSON; generic protobuf writers emit base64 instead."""
    if not isinstance(value, str) or not value:
        return None
    if len(value) == 12 and not _is_hex(value):
        try:
            return base64.b64decode(value, validate=True).hex()
        except binascii.Error:
            return value
    return value.lower()


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def _get(value: Any, *keys: str) -> Any:
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _operation(attrs: Mapping[str, Any]) -> str | None:
    name = attrs.get("gen_ai.operation.name") or attrs.get("llm.request.type")
    if name is not None:
        return LLM_OPERATIONS.get(str(name).lower())
    kind = attrs.get("openinference.span.kind")
    if kind is not None:
        return {"LLM": "chat", "EMBEDDING": "embeddings"}.get(str(kind).upper())
    if "gen_ai.request.model" in attrs or "gen_ai.system" in attrs:
        return "chat"
    return None


def indexed(attrs: Mapping[str, Any], prefix: str) -> list[dict[str, Any]]:
    """Group flattened `prefix.{i}.rest` attributes into a list of {rest: value}."""
    start = prefix + "."
    groups: dict[int, dict[str, Any]] = {}
    for key, value in attrs.items():
        if not key.startswith(start):
            continue
        index, _, rest = key[len(start) :].partition(".")
        if index.isdigit() and rest:
            groups.setdefault(int(index), {})[rest] = value
    return [groups[i] for i in sorted(groups)]


def _messages_from_indexed(groups: list[dict[str, Any]], inner: str = "") -> list[dict[str, Any]]:
    """OpenLLMetry (`role`, `content`) or OpenInference (`message.role`, …) groups."""
    messages = []
    for group in groups:
        role = group.get(f"{inner}role")
        content = text_or_parts(group.get(f"{inner}content"))
        if content is None:
            parts = indexed(group, f"{inner}contents")
            content = (
                "\n".join(
                    str(p.get("message_content.text"))
                    for p in parts
                    if p.get("message_content.text") is not None
                )
                or None
            )
        calls = len(indexed(group, f"{inner}tool_calls"))
        messages.append({"role": role, "content": content, "tool_calls": calls})
    return messages


def _input(
    attrs: Mapping[str, Any], events: list[Any]
) -> tuple[str | None, str | None, int | None]:
    messages = _message_list(attrs, "gen_ai.input.messages")
    if messages is not None:
        prompt, system, turns = flatten_chat(messages)
        instructions = attrs.get("gen_ai.system_instructions")
        if instructions is not None:
            system = text_or_parts(instructions) or system
        return prompt, system, turns
    for prefix, inner in (("gen_ai.prompt", ""), ("llm.input_messages", "message.")):
        groups = indexed(attrs, prefix)
        if groups:
            return flatten_chat(_messages_from_indexed(groups, inner))
    from_events = _event_messages(events)
    if from_events:
        return flatten_chat(from_events)
    if attrs.get("input.value") is not None:
        return _openinference_input(attrs)
    return None, None, None


def _message_list(attrs: Mapping[str, Any], key: str) -> list[Any] | None:
    """A messages attribute (JSON text or an array value), None when absent. Anything
    else is refused: the span's prompt or answer would otherwise be lost unseen."""
    value = attrs.get(key)
    if value is None or value == "":
        return None
    messages = as_obj(value)
    if isinstance(messages, list):
        for message in messages:
            if not isinstance(message, dict):
                break
        else:
            return messages
    raise Reject("wrong_type", f"{key} is not a JSON list of messages")


def _openinference_input(attrs: Mapping[str, Any]) -> tuple[str | None, str | None, int | None]:
    """`input.value` is the text as sent, unless its mime type says JSON (or, without
    one, it is a request body holding messages)."""
    value = attrs.get("input.value")
    mime = attrs.get("input.mime_type")
    parsed = as_obj(value) if mime != "text/plain" else value
    if isinstance(parsed, dict) and "messages" in parsed:
        return flatten_chat(parsed["messages"])
    return text_of(parsed if mime == "application/json" else value), None, 0


def _openinference_output(attrs: Mapping[str, Any]) -> str | None:
    value = attrs.get("output.value")
    if attrs.get("output.mime_type") == "application/json":
        value = as_obj(value)
    return text_of(value)


def _event_messages(events: list[Any]) -> list[dict[str, Any]]:
    """Messages carried by span events of the 1.28-1.36 era and the oldest content events."""
    messages: list[dict[str, Any]] = []
    for event in events:
        if not isinstance(event, dict):
            continue
        name = str(event.get("name") or "")
        attrs = attributes(event.get("attributes"))
        if name == "gen_ai.content.prompt":
            prompt = attrs.get("gen_ai.prompt")
            listed = messages_of(prompt)
            messages.extend(listed if listed is not None else [{"role": "user", "content": prompt}])
        elif name.endswith(".message") and name.startswith("gen_ai."):
            body = as_obj(attrs.get("gen_ai.event.content"))
            body = body if isinstance(body, dict) else attrs
            role = body.get("role") or name.removeprefix("gen_ai.").removesuffix(".message")
            messages.append({"role": role, "content": body.get("content")})
    return messages


def _output(attrs: Mapping[str, Any], events: list[Any]) -> tuple[str | None, int | None]:
    messages = _message_list(attrs, "gen_ai.output.messages")
    if messages:
        parts = [p for m in messages if isinstance(m, dict) for p in (m.get("parts") or [])]
        calls = sum(1 for p in parts if isinstance(p, dict) and p.get("type") == "tool_call")
        return text_of(parts), calls
    for prefix, inner in (("gen_ai.completion", ""), ("llm.output_messages", "message.")):
        groups = indexed(attrs, prefix)
        if groups:
            outputs = _messages_from_indexed(groups[:1], inner)
            return text_of(outputs[0]["content"]), outputs[0]["tool_calls"]
    return _output_from_events(events, attrs)


def _output_from_events(
    events: list[Any], attrs: Mapping[str, Any]
) -> tuple[str | None, int | None]:
    for event in events:
        if not isinstance(event, dict):
            continue
        event_attrs = attributes(event.get("attributes"))
        if event.get("name") == "gen_ai.choice":
            body = as_obj(event_attrs.get("gen_ai.event.content"))
            body = body if isinstance(body, dict) else event_attrs
            message = as_obj(body.get("message")) or {}
            calls = count(body.get("tool_calls") or _field(message, "tool_calls"))
            return text_of(_field(message, "content")), calls
        if event.get("name") == "gen_ai.content.completion":
            completion = event_attrs.get("gen_ai.completion")
            listed = messages_of(completion)
            if listed:
                completion = (
                    _field(listed[0], "content") if isinstance(listed[0], dict) else listed[0]
                )
            return text_of(completion), None
    return _openinference_output(attrs), None


def _field(value: Any, key: str) -> Any:
    return value.get(key) if isinstance(value, dict) else None


def _tools_declared(attrs: Mapping[str, Any]) -> int | None:
    declared = count(attrs.get("gen_ai.tool.definitions"))
    if declared is not None:
        return declared
    for prefix in ("llm.tools", "llm.request.functions"):
        groups = indexed(attrs, prefix)
        if groups:
            return len(groups)
    return None


def _reasoning_requested(attrs: Mapping[str, Any], params: Mapping[str, Any]) -> bool | None:
    effort = first(
        attrs.get("gen_ai.request.reasoning_effort"),
        attrs.get("openai.request.reasoning_effort"),
        params.get("reasoning_effort"),
        _field(params.get("reasoning"), "effort"),
    )
    thinking = params.get("thinking")
    if effort is not None:
        return str(effort).lower() not in ("none", "minimal")
    if isinstance(thinking, dict):
        return thinking.get("type") == "enabled"
    return None


def _status(attrs: Mapping[str, Any], status: Any) -> int | None:
    code = first(attrs.get("http.response.status_code"), attrs.get("http.status_code"))
    if isinstance(code, int | float | str) and str(code).split(".")[0].isdigit():
        return int(str(code).split(".")[0])
    error = str(attrs.get("error.type") or "").lower()
    if "429" in error or "ratelimit" in error or "rate_limit" in error:
        return 429
    if error or (
        isinstance(status, dict) and str(status.get("code")) in ("2", "STATUS_CODE_ERROR")
    ):
        return 500
    return 200


def _event_rows(value: Any) -> Iterator[dict[str, Any] | Reject | None]:
    """Message events written as log records (the 1.28-1.36 conventions): grouped by the
    span they belong to, they fill that span's prompt, system prompt and response."""
    by_span: dict[str, list[dict[str, Any]]] = {}
    for found in _leaf_lists(value, LOG_LEVELS):
        if isinstance(found, Reject):
            yield found
            continue
        path, logs, _ = found
        for index, log in enumerate(logs):
            event = _message_event(log, f"{path}[{index}]")
            if event is None or isinstance(event, Reject):
                yield event
                continue
            by_span.setdefault(event[0], []).append(event[1])
    for owner, events in by_span.items():
        prompt, system, turns = flatten_chat(_event_messages(events))
        response, calls = _output_from_events(events, {})
        yield {
            "prompt_text": prompt,
            "system_text": system,
            "turn_index": turns,
            "response_text": response,
            "tool_calls": calls,
            "_join_key": owner,
            "_side": "ctx",
        }


def _message_event(log: Any, where: str) -> tuple[str, dict[str, Any]] | Reject | None:
    """(owning span, the log record as a span event) for a GenAI message event; None
    for any other log record, a Reject for one that cannot be read."""
    if not isinstance(log, dict):
        return _not_an_object(where, log)
    try:
        name = log.get("eventName") or attributes(log.get("attributes")).get("event.name")
        owner = _event_key(log) if span_id(log.get("spanId")) else None
        if not owner or not str(name or "").startswith("gen_ai."):
            return None
        content = {"stringValue": _json(any_value(log.get("body")))}
    except (AttributeError, TypeError, ValueError) as exc:
        return Reject("wrong_type", f"{where} is malformed: {exc}")
    event = {"name": name, "attributes": [{"key": "gen_ai.event.content", "value": content}]}
    return owner, event


def _event_key(item: Mapping[str, Any]) -> str:
    """Trace and span id together: span ids alone may repeat across traces."""
    return f"{item.get('traceId') or ''}:{span_id(item.get('spanId'))}"


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()
