"""AWS Bedrock model invocation logs (CloudWatch Logs or S3 delivery).

Each record is one InvokeModel / Converse call (or their streaming forms) with the
request and response bodies inline. The caller is the IAM principal in `identity.arn`;
platforms that sell Bedrock to tenants tag calls through Converse `requestMetadata`,
so a tenant or account key there wins. `accountId` is the AWS account that owns the
logs (the operator itself), not the caller, and is not used as the account.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from distillguard.ingest.adapters.bodies import request_fields, response_fields
from distillguard.ingest.adapters.common import Reject, first, obj

ACCOUNT_TAGS = (
    "account_id",
    "accountId",
    "account",
    "tenant_id",
    "tenantId",
    "tenant",
    "customer_id",
    "org_id",
    "organization",
)
USER_TAGS = ("end_user_id", "user_id", "userId", "user")
SESSION_TAGS = ("session_id", "sessionId", "conversation_id", "thread_id")
OPERATIONS = {
    "InvokeModel": None,
    "InvokeModelWithResponseStream": None,
    "Converse": "chat",
    "ConverseStream": "chat",
}
ERROR_STATUS = {
    "ThrottlingException": 429,
    "ValidationException": 400,
    "AccessDeniedException": 403,
    "ModelTimeoutException": 408,
    "ServiceQuotaExceededException": 429,
    "ModelNotReadyException": 503,
}


class BedrockAdapter:
    name = "bedrock"
    table = "exchanges"

    def sniff(self, value: Any) -> bool:
        return isinstance(value, dict) and (
            value.get("schemaType") == "ModelInvocationLog"
            or {"modelId", "requestId", "operation"} <= value.keys()
        )

    def rows(self, value: Any) -> Iterator[dict[str, Any] | Reject | None]:
        inputs = obj(value.get("input"))
        outputs = obj(value.get("output"))
        asked = request_fields(inputs.get("inputBodyJson"))
        answered = response_fields(outputs.get("outputBodyJson"))
        tags = obj(value.get("requestMetadata")) or obj(
            obj(inputs.get("inputBodyJson")).get("requestMetadata")
        )
        operation = str(value.get("operation") or "")
        identity = obj(value.get("identity"))
        yield {
            **{k: v for k, v in asked.items() if v is not None},
            **{k: v for k, v in answered.items() if v is not None},
            "request_id": value.get("requestId"),
            "ts": value.get("timestamp"),
            "account_id": first(*(tags.get(k) for k in ACCOUNT_TAGS), identity.get("arn")),
            "end_user_id": first(*(tags.get(k) for k in USER_TAGS), asked.get("end_user_id")),
            "api_key_id": identity.get("arn"),
            "model": value.get("modelId"),
            "operation": first(OPERATIONS.get(operation), asked.get("operation")),
            "input_tokens": first(inputs.get("inputTokenCount"), answered.get("input_tokens")),
            "output_tokens": first(outputs.get("outputTokenCount"), answered.get("output_tokens")),
            "conversation_id": first(*(tags.get(k) for k in SESSION_TAGS)),
            "stream": True if operation.endswith("Stream") else asked.get("stream"),
            "status": _status(value.get("errorCode")),
        }


def _status(error: Any) -> int:
    if not error:
        return 200
    return ERROR_STATUS.get(str(error), 500)
