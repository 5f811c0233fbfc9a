"""Detection at scale: end-to-end exchanges per second and peak memory on simulated
`alibaba-2026` traffic (about a million exchanges per simulated day), against the scan
floor, plus template signatures per second against datasketch.

    .venv/bin/python benchmarks/detect_scale.py [--days 1,3,10,30] [--spark-days 1]
        [--workdir DIR (kept)] [--scenario benchmarks/many-accounts.yaml] [--scale 2]

The scan floor is reading the input Parquet and hashing its prompt column (DuckDB, all
cores): no detection can be faster than reading its input. Peak RSS is sampled over the
whole process tree (detect and its feature workers) every 0.2 s. Issue 5's targets:
>= 50,000 exchanges/s end to end, <= 4x the scan floor, peak RSS < 4 GB at 30M, MinHash
>= 40x datasketch. Results go to benchmarks/results/scale.md with the machine described.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import psutil
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from ingest_memory import machine

from distillguard.features.template import SHINGLE, signatures, skeleton

HEADER = """# Detection at scale

Command: `.venv/bin/python benchmarks/detect_scale.py --days D`. Input: `alibaba-2026`
simulated for D days. Scan floor: read the Parquet input and hash its prompt column.
Peak RSS: the detect process tree (with its feature workers), sampled every 0.2 s, and
the stage it came in.

"""
WORD = re.compile(r"[\w<>]+")  # words as ours are: letters and digits of any script, _ < >
COLUMNS = [
    "date",
    "exchanges",
    "detect",
    "exchanges/s",
    "scan floor",
    "ratio",
    "peak RSS",
    "stages (s)",
    "campaigns",
    "flagged",
    "machine",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", default="1,3")
    parser.add_argument(
        "--scenario",
        default="alibaba-2026",
        help="a preset or scenario file (many-accounts.yaml: half a million light users)",
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply the scenario's account counts"
    )
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--minhash-sample", type=int, default=20_000)
    parser.add_argument(
        "--spark-days",
        type=int,
        default=None,
        help="also run the Spark engine (local mode) on this many days, against DuckDB",
    )
    args = parser.parse_args()
    if args.workdir:  # kept: the simulated traffic is reused by the next run
        return _bench(args, Path(args.workdir))
    with tempfile.TemporaryDirectory(prefix="dg-scale-") as work:  # removed at the end
        return _bench(args, Path(work))


def _bench(args: argparse.Namespace, work: Path) -> int:
    """Each size: simulate it unless `work` has it, then time detection and MinHash."""
    results = Path(__file__).parent / "results" / "scale.md"
    if not results.exists():
        results.write_text(
            HEADER + "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n"
        )
    for days in [int(d) for d in args.days.split(",")]:
        scaled = "" if args.scale == 1 else f"-x{args.scale:g}"
        traffic = work / f"{Path(args.scenario).stem}{scaled}-{days}d"
        if not (traffic / "exchanges.parquet").exists():
            _run(
                [
                    "simulate",
                    "--scenario",
                    args.scenario,
                    "--days",
                    str(days),
                    "--scale",
                    str(args.scale),
                    "--out",
                    str(traffic),
                    "--quiet",
                ]
            )
        rows = pq.ParquetFile(traffic / "exchanges.parquet").metadata.num_rows
        floor = scan_floor(traffic / "exchanges.parquet")
        seconds, peak, summary, peak_at = timed_detect(traffic, work / f"findings-{traffic.name}")
        stages = ", ".join(f"{k} {v:.0f}" for k, v in summary["seconds"].items())
        row = (
            f"| {datetime.now(UTC):%Y-%m-%d} | {rows:,} | {seconds:.0f} s | "
            f"{rows / seconds:,.0f} | {floor:.1f} s | {seconds / floor:.1f}x | "
            f"{peak / 2**20:,.0f} MiB ({stage_at(summary['seconds'], seconds, peak_at)}) | "
            f"{stages} | {summary['campaigns']} | "
            f"{summary['flagged_accounts']:,} | {machine()} |"
        )
        print(row, flush=True)
        with results.open("a") as handle:
            handle.write(row + "\n")
        sample = pq.read_table(traffic / "exchanges.parquet", columns=["prompt_text"])
        note = minhash_against_datasketch(sample.column(0).slice(0, args.minhash_sample))
        print(note, flush=True)
        with results.open("a") as handle:
            handle.write(f"\n{note}\n\n" if days == int(args.days.split(",")[-1]) else "")
        if days == args.spark_days:
            engines(traffic, rows, seconds, summary, work / f"findings-{traffic.name}")
    return 0


def engines(traffic: Path, rows: int, duck_seconds: float, duck: dict, duck_out: Path) -> None:
    """DuckDB against Spark local mode on the same input; the findings must agree."""
    out = duck_out.with_name(duck_out.name + "-spark")
    seconds, peak, summary, _ = timed_detect(traffic, out, ["--engine", "spark"])
    same = (out / "campaigns.json").read_text() == (duck_out / "campaigns.json").read_text()
    path = Path(__file__).parent / "results" / "engines.md"
    if not path.exists():
        path.write_text(
            "# DuckDB against Spark local mode\n\n"
            "Command: `.venv/bin/python benchmarks/detect_scale.py --days D --spark-days D`.\n"
            "Both engines on the same input and machine; Spark in local mode with as many\n"
            "cores as DuckDB uses. Peak RSS includes Spark's JVM.\n\n"
            "| date | exchanges | DuckDB | Spark local | Spark / DuckDB | Spark peak RSS "
            "| Spark stages (s) | same findings | machine |\n" + "|---" * 9 + "|\n"
        )
    stages = ", ".join(f"{k} {v:.0f}" for k, v in summary["seconds"].items())
    row = (
        f"| {datetime.now(UTC):%Y-%m-%d} | {rows:,} | {duck_seconds:.0f} s | {seconds:.0f} s | "
        f"{seconds / duck_seconds:.1f}x | {peak / 2**20:,.0f} MiB | {stages} | "
        f"{'yes' if same else 'NO'} | {machine()} |"
    )
    print(row, flush=True)
    with path.open("a") as handle:
        handle.write(row + "\n")


def _run(command: list[str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "distillguard.cli", *command], capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(done.stderr)
    return done.stdout


def scan_floor(path: Path) -> float:
    started = time.perf_counter()
    con = duckdb.connect(config={"threads": psutil.cpu_count() or 2})
    con.execute(f"SELECT sum(hash(prompt_text)) FROM read_parquet('{path}')").fetchall()
    return time.perf_counter() - started


def timed_detect(
    traffic: Path, out: Path, extra: tuple[str, ...] | list[str] = ()
) -> tuple[float, int, dict, float]:
    """Seconds, peak RSS of the process tree, the summary, and when the peak came."""
    command = [
        sys.executable,
        "-m",
        "distillguard.cli",
        "detect",
        str(traffic),
        "--out",
        str(out),
        "--json",
        *extra,
    ]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak, peak_at = 0, 0.0
    watched = psutil.Process(process.pid)
    while process.poll() is None:
        try:
            tree = [watched, *watched.children(recursive=True)]
            rss = sum(p.memory_info().rss for p in tree if p.is_running())
            if rss > peak:
                peak, peak_at = rss, time.perf_counter() - started
        except psutil.Error:
            pass
        time.sleep(0.2)
    stdout, stderr = process.communicate()
    if process.returncode:
        raise SystemExit(stderr)
    return time.perf_counter() - started, peak, json.loads(stdout), peak_at


def stage_at(laps: dict[str, float], seconds: float, at: float) -> str:
    """The stage running `at` seconds into a run of `seconds` whose stages took `laps`
    (start-up, before the first stage, is what the laps leave out)."""
    clock = seconds - sum(laps.values())
    if at <= clock:
        return "start-up"
    for stage, lap in laps.items():
        clock += lap
        if at <= clock:
            return stage
    return "writing"


def minhash_against_datasketch(prompts, rounds: int = 3) -> str:  # type: ignore[no-untyped-def]
    """Template signatures per second: ours (words, bigram shingles, 64 permutations, on
    the skeletons) against datasketch's MinHash(num_perm=64) on the same skeletons'
    bigrams, one process each; the best of `rounds` alternating runs of each, so load
    from elsewhere on the machine does not favour either."""
    from datasketch import MinHash

    skeletons = skeleton(prompts.combine_chunks())
    no_asks = np.zeros(len(skeletons), dtype=bool)  # reasoning asks are masked already

    def ours() -> None:  # its scan masks the skeletons again, finding nothing new
        signatures(skeletons, lowered=True, cot=no_asks)

    signatures(skeletons.slice(0, 10))  # compile once, outside the timing
    texts = [t or "" for t in skeletons.to_pylist()]

    def theirs() -> None:
        for text in texts:
            words = WORD.findall(text)
            shingles = [" ".join(words[i : i + SHINGLE]) for i in range(max(1, len(words) - 1))]
            m = MinHash(num_perm=64)
            m.update_batch([s.encode() for s in shingles])
            m.digest()

    best = {"ours": float("inf"), "theirs": float("inf")}
    for _ in range(rounds):
        for name, run in (("ours", ours), ("theirs", theirs)):
            started = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - started)
    ours, theirs_rate = len(texts) / best["ours"], len(texts) / best["theirs"]
    return (
        f"Template signatures on {len(texts):,} prompts, best of {rounds}: {ours:,.0f} a second "
        f"(ours, on the skeletons, its masking scan included) against {theirs_rate:,.0f} "
        f"(datasketch MinHash, num_perm 64, update_batch): {ours / theirs_rate:.1f}x."
    )


if __name__ == "__main__":
    sys.exit(main())
