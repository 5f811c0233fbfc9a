"""Latency the gateway adds, at a fixed request rate against a fast fake upstream.

    .venv/bin/python benchmarks/gateway_latency.py [--rate 1000] [--seconds 20]
        [--workers N]

Three kinds of process on loopback: a fake upstream answering at once, the gateway
(`distillguard gateway`, default policy, recording on; with `--workers N` above 1, N
processes sharing state in a redis-server this script starts), and this load generator.
Upstream and generator are raw asyncio protocols (benchmarks/loopback.py) so that they
take as little as possible of the CPU the gateway is measured on. Requests are sent
open-loop at the given rate (each at its scheduled time, whether or not earlier ones
have answered, so a slow server cannot hide its queue), first straight to the upstream,
then through the gateway; latency runs from the scheduled send. The added latency is
the gateway's percentile minus the direct one; the gateway's CPU per request is its
process tree's CPU time over the run. Issue 7's target: p99 added <= 2 ms at 1,000
requests a second on 2 cores. `--bare` measures, in place of the gateway, an aiohttp
proxy that only forwards (same server, client and event loop, nothing of ours): the
floor of this design on this machine. Results go to benchmarks/results/gateway.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
import uvloop

sys.path.insert(0, str(Path(__file__).parent))
from ingest_memory import machine
from loopback import load, request

BODY = (
    b'{"model": "m", "messages": [{"role": "user", '
    b'"content": "Write a function that sorts a list."}]}'
)
BARE = """
import sys, aiohttp, uvloop
from aiohttp import web
upstream, port = sys.argv[1], int(sys.argv[2])
async def forward(request):
    raw = await request.read()
    headers = {"Content-Type": "application/json"}
    async with request.app["session"].post(upstream + request.path, data=raw, headers=headers) as r:
        return web.Response(body=await r.read(), status=r.status, content_type="application/json")
async def session(app):
    app["session"] = aiohttp.ClientSession()
    yield
    await app["session"].close()
app = web.Application()
app.router.add_route("*", "/{tail:.*}", forward)
app.cleanup_ctx.append(session)
loop = uvloop.new_event_loop()
web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, loop=loop)
"""
HEADERS = {
    "Authorization": "Bearer sk-bench",
    "Content-Type": "application/json",
    "User-Agent": "bench/1.0",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--bare", action="store_true", help="a bare aiohttp proxy instead")
    parser.add_argument(
        "--realistic",
        action="store_true",
        help="2 KB coding prompts from 1,000 accounts, findings loaded (see realistic())",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dg-gateway-"))
    up_port, gw_port = _port(), _port()
    processes = [upstream_process(up_port)]
    extra = ["--workers", str(args.workers)]
    bodies, keys = [BODY], [HEADERS["Authorization"]]
    if args.realistic:
        bodies, keys = realistic(work / "findings")
        extra += ["--findings", str(work / "findings")]
    if args.workers > 1:
        redis_port = _port()
        processes.append(redis_process(redis_port, work))
        extra += ["--redis", f"redis://127.0.0.1:{redis_port}/0"]
    command = gateway_command(up_port, gw_port, work / "record") + extra
    if args.bare:
        (work / "bare.py").write_text(BARE)
        command = [sys.executable, str(work / "bare.py"), f"http://127.0.0.1:{up_port}"]
        command.append(str(gw_port))
    gateway = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    processes.append(gateway)
    try:
        _wait(up_port)
        _wait(gw_port)
        time.sleep(1.0)
        direct = uvloop.run(
            load(up_port, _messages(up_port, bodies, keys), args.rate, args.seconds)
        )
        before = _cpu(gateway.pid)
        messages = _messages(gw_port, bodies, keys)
        through = uvloop.run(load(gw_port, messages, args.rate, args.seconds))
        cpu_ms = (_cpu(gateway.pid) - before) / (args.rate * (args.seconds + 1)) * 1000
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    row = _row(args, direct, through, cpu_ms)
    print(row)
    results = Path(__file__).parent / "results" / "gateway.md"
    with results.open("a") as handle:
        handle.write(row + "\n")
    return 0


def _messages(port: int, bodies: list[bytes], keys: list[str]) -> list[bytes]:
    """Requests cycling through the accounts, each account through the bodies."""
    count = max(len(bodies), len(keys))
    return [
        request(
            "/v1/chat/completions",
            port,
            bodies[i % len(bodies)],
            {**HEADERS, "Authorization": keys[i % len(keys)]},
        )
        for i in range(count)
    ]


CODE = (
    "I have this Python function that is slow on large inputs:\n```python\n"
    "def merge(rows, key):\n    out = {{}}\n    for row in rows:\n"
    "        out.setdefault(row[key], []).append(row)\n    return out\n```\n"
)
ASK = (
    "Refactor it for speed with {} rows and the key {!r}; explain each change, its "
    "complexity and the trade-offs, and write unit tests for the edge cases. "
)


def realistic(findings: Path) -> tuple[list[bytes], list[str]]:
    """2 KB coding prompts (a code block and a request with varying numbers and names),
    1,000 accounts, and a findings folder as nightly detection leaves it: one campaign
    with 500 template fingerprints and 20,000 flagged accounts (none of these)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from distillguard.schema import FINDINGS_ACCOUNTS

    bodies = []
    for i in range(200):
        prompt = CODE + "".join(ASK.format(1000 * (i + j), f"field_{j}") for j in range(8))
        chat = {"model": "m", "messages": [{"role": "user", "content": prompt}]}
        bodies.append(json.dumps(chat).encode())
    findings.mkdir(parents=True)
    campaign = {"id": "campaign-001", "score": 0.95, "evidence": [{"signal": "timing"}]}
    campaign["template_fingerprints"] = [
        f"{(i * 0x9E3779B97F4A7C15) % 2**64:016x}" for i in range(500)
    ]
    (findings / "campaigns.json").write_text(json.dumps([campaign]))
    flagged = [
        {
            "account_id": f"farm-{i:05d}",
            "score": 0.95,
            "flagged": True,
            "campaign_id": "campaign-001",
            "reasons": [],
        }
        for i in range(20_000)
    ]
    pq.write_table(
        pa.Table.from_pylist(flagged, schema=FINDINGS_ACCOUNTS), findings / "accounts.parquet"
    )
    return bodies, [f"Bearer sk-user-{i:04d}" for i in range(1000)]


def _row(args: argparse.Namespace, direct: dict, through: dict, cpu_ms: float) -> str:
    kind = "bare aiohttp proxy" if args.bare else str(args.workers)
    return (
        f"| {datetime.now(UTC):%Y-%m-%d} | {args.rate:,}/s | {args.seconds:.0f} | "
        f"{kind}{', realistic' if args.realistic else ''} | "
        f"{direct['p50']:.2f} / {direct['p99']:.2f} | "
        f"{through['p50']:.2f} / {through['p99']:.2f} | {through['p50'] - direct['p50']:.2f} / "
        f"{through['p99'] - direct['p99']:.2f} | {cpu_ms:.2f} | "
        f"{direct['errors']} / {through['errors']} | {machine()} |"
    )


def _cpu(pid: int) -> float:
    """CPU seconds of a process and its children (the workers)."""
    root = psutil.Process(pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def upstream_process(port: int) -> subprocess.Popen[bytes]:
    """The fake upstream of benchmarks/loopback.py: any route, a small chat completion."""
    script = Path(__file__).parent / "loopback.py"
    return subprocess.Popen([sys.executable, str(script), "upstream", str(port)])


def redis_process(port: int, folder: Path) -> subprocess.Popen[bytes]:
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("--workers above 1 needs redis-server (make test installs it)")
    options = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    return subprocess.Popen(
        [server, *options, "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
    )


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
