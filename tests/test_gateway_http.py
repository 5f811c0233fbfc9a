"""The gateway's own HTTP/1.1 layer (gateway/http.py, gateway/upstream.py) on loopback:
what a client or an upstream may do on the wire, byte for byte."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import pyarrow.parquet as pq
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from distillguard.gateway.http import Limits, Request, Response, Server
from distillguard.gateway.server import Config
from tests.test_gateway import AUTH, CHAT, Client, _run, gateway

BODY = json.dumps(CHAT).encode()


async def _exchange(port: int, data: bytes, until: bytes, seconds: float = 5) -> bytes:
    """Send raw bytes to the gateway; what it answers until `until` has come (or EOF)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    got = b""
    try:
        async with asyncio.timeout(seconds):
            while until not in got:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                got += chunk
    finally:
        writer.close()
    return got


def _statuses(raw: bytes) -> list[int]:
    """Status codes of the responses in `raw` (a body does not end with a line break)."""
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


def _post(path: str, body: bytes, extra: str = "") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH['Authorization']}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


def test_pipelined_requests_are_answered_in_order(tmp_path: Path) -> None:
    async def check(client: Client) -> None:
        data = (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            + _post("/v1/chat/completions", BODY)
            + b"GET /v1/nowhere HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        raw = await _exchange(client.port, data, b"Unknown route")
        assert _statuses(raw) == [200, 200, 404]

    _run(tmp_path, check)


def test_bad_http_oversized_heads_and_chunked_bodies(tmp_path: Path) -> None:
    async def check(client: Client) -> None:
        raw = await _exchange(client.port, b"NONSENSE\r\n\r\n", b"}")
        assert _statuses(raw) == [400] and b'"error"' in raw and b"Traceback" not in raw
        huge = b"GET /healthz HTTP/1.1\r\nX-Pad: " + b"a" * 100_000 + b"\r\n\r\n"
        raw = await _exchange(client.port, huge[:70_000], b"}")
        assert _statuses(raw) == [431]
        chunked = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: {AUTH['Authorization']}\r\nTransfer-Encoding: chunked\r\n"
            "Expect: 100-continue\r\n\r\n"
        ).encode()
        half = len(BODY) // 2
        for part in (BODY[:half], BODY[half:]):
            chunked += b"%x\r\n%b\r\n" % (len(part), part)
        raw = await _exchange(client.port, chunked + b"0\r\n\r\n", b'"ok"')
        assert _statuses(raw) == [100, 200]

    _run(tmp_path, check)


def test_queries_and_reply_headers_pass_through(tmp_path: Path) -> None:
    async def upstream(request: web.Request) -> web.Response:
        headers = {"x-request-id": "req-7", "x-query": request.query_string}
        return web.json_response({"choices": []}, headers=headers)

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", upstream)
        async with TestServer(app) as up, gateway(Config(upstream=str(up.make_url("")))) as client:
            path = "/v1/chat/completions?api-version=2026-01-01"
            r = await client.post(path, json=CHAT, headers=AUTH)
            assert r.status == 200 and r.headers["x-request-id"] == "req-7"
            assert r.headers["x-query"] == "api-version=2026-01-01"

    asyncio.run(main())


class _Forgetful(asyncio.Protocol):
    """An upstream that answers one request per connection, then drops the connection
    when the next one arrives (as an upstream's idle timeout races a reused connection)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport
        self.answered = False

    def data_received(self, data: bytes) -> None:
        if self.answered:
            self.transport.close()
            return
        self.answered = True
        body = b'{"choices":[]}'
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        self.transport.write(head + b"Content-Length: %d\r\n\r\n%b" % (len(body), body))


class _EarlyHints(_Forgetful):
    """An upstream that sends an informational 103 a moment before each reply."""

    def data_received(self, data: bytes) -> None:
        self.transport.write(b"HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n")
        self.answered = False
        asyncio.get_running_loop().call_later(0.05, super().data_received, data)


def _upstream_then(protocol: type[asyncio.Protocol], requests: int) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(protocol, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with gateway(Config(upstream=f"http://127.0.0.1:{port}")) as client:
            for _ in range(requests):
                r = await client.post("/v1/chat/completions", json=CHAT, headers=AUTH)
                assert r.status == 200 and await r.json() == {"choices": []}
        server.close()

    asyncio.run(main())


def test_a_reused_connection_the_upstream_dropped_is_retried_on_a_new_one() -> None:
    _upstream_then(_Forgetful, 3)


def test_informational_replies_before_the_answer_are_skipped() -> None:
    _upstream_then(_EarlyHints, 2)


def test_odd_field_values_are_recorded_as_nulls_and_nothing_is_lost(tmp_path: Path) -> None:
    odd: list[Any] = [True, 2**64 - 1, -5, "many", 1.5]

    async def check(client: Client) -> None:
        for value in odd:
            body = {**CHAT, "max_tokens": value}
            r = await client.post("/v1/chat/completions", json=body, headers=AUTH)
            assert r.status == 200

    _run(tmp_path, check)
    rows = pq.read_table(tmp_path / "rec").to_pylist()
    assert len(rows) == len(odd) and all(row["max_tokens"] is None for row in rows)
    assert len({row["request_id"] for row in rows}) == len(odd)


def test_a_client_leaving_mid_stream_still_leaves_the_exchange_recorded(tmp_path: Path) -> None:
    async def check(client: Client) -> None:
        r = await client.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=AUTH)
        assert b"reasoning_content" in await r.content.readline()
        r.close()  # gone before the upstream's second event
        await asyncio.sleep(1.5)

    _run(tmp_path, check)
    (row,) = pq.read_table(tmp_path / "rec").to_pylist()
    assert row["stream"] and "reasoning_content" in row["response_text"]


def test_idle_connections_are_closed_and_slow_heads_refused() -> None:
    async def handler(request: Request) -> Response:
        return Response(200, b"{}")

    def fail(path: str, status: int, message: str) -> Response:
        return Response(status, json.dumps({"error": message}).encode())

    async def main() -> None:
        server = Server(handler, fail, Limits(idle_seconds=0.3, request_seconds=0.6))
        await server.start("127.0.0.1", 0)
        started = time.monotonic()
        assert await _exchange(server.port, b"", b"never") == b""  # idle: closed
        assert time.monotonic() - started < 2
        raw = await _exchange(server.port, b"GET / HTTP/1.1\r\nHost:", b"}")  # never finished
        assert _statuses(raw) == [408] and b"not received in time" in raw
        await server.close(grace=1)

    asyncio.run(main())


def test_behind_a_trusted_proxy_the_given_time_and_address_are_recorded(tmp_path: Path) -> None:
    given = {
        "2026-03-04T05:06:07.000123Z": "2026-03-04 05:06:07.000123+00:00",
        "2026-03-05T00:00:00": "2026-03-05 00:00:00+00:00",  # no zone: UTC
    }

    async def check(client: Client) -> None:
        for stamp in [*given, "yesterday"]:  # an unreadable time: the time of arrival
            headers = {**AUTH, "X-Distillguard-Timestamp": stamp, "X-Forwarded-For": "10.9.8.7"}
            assert (await client.post("/v1/chat/completions", json=CHAT, headers=headers)).ok

    started = datetime.now(UTC)
    _run(tmp_path, check, trust_headers=True)
    today = {f"day={moment:%Y-%m-%d}" for moment in (started, datetime.now(UTC))}
    days = {p.name for p in (tmp_path / "rec").iterdir()}
    assert days - today == {"day=2026-03-04", "day=2026-03-05"} and days & today
    rows = pq.read_table(tmp_path / "rec").to_pylist()
    stamps = {str(row["ts"]) for row in rows}
    assert set(given.values()) <= stamps and len(stamps) == 3
    assert {row["ip_prefix"] for row in rows} == {"10.9.8.0/24"}


class _Counting(asyncio.Protocol):
    """An upstream that answers at once, except `slow` (never) and `cut` (a stream
    event, then the connection dropped); it counts what it was asked and dropped."""

    asked: ClassVar[list[str]] = []
    lost: ClassVar[list[float]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def data_received(self, data: bytes) -> None:
        model = json.loads(data.partition(b"\r\n\r\n")[2])["model"]
        _Counting.asked.append(model)
        if model == "cut":
            head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            self.transport.write(head + b"Transfer-Encoding: chunked\r\n\r\n")
            self.transport.write(b"%x\r\n%b\r\n" % (len(b"data: {}\n\n"), b"data: {}\n\n"))
            asyncio.get_running_loop().call_later(0.1, self.transport.abort)
        elif model != "slow":
            body = b'{"choices":[]}'
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            self.transport.write(head + b"Content-Length: %d\r\n\r\n%b" % (len(body), body))

    def connection_lost(self, exc: Exception | None) -> None:
        _Counting.lost.append(time.monotonic())


def test_upstream_failures_are_never_sent_twice_and_leaving_clients_stop_them(
    tmp_path: Path,
) -> None:
    _Counting.asked.clear()
    _Counting.lost.clear()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Counting, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        config = Config(
            upstream=f"http://127.0.0.1:{port}", upstream_timeout=0.5, record=str(tmp_path)
        )
        async with gateway(config) as client:
            ask = lambda model: client.post(  # noqa: E731
                "/v1/chat/completions", json={**CHAT, "model": model}, headers=AUTH
            )
            replies = await asyncio.gather(*(ask("m") for _ in range(4)))  # 4 pooled
            assert {r.status for r in replies} == {200}
            assert (await ask("slow")).status == 504
            assert _Counting.asked.count("slow") == 1  # not again on each pooled one
            cut = await ask("cut")
            with pytest.raises(aiohttp.ClientPayloadError):
                await cut.read()  # cut short, not a complete reply
            left = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ask("slow"), 0.1)  # the client gives up
            await asyncio.sleep(0.3)
            assert any(t >= left for t in _Counting.lost)  # so the upstream is left too
        server.close()

    asyncio.run(main())
    statuses = sorted(pq.read_table(tmp_path).column("status").to_pylist())
    assert statuses == [200, 200, 200, 200, 200, 499, 504]


def test_a_refused_request_is_never_answered_by_the_next_one(tmp_path: Path) -> None:
    async def check(client: Client) -> None:
        huge = b"GET /healthz HTTP/1.1\r\nX-Pad: " + b"a" * 70_000 + b"\r\n\r\n"
        raw = await _exchange(client.port, huge + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", b"}")
        assert _statuses(raw) == [431]

    _run(tmp_path, check)


def test_rows_a_failed_write_did_not_save_are_kept_for_the_next(tmp_path: Path) -> None:
    from distillguard.gateway.recorder import Recorder

    blocked = tmp_path / "rec"
    blocked.write_text("a file where the folder should be")
    recorder = Recorder(blocked)
    row = {"request_id": "r1", "ts": 1_700_000_000_000_000, "account_id": "a", "model": "m"}
    recorder.add(row)
    with pytest.raises(OSError):
        recorder.flush()
    blocked.unlink()
    recorder.add({**row, "request_id": "r2"})
    assert recorder.flush() == 2
    assert sorted(pq.read_table(blocked).column("request_id").to_pylist()) == ["r1", "r2"]
