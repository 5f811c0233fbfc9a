"""The gateway's HTTP/1.1 server: asyncio protocols and httptools (llhttp, Node's parser).

Why not a framework: at 1,000 requests a second on two cores the gateway must leave
room for its own work, and aiohttp's server and client together cost 0.65 ms of CPU
per forwarded request here; the whole gateway on this module and `upstream.py` costs
about 0.4 ms (docs/gateway.md, "Speed"). It speaks what a model API gateway needs: keep-alive,
pipelined requests answered in order, Content-Length and chunked bodies, replies
streamed with flow control, and the limits that keep a slow or hostile client from
holding the gateway: head size, body size, time to send a request, idle keep-alive.

The application is one coroutine, `handler(Request) -> Response`; a Response's body is
bytes or an async iterator of chunks (sent chunked as they come). Errors this module
finds itself (a body too large, a request too slow) are shaped by `fail(path, status,
message)`, so each API's clients get errors in the form they expect.
"""

from __future__ import annotations

import asyncio
import collections
import http
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Protocol, TypeVar

import httptools

log = logging.getLogger("distillguard.gateway")
SWEEP_SECONDS = 0.25


@dataclass(slots=True)
class Request:
    method: str
    target: str  # path and query, as sent
    path: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    remote: str
    started_ns: int
    keep_alive: bool = True


@dataclass(slots=True)
class Response:
    status: int
    body: bytes | AsyncIterator[bytes] = b""
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Awaitable[Response]]


class Truncated(Exception):
    """Raised by a reply's body iterator to end it without its terminating chunk (the
    upstream failed mid-stream): the connection is closed and the client sees the
    reply cut short, not a complete one."""


Fail = Callable[[str, int, str], Response]


@dataclass(frozen=True)
class Limits:
    max_body: int = 4 * 2**20
    max_head: int = 64 * 2**10
    request_seconds: float = 10.0  # from a request's first byte to its last
    idle_seconds: float = 75.0  # a keep-alive connection with nothing asked
    send_seconds: float = 60.0  # a client not reading what it is sent
    queued: int = 16  # pipelined requests read ahead before reading pauses


class Server:
    """Serves `handler` on a port until closed."""

    def __init__(self, handler: Handler, fail: Fail, limits: Limits = Limits()) -> None:
        self.handler, self.fail, self.limits = handler, fail, limits
        self.connections: set[_Connection] = set()
        self._server: asyncio.base_events.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int, reuse_port: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), host, port, reuse_port=reuse_port or None, backlog=2048
        )
        overdue = sweep(SWEEP_SECONDS, lambda: self.connections, _Connection.expire)
        self._sweeper = loop.create_task(overdue)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self, grace: float) -> None:
        """Stop accepting, let requests in flight finish within `grace` seconds, close."""
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        deadline = time.monotonic() + grace
        while any(c.busy for c in self.connections) and time.monotonic() < deadline:
            for connection in [c for c in self.connections if not c.busy]:
                connection.close()
            await asyncio.sleep(0.05)
        left = [c.task for c in self.connections if c.task is not None]
        for task in left:  # past the grace: cancelled, and what they asked still recorded
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)
        for connection in list(self.connections):
            connection.close()


class _Connection(asyncio.Protocol):
    """One client connection: parses requests, answers them one at a time, in order."""

    def __init__(self, server: Server) -> None:
        self.server, self.limits = server, server.limits
        self.loop = asyncio.get_running_loop()  # asked once: each asking is a getpid()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.queue: collections.deque[Request] = collections.deque()
        self.task: asyncio.Task[None] | None = None
        self.deadline = float("inf")  # see _arm
        self.on_expiry: tuple[int, str] | None = None
        self.writable: asyncio.Future[None] | None = None
        self.remote = ""
        self.closed = self.paused = False
        # A refused request closes the connection: its problem is never reset (a
        # pipelined request after it must not be answered in its place).
        self.problem: tuple[int, str] | None = None
        self._fresh()

    @property
    def busy(self) -> bool:
        return self.task is not None or bool(self.queue)

    def _fresh(self) -> None:
        self.url = b""
        self.headers: dict[str, str] = {}
        self.chunks: list[bytes] = []
        self.head_size = self.body_size = 0
        self.in_head = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.remote = peer[0] if isinstance(peer, tuple) else ""
        self.server.connections.add(self)
        self._arm(self.limits.idle_seconds, None)

    def data_received(self, data: bytes) -> None:
        if self.closed or self.problem:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.problem = (400, "Protocol upgrades are not supported")
        except httptools.HttpParserError:
            self.problem = self.problem or (400, "Malformed HTTP request")
        if self.in_head:  # a head still coming: llhttp holds its partial lines
            self._grow_head(len(data))
        if self.problem is not None and self.task is None:
            self._refuse()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        if self.task is not None:  # the client left: stop asking the upstream for it
            self.task.cancel()
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)

    def pause_writing(self) -> None:
        self.writable = self.loop.create_future()

    def resume_writing(self) -> None:
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)
        self.writable = None

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._fresh()
        self.in_head = True
        self._arm(self.limits.request_seconds, (408, "Request not received in time"))

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._grow_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._grow_head(len(name) + len(value))
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def _grow_head(self, size: int) -> None:
        """Count a head's bytes (about: partial lines may count twice); over the limit,
        the request is refused before it is answered."""
        self.head_size += size
        if self.head_size > self.limits.max_head and self.problem is None:
            self.problem = (431, f"Request head over {self.limits.max_head} bytes")

    def on_headers_complete(self) -> None:
        self.in_head = False
        length = self.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.limits.max_body:
            self.problem = (413, f"Request body over {self.limits.max_body} bytes")
        elif self.headers.get("expect", "").lower() == "100-continue" and self.task is None:
            self._write(b"HTTP/1.1 100 Continue\r\n\r\n")  # (mid-reply it would corrupt it)

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        if self.body_size > self.limits.max_body:
            self.problem = (413, f"Request body over {self.limits.max_body} bytes")
        elif self.problem is None:
            self.chunks.append(body)

    def on_message_complete(self) -> None:
        if self.problem is not None:
            return
        self._arm(None, None)
        target = self.url.decode("latin-1")
        request = Request(
            method=self.parser.get_method().decode("latin-1"),
            target=target,
            path=target.partition("?")[0],
            headers=self.headers,
            body=b"".join(self.chunks),
            remote=self.remote,
            started_ns=time.time_ns(),
            keep_alive=self.parser.should_keep_alive(),
        )
        self.queue.append(request)
        if len(self.queue) >= self.limits.queued and self.transport is not None:
            self.transport.pause_reading()
            self.paused = True
        if self.task is None:
            self.task = self.loop.create_task(self._serve())

    # answering

    async def _serve(self) -> None:
        try:
            await self._answer_queued()
        except asyncio.CancelledError:
            self.close()  # the client left, or the server is stopping
        finally:
            self.task = None
        if self.problem is not None:
            self._refuse()
        elif not self.closed and not self.in_head:
            self._arm(self.limits.idle_seconds, None)

    async def _answer_queued(self) -> None:
        while self.queue and not self.closed:
            request = self.queue.popleft()
            try:
                response = await self.server.handler(request)
            except Exception:
                log.exception("gateway error answering %s %s", request.method, request.path)
                response = self.server.fail(request.path, 500, "The gateway failed")
            keep_alive = request.keep_alive and self.problem is None
            try:
                await self._send(response, keep_alive, request.method == "HEAD")
            except Truncated:
                self.close()  # no terminating chunk: the client sees the reply cut short
            except Exception:  # a reply that failed half-way cannot be mended: close
                log.exception("gateway error sending to %s %s", request.method, request.path)
                self.close()
            if not request.keep_alive:
                self.close()
            elif (
                self.paused and self.transport is not None and len(self.queue) < self.limits.queued
            ):
                self.transport.resume_reading()  # only when paused: each call is a syscall
                self.paused = False

    async def _send(self, response: Response, keep_alive: bool, head_only: bool) -> None:
        body = response.body
        if isinstance(body, bytes | bytearray):
            top = head(response.status, response.headers, len(body), keep_alive)
            self._write(top if head_only else top + body)
            await self._drain()
            return
        self._write(head(response.status, response.headers, None, keep_alive))
        try:
            async for chunk in body:
                if self.closed:
                    break
                if chunk:
                    self._write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                    await self._drain()
            self._write(b"0\r\n\r\n")
        finally:
            await body.aclose()  # type: ignore[attr-defined]

    async def _drain(self) -> None:
        """Wait while the client is not reading what was written, at most
        `send_seconds` (then the connection is cut): a client that stops reading
        holds neither memory nor the upstream for long."""
        if self.writable is None:
            return
        self._arm(self.limits.send_seconds, None)
        await self.writable
        self._arm(None, None)

    def _write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def _refuse(self) -> None:
        """Answer a request this module refused, and close: the rest of it is unread."""
        status, message = self.problem or (400, "Bad request")
        path = self.url.decode("latin-1").partition("?")[0]
        response = self.server.fail(path, status, message)
        assert isinstance(response.body, bytes)
        self._write(head(status, response.headers, len(response.body), False) + response.body)
        self.close()

    def _arm(self, seconds: float | None, problem: tuple[int, str] | None) -> None:
        """Set the connection's one deadline (none while a request is answered): past
        it, the server's sweep refuses with `problem` or, on an idle connection, closes."""
        self.on_expiry = problem
        if seconds is None:
            self.deadline = float("inf")
        else:
            self.deadline = self.loop.time() + seconds

    def expire(self) -> None:
        self.deadline = float("inf")
        problem = self.on_expiry
        if problem is None:
            self.close(abort=True)  # idle, or not reading: nothing more will be read
            return
        self.problem = problem  # a request being answered first finishes (see _serve)
        if self.task is None:
            self._refuse()

    def close(self, abort: bool = False) -> None:
        """Close after what was written is sent, or at once (`abort`)."""
        if not self.closed and self.transport is not None:
            self.closed = True
            if abort:
                self.transport.abort()
            else:
                self.transport.close()
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)


class _Timed(Protocol):
    deadline: float  # the event loop's time


T = TypeVar("T", bound=_Timed)


async def sweep(
    every: float, items: Callable[[], Iterable[T]], overdue: Callable[[T], None]
) -> None:
    """Every `every` seconds, `overdue(item)` for each item past its deadline: one task
    for all connections, cheaper than a timer set and cancelled for every request."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(every)
        now = loop.time()
        for item in [i for i in items() if i.deadline < now]:
            overdue(item)


def head(status: int, headers: dict[str, str], length: int | None, keep_alive: bool) -> bytes:
    """A response's status line and headers; chunked when the length is not known."""
    lines = [f"HTTP/1.1 {status} {_reason(status)}", f"Date: {_date()}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(
        f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    )
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


_REASONS = {s.value: s.phrase for s in http.HTTPStatus}


def _reason(status: int) -> str:
    return _REASONS.get(status, "")


_dates: dict[int, str] = {}


def _date() -> str:
    """The Date header, formatted once a second."""
    now = int(time.time())
    text = _dates.get(now)
    if text is None:
        _dates.clear()
        text = _dates[now] = formatdate(now, usegmt=True)
    return text
