"""Simulator benchmark: exchanges per second and peak memory for a preset at scale.

Target (issue 3): 30M+ exchanges with peak RSS under 2 GB. The `alibaba-2026` preset at
full scale writes about 43M exchanges (28.8M of them the campaign's). Run:

    .venv/bin/python benchmarks/simulate_scale.py [--scenario alibaba-2026] [--scale 1]

Results are appended to benchmarks/results/simulate.md with the machine described.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from ingest_memory import machine

HEADER = """# Simulator benchmark

Command: `.venv/bin/python benchmarks/simulate_scale.py --scenario S --scale X`. Peak RSS is
the simulate process's maximum resident set size. Target: 30M+ exchanges under 2 GiB.

| date | preset | scale | exchanges | campaign | time | per s | output | RSS | <2 GiB | machine |
|---|---|---|---|---|---|---|---|---|---|---|
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="alibaba-2026")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--days", type=int, default=None, help="override the preset's days")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    out = Path(args.workdir or tempfile.mkdtemp(prefix="dg-sim-")) / "sim"
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "distillguard.cli",
            "simulate",
            "--scenario",
            args.scenario,
            "--scale",
            str(args.scale),
            "--out",
            str(out),
            "--json",
            "--quiet",
            *(["--days", str(args.days)] if args.days else []),
        ],
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if done.returncode:
        print(done.stderr, file=sys.stderr)
        return done.returncode
    summary = json.loads(done.stdout)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**30
    total = summary["exchanges"]
    campaign = sum(summary["campaign_exchanges"].values())
    preset = args.scenario + (f" ({args.days} days)" if args.days else "")
    row = (
        f"| {datetime.now(UTC):%Y-%m-%d} | {preset} | {args.scale:g} | {total:,} | "
        f"{campaign:,} | {seconds:.0f} s | {total / seconds:,.0f} | {size:.2f} GiB | "
        f"{peak:,.0f} MiB | {'yes' if peak < 2048 else 'NO'} | {machine()} |"
    )
    print(row)
    results = Path(__file__).parent / "results" / "simulate.md"
    if not results.exists():
        results.write_text(HEADER)
    with results.open("a") as handle:
        handle.write(row + "\n")
    shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
