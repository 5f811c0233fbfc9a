"""Evaluation of findings against the simulator's labels: loading, checks, reporting.

Inputs are folders. Findings: `accounts.parquet` (account_id, score, flagged,
campaign_id) and optionally `exchanges.parquet` (request_id, campaign_id). Labels: the
simulator's output (`labels.parquet`, `exchange_labels.parquet`, `exchanges.parquet`).
A series of findings at daily cut-offs (`--series DIR` holding one findings folder per
day, named YYYY-MM-DD) gives the time to detect.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from distillguard.detect.inputs import readable
from distillguard.errors import InputError
from distillguard.evaluate import metrics
from distillguard.schema import (
    FINDINGS_ACCOUNTS,
    FINDINGS_EXCHANGES,
    FINDINGS_LOCK,
    LABELS,
    conform,
)
from distillguard.store import shared


def read_table(path: Path, schema: pa.Schema, name: str) -> pa.Table:
    if not path.is_file():
        raise InputError(f"{path}: not found (expected the {name} table)")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{path}: not a readable Parquet file: {exc}") from None
    return conform(table, schema, name=f"{name} ({path})")


def _holds(path: Path, columns: set[str], name: str) -> None:
    """Refuse, by name, a file the queries would fail on: unreadable, or not the table."""
    readable([path])
    present = set(pq.read_schema(path).names)
    if not columns <= present:
        raise InputError(f"{path}: not the {name} (no {', '.join(sorted(columns - present))})")


def evaluate(
    findings: str | Path, labels: str | Path, series: str | Path | None = None
) -> dict[str, Any]:
    findings, labels = Path(findings), Path(labels)
    if series is not None and not Path(series).is_dir():
        raise InputError(f"--series {series}: no such folder of findings per cut-off")
    truth = read_table(labels / "labels.parquet", LABELS, "labels")
    with shared(findings / FINDINGS_LOCK):  # one run's files, not a mix of two
        found = read_table(findings / "accounts.parquet", FINDINGS_ACCOUNTS, "findings accounts")
        flagged = _flagged_exchanges(findings)
    joined = _accounts(truth, found)
    labelled = set(truth.column("account_id").to_pylist())
    unknown = [
        r["account_id"]
        for r in found.to_pylist()
        if r["flagged"] and r["account_id"] not in labelled
    ]
    report: dict[str, Any] = {"accounts": _account_metrics(joined)}
    report["accounts"]["flagged_but_not_labelled"] = len(unknown)
    report["false_positive_rate_by_population"] = _fpr_by_population(joined)
    report["campaigns"] = _campaign_metrics(joined)
    report["exchanges"] = _exchange_recall(flagged, labels, joined)
    if series is not None:
        report["time_to_detect_days"] = _time_to_detect(Path(series), truth, labels)
    return report


def _accounts(truth: pa.Table, found: pa.Table) -> list[dict[str, Any]]:
    """One row per labelled account; accounts absent from the findings score 0."""
    if truth.num_rows == 0:
        raise InputError("the labels table is empty: nothing to measure against")
    predictions: dict[str, dict[str, Any]] = {}
    for row in found.to_pylist():
        if row["account_id"] in predictions:
            raise InputError(f"the findings list account {row['account_id']!r} more than once")
        predictions[row["account_id"]] = row
    rows = []
    for label in truth.to_pylist():
        p = predictions.get(label["account_id"], {})
        rows.append(
            {
                "account_id": label["account_id"],
                "campaign": label["campaign_id"],
                "role": label["role"] or "unlabelled",
                "score": p.get("score", 0.0),
                "flagged": bool(p.get("flagged", False)),
                "predicted": p.get("campaign_id") if p.get("flagged") else None,
            }
        )
    return rows


def _account_metrics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    truth = [r["campaign"] is not None for r in rows]
    c = metrics.confusion(truth, [r["flagged"] for r in rows])
    return {
        "campaign_accounts": sum(truth),
        "legitimate_accounts": len(rows) - sum(truth),
        "tp": c.tp,
        "fp": c.fp,
        "fn": c.fn,
        "tn": c.tn,
        "precision": c.precision,
        "recall": c.recall,
        "false_positive_rate": c.fpr,
        "pr_auc": metrics.average_precision(truth, [r["score"] for r in rows]),
    }


def _fpr_by_population(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for role in sorted({r["role"] for r in rows if r["campaign"] is None}):
        group = [r for r in rows if r["campaign"] is None and r["role"] == role]
        flagged = sum(r["flagged"] for r in group)
        out[role] = {
            "accounts": len(group),
            "flagged": flagged,
            "false_positive_rate": flagged / len(group),
        }
    return out


def _campaign_metrics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    truth = [r["campaign"] for r in rows]
    predicted = [r["predicted"] for r in rows]
    matches = metrics.match_campaigns(truth, predicted)
    flagged_share = {}
    for m in matches:
        members = [r for r in rows if r["campaign"] == m.campaign]
        flagged_share[m.campaign] = sum(r["flagged"] for r in members) / len(members)
    ari = metrics.adjusted_rand_index(
        metrics.partition_labels(truth, "legit-"),
        metrics.partition_labels(predicted, "unassigned-"),
    )
    return {
        "adjusted_rand_index": ari,
        "per_campaign": {
            m.campaign: {
                "accounts": m.accounts,
                "recall": flagged_share[m.campaign],
                "best_match": m.best,
                "purity": m.purity,
                "completeness": m.completeness,
                "fragments": m.fragments,
            }
            for m in matches
        },
    }


def _flagged_exchanges(findings: Path) -> pa.Table:
    """The request ids the findings' exchanges table lists (sub-streams of mixed accounts)."""
    path = findings / "exchanges.parquet"
    if not path.is_file():
        return FINDINGS_EXCHANGES.empty_table().select(["request_id"])
    return read_table(path, FINDINGS_EXCHANGES, "findings exchanges").select(["request_id"])


def _exchange_recall(listed: pa.Table, labels: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Campaign exchanges flagged: those of flagged campaign accounts, plus those `listed`
    in the findings' exchanges table (the way sub-streams of mixed accounts are flagged)."""
    exchanges = labels / "exchanges.parquet"
    proxied = labels / "exchange_labels.parquet"
    if not exchanges.is_file():
        raise InputError(f"{exchanges}: not found (the labels folder must hold the exchanges)")
    _holds(exchanges, {"request_id", "account_id", "ts"}, "simulated exchanges")
    if proxied.is_file():
        _holds(proxied, {"request_id", "campaign_id"}, "exchange labels")
    con = duckdb.connect()
    try:
        con.register(
            "acct",
            pa.Table.from_pylist(
                [
                    {
                        "account_id": r["account_id"],
                        "campaign": r["campaign"],
                        "flagged": r["flagged"],
                    }
                    for r in rows
                ]
            ),
        )
        con.register("flagged_ex", listed)
        con.execute("CREATE TABLE proxied (request_id VARCHAR, campaign_id VARCHAR)")
        if proxied.is_file():
            con.execute(
                f"INSERT INTO proxied SELECT request_id, campaign_id FROM read_parquet('{proxied}')"
            )
        legit_mixed, legit_mixed_flagged = con.execute(f"""
            WITH mixed_accounts AS (
                SELECT DISTINCT e.account_id FROM read_parquet('{exchanges}') e
                JOIN proxied USING (request_id))
            SELECT count(*), count(*) FILTER (WHERE a.flagged OR request_id IN (
                                                  SELECT request_id FROM flagged_ex))
            FROM read_parquet('{exchanges}') e JOIN mixed_accounts USING (account_id)
            JOIN acct a USING (account_id)
            WHERE request_id NOT IN (SELECT request_id FROM proxied)""").fetchall()[0]
        legit_total, legit_flagged = con.execute(f"""
            SELECT count(*), count(*) FILTER (WHERE a.flagged OR request_id IN (
                                                  SELECT request_id FROM flagged_ex))
            FROM read_parquet('{exchanges}') e JOIN acct a USING (account_id)
            WHERE a.campaign IS NULL
              AND request_id NOT IN (SELECT request_id FROM proxied)""").fetchall()[0]
        total, caught, mixed, mixed_caught = con.execute(f"""
            WITH ex AS (SELECT e.request_id, a.campaign, a.flagged
                        FROM read_parquet('{exchanges}') e JOIN acct a USING (account_id)),
            labelled AS (
                SELECT request_id, flagged, false AS mixed FROM ex WHERE campaign IS NOT NULL
                UNION ALL
                SELECT ex.request_id, ex.flagged, true FROM ex JOIN proxied USING (request_id))
            SELECT count(*), count(*) FILTER (WHERE hit), count(*) FILTER (WHERE mixed),
                   count(*) FILTER (WHERE mixed AND hit)
            FROM (SELECT mixed, flagged OR request_id IN (SELECT request_id FROM flagged_ex) AS hit
                  FROM labelled)""").fetchall()[0]
    finally:
        con.close()
    return {
        "campaign_exchanges": total,
        "flagged": caught,
        "recall": caught / total if total else 1.0,
        "in_mixed_accounts": mixed,
        "mixed_recall": mixed_caught / mixed if mixed else 1.0,
        "legitimate_in_mixed_accounts": legit_mixed,
        "mixed_false_positive_rate": legit_mixed_flagged / legit_mixed if legit_mixed else 0.0,
        "legitimate_exchanges": legit_total,
        "legitimate_exchange_false_positive_rate": (
            legit_flagged / legit_total if legit_total else 0.0
        ),
    }


def _time_to_detect(series: Path, truth: pa.Table, labels: Path) -> dict[str, float | None]:
    members: dict[str, set[str]] = {}
    for row in truth.to_pylist():
        if row["campaign_id"] is not None:
            members.setdefault(row["campaign_id"], set()).add(row["account_id"])
    starts = _campaign_starts(labels)
    cutoffs: dict[str, list[tuple[float, float]]] = {c: [] for c in members}
    for folder in sorted(p for p in series.iterdir() if p.is_dir()):
        moment = _cutoff_time(folder)
        found = read_table(folder / "accounts.parquet", FINDINGS_ACCOUNTS, "findings accounts")
        flagged = {r["account_id"] for r in found.to_pylist() if r["flagged"]}
        for campaign, accounts in members.items():
            cutoffs[campaign].append((moment, len(accounts & flagged) / len(accounts)))
    out: dict[str, float | None] = {}
    for campaign, points in cutoffs.items():
        delay = metrics.time_to_detect(starts.get(campaign, 0.0), points)
        out[campaign] = round(delay / 86400, 3) if delay is not None else None
    return out


def _cutoff_time(folder: Path) -> float:
    name = folder.name.removeprefix("cutoff=")
    try:
        return datetime.fromisoformat(name).replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise InputError(
            f"{folder}: series folders are named by cut-off date, e.g. 2026-04-23"
        ) from None


def _campaign_starts(labels: Path) -> dict[str, float]:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    try:
        exchanges, names = labels / "exchanges.parquet", labels / "labels.parquet"
        rows = con.execute(f"""
            SELECT l.campaign_id, epoch(min(CAST(e.ts AS TIMESTAMPTZ)))
            FROM read_parquet('{exchanges}') e JOIN read_parquet('{names}') l USING (account_id)
            WHERE l.campaign_id IS NOT NULL GROUP BY 1""").fetchall()
    finally:
        con.close()
    return {c: float(t) for c, t in rows}


def render(report: dict[str, Any]) -> str:
    """The report as a terminal table."""
    a = report["accounts"]
    lines = [
        f"accounts: {a['campaign_accounts']} campaign, {a['legitimate_accounts']} legitimate",
        f"  precision {a['precision']:.4f}  recall {a['recall']:.4f}  "
        f"false-positive rate {a['false_positive_rate']:.5f}  PR-AUC {a['pr_auc']:.4f}",
        f"  tp {a['tp']}  fp {a['fp']}  fn {a['fn']}  tn {a['tn']}",
    ]
    if a.get("flagged_but_not_labelled"):  # labels of other traffic read as perfect precision
        lines.append(
            f"  {a['flagged_but_not_labelled']} flagged account(s) are not in the labels "
            "(counted apart: are these the labels of this traffic?)"
        )
    lines.append("false-positive rate by legitimate population:")
    for role, m in report["false_positive_rate_by_population"].items():
        lines.append(
            f"  {role:<24} {m['flagged']:>6} / {m['accounts']:<7} {m['false_positive_rate']:.5f}"
        )
    c = report["campaigns"]
    lines.append(f"campaigns (adjusted Rand index {c['adjusted_rand_index']:.4f}):")
    lines.append(
        f"  {'campaign':<24} {'accounts':>8} {'recall':>7} {'purity':>7} "
        f"{'complete':>8} {'fragments':>9}  best match"
    )
    for name, m in c["per_campaign"].items():
        lines.append(
            f"  {name:<24} {m['accounts']:>8} {m['recall']:>7.3f} {m['purity']:>7.3f} "
            f"{m['completeness']:>8.3f} {m['fragments']:>9}  {m['best_match']}"
        )
    e = report["exchanges"]
    lines.append(
        f"campaign exchanges flagged: {e['flagged']} / {e['campaign_exchanges']} "
        f"(recall {e['recall']:.4f}; in mixed accounts {e['mixed_recall']:.4f} of "
        f"{e['in_mixed_accounts']}; their accounts' legitimate exchanges flagged "
        f"{e['mixed_false_positive_rate']:.4f})"
    )
    lines.append(
        f"legitimate exchanges flagged: {e['legitimate_exchange_false_positive_rate']:.5f} "
        f"of {e['legitimate_exchanges']}"
    )
    if "time_to_detect_days" in report:
        lines.append("time to detect (days from campaign start to half its accounts flagged):")
        for name, days in report["time_to_detect_days"].items():
            lines.append(f"  {name:<24} {'not detected' if days is None else f'{days:.2f}'}")
    return "\n".join(lines)
