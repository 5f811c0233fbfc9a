"""Each exchange through the gateway as an OpenTelemetry span, in the GenAI semantic
conventions, sent over OTLP/HTTP to the collector a platform team already runs.

Optional (`pip install distillguard[otel]`, `gateway --otel-endpoint URL`): the Parquet
recording is the record detection reads; spans put the gateway's decisions beside the
rest of a provider's traces. A span carries what the recording carries, pseudonymised
the same way (the account as its keyed token, the address as its network prefix) and
never the prompt or the reply: collectors are read by more people than logs are. Without
a key (`--hmac-key-file`) the end user and the network are left out.
`distillguard ingest` reads these spans back (the OTLP/JSON a collector writes).
"""

from __future__ import annotations

from typing import Any

from distillguard.errors import UsageError
from distillguard.gateway.policy import Decision
from distillguard.privacy import Pseudonymiser

PROVIDERS = {"openai": "openai", "anthropic": "anthropic"}  # API shape -> gen_ai.provider.name


def require() -> None:
    """A usage error naming the extra to install when OpenTelemetry is missing."""
    try:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        raise UsageError(
            "--otel-endpoint needs OpenTelemetry: pip install 'distillguard[otel]'"
        ) from None


class Spans:
    def __init__(self, endpoint: str, pseudonymiser: Pseudonymiser) -> None:
        require()
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        self.provider = TracerProvider(
            resource=Resource.create({"service.name": "distillguard-gateway"})
        )
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        self.tracer = self.provider.get_tracer("distillguard.gateway")
        self.pseudonymiser = pseudonymiser

    def emit(
        self,
        exchange: dict[str, Any],
        api_kind: str,
        decision: Decision,
        started_ns: int,
        usage: tuple[int | None, int | None] = (None, None),
    ) -> None:
        """One span for one exchange, from its arrival to its answer (now)."""
        end_user = exchange.get("end_user_id")
        # Without a key, tokens would be the values themselves: a span then names no end
        # user and no network (the account stays, a hash of its API key).
        keyed = self.pseudonymiser.enabled
        address = self.pseudonymiser.prefix(exchange.get("ip") or "") if keyed else None
        operation = "chat"  # chat completions, responses and messages are all chat turns
        attributes = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": PROVIDERS.get(api_kind, api_kind),
            "gen_ai.request.model": exchange.get("model"),
            "gen_ai.request.max_tokens": exchange.get("max_tokens"),
            "gen_ai.request.stream": exchange.get("stream"),
            "gen_ai.usage.input_tokens": usage[0],
            "gen_ai.usage.output_tokens": usage[1],
            "http.response.status_code": exchange.get("status"),
            "client.address": address,
            "user_agent.original": exchange.get("user_agent"),
            "account.id": self.pseudonymiser.token(exchange["account_id"]),
            "enduser.id": self.pseudonymiser.token(end_user) if end_user and keyed else None,
            "distillguard.decision": decision.action,
            "distillguard.reason": decision.reason,
            "distillguard.score": decision.score,
            "distillguard.reasoning_requested": exchange.get("reasoning_requested"),
            "distillguard.tools_declared": exchange.get("tools_declared"),
        }
        span = self.tracer.start_span(
            f"{operation} {exchange.get('model') or ''}".strip(),
            start_time=started_ns,
            attributes={k: v for k, v in attributes.items() if v is not None},
        )
        span.end()

    def close(self) -> None:
        self.provider.shutdown()


def usage(reply: dict[str, Any]) -> tuple[int | None, int | None]:
    """Input and output tokens of a reply, in any of the three APIs' shapes."""
    counts = reply.get("usage") if isinstance(reply, dict) else None
    if not isinstance(counts, dict):
        return None, None
    given = counts.get("prompt_tokens", counts.get("input_tokens"))
    taken = counts.get("completion_tokens", counts.get("output_tokens"))
    return (
        given if isinstance(given, int) else None,
        taken if isinstance(taken, int) else None,
    )
