"""The analyst report: `distillguard report FINDINGS --out report.html`."""

from __future__ import annotations

from pathlib import Path

from distillguard.report.data import gather
from distillguard.report.html import render
from distillguard.schema import FINDINGS_LOCK
from distillguard.store import atomic_write, shared


def write_report(
    findings: str | Path,
    out: str | Path,
    traffic: str | Path | None = None,
    labels: str | Path | None = None,
    redact: bool = False,
) -> int:
    """Write the report; the number of campaigns in it. The findings are read as one
    run's: a detect run replacing them waits, or is waited for."""
    with shared(Path(findings) / FINDINGS_LOCK):
        report = gather(Path(findings), traffic, redact, Path(labels) if labels else None)
    atomic_write(Path(out), render(report, redact).encode())
    return len(report["campaigns"])
