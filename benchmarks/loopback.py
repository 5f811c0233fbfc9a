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
    def __init__(self) -> None:
        self.messages = _Messages()
        self.waiter: asyncio.Future[int] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        for head in self.messages.feed(data):
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(int(head.split(b" ", 2)[1]))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(0)


def request(path: str, port: int, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def load(port: int, message: bytes, rate: int, seconds: float) -> dict:
    """Send `message` at `rate` a second for `seconds`, each at its scheduled time
    whatever earlier ones are doing (open loop: a slow server cannot hide its queue);
    latency runs from the scheduled send. Idle connections are reused, new ones opened
    when all are busy."""
    loop = asyncio.get_running_loop()
    idle: list[_Client] = []
    latencies: list[float] = []
    errors = 0

    async def one(at: float) -> None:
        nonlocal errors
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        client = idle.pop() if idle else None
        if client is None or client.transport is None:
            _, client = await loop.create_connection(_Client, "127.0.0.1", port)
        client.waiter = loop.create_future()
        assert client.transport is not None
        client.transport.write(message)
        status = await client.waiter
        latencies.append(time.perf_counter() - at)
        if status != 200:
            errors += 1
        if client.transport is not None:
            idle.append(client)

    for _ in range(500):  # warm up connections and caches
        await one(time.perf_counter())
    latencies.clear()
    start = time.perf_counter() + 0.1
    total = int(rate * seconds)
    await asyncio.gather(*(one(start + i / rate) for i in range(total)))
    values = np.array(latencies) * 1000
    return {
        "p50": float(np.percentile(values, 50)),
        "p99": float(np.percentile(values, 99)),
        "errors": errors,
        "connections": len(idle),
    }


if __name__ == "__main__" and sys.argv[1:2] == ["upstream"]:
    uvloop.run(serve(int(sys.argv[2])))
