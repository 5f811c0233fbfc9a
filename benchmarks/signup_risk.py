"""Sign-up risk on the simulator's presets: how well sign-up data alone ranks farmed
accounts, and how many legitimate accounts each tier would inconvenience.

    .venv/bin/python benchmarks/signup_risk.py [--presets demo,mixed-proxy,evasive]

Writes benchmarks/results/signup.md. The `evasive` preset staggers its sign-ups and
shares no card on purpose: sign-up risk is the first line, not the only one.
"""

from __future__ import annotations

import argparse
import bisect
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from ingest_memory import machine

from distillguard.signup import TIERS, read_accounts, signup_risk
from distillguard.simulate import load, simulate

PRESETS = ["demo", "mixed-proxy", "evasive"]


def roc_auc(positives: list[float], negatives: list[float]) -> float:
    """Probability that a campaign account outscores a legitimate one (ties count half)."""
    ordered = sorted(negatives)
    wins = sum(
        bisect.bisect_left(ordered, p)
        + 0.5 * (bisect.bisect_right(ordered, p) - bisect.bisect_left(ordered, p))
        for p in positives
    )
    return wins / (len(positives) * len(ordered))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=",".join(PRESETS))
    args = parser.parse_args()
    names = [name for _, name in TIERS[1:]]
    lines = [
        "# Sign-up risk on simulator presets",
        "",
        "Command: `.venv/bin/python benchmarks/signup_risk.py`. Machine: "
        f"{machine()}. Date: {datetime.now(UTC):%Y-%m-%d}. Each tier column gives "
        "campaign / legitimate accounts placed in that tier.",
        "",
        "| preset | campaign accounts | legitimate accounts | ROC AUC | "
        + " | ".join(names)
        + " |",
        "|" + "---|" * (4 + len(names)),
    ]
    for name in args.presets.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            simulate(load(name), Path(tmp))
            scored = signup_risk(read_accounts(Path(tmp) / "accounts.parquet")).to_pylist()
            labels = {
                r["account_id"]: r["campaign_id"]
                for r in pq.read_table(Path(tmp) / "labels.parquet").to_pylist()
            }
        farmed = [r for r in scored if labels[r["account_id"]]]
        legit = [r for r in scored if not labels[r["account_id"]]]
        auc = roc_auc([r["score"] for r in farmed], [r["score"] for r in legit])
        cells = [
            f"{sum(r['tier'] == t for r in farmed)} / {sum(r['tier'] == t for r in legit)}"
            for t in names
        ]
        lines.append(
            f"| {name} | {len(farmed):,} | {len(legit):,} | {auc:.4f} | " + " | ".join(cells) + " |"
        )
        print(lines[-1], flush=True)
    (Path(__file__).parent / "results" / "signup.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
