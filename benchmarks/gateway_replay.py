"""Online decisions against batch detection: simulated traffic replayed through the gateway.

    .venv/bin/python benchmarks/gateway_replay.py [--scenario demo] [--scale 0.3] [--days 3]

The traffic is replayed as chat requests (each account's id as its API key, its client,
address and end user, its timestamps; `--trust-headers`) against a fast fake upstream,
in two nights. Night one replays every day but the last through a gateway that records;
`detect` on the recording gives the findings the gateway loads for night two, which
replays the last day. `detect` on the whole recording is then the batch answer. For the
accounts active on the last day, the gateway acted (any decision but allow) where the
batch flags them? Results go to benchmarks/results/gateway_replay.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from gateway_latency import _port, _wait, gateway_command, upstream_process
from ingest_memory import machine

CONCURRENCY = 64


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="demo")
    parser.add_argument("--scale", type=float, default=0.3)
    parser.add_argument("--days", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dg-replay-") as work:  # removed at the end
        return _bench(args, Path(work))


def _bench(args: argparse.Namespace, work: Path) -> int:
    """The replay and the batch run, in `work`."""
    _cli(
        "simulate",
        "--scenario",
        args.scenario,
        "--scale",
        str(args.scale),
        "--days",
        str(args.days),
        "--out",
        str(work / "sim"),
        "--quiet",
    )
    table = pq.read_table(work / "sim" / "exchanges.parquet").sort_by("ts")
    last = table.column("ts")[-1].as_py().date()
    cut = pc.less(pc.cast(table.column("ts"), pa.date32()), pa.scalar(last, pa.date32()))
    nights = [table.filter(cut).to_pylist(), table.filter(pc.invert(cut)).to_pylist()]
    up_port = _port()
    upstream = upstream_process(up_port)
    started = time.perf_counter()
    try:
        _wait(up_port)
        _night(work, up_port, nights[0], None)
        _cli(
            "detect",
            str(work / "record"),
            "--out",
            str(work / "night1"),
            "--accounts",
            str(work / "sim" / "accounts.parquet"),
        )
        decisions = _night(work, up_port, nights[1], work / "night1")
    finally:
        upstream.terminate()
    _cli(
        "detect",
        str(work / "record"),
        "--out",
        str(work / "batch"),
        "--accounts",
        str(work / "sim" / "accounts.parquet"),
    )
    seconds = time.perf_counter() - started
    flagged = {
        r["account_id"]
        for r in pq.read_table(work / "batch" / "accounts.parquet").to_pylist()
        if r["flagged"]
    }
    acted = {a for a, actions in decisions.items() if actions - {"allow"}}
    active = set(decisions)
    both, online_only = len(acted & flagged), len(acted - flagged)
    batch_only = len((flagged & active) - acted)
    agree = 1 - (online_only + batch_only) / max(1, len(active))
    row = (
        f"| {datetime.now(UTC):%Y-%m-%d} | replay `{args.scenario}` x{args.scale}, "
        f"{len(nights[0]) + len(nights[1]):,} requests in {seconds:.0f} s | {len(active):,} "
        f"accounts on the last day | acted and flagged {both}, acted only {online_only}, "
        f"flagged only {batch_only} | agreement {agree:.4f} | {machine()} |"
    )
    print(row)
    path = Path(__file__).parent / "results" / "gateway_replay.md"
    with path.open("a") as handle:
        handle.write(row + "\n")
    return 0


def _cli(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "distillguard.cli", *args], capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(done.stderr)


def _night(
    work: Path, up_port: int, rows: list[dict], findings: Path | None
) -> dict[str, set[str]]:
    """Replay `rows` through a fresh gateway; each hashed account's decisions."""
    port = _port()
    command = [*gateway_command(up_port, port, work / "record"), "--trust-headers"]
    if findings:
        command += ["--findings", str(findings)]
    log = (work / f"decisions-{port}.log").open("w")
    gateway = subprocess.Popen(command, stderr=log)
    try:
        _wait(port)
        asyncio.run(_replay(port, rows))
    finally:
        gateway.terminate()
        gateway.wait(timeout=60)
        log.close()
    decisions: dict[str, set[str]] = {}
    for line in (work / f"decisions-{port}.log").read_text().splitlines():
        if line.startswith("{"):
            d = json.loads(line)
            decisions.setdefault(d["account"], set()).add(d["action"])
    return decisions


async def _replay(port: int, rows: list[dict]) -> None:
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    limit = asyncio.Semaphore(CONCURRENCY)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as session:

        async def one(row: dict) -> None:
            messages = (
                [{"role": "system", "content": row["system_text"]}] if row["system_text"] else []
            )
            messages.append({"role": "user", "content": row["prompt_text"] or ""})
            body = {"model": row["model"], "messages": messages, "max_tokens": row["max_tokens"]}
            if row["reasoning_requested"]:
                body["reasoning_effort"] = "high"
            if row["end_user_id"]:
                body["user"] = row["end_user_id"]
            if row["tools_declared"]:
                body["tools"] = [
                    {"type": "function", "function": {"name": f"t{i}"}}
                    for i in range(row["tools_declared"])
                ]
            headers = {
                "Authorization": f"Bearer {row['account_id']}",
                "User-Agent": row["user_agent"] or "",
                "X-Forwarded-For": row["ip"] or (row["ip_prefix"] or "").split("/")[0],
                "X-Distillguard-Timestamp": row["ts"].isoformat(),
            }
            async with limit, session.post(url, json=body, headers=headers) as r:
                await r.read()

        await asyncio.gather(*(one(r) for r in rows))


if __name__ == "__main__":
    sys.exit(main())
