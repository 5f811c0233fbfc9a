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

HIGH_WATER = 256 * 2**10  # bytes of a reply buffered before reading pauses
MAX_IDLE = 256


class UpstreamError(Exception):
    """The upstream could not be reached, or closed the connection mid-reply."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


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

    async def post(self, target: str, headers: dict[str, str], body: bytes) -> _Connection:
        """Send a request; the connection, once the reply's status and headers are in."""
        lines = [f"POST {self.prefix}{target} HTTP/1.1", f"Host: {self.authority}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        message = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        while self.idle:
            connection = self.idle.pop()
            if connection.reusable():
                try:
                    return await connection.ask(message)
                except UpstreamError:
                    if connection.answered:  # only a request nobody answered is retried
                        raise
        return await (await self._connect()).ask(message)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                lambda: _Connection(self),
                self.host,
                self.port,
                ssl=self.tls,
                server_hostname=self.host if self.tls else None,
            )
        except OSError as exc:
            raise UpstreamError(f"cannot connect ({type(exc).__name__})") from None
        return connection

    def release(self, connection: _Connection) -> None:
        if connection.reusable() and len(self.idle) < MAX_IDLE:
            self.idle.append(connection)
        else:
            connection.abort()

    def close(self) -> None:
        for connection in self.idle:
            connection.abort()
        self.idle.clear()


class _Connection(asyncio.Protocol):
    """One connection to the upstream, and the reply being read on it."""

    def __init__(self, pool: Upstream) -> None:
        self.pool = pool
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

    def reusable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    async def ask(self, message: bytes) -> _Connection:
        assert self.transport is not None
        self._reset()
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
        """The body as it arrives (TimeoutError after `quiet` seconds without a byte);
        the connection goes back to the pool at its end, closed if the reader stops
        early."""
        finished = False
        try:
            while True:
                if self.chunks:
                    chunks, self.chunks, self.buffered = self.chunks, [], 0
                    if self.transport is not None and not self.complete:
                        self.transport.resume_reading()
                    for chunk in chunks:
                        yield chunk
                elif self.complete:
                    finished = True
                    return
                else:
                    await self._wait(quiet)
        finally:
            if finished and self.keep_alive:
                self.pool.release(self)
            else:
                self.abort()

    async def _wait(self, seconds: float | None = None) -> None:
        if self.error is not None:
            raise self.error
        self.wake = asyncio.get_running_loop().create_future()
        if seconds is None:
            await self.wake
        else:
            async with asyncio.timeout(seconds):
                await self.wake
        if self.error is not None and not self.complete:
            raise self.error

    def _notify(self) -> None:
        if self.wake is not None and not self.wake.done():
            self.wake.set_result(None)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.answered = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.error = UpstreamError("malformed reply")
            self.abort()
        self._notify()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self in self.pool.idle:
            self.pool.idle.remove(self)
        eof_delimited = self.status and not (
            "content-length" in self.headers
            or "chunked" in self.headers.get("transfer-encoding", "")
        )
        if eof_delimited and not self.complete:
            self.complete = True  # a reply without a length ends when the connection does
        elif not self.complete:
            self.error = UpstreamError("connection reset" if self.answered else "closed, no reply")
        self._notify()

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()
