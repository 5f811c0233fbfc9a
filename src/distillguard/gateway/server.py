"""The gateway's HTTP side (aiohttp): authenticate, score, decide, forward, record.

Each request is read with a size and time limit, parsed as its API (errors in that
API's shape, never a stack trace), scored against the account's online state and the
batch findings, and decided by the policy. An allowed request goes to the upstream as
it came; a streamed reply is passed on event by event as it arrives, with reasoning
taken out when the decision says so. Upstream timeouts, resets and 5xx answers become
clean errors. Every decision is logged with its reason, every exchange recorded.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess

from distillguard.gateway import api
from distillguard.gateway.findings import Findings
from distillguard.gateway.policy import DEFAULT, Decision, Policy
from distillguard.gateway.recorder import Recorder
from distillguard.gateway.scoring import Scorer
from distillguard.gateway.spans import Spans, usage
from distillguard.gateway.state import MemoryStore, Store
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
}
RESPONSE_TEXT_CAP = 65_536
REFUSALS = {"block", "step_up", "throttle"}  # answered by the gateway, never forwarded
STARTED = web.RequestKey("started_ns", int)


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


GATEWAY = web.AppKey("gateway", Gateway)
SESSION = web.AppKey("session", aiohttp.ClientSession)


def build(config: Config) -> web.Application:
    store: Store = MemoryStore()
    if config.redis:
        from distillguard.gateway.state import RedisStore

        store = RedisStore(config.redis)
    recorder = Recorder(config.record, config.key) if config.record else None
    findings = Findings(config.findings)
    findings.refresh()
    pseudonymiser = recorder.pseudonymiser if recorder else Pseudonymiser(config.key)
    spans = Spans(config.otel_endpoint, pseudonymiser) if config.otel_endpoint else None
    gateway = Gateway(
        config, Scorer(config.policy, store, findings, pseudonymiser), recorder, spans
    )
    app = web.Application(client_max_size=config.max_body)
    app[GATEWAY] = gateway
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _health)
    for path in api.ROUTES:  # plain routes are found by a dictionary lookup
        app.router.add_route("*", path, _handle)
    app.router.add_route("*", "/{tail:.*}", _handle)
    app.cleanup_ctx.append(_background)
    return app


async def _background(app: web.Application) -> Any:
    gateway: Gateway = app[GATEWAY]
    app[SESSION] = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=gateway.config.upstream_timeout),
        connector=aiohttp.TCPConnector(limit=0),  # the upstream sets the concurrency
        cookie_jar=aiohttp.DummyCookieJar(),  # clients' cookies are theirs, not ours
    )

    async def reload() -> None:
        while True:
            await asyncio.sleep(gateway.config.reload_every)
            findings = gateway.scorer.findings
            if findings.refresh():
                log.info("findings reloaded: %d flagged accounts", len(findings.accounts))
            if gateway.recorder is not None:
                await asyncio.to_thread(gateway.recorder.flush)

    task = asyncio.create_task(reload())
    yield
    task.cancel()
    await app[SESSION].close()
    if gateway.recorder is not None:
        gateway.recorder.flush()
    if gateway.spans is not None:
        gateway.spans.close()


async def _metrics(request: web.Request) -> web.Response:
    gateway: Gateway = request.app[GATEWAY]
    registry = gateway.registry
    if os.environ.get(METRICS_DIR):  # several workers: count them all
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    return web.Response(body=generate_latest(registry), content_type="text/plain")


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def _fail(
    kind: str, status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(api.error(kind, status, message), status=status, headers=headers)


async def _handle(request: web.Request) -> web.StreamResponse:
    gateway: Gateway = request.app[GATEWAY]
    request[STARTED] = time.time_ns()
    kind = api.ROUTES.get(request.path)
    gateway.requests.labels(request.path if kind else "unknown").inc()
    if kind is None:
        return _fail("openai", 404, f"Unknown route: {request.method} {request.path}")
    if request.method != "POST":
        return _fail(kind, 405, f"{request.path} takes POST")
    secret = _credential(request, kind)
    if not secret:
        return _fail(kind, 401, "Missing API key")
    try:
        async with asyncio.timeout(gateway.config.body_timeout):  # no task per request
            raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _fail(kind, 413, f"Request body over {gateway.config.max_body} bytes")
    except TimeoutError:
        return _fail(kind, 408, "Request body not received in time")
    try:
        body = orjson.loads(raw)
        if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object")
        ask = api.parse(request.path, body)
    except orjson.JSONDecodeError as exc:
        why = "The body is not valid UTF-8" if "UTF-8" in str(exc) else f"Invalid JSON: {exc}"
        return _fail(kind, 400, why)
    except ValueError as exc:
        return _fail(kind, 400, f"Invalid request: {exc}")
    account = _account(secret)
    started = time.perf_counter()
    decision = gateway.scorer.decide(
        account, ask.prompt, request.headers.get("User-Agent", ""), _address(gateway, request)
    )
    gateway.scoring.observe(time.perf_counter() - started)
    gateway.decisions.labels(decision.action).inc()
    log.info(json.dumps({"account": account, "action": decision.action, "reason": decision.reason}))
    if decision.action in REFUSALS:
        refusal = _refusal(kind, decision)
        _record(gateway, request, ask, account, refusal.status, "", decision)
        return refusal
    return await _forward(gateway, request, raw, ask, account, decision)


def _account(secret: str) -> str:
    """The account behind an API key: never the key itself (nor kept in a cache)."""
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


def _refusal(kind: str, decision: Decision) -> web.Response:
    if decision.action == "block":
        return _fail(kind, 403, "Access to this model is suspended for this account")
    if decision.action == "step_up":
        return _fail(kind, 403, "Verification required: complete identity verification to continue")
    return _fail(kind, 429, "Rate limited", {"Retry-After": str(decision.retry_after)})


def _address(gateway: Gateway, request: web.Request) -> str:
    forwarded = request.headers.get("X-Forwarded-For") if gateway.config.trust_headers else None
    return (forwarded.split(",")[0].strip() if forwarded else request.remote) or ""


def _moment(gateway: Gateway, request: web.Request) -> datetime:
    given = (
        request.headers.get("X-Distillguard-Timestamp") if gateway.config.trust_headers else None
    )
    if given:
        try:
            return datetime.fromisoformat(given.replace("Z", "+00:00"))
        except ValueError:
            pass
    return datetime.now(UTC)


def _credential(request: web.Request, kind: str) -> str | None:
    if kind == "anthropic" and request.headers.get("x-api-key"):
        return request.headers["x-api-key"]
    auth = request.headers.get("Authorization", "")
    return auth[7:].strip() if auth.lower().startswith("bearer ") else None


async def _forward(
    gateway: Gateway,
    request: web.Request,
    raw: bytes,
    ask: api.Ask,
    account: str,
    decision: Decision,
) -> web.StreamResponse:
    session: aiohttp.ClientSession = request.app[SESSION]
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
    url = gateway.config.upstream.rstrip("/") + request.path
    withhold = decision.action == "withhold_reasoning"
    try:
        async with session.post(url, data=raw, headers=headers) as upstream:
            if upstream.status >= 500:
                await upstream.read()
                failure = _fail(ask.api, 502, f"The upstream answered {upstream.status}")
                _record(gateway, request, ask, account, failure.status, "", decision)
                return failure
            if "text/event-stream" in upstream.headers.get("Content-Type", ""):
                return await _stream(gateway, request, upstream, ask, account, decision)
            body = await upstream.read()
            if withhold and upstream.status == 200:
                body = _withheld(body)
            out_headers = {"Content-Type": upstream.headers.get("Content-Type", "application/json")}
            if decision.action == "mark":
                out_headers["X-Distillguard-Mark"] = "1"
                body = gateway.config.mark(body) if gateway.config.mark else body
            reply = body.decode("utf-8", "replace")
            _record(gateway, request, ask, account, upstream.status, reply, decision)
            return web.Response(body=body, status=upstream.status, headers=out_headers)
    except TimeoutError:
        failure = _fail(ask.api, 504, "The upstream did not answer in time")
    except aiohttp.ClientError as exc:
        failure = _fail(ask.api, 502, f"The upstream connection failed ({type(exc).__name__})")
    _record(gateway, request, ask, account, failure.status, "", decision)  # failed, still asked
    return failure


def _withheld(body: bytes) -> bytes:
    try:
        return json.dumps(api.without_reasoning(json.loads(body))).encode()
    except ValueError:
        return body  # not JSON: nothing we know how to take reasoning out of


async def _stream(
    gateway: Gateway,
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    ask: api.Ask,
    account: str,
    decision: Decision,
) -> web.StreamResponse:
    withhold = decision.action == "withhold_reasoning"
    response = web.StreamResponse(
        status=upstream.status,
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
    )
    await response.prepare(request)
    dropped: set[int] = set()
    kept: list[str] = []
    size = 0
    async for line in upstream.content:
        text = line.decode("utf-8", "replace")
        if withhold and text.startswith("data:"):
            payload = api.stream_event_without_reasoning(text[5:].strip(), dropped)
            if payload is None:
                continue
            text = f"data: {payload}\n"
        if size < RESPONSE_TEXT_CAP:
            kept.append(text)
            size += len(text)
        await response.write(text.encode())
    await response.write_eof()
    reply = "".join(kept)[:RESPONSE_TEXT_CAP]
    _record(gateway, request, ask, account, upstream.status, reply, decision)
    return response


def _record(
    gateway: Gateway,
    request: web.Request,
    ask: api.Ask,
    account: str,
    status: int,
    reply: str,
    decision: Decision,
) -> None:
    """Record a forwarded exchange (a refused one never reached the model) and emit
    the span of every decided one."""
    if gateway.recorder is None and gateway.spans is None:
        return
    row = {
        "request_id": f"gw-{uuid.uuid4().hex}",
        "ts": _moment(gateway, request),
        "account_id": account,
        "model": ask.model,
        "prompt_text": ask.prompt,
        "system_text": ask.system,
        "response_text": reply[:RESPONSE_TEXT_CAP],
        "ip": _address(gateway, request),
        "end_user_id": ask.end_user,
        "user_agent": request.headers.get("User-Agent"),
        "operation": ask.operation,
        "status": status,
        "stream": ask.stream,
        "reasoning_requested": ask.reasoning,
        "max_tokens": ask.max_tokens,
        "tools_declared": ask.tools,
    }
    if gateway.spans is not None:
        tokens = usage(_json_or_empty(reply)) if reply and not ask.stream else (None, None)
        gateway.spans.emit(row, ask.api, decision, request[STARTED], tokens)
    recorder = gateway.recorder
    if recorder is not None and decision.action not in REFUSALS and recorder.add(row):
        asyncio.get_running_loop().run_in_executor(None, recorder.flush)


def _json_or_empty(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
