"""LiteLLM proxy logs: SpendLogs rows and StandardLoggingPayload lines.

SpendLogs (the LiteLLM_SpendLogs table, exported as JSON or CSV) and the
StandardLoggingPayload (what custom callbacks and most logging integrations receive)
carry the same facts in different places. The billing account is the key's team (the
unit a LiteLLM operator sells to), then its organisation, then the key owner; the
request-body `user` is the end user. Reasoning tokens live in the usage object inside
`metadata`. The user agent is only in the payload, or in SpendLogs' auto-added
"User-Agent: …" request tags.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from distillguard.ingest.adapters.bodies import request_fields, response_fields
from distillguard.ingest.adapters.common import Reject, as_obj, dig, first, http_status, obj

SPENDLOG_KEYS = {"request_id", "call_type", "spend", "startTime"}
PAYLOAD_KEYS = {"call_type", "startTime", "model_parameters"}
CALL_TYPES = {
    "completion": "chat",
    "acompletion": "chat",
    "text_completion": "completion",
    "atext_completion": "completion",
    "responses": "responses",
    "aresponses": "responses",
    "embedding": "embeddings",
    "aembedding": "embeddings",
    "anthropic_messages": "messages",
}


class SpendLogsAdapter:
    name = "litellm-spendlogs"
    table = "exchanges"

    def sniff(self, value: Any) -> bool:
        return isinstance(value, dict) and value.keys() >= SPENDLOG_KEYS and "api_key" in value

    def rows(self, value: Any) -> Iterator[dict[str, Any] | Reject | None]:
        metadata = obj(value.get("metadata"))
        request = as_obj(value.get("proxy_server_request"))
        asked = request_fields(request) if request else {}
        messages = as_obj(value.get("messages"))  # a JSON column: text in CSV exports
        if not asked.get("prompt_text") and isinstance(messages, list | str):
            asked = {**asked, **_nonnull(request_fields({"messages": messages}))}
        answered = response_fields(value.get("response"))
        usage = first(metadata.get("usage_object"), metadata.get("additional_usage_values"))
        yield {
            **_nonnull(asked),
            **_nonnull(answered),
            "request_id": value.get("request_id"),
            "ts": value.get("startTime"),
            "account_id": _account(
                value.get("team_id"),
                value.get("organization_id"),
                metadata,
                value.get("user"),
                value.get("api_key"),
            ),
            "model": first(value.get("model_group"), asked.get("model"), value.get("model")),
            "api_key_id": first(value.get("api_key"), metadata.get("user_api_key")),
            "end_user_id": first(value.get("end_user"), asked.get("end_user_id")),
            "ip": first(value.get("requester_ip_address"), metadata.get("requester_ip_address")),
            "user_agent": _agent_from_tags(value.get("request_tags")),
            **_usage(value, asked, answered, usage),
            "conversation_id": value.get("session_id"),
            "status": _status(value.get("status"), metadata),
        }


class PayloadAdapter:
    name = "litellm-payload"
    table = "exchanges"

    def sniff(self, value: Any) -> bool:
        return (
            isinstance(value, dict)
            and value.keys() >= PAYLOAD_KEYS
            and "id" in value
            and "api_key" not in value
        )

    def rows(self, value: Any) -> Iterator[dict[str, Any] | Reject | None]:
        metadata = obj(value.get("metadata"))
        params = obj(value.get("model_parameters"))
        messages = value.get("messages")  # a string is a text completion's prompt, as sent
        if isinstance(messages, Mapping):
            asked = request_fields({**params, **messages})
        else:
            asked = request_fields({**params, "messages": messages})
        answered = response_fields(value.get("response"))
        usage = first(metadata.get("usage_object"), dig(value, "hidden_params", "usage_object"))
        yield {
            **_nonnull(asked),
            **_nonnull(answered),
            "request_id": first(
                value.get("id"), value.get("litellm_call_id"), value.get("call_id")
            ),
            "ts": value.get("startTime"),
            "account_id": _account(
                metadata.get("user_api_key_team_id"),
                metadata.get("user_api_key_org_id"),
                metadata,
                metadata.get("user_api_key_user_id"),
                metadata.get("user_api_key_hash"),
            ),
            "model": first(value.get("model_group"), asked.get("model"), value.get("model")),
            "api_key_id": metadata.get("user_api_key_hash"),
            "end_user_id": first(
                value.get("end_user"),
                metadata.get("user_api_key_end_user_id"),
                asked.get("end_user_id"),
            ),
            "ip": first(value.get("requester_ip_address"), metadata.get("requester_ip_address")),
            "user_agent": first(
                value.get("user_agent"),
                metadata.get("user_agent"),
                _agent_from_tags(value.get("request_tags")),
            ),
            **_usage(value, asked, answered, usage),
            "stream": first(value.get("stream"), asked.get("stream")),
            "conversation_id": value.get("trace_id"),
            "status": _status(
                value.get("status"), {"error_information": value.get("error_information")}
            ),
        }


def _usage(
    value: Any, asked: dict[str, Any], answered: dict[str, Any], usage: Any
) -> dict[str, Any]:
    """Operation and token counts, placed alike in SpendLogs rows and payloads."""
    return {
        "operation": first(CALL_TYPES.get(str(value.get("call_type"))), asked.get("operation")),
        "input_tokens": value.get("prompt_tokens"),
        "output_tokens": value.get("completion_tokens"),
        "reasoning_tokens": first(
            dig(usage, "completion_tokens_details", "reasoning_tokens"),
            answered.get("reasoning_tokens"),
        ),
    }


def _account(team: Any, org: Any, metadata: Mapping[str, Any], user: Any, key: Any) -> Any:
    return first(
        team,
        metadata.get("user_api_key_team_id"),
        org,
        metadata.get("user_api_key_org_id"),
        user,
        key,
    )


def _agent_from_tags(tags: Any) -> str | None:
    """The full user agent from LiteLLM's auto-added 'User-Agent: …' request tags."""
    tags = as_obj(tags)
    if not isinstance(tags, list):
        return None
    agents = [
        t.split(":", 1)[1].strip()
        for t in tags
        if isinstance(t, str) and t.startswith("User-Agent:")
    ]
    return max(agents, key=len) if agents else None


def _status(status: Any, metadata: Mapping[str, Any]) -> int | None:
    code = dig(metadata, "error_information", "error_code")
    if code not in (None, ""):
        try:
            return int(str(code))
        except ValueError:
            pass
    return http_status(status)


def _nonnull(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}
