"""The gateway's application: authenticate, score, decide, forward, record.

Each request (read with size and time limits by `http.py`) is parsed as its API
(errors in that API's shape, never a stack trace), scored against the account's online
state and the batch findings, and decided by the policy. An allowed request goes to the
upstream as it came; a streamed reply is passed on event by event as it arrives, with
reasoning taken out when the decision says so. Upstream timeouts, resets and 5xx
answers become clean errors. Every decision is logged with its reason, every exchange
recorded.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import itertools
import logging
import multiprocessing
import os
import time
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess

from distillguard.gateway import api, templates
from distillguard.gateway.findings import Findings
from distillguard.gateway.http import Limits, Request, Response, Server, Truncated
from distillguard.gateway.policy import DEFAULT, Decision, Policy
from distillguard.gateway.recorder import Recorder
from distillguard.gateway.scoring import Scorer
from distillguard.gateway.spans import Spans, usage
from distillguard.gateway.state import MemoryStore, Store
from distillguard.gateway.upstream import Upstream, UpstreamError, UpstreamTimeout
from distillguard.gateway.workers import METRICS_DIR
from distillguard.privacy import Pseudonymiser

log = logging.getLogger("distillguard.gateway")
# Not forwarded: hop-by-hop headers, and accept-encoding, so replies come uncompressed
# and reasoning can be taken out of them.
HOP = {
    "host",
    "content-length",
    "connection",
    "transfer-encoding",
    "keep-alive",
    "upgrade",
    "accept-encoding",
    "expect",
    "te",
    "trailer",
    "proxy-authorization",
    "proxy-connection",
}
# Not passed back: framing, which the gateway sets itself, and what it may change.
REPLY_HOP = HOP | {"content-encoding", "date", "server"}
RESPONSE_TEXT_CAP = 65_536
REFUSALS = {"block", "step_up", "throttle"}  # answered by the gateway, never forwarded
JSON = {"Content-Type": "application/json"}
DECISION_LOG_SECONDS = 0.25
CLIENT_LEFT = 499  # recorded status of a request whose client left before the answer
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class Config:
    upstream: str
    policy: Policy = DEFAULT
    findings: str | Path | None = None
    record: str | Path | None = None
    key: bytes | None = None
    redis: str | None = None
    max_body: int = 4 * 2**20
    body_timeout: float = 10.0
    upstream_timeout: float = 120.0
    reload_every: float = 5.0
    mark: Any = None  # a callable(bytes) -> bytes, the output-watermarking hook
    # Behind a trusted proxy (or replaying recorded traffic): the client address from
    # X-Forwarded-For and the time from X-Distillguard-Timestamp. Never on an open port.
    trust_headers: bool = False
    otel_endpoint: str | None = None  # OTLP/HTTP traces URL: a GenAI span per exchange


@dataclass
class Gateway:
    config: Config
    scorer: Scorer
    recorder: Recorder | None
    spans: Spans | None = None
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.upstream = Upstream(self.config.upstream)
        self.requests = Counter(
            "distillguard_requests", "Requests by route", ["route"], registry=self.registry
        )
        self.decisions = Counter(
            "distillguard_decisions", "Decisions by action", ["action"], registry=self.registry
        )
        self.scoring = Histogram(
            "distillguard_scoring_seconds",
            "Time to score and decide a request",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05),
            registry=self.registry,
        )
        self._counted: dict[tuple[str, str], Any] = {}  # labelled counters, looked up once
        self._decided: list[str] = []
        # Request ids: this process's random prefix and a count (a uuid4 each cost more
        # than the rest of recording a row).
        self._ids = itertools.count()
        self._id_prefix = f"gw-{os.urandom(8).hex()}-"

    def count(self, counter: str, label: str) -> None:
        child = self._counted.get((counter, label))
        if child is None:
            child = self._counted[counter, label] = getattr(self, counter).labels(label)
        child.inc()

    async def handle(self, request: Request) -> Response:
        """One request's answer (see the module docstring)."""
        if request.path == "/metrics" and request.method == "GET":
            return self._metrics()
        if request.path == "/healthz" and request.method == "GET":
            return Response(200, b'{"status":"ok"}', JSON)
        kind = api.ROUTES.get(request.path)
        self.count("requests", request.path if kind else "unknown")
        if kind is None:
            return fail("openai", 404, f"Unknown route: {request.method} {request.path}")
        if request.method != "POST":
            return fail(kind, 405, f"{request.path} takes POST")
        secret = _credential(request, kind)
        if not secret:
            return fail(kind, 401, "Missing API key")
        try:
            body = orjson.loads(request.body)
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            ask = api.parse(request.path, body)
        except orjson.JSONDecodeError as exc:
            why = "The body is not valid UTF-8" if "UTF-8" in str(exc) else f"Invalid JSON: {exc}"
            return fail(kind, 400, why)
        except ValueError as exc:
            return fail(kind, 400, f"Invalid request: {exc}")
        account = _account(secret)
        started = time.perf_counter()
        decision = self.scorer.decide(
            account, ask.prompt, request.headers.get("user-agent", ""), self.address(request)
        )
        self.scoring.observe(time.perf_counter() - started)
        self.count("decisions", decision.action)
        if log.isEnabledFor(logging.INFO):
            self.log_decision(account, decision)
        if decision.action in REFUSALS:
            refusal = _refusal(kind, decision)
            self.record(request, ask, account, refusal.status, "", decision)
            return refusal
        return await self.forward(request, ask, account, decision)

    def log_decision(self, account: str, decision: Decision) -> None:
        """One JSON line per decision, written in batches a quarter of a second apart:
        a log record per request cost a fifth of the gateway's time per request."""
        if not self._decided:
            asyncio.get_running_loop().call_later(DECISION_LOG_SECONDS, self.write_decisions)
        why = {
            "ts": round(time.time(), 3),
            "account": account,
            "action": decision.action,
            "reason": decision.reason,
        }
        self._decided.append(orjson.dumps(why).decode())

    def write_decisions(self) -> None:
        lines, self._decided = self._decided, []
        if lines:
            log.info("\n".join(lines))

    def _metrics(self) -> Response:
        registry = self.registry
        if os.environ.get(METRICS_DIR):  # several workers: count them all
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        return Response(200, generate_latest(registry), {"Content-Type": "text/plain"})

    async def forward(
        self, request: Request, ask: api.Ask, account: str, decision: Decision
    ) -> Response:
        headers = {k: v for k, v in request.headers.items() if k not in HOP}
        headers["accept-encoding"] = "identity"  # replies we can read and take reasoning from
        try:
            timeout = self.config.upstream_timeout
            reply = await self.upstream.post(request.target, headers, request.body, timeout)
            if reply.status >= 500:
                await reply.read()
                failure = fail(ask.api, 502, f"The upstream answered {reply.status}")
                self.record(request, ask, account, failure.status, "", decision)
                return failure
            out = {k: v for k, v in reply.headers.items() if k not in REPLY_HOP}
            if "text/event-stream" in reply.headers.get("content-type", ""):
                out["cache-control"] = "no-cache"
                chunks = reply.body(quiet=self.config.upstream_timeout)
                events = self.stream(request, chunks, reply.status, ask, account, decision)
                return Response(reply.status, events, out)
            body = await reply.read()
        except asyncio.CancelledError:  # the client left (or the gateway is stopping)
            self.record(request, ask, account, CLIENT_LEFT, "", decision)  # still asked
            raise
        except UpstreamTimeout:
            failure = fail(ask.api, 504, "The upstream did not answer in time")
        except UpstreamError as exc:
            failure = fail(ask.api, 502, f"The upstream connection failed ({exc.why})")
        else:
            if decision.action == "withhold_reasoning" and reply.status == 200:
                body = _withheld(body)
            if decision.action == "mark":
                out["x-distillguard-mark"] = "1"
                body = self.config.mark(body) if self.config.mark else body
            text = body.decode("utf-8", "replace")
            self.record(request, ask, account, reply.status, text, decision)
            return Response(reply.status, body, out)
        self.record(request, ask, account, failure.status, "", decision)  # failed, still asked
        return failure

    async def stream(
        self,
        request: Request,
        chunks: AsyncIterator[bytes],
        status: int,
        ask: api.Ask,
        account: str,
        decision: Decision,
    ) -> AsyncIterator[bytes]:
        """A streamed reply passed on line by line, recorded when it ends (or when the
        client leaves or the upstream fails mid-stream: what was asked is still kept)."""
        withhold = decision.action == "withhold_reasoning"
        dropped: set[int] = set()
        kept: list[str] = []
        size = 0
        pending = b""
        try:
            async for chunk in chunks:
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                out = []
                for line in lines:
                    text = line.decode("utf-8", "replace") + "\n"
                    if withhold and text.startswith("data:"):
                        payload = api.stream_event_without_reasoning(text[5:].strip(), dropped)
                        if payload is None:
                            continue
                        text = f"data: {payload}\n"
                    if size < RESPONSE_TEXT_CAP:
                        kept.append(text)
                        size += len(text)
                    out.append(text)
                if out:
                    yield "".join(out).encode()
            if pending:
                kept.append(pending.decode("utf-8", "replace"))
                yield pending
        except UpstreamError:
            raise Truncated from None  # the client sees it cut; the recording keeps what came
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]
            reply = "".join(kept)[:RESPONSE_TEXT_CAP]
            self.record(request, ask, account, status, reply, decision)

    def address(self, request: Request) -> str:
        forwarded = request.headers.get("x-forwarded-for") if self.config.trust_headers else None
        return (forwarded.split(",")[0].strip() if forwarded else request.remote) or ""

    def moment(self, request: Request) -> int:
        """When the exchange happened, in microseconds since the epoch (UTC)."""
        given = (
            request.headers.get("x-distillguard-timestamp") if self.config.trust_headers else None
        )
        if given:
            try:
                when = datetime.fromisoformat(given.replace("Z", "+00:00"))
                when = when if when.tzinfo else when.replace(tzinfo=UTC)
                return (when - EPOCH) // timedelta(microseconds=1)
            except ValueError:
                pass
        return time.time_ns() // 1000

    def record(
        self,
        request: Request,
        ask: api.Ask,
        account: str,
        status: int,
        reply: str,
        decision: Decision,
    ) -> None:
        """Record a forwarded exchange (a refused one never reached the model) and emit
        the span of every decided one."""
        if self.recorder is None and self.spans is None:
            return
        row = {
            "request_id": f"{self._id_prefix}{next(self._ids)}",
            "ts": self.moment(request),
            "account_id": account,
            "model": ask.model,
            "prompt_text": ask.prompt,
            "system_text": ask.system,
            "response_text": reply[:RESPONSE_TEXT_CAP],
            "ip": self.address(request),
            "end_user_id": ask.end_user,
            "user_agent": request.headers.get("user-agent"),
            "operation": ask.operation,
            "status": status,
            "stream": ask.stream,
            "reasoning_requested": ask.reasoning,
            "max_tokens": ask.max_tokens,
            "tools_declared": ask.tools,
        }
        if self.spans is not None:
            tokens = usage(_json_or_empty(reply)) if reply and not ask.stream else (None, None)
            self.spans.emit(row, ask.api, decision, request.started_ns, tokens)
        recorder = self.recorder
        if recorder is not None and decision.action not in REFUSALS and recorder.add(row):
            self.flush_soon()

    async def reload(self) -> None:
        """Every few seconds: new findings in, the recording's buffer out. A failure
        is logged and tried again next time, never the end of the loop."""
        while True:
            await asyncio.sleep(self.config.reload_every)
            try:
                findings = self.scorer.findings
                if findings.refresh():
                    log.info("findings reloaded: %d flagged accounts", len(findings.accounts))
                if self.recorder is not None:
                    await asyncio.to_thread(self.recorder.flush)
            except Exception:
                log.exception("reloading findings or writing the recording failed")

    def flush_soon(self) -> None:
        """Write the recording in a worker thread; a failure is logged (the rows stay
        buffered for the next try)."""

        def flush() -> None:
            try:
                self.recorder.flush()  # type: ignore[union-attr]
            except Exception:
                log.exception("writing the recording failed")

        asyncio.get_running_loop().run_in_executor(None, flush)

    def close(self) -> None:
        self.write_decisions()
        self.upstream.close()
        if self.recorder is not None:
            self.recorder.flush()
        if self.spans is not None:
            self.spans.close()


def build(config: Config) -> Gateway:
    store: Store = MemoryStore()
    if config.redis:
        from distillguard.gateway.state import RedisStore

        store = RedisStore(config.redis)
    recorder = Recorder(config.record, config.key) if config.record else None
    findings = Findings(config.findings)
    findings.refresh()
    pseudonymiser = recorder.pseudonymiser if recorder else Pseudonymiser(config.key)
    spans = Spans(config.otel_endpoint, pseudonymiser) if config.otel_endpoint else None
    return Gateway(config, Scorer(config.policy, store, findings, pseudonymiser), recorder, spans)


class Running:
    """A gateway serving on a port: `async with Running(config, host, port) as running`."""

    def __init__(
        self, config: Config, host: str = "127.0.0.1", port: int = 0, reuse_port: bool = False
    ) -> None:
        self.config, self.host, self.port, self.reuse_port = config, host, port, reuse_port
        self.gateway = build(config)
        limits = Limits(max_body=config.max_body, request_seconds=config.body_timeout)
        self.server = Server(self.gateway.handle, _fail_at, limits)
        self._reload: asyncio.Task[None] | None = None
        # Template matching in its own process, when there are findings to match against.
        self.matching = None
        if config.findings:
            spawn = multiprocessing.get_context("spawn")
            self.matching = ProcessPoolExecutor(
                max_workers=1, mp_context=spawn, initializer=templates.in_background
            )
            self.gateway.scorer.matcher.executor = self.matching

    async def start(self) -> None:
        if self.matching is not None:
            self.gateway.scorer.matcher.warm()  # before listening: it takes seconds
        await self.server.start(self.host, self.port, self.reuse_port)
        self.port = self.server.port
        gc.collect()
        gc.freeze()  # what start-up made lives on: full collections need not walk it
        self._reload = asyncio.create_task(self.gateway.reload())

    async def __aenter__(self) -> Running:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop(grace=5.0)

    async def stop(self, grace: float) -> None:
        """Finish what is in flight (within `grace` seconds), flush, close."""
        await self.server.close(grace)
        if self._reload is not None:
            self._reload.cancel()
        if self.matching is not None:
            self.matching.shutdown(wait=False, cancel_futures=True)
        self.gateway.close()


def fail(kind: str, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """An error in the shape the API's clients expect."""
    return Response(
        status, orjson.dumps(api.error(kind, status, message)), {**JSON, **(headers or {})}
    )


def _fail_at(path: str, status: int, message: str) -> Response:
    return fail(api.ROUTES.get(path, "openai"), status, message)


def _account(secret: str) -> str:
    """The account behind an API key: never the key itself (nor kept in a cache)."""
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


def _refusal(kind: str, decision: Decision) -> Response:
    if decision.action == "block":
        return fail(kind, 403, "Access to this model is suspended for this account")
    if decision.action == "step_up":
        return fail(kind, 403, "Verification required: complete identity verification to continue")
    return fail(kind, 429, "Rate limited", {"Retry-After": str(decision.retry_after)})


def _credential(request: Request, kind: str) -> str | None:
    if kind == "anthropic" and request.headers.get("x-api-key"):
        return request.headers["x-api-key"]
    auth = request.headers.get("authorization", "")
    return auth[7:].strip() if auth.lower().startswith("bearer ") else None


def _withheld(body: bytes) -> bytes:
    try:
        return orjson.dumps(api.without_reasoning(orjson.loads(body)))
    except orjson.JSONDecodeError:
        return body  # not JSON: nothing we know how to take reasoning out of


def _json_or_empty(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
