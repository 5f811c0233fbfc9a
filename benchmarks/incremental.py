"""Incremental detection: the nightly re-run after one new day, with the digest cache,
against a full run over the same days without it.

    .venv/bin/python benchmarks/incremental.py --traffic DIR [--days 3] [--window W]

DIR is simulator output (for example `alibaba-2026` from benchmarks/detect_scale.py).
Its first D days are written one Parquet file per day, as a store holds them; night one
detects over D-1 days with `--cache`, night two after the last day is added, and a full
run without the cache over all D days gives the reference. With `--window W`, a third
night runs over the last W days only (`--since`, same cache), against a run over those
W days' files alone. Results are appended to benchmarks/results/incremental.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).parent))
from ingest_memory import machine


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traffic", required=True, type=Path)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--window", type=int, default=None, help="also a night over W days")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dg-incremental-") as work:  # removed at the end
        return _nights(args, Path(work))


def _nights(args: argparse.Namespace, work: Path) -> int:
    """The nights and the full run, in `work`."""
    days = split_days(args.traffic / "exchanges.parquet", work / "days", args.days)
    history, cache = work / "input", work / "cache"
    history.mkdir()
    for day in days[:-1]:
        day.rename(history / day.name)
    night1, _ = timed(history, work / "night1", cache)
    days[-1].rename(history / days[-1].name)
    night2, summary2 = timed(history, work / "night2", cache)
    full, _ = timed(history, work / "full", None)
    same = (work / "night2" / "campaigns.json").read_text() == (
        work / "full" / "campaigns.json"
    ).read_text()
    row = (
        f"| {datetime.now(UTC):%Y-%m-%d} | {args.days} | {total(history):,}"
        f" | {night1:.0f} s | {night2:.0f} s (digested {summary2['digested_files']}, reused "
        f"{summary2['reused_files']}) | {full:.0f} s | {1 - night2 / full:.0%} | "
        f"{'yes' if same else 'NO'} | {machine()} |"
    )
    print(row)
    append(row)
    if args.window:
        line = window(history, work, cache, sorted(history.glob("*.parquet"))[-args.window :])
        print(line)
        append(line)
    return 0


def window(history: Path, work: Path, cache: Path, days: list[Path]) -> str:
    """A night over the last days of `history` (`--since` their first day, with the
    cache) against a run over those days' files alone; a line for the results."""
    since = days[0].stem  # files are named by their date
    night, summary = timed(history, work / "window", cache, ["--since", since])
    alone = work / "window-days"
    alone.mkdir()
    for day in days:
        (alone / day.name).hardlink_to(day)
    reference, _ = timed(alone, work / "window-alone", None)
    same = (work / "window" / "campaigns.json").read_text() == (
        work / "window-alone" / "campaigns.json"
    ).read_text()
    seconds = ", ".join(f"{v:.0f}" for v in summary["seconds"].values())
    return (
        f"window of {len(days)} days (--since {since}): {night:.0f} s ({seconds}; "
        f"{summary['files_outside_window']} files outside, {summary['reused_files']} "
        f"reused); the {len(days)} days alone without the cache {reference:.0f} s; "
        f"same findings: {'yes' if same else 'NO'}; {summary['campaigns']} campaign(s), "
        f"{summary['flagged_accounts']} accounts flagged"
    )


HEADER = (
    "| date | days | exchanges | night one (D-1 days, cache filled) | night two "
    "(one new day, cache reused) | full run, no cache | saved | same findings | machine |\n"
    + "|---" * 9
    + "|\n"
)


def append(line: str) -> None:
    """Add a table row or a window line to the results; a row that does not follow
    another row starts a fresh table, so window lines stay paragraphs of their own."""
    path = Path(__file__).parent / "results" / "incremental.md"
    if not path.exists():
        path.write_text(
            "# Incremental detection\n\nCommand: `.venv/bin/python benchmarks/incremental.py "
            "--traffic DIR --days D [--window W]` on `alibaba-2026` traffic, one file per day.\n"
        )
    last = path.read_text().rstrip("\n").splitlines()[-1]
    is_row = line.startswith("|")
    prefix = "" if is_row and last.startswith("|") else "\n" + (HEADER if is_row else "")
    with path.open("a") as handle:
        handle.write(prefix + line + "\n")


def split_days(source: Path, folder: Path, days: int) -> list[Path]:
    """The first `days` days of `source`, one Parquet file each, oldest first."""
    folder.mkdir(parents=True)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    dates = [
        str(r[0])
        for r in con.execute(
            f"SELECT DISTINCT CAST(ts AS DATE) FROM read_parquet('{source}') ORDER BY 1"
        ).fetchall()[:days]
    ]
    files = []
    for date in dates:
        target = folder / f"{date}.parquet"
        con.execute(
            f"COPY (SELECT * FROM read_parquet('{source}') WHERE CAST(ts AS DATE) = '{date}') "
            f"TO '{target}' (FORMAT parquet)"
        )
        files.append(target)
    return files


def total(folder: Path) -> int:
    return int(
        duckdb.sql(f"SELECT count(*) FROM read_parquet('{folder}/*.parquet')").fetchall()[0][0]
    )


def timed(
    source: Path, out: Path, cache: Path | None, extra: list[str] | None = None
) -> tuple[float, dict]:
    command = [sys.executable, "-m", "distillguard.cli", "detect", str(source)]
    command += ["--out", str(out), "--json"] + (["--cache", str(cache)] if cache else [])
    command += extra or []
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr)
    return time.perf_counter() - started, json.loads(done.stdout)


if __name__ == "__main__":
    sys.exit(main())
