"""Ingest benchmark: peak memory and throughput on a large generated log file.

Target (issue 2): a 5 GB input ingests with peak RSS under 1 GB. The input is LiteLLM
StandardLoggingPayload JSONL (one of the most common gateway log formats), generated
here with varied prompt sizes, accounts and timestamps over 45 days. Run:

    .venv/bin/python benchmarks/ingest_memory.py [--gigabytes 5] [--workdir DIR]

Results are appended to benchmarks/results/ingest.md with the machine described.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson

WORDS = [
    "function",
    "class",
    "async",
    "retry",
    "parse",
    "tokenizer",
    "gradient",
    "matrix",
    "proof",
    "lemma",
    "kubernetes",
    "deploy",
    "schema",
    "migrate",
    "refactor",
    "benchmark",
    "reasoning",
    "step",
    "explain",
    "carefully",
    "because",
    "therefore",
    "invariant",
    "complexity",
]
START = 1776816000  # 2026-04-22T00:00:00Z
DAYS = 45


HEADER = """# Ingest benchmark

Command: `.venv/bin/python benchmarks/ingest_memory.py --gigabytes G`. Input: generated
LiteLLM StandardLoggingPayload JSONL (prompts of 20 to 600 words, 25,000 accounts, 45
days). Peak RSS is the ingest process's maximum resident set size, DuckDB included.
Target: a 5 GiB input with peak RSS under 1 GiB.

| date | input | records | stored | wall time | records/s | MiB/s | peak RSS | < 1 GiB | machine |
|---|---|---|---|---|---|---|---|---|---|
"""


def record(i: int, rng: random.Random) -> bytes:
    prompt = " ".join(rng.choices(WORDS, k=rng.choice((20, 80, 200, 600))))
    answer = " ".join(rng.choices(WORDS, k=rng.choice((50, 150, 400))))
    ts = START + rng.random() * DAYS * 86400
    account = f"acct-{rng.randrange(25_000):05d}"
    return (
        orjson.dumps(
            {
                "id": f"chatcmpl-{i:012d}",
                "trace_id": f"conv-{i // 7}",
                "call_type": "acompletion",
                "status": "success",
                "startTime": ts,
                "endTime": ts + 2.5,
                "model": "openai/gpt-oss-120b",
                "model_group": "gpt-oss-120b",
                "prompt_tokens": len(prompt) // 4,
                "completion_tokens": len(answer) // 4,
                "total_tokens": (len(prompt) + len(answer)) // 4,
                "metadata": {
                    "user_api_key_hash": f"{hash(account) & (2**64 - 1):016x}",
                    "user_api_key_team_id": account,
                    "user_agent": "python-httpx/0.27.0",
                    "requester_ip_address": f"198.51.{rng.randrange(256)}.{rng.randrange(256)}",
                },
                "end_user": f"user-{rng.randrange(10**6)}",
                "cache_hit": False,
                "request_tags": [],
                "messages": [
                    {"role": "system", "content": "You are a helpful assistant."},
                    {"role": "user", "content": prompt},
                ],
                "response": {"choices": [{"message": {"role": "assistant", "content": answer}}]},
                "model_parameters": {"temperature": 0.7, "max_tokens": 4096},
            }
        )
        + b"\n"
    )


def generate(path: Path, size: int, seed: int = 7) -> int:
    rng = random.Random(seed)
    written = count = 0
    with open(path, "wb", buffering=1 << 22) as out:
        while written < size:
            line = record(count, rng)
            out.write(line)
            written += len(line)
            count += 1
    return count


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB RAM, "
        f"Python {platform.python_version()}, {platform.system()} {platform.machine()}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=5.0)
    parser.add_argument("--workdir", default=None, help="where to put the input and the store")
    parser.add_argument("--keep", action="store_true", help="keep the generated input")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="dg-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    source, store = work / "litellm_payload.jsonl", work / "store"
    shutil.rmtree(store, ignore_errors=True)
    target = int(args.gigabytes * 2**30)
    if not source.exists() or source.stat().st_size < target:
        started = time.perf_counter()
        n = generate(source, target)
        print(
            f"generated {n:,} records, {source.stat().st_size / 2**30:.2f} GiB "
            f"in {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
        )
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "distillguard.cli",
            "ingest",
            str(source),
            "--store",
            str(store),
            "--json",
            "--quiet",
        ],
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        return done.returncode
    summary = json.loads(done.stdout)
    size = source.stat().st_size
    ok = "yes" if peak_mib < 1024 else "NO"
    row = (
        f"| {datetime.now(UTC):%Y-%m-%d} | {size / 2**30:.2f} GiB | {summary['records_read']:,} "
        f"| {summary['stored']:,} | {seconds:.0f} s | {summary['records_read'] / seconds:,.0f} "
        f"| {size / 2**20 / seconds:.1f} | {peak_mib:,.0f} MiB | {ok} | {machine()} |"
    )
    print(row)
    results = Path(__file__).parent / "results" / "ingest.md"
    if not results.exists():
        results.write_text(HEADER)
    with results.open("a") as handle:
        handle.write(row + "\n")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
