"""Time to detect: detection re-run on growing prefixes of a preset at daily cut-offs.

    .venv/bin/python benchmarks/time_to_detect.py [--preset demo]

For each campaign, the time from its first exchange to the first daily cut-off at
which half of its accounts are flagged (issue 4's target: within 24 simulated hours).
Writes benchmarks/results/time_to_detect.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from distillguard.detect import detect
from distillguard.evaluate import evaluate
from distillguard.simulate import load, simulate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo")
    args = parser.parse_args()
    scenario = load(args.preset)
    with tempfile.TemporaryDirectory() as tmp:
        traffic, series = Path(tmp) / "traffic", Path(tmp) / "series"
        simulate(scenario, traffic)
        start = datetime.combine(scenario.start, datetime.min.time(), tzinfo=UTC)
        for day in range(1, scenario.days + 1):
            cutoff = start + timedelta(days=day)
            detect(traffic, series / f"{cutoff:%Y-%m-%d}", until=cutoff.isoformat())
        report = evaluate(
            series / f"{start + timedelta(days=scenario.days):%Y-%m-%d}", traffic, series
        )
    lines = [
        "# Time to detect",
        "",
        f"Command: `.venv/bin/python benchmarks/time_to_detect.py --preset {args.preset}`."
        f" Date: {datetime.now(UTC):%Y-%m-%d}. Detection at each midnight (UTC) on the "
        "exchanges before it; days from a campaign's first exchange to the first cut-off "
        "with half of its accounts flagged.",
        "",
        "| campaign | days |",
        "|---|---|",
    ]
    for name, days in report["time_to_detect_days"].items():
        lines.append(f"| {name} | {'not detected' if days is None else f'{days:.2f}'} |")
    (Path(__file__).parent / "results" / "time_to_detect.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
