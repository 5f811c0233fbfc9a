"""Latency the gateway adds, at a fixed request rate against a fast fake upstream.

    .venv/bin/python benchmarks/gateway_latency.py [--rate 1000] [--seconds 20]

Three processes on loopback: a fake upstream answering chat completions at once, the
gateway (`distillguard gateway`, default policy, recording on), and this load generator.
Requests are sent open-loop at the given rate (each at its scheduled time, whether or
not earlier ones have answered, so a slow server cannot hide its queue), first straight
to the upstream, then through the gateway; latency runs from the scheduled send. The
added latency is the gateway's percentile minus the direct one. Issue 7's target: p99
added <= 2 ms at 1,000 requests a second on 2 cores. Results go to
benchmarks/results/gateway.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import numpy as np
import uvloop

sys.path.insert(0, str(Path(__file__).parent))
from ingest_memory import machine

UPSTREAM = """
import uvloop
from aiohttp import web
REPLY = {"id": "c", "choices": [{"message": {"role": "assistant", "content": "ok"}}]}
async def chat(request):
    await request.read()
    return web.json_response(REPLY)
app = web.Application()
app.router.add_post("/v1/chat/completions", chat)
port = int(__import__("sys").argv[1])
loop = uvloop.new_event_loop()
web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, loop=loop)
"""
BODY = json.dumps(
    {"model": "m", "messages": [{"role": "user", "content": "Write a function that sorts a list."}]}
).encode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dg-gateway-"))
    up_port, gw_port = _port(), _port()
    (work / "upstream.py").write_text(UPSTREAM)
    upstream = subprocess.Popen([sys.executable, str(work / "upstream.py"), str(up_port)])
    gateway = subprocess.Popen(
        gateway_command(up_port, gw_port, work / "record"), stderr=subprocess.DEVNULL
    )
    try:
        _wait(up_port)
        _wait(gw_port)
        direct = uvloop.run(_load(up_port, args.rate, args.seconds))
        through = uvloop.run(_load(gw_port, args.rate, args.seconds))
    finally:
        gateway.terminate()
        upstream.terminate()
    row = _row(args, direct, through)
    print(row)
    path = Path(__file__).parent / "results" / "gateway.md"
    if not path.exists():
        path.write_text(
            "# Gateway latency\n\nCommand: `.venv/bin/python benchmarks/gateway_latency.py`. "
            "Open-loop load at a fixed rate on loopback; latency from the scheduled send.\n\n"
            "| date | rate | seconds | direct p50 / p99 (ms) | gateway p50 / p99 (ms) | added "
            "p50 / p99 (ms) | errors | machine |\n" + "|---" * 8 + "|\n"
        )
    with path.open("a") as handle:
        handle.write(row + "\n")
    return 0


def _row(args: argparse.Namespace, direct: dict, through: dict) -> str:
    d, g = direct["latency"], through["latency"]
    return (
        f"| {datetime.now(UTC):%Y-%m-%d} | {args.rate:,}/s | {args.seconds:.0f} | "
        f"{d[0]:.2f} / {d[1]:.2f} | {g[0]:.2f} / {g[1]:.2f} | {g[0] - d[0]:.2f} / "
        f"{g[1] - d[1]:.2f} | {direct['errors']} / {through['errors']} | {machine()} |"
    )


async def _load(port: int, rate: int, seconds: float) -> dict:
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    headers = {"Authorization": "Bearer sk-bench", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=0)
    latencies: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(at: float) -> None:
            nonlocal errors
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                async with session.post(url, data=BODY, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1
            latencies.append(time.perf_counter() - at)

        for _ in range(200):  # warm up connections and caches
            await one(time.perf_counter())
        latencies.clear()
        start = time.perf_counter() + 0.1
        total = int(rate * seconds)
        await asyncio.gather(*(one(start + i / rate) for i in range(total)))
    values = np.array(latencies) * 1000
    return {
        "latency": (float(np.percentile(values, 50)), float(np.percentile(values, 99))),
        "errors": errors,
    }


def gateway_command(up_port: int, port: int, record: Path) -> list[str]:
    """`distillguard gateway` on loopback in front of the fake upstream, recording."""
    return [
        *(sys.executable, "-m", "distillguard.cli", "gateway"),
        *("--upstream", f"http://127.0.0.1:{up_port}", "--listen", f"127.0.0.1:{port}"),
        *("--record", str(record)),
    ]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listening on port {port}")


if __name__ == "__main__":
    sys.exit(main())
