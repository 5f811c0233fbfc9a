"""Accuracy of the capability classifier on labelled public prompt sets.

    .venv/bin/python benchmarks/capability_accuracy.py

Writes benchmarks/results/capability.md: per set, the share of prompts put in the
expected category and where the others went.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).parent))
from public_sets import SETS, available

from distillguard.features.capability import classify


def measure() -> list[tuple[str, str, int, float, str]]:
    rows = []
    for name, (expected, load) in SETS.items():
        texts = load()
        labels, _ = classify(pa.array(texts, pa.string()))
        counts = Counter(labels.to_pylist())
        others = ", ".join(
            f"{k} {v / len(texts):.0%}" for k, v in counts.most_common() if k != expected
        )
        rows.append((name, expected, len(texts), counts[expected] / len(texts), others))
    return rows


def main() -> int:
    if not available():
        print("../shared/data is not present beside the project", file=sys.stderr)
        return 2
    lines = [
        "# Capability classifier on public prompt sets",
        "",
        "Command: `.venv/bin/python benchmarks/capability_accuracy.py`. Share of each "
        "set's prompts put in its expected category (rules in "
        "`src/distillguard/features/capability.py`).",
        "",
        "| set | expected | prompts | accuracy | elsewhere |",
        "|---|---|---|---|---|",
    ]
    for name, expected, n, accuracy, others in measure():
        lines.append(f"| {name} | {expected} | {n:,} | {accuracy:.1%} | {others} |")
    text = "\n".join(lines) + "\n"
    (Path(__file__).parent / "results" / "capability.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
