"""The gateway's client to its upstream: a keep-alive pool of HTTP/1.1 connections.

Lean for the reason `http.py` is (httptools parses the replies). A reply's body is
read whole or chunk by chunk as it arrives (a streamed reply); while the gateway's
client reads more slowly than the upstream writes, reading from the upstream pauses,
so a slow client never makes the gateway buffer a whole reply. A connection returns
to the pool only when its reply has been read to the end; a pooled connection that
the upstream closed meanwhile is retried once on a new one, before any reply byte.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httptools

from distillguard.gateway.http import sweep

HIGH_WATER = 256 * 2**10  # bytes of a reply buffered before reading pauses
MAX_IDLE = 256
SWEEP_SECONDS = 0.1


class UpstreamError(Exception):
    """The upstream could not be reached, or closed the connection mid-reply."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer, or went quiet mid-reply, for too long."""


class Upstream:
    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.authority = parts.netloc.rpartition("@")[2]
        self.prefix = parts.path.rstrip("/")
        self.tls = ssl.create_default_context() if parts.scheme == "https" else None
        self.idle: list[_Connection] = []
        self.busy: set[_Connection] = set()
        self._sweeper: asyncio.Task[None] | None = None

    async def post(
        self, target: str, headers: dict[str, str], body: bytes, timeout: float
    ) -> _Connection:
        """Send a request; the connection, once the reply's status and headers are in.
        UpstreamTimeout if they take more than `timeout` seconds, or the body does."""
        if self._sweeper is None:
            overdue = sweep(SWEEP_SECONDS, lambda: self.busy, _timed_out)
            self._sweeper = asyncio.get_running_loop().create_task(overdue)
        lines = [f"POST {self.prefix}{target} HTTP/1.1", f"Host: {self.authority}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        message = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        while self.idle:
            connection = self.idle.pop()
            if connection.reusable():
                try:
                    return await connection.ask(message, timeout)
                except UpstreamTimeout:
                    raise  # it may be generating: never sent twice
                except UpstreamError:
                    if connection.answered:
                        raise
                    break  # closed before any reply byte: retried once, on a new connection
        return await (await self._connect(timeout)).ask(message, timeout)

    async def _connect(self, timeout: float) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):  # a new connection: rare, a timer is fine
                _, connection = await loop.create_connection(
                    lambda: _Connection(self),
                    self.host,
                    self.port,
                    ssl=self.tls,
                    server_hostname=self.host if self.tls else None,
                )
        except TimeoutError:
            raise UpstreamTimeout("cannot connect in time") from None
        except OSError as exc:
            raise UpstreamError(f"cannot connect ({type(exc).__name__})") from None
        return connection

    def release(self, connection: _Connection) -> None:
        self.busy.discard(connection)
        connection.resume()  # a long reply may have paused it in the turn it completed
        if connection.reusable() and len(self.idle) < MAX_IDLE:
            self.idle.append(connection)
        else:
            connection.abort()

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for connection in self.idle:
            connection.abort()
        self.idle.clear()


def _timed_out(connection: _Connection) -> None:
    connection.fail(UpstreamTimeout("timed out"))


class _Connection(asyncio.Protocol):
    """One connection to the upstream, and the reply being read on it."""

    def __init__(self, pool: Upstream) -> None:
        self.pool = pool
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.answered = self.complete = self.keep_alive = False
        self.error: UpstreamError | None = None
        self.wake: asyncio.Future[None] | None = None
        self.deadline = self.due = float("inf")  # due: the whole request's deadline
        self.quiet: float | None = None
        self.paused = False

    def reusable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    async def ask(self, message: bytes, timeout: float) -> _Connection:
        assert self.transport is not None
        self._reset()
        self.deadline = self.due = self.loop.time() + timeout
        self.pool.busy.add(self)
        self.transport.write(message)
        try:
            while self.status == 0:
                await self._wait()
        except BaseException:
            self.abort()
            raise
        return self

    async def read(self) -> bytes:
        """The whole body; the connection goes back to the pool."""
        if self.complete and self.error is None:  # a short reply: all in already
            body, self.chunks = b"".join(self.chunks), []
            if self.keep_alive:
                self.pool.release(self)
            else:
                self.abort()
            return body
        return b"".join([chunk async for chunk in self.body()])

    async def body(self, quiet: float | None = None) -> AsyncIterator[bytes]:
        """The body as it arrives (UpstreamTimeout after `quiet` seconds without a byte,
        rather than the request's whole timeout: a long generation keeps streaming);
        the connection goes back to the pool at its end, closed if the reader stops
        early."""
        finished = False
        if quiet is not None:
            self.quiet = quiet
            self.deadline = self.loop.time() + quiet
        try:
            while True:
                if self.chunks:
                    chunks, self.chunks, self.buffered = self.chunks, [], 0
                    self.resume()
                    for chunk in chunks:
                        yield chunk
                elif self.complete:
                    finished = True
                    return
                else:
                    await self._wait()
        finally:
            if finished and self.keep_alive:
                self.pool.release(self)
            else:
                self.abort()

    async def _wait(self) -> None:
        if self.error is not None:
            raise self.error
        self.wake = self.loop.create_future()
        await self.wake
        if self.error is not None and not self.complete:
            raise self.error

    def _notify(self) -> None:
        if self.wake is not None and not self.wake.done():
            self.wake.set_result(None)

    def resume(self) -> None:
        """Read again after a pause for a slow reader; the deadline counts again (the
        upstream was not quiet: our reader was slow)."""
        if self.paused and self.transport is not None:
            self.transport.resume_reading()
            self.paused = False
            self.deadline = self.due if self.quiet is None else self.loop.time() + self.quiet

    def fail(self, error: UpstreamError) -> None:
        if self.error is None:
            self.error = error
        self.abort()
        self._notify()

    def abort(self) -> None:
        self.closed = True
        self.pool.busy.discard(self)
        if self.transport is not None:
            self.transport.abort()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.answered = True
        if self.quiet is not None:
            self.deadline = self.loop.time() + self.quiet
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.fail(UpstreamError("malformed reply"))
        self._notify()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.busy.discard(self)
        if self in self.pool.idle:
            self.pool.idle.remove(self)
        eof_delimited = self.status and not (
            "content-length" in self.headers
            or "chunked" in self.headers.get("transfer-encoding", "")
        )
        if eof_delimited and not self.complete:
            self.complete = True  # a reply without a length ends when the connection does
        elif not self.complete and self.error is None:
            self.error = UpstreamError("connection reset" if self.answered else "closed, no reply")
        self._notify()

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        code = self.parser.get_status_code()
        if code >= 200:  # 1xx (early hints) are informational: the reply follows
            self.status = code

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and self.transport is not None and not self.paused:
            self.transport.pause_reading()
            self.paused = True
            self.deadline = float("inf")  # our reader is slow, not the upstream

    def on_message_complete(self) -> None:
        if self.status == 0:  # the end of an informational reply
            self.headers = {}
            return
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()
