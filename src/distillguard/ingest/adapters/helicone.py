"""Helicone request exports (the export CLI's JSONL, or rows of its request API).

Each row carries the raw request and response bodies plus Helicone's own columns.
Rows name no API key or client address. `request_user_id` is the Helicone-User-Id
header, the caller's end user; a tenant or account set as a Helicone custom property
is taken as the account, else the user id stands in for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from distillguard.ingest.adapters.bodies import request_fields, response_fields
from distillguard.ingest.adapters.common import Reject, first, obj

ACCOUNT_PROPERTIES = (
    "account",
    "account_id",
    "tenant",
    "tenant_id",
    "org",
    "org_id",
    "organization",
    "customer",
    "customer_id",
)
SESSION_PROPERTIES = ("Helicone-Session-Id", "helicone-session-id", "session", "session_id")


class HeliconeAdapter:
    name = "helicone"
    table = "exchanges"

    def sniff(self, value: Any) -> bool:
        return isinstance(value, dict) and "request_created_at" in value and "request_id" in value

    def rows(self, value: Any) -> Iterator[dict[str, Any] | Reject | None]:
        asked = request_fields(value.get("request_body"))
        answered = response_fields(value.get("response_body"))
        props = obj(value.get("request_properties")) or obj(value.get("properties"))
        user = value.get("request_user_id")
        yield {
            **{k: v for k, v in asked.items() if v is not None},
            **{k: v for k, v in answered.items() if v is not None},
            "request_id": value.get("request_id"),
            "ts": value.get("request_created_at"),
            "account_id": first(*(props.get(k) for k in ACCOUNT_PROPERTIES), user),
            "end_user_id": first(user, asked.get("end_user_id")),
            "model": first(
                value.get("request_model"),
                asked.get("model"),
                value.get("model"),
                value.get("response_model"),
            ),
            "input_tokens": first(value.get("prompt_tokens"), answered.get("input_tokens")),
            "output_tokens": first(value.get("completion_tokens"), answered.get("output_tokens")),
            "conversation_id": first(
                *(props.get(k) for k in SESSION_PROPERTIES), asked.get("conversation_id")
            ),
            "status": value.get("response_status"),
        }
