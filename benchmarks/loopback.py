"""Minimal HTTP/1.1 on loopback for the gateway benchmarks: a fake upstream and an
open-loop load generator, both raw asyncio protocols on uvloop.

Both stand at the gateway's edges and share its two cores, so they must cost as little
as possible: a general-purpose HTTP stack on either side would take the CPU the gateway
is being measured on. Each speaks just enough HTTP/1.1 for this: keep-alive
connections, bodies with a Content-Length, no chunking, no pipelining.

    .venv/bin/python benchmarks/loopback.py upstream PORT   # the fake upstream
"""

from __future__ import annotations

import asyncio
import sys
import time

import numpy as np
import uvloop

REPLY_BODY = b'{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]}'  # noqa: E501
REPLY = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    b"Content-Length: " + str(len(REPLY_BODY)).encode() + b"\r\n\r\n" + REPLY_BODY
)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


class _Messages:
    """Splits a byte stream into HTTP messages (head and Content-Length body)."""

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        self.buffer += data
        heads = []
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return heads
            head = self.buffer[:end]
            total = end + 4 + _content_length(head)
            if len(self.buffer) < total:
                return heads
            heads.append(head)
            self.buffer = self.buffer[total:]


class _Upstream(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.messages = _Messages()

    def data_received(self, data: bytes) -> None:
        for _ in self.messages.feed(data):
            self.transport.write(REPLY)  # type: ignore[attr-defined]


async def serve(port: int) -> None:
    """Answer every request on 127.0.0.1:port at once with a small chat completion."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Upstream, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


class _Client(asyncio.Protocol):
    """One keep-alive connection of the generator: one request in flight at a time, its
    latency counted from the time it was scheduled for."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.messages = _Messages()
        self.transport: asyncio.Transport | None = None
        self.scheduled: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, scheduled: float) -> None:
        assert self.transport is not None
        self.scheduled = scheduled
        run = self.run
        self.transport.write(run.messages[run.sent % len(run.messages)])
        run.sent += 1

    def data_received(self, data: bytes) -> None:
        for head in self.messages.feed(data):
            self._done(int(head.split(b" ", 2)[1]))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._done(0)

    def _done(self, status: int) -> None:
        if self.scheduled is None:
            return
        self.run.finished(self, time.perf_counter() - self.scheduled, status)
        self.scheduled = None


class _Run:
    """The generator's bookkeeping: idle connections, latencies, errors, in flight."""

    def __init__(self, port: int, messages: list[bytes]) -> None:
        self.port, self.messages = port, messages
        self.sent = 0
        self.idle: list[_Client] = []
        self.latencies: list[float] = []
        self.errors = self.in_flight = self.opened = 0
        self.drained: asyncio.Future[None] | None = None

    def send(self, scheduled: float) -> None:
        """Send now on an idle connection, or on a new one once it is open."""
        self.in_flight += 1
        while self.idle:
            client = self.idle.pop()
            if client.transport is not None:
                client.send(scheduled)
                return
        asyncio.get_running_loop().create_task(self._open(scheduled))

    async def _open(self, scheduled: float) -> None:
        self.opened += 1
        loop = asyncio.get_running_loop()
        try:
            _, client = await loop.create_connection(lambda: _Client(self), "127.0.0.1", self.port)
        except OSError:
            self.finished(None, time.perf_counter() - scheduled, 0)
            return
        client.send(scheduled)

    def finished(self, client: _Client | None, latency: float, status: int) -> None:
        self.in_flight -= 1
        self.latencies.append(latency)
        self.errors += status != 200
        if client is not None and client.transport is not None:
            self.idle.append(client)
        if self.in_flight == 0 and self.drained is not None and not self.drained.done():
            self.drained.set_result(None)


def request(path: str, port: int, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def load(port: int, message: bytes | list[bytes], rate: int, seconds: float) -> dict:
    """Send `message` (or the messages in turn) at `rate` a second for `seconds`, each
    at its scheduled time whatever earlier ones are doing (open loop: a slow server
    cannot hide its queue); latency runs from the scheduled send. Sends are made just
    in time by one loop, not by a task each created up front: tens of thousands of
    waiting tasks made the generator itself late (a 159 ms p99 straight to the
    upstream over 15 s)."""
    run = _Run(port, message if isinstance(message, list) else [message])
    await _schedule(run, rate, 1.0)  # warm up connections and caches
    run.latencies.clear()
    run.errors = run.opened = 0
    await _schedule(run, rate, seconds)
    values = np.array(run.latencies) * 1000
    return {
        "p50": float(np.percentile(values, 50)),
        "p99": float(np.percentile(values, 99)),
        "errors": run.errors,
        "connections": run.opened,
    }


async def _schedule(run: _Run, rate: int, seconds: float) -> None:
    start, total, sent = time.perf_counter(), int(rate * seconds), 0
    while sent < total:
        now = time.perf_counter()
        due = min(total, int((now - start) * rate) + 1)
        for i in range(sent, due):
            run.send(start + i / rate)
        sent = due
        await asyncio.sleep(max(0.0, start + sent / rate - time.perf_counter()))
    if run.in_flight:
        run.drained = asyncio.get_running_loop().create_future()
        await asyncio.wait_for(run.drained, timeout=60)
    run.drained = None


if __name__ == "__main__" and sys.argv[1:2] == ["upstream"]:
    uvloop.run(serve(int(sys.argv[2])))
