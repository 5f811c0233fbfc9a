"""What the analyst report shows, gathered from findings and the traffic they came from.

Everything here is a query over the findings and the input traffic (DuckDB), bounded
per campaign: daily activity, the shared infrastructure, a few example prompts with
their template similarity, and a sample of accounts with the evidence that links them.
Prompt text enters the report only as examples, and not at all with `redact`.
"""

from __future__ import annotations

import itertools
import json
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from distillguard.detect.inputs import exchanges_only, inputs, nulls, readable, reading
from distillguard.errors import InputError
from distillguard.features.template import band_keys, signatures, similarity
from distillguard.ingest.engine import connect, sql_list
from distillguard.intel import read_campaigns
from distillguard.schema import EXCHANGES

EXAMPLES = 5
GRAPH_NODES = 40
TOP = 10
DETAILED = 25  # campaigns with a page of their own; the triage table lists all


def gather(
    findings: Path, traffic: str | Path | None, redact: bool, labels: Path | None
) -> dict[str, Any]:
    campaigns = read_campaigns(findings)
    summary = read_summary(findings)
    source = traffic or summary.get("input")
    report: dict[str, Any] = {"campaigns": campaigns, "summary": summary, "details": {}}
    if source is None:
        raise InputError(f"{findings}: no summary.json naming the traffic; pass --input")
    with reading(source), tempfile.TemporaryDirectory(prefix="distillguard-report-") as work:
        exchange_files, account_files = inputs(source)
        used: list[Path | str] = [Path(p) for p in summary.get("accounts_input", [])]
        if traffic is None and used and all(Path(p).is_file() for p in used):
            account_files = used  # the accounts detect read with this traffic, once
        readable([*exchange_files, *account_files])
        exchanges_only(exchange_files)
        con = connect("1GB", Path(work) / "spill")
        con.execute(
            f"CREATE VIEW logged AS SELECT * FROM read_parquet({sql_list(exchange_files)}, "
            "union_by_name = true)"
        )
        columns = {r[0] for r in con.execute("DESCRIBE logged").fetchall()}
        lacking = [f.name for f in EXCHANGES if not f.nullable and f.name not in columns]
        if lacking:
            raise InputError(f"{source}: not exchanges (no {', '.join(lacking)})")
        absent = [f for f in EXCHANGES if f.name not in columns]  # optional, as checked
        con.execute(f"CREATE VIEW exchanges AS SELECT *{nulls(absent)} FROM logged")
        if account_files:
            con.execute(
                f"CREATE VIEW accounts AS SELECT * FROM read_parquet({sql_list(account_files)}, "
                "union_by_name = true)"
            )
        shown = campaigns[:DETAILED]
        _register_members(con, shown)
        _check_same_traffic(con, source)
        for c in shown:
            report["details"][c["id"]] = _detail(con, c, columns, bool(account_files), redact)
        report["substreams"] = _substreams(con, findings)
        con.close()
    if labels is not None:
        from distillguard.evaluate import evaluate

        report["evaluation"] = evaluate(findings, labels)
    return report


def read_summary(findings: Path) -> dict[str, Any]:
    """A findings folder's summary.json; empty when it is absent or not an object."""
    try:
        summary = json.loads((findings / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def _check_same_traffic(con: Any, source: Path | str) -> None:
    """Refuse traffic in which no campaign member has an exchange: another run's (its
    tables would all read "none", and the report look like findings without evidence)."""
    members, present = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE account_id IN "
        "(SELECT DISTINCT account_id FROM exchanges)) FROM members"
    ).fetchone()
    if members and not present:
        raise InputError(
            f"{source}: none of the campaigns' accounts has an exchange in it: is it the "
            "traffic these findings came from?"
        )


def _register_members(con: Any, campaigns: list[dict[str, Any]]) -> None:
    rows = [(c["id"], a, None) for c in campaigns for a in c["accounts"]]
    rows += [
        (c["id"], s["account_id"], s["end_user_id"])
        for c in campaigns
        for s in c.get("substreams", [])
    ]
    con.register(
        "members",
        pa.table(
            {
                "campaign_id": pa.array([r[0] for r in rows], pa.string()),
                "account_id": pa.array([r[1] for r in rows], pa.string()),
                "end_user_id": pa.array([r[2] for r in rows], pa.string()),
            }
        ),
    )
    con.execute("""
        CREATE TEMP VIEW mine AS
        SELECT e.*, m.campaign_id FROM exchanges e JOIN members m
          ON e.account_id = m.account_id
         AND (m.end_user_id IS NULL OR e.end_user_id = m.end_user_id)""")


def _detail(
    con: Any, c: dict[str, Any], columns: set[str], with_accounts: bool, redact: bool
) -> dict[str, Any]:
    cid = c["id"].replace("'", "''")
    where = f"WHERE campaign_id = '{cid}'"
    detail: dict[str, Any] = {
        "activity": [
            {"day": str(day), "exchanges": n}
            for day, n in con.execute(
                f"SELECT CAST(ts AS DATE), count(*) FROM mine {where} GROUP BY 1 ORDER BY 1"
            ).fetchall()
        ],
        "infrastructure": _infrastructure(con, where, columns, with_accounts),
        "examples": _examples(con, where, redact) if "prompt_text" in columns else [],
    }
    detail["links"] = _links(con, c, columns, with_accounts)
    return detail


def _infrastructure(
    con: Any, where: str, columns: set[str], with_accounts: bool
) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for name, column in (("network prefixes", "ip_prefix"), ("user agents", "user_agent")):
        if column in columns:
            found[name] = _top(
                con,
                f"SELECT {column}, count(DISTINCT account_id), count(*) FROM mine {where} "
                f"AND {column} IS NOT NULL GROUP BY 1 ORDER BY 2 DESC, 3 DESC, 1 LIMIT {TOP}",
            )
    if with_accounts:
        members = f"account_id IN (SELECT account_id FROM mine {where})"
        for name, column in (
            ("payment fingerprints", "payment_fingerprint"),
            ("sign-up channels", "signup_channel"),
            ("e-mail domains", "email_domain"),
        ):
            found[name] = _top(
                con,
                f"SELECT {column}, count(*), NULL FROM accounts WHERE {members} "
                f"AND {column} IS NOT NULL GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT {TOP}",
            )
        found["sign-up bursts (channel, hour)"] = _top(
            con,
            f"""SELECT coalesce(signup_channel, '?') || ' ' ||
                       strftime(date_trunc('hour', created_at), '%Y-%m-%d %H:00'), count(*), NULL
                FROM accounts WHERE {members} AND created_at IS NOT NULL
                GROUP BY 1 HAVING count(*) >= 3 ORDER BY 2 DESC, 1 LIMIT {TOP}""",
        )
    return found


def _top(con: Any, sql: str) -> list[dict[str, Any]]:
    return [
        {"value": str(v), "accounts": a, "exchanges": n} for v, a, n in con.execute(sql).fetchall()
    ]


def _examples(con: Any, where: str, redact: bool) -> list[dict[str, Any]]:
    rows = con.execute(f"""
        SELECT request_id, prompt_text FROM mine {where} AND prompt_text IS NOT NULL
        ORDER BY md5(request_id) LIMIT {EXAMPLES}""").fetchall()
    if not rows:
        return []
    texts = pa.array([t for _, t in rows], pa.string())
    sigs = signatures(texts)
    return [
        {
            "request_id": rid,
            "text": f"[redacted: {len(text)} characters]" if redact else text[:600],
            "similarity": round(similarity(sigs[0], sigs[i]), 2),
        }
        for i, (rid, text) in enumerate(rows)
    ]


def _links(con: Any, c: dict[str, Any], columns: set[str], with_accounts: bool) -> dict[str, Any]:
    """A sample of the campaign's accounts and which evidence links each pair."""
    nodes = sorted(c["accounts"])[:GRAPH_NODES]
    if len(nodes) < 2:
        return {"nodes": nodes, "edges": []}
    con.register("sample", pa.table({"account_id": nodes}))
    keys: dict[str, list[tuple[str, str]]] = {}
    if {"ip_prefix", "user_agent"} <= columns:
        keys["network"] = con.execute("""
            SELECT DISTINCT account_id, ip_prefix || '|' || coalesce(user_agent, '')
            FROM exchanges JOIN sample USING (account_id) WHERE ip_prefix IS NOT NULL""").fetchall()
    if "system_text" in columns:
        keys["system prompt"] = con.execute("""
            SELECT DISTINCT account_id, md5(system_text) FROM exchanges JOIN sample
            USING (account_id) WHERE system_text IS NOT NULL""").fetchall()
    if "prompt_text" in columns:
        keys["template"] = _template_keys(con)
    if with_accounts:
        keys["payment"] = con.execute("""
            SELECT DISTINCT account_id, payment_fingerprint FROM accounts JOIN sample
            USING (account_id) WHERE payment_fingerprint IS NOT NULL""").fetchall()
    con.unregister("sample")
    edges = []
    for kind, pairs in keys.items():
        holders: dict[str, set[str]] = {}
        for account, key in pairs:
            holders.setdefault(key, set()).add(account)
        linked = {
            pair
            for group in holders.values()
            if 1 < len(group) < len(nodes) + 1
            for pair in itertools.combinations(sorted(group), 2)
        }
        edges += [{"a": a, "b": b, "kind": kind} for a, b in sorted(linked)]
    return {"nodes": nodes, "edges": edges}


def _template_keys(con: Any) -> list[tuple[str, str]]:
    rows = con.execute("""
        SELECT account_id, prompt_text FROM exchanges JOIN sample USING (account_id)
        WHERE prompt_text IS NOT NULL ORDER BY md5(request_id) LIMIT 20000""").fetchall()
    if not rows:
        return []
    bands = band_keys(signatures(pa.array([t for _, t in rows], pa.string())))
    return list(
        {(a, f"{int(b):x}") for (a, _), row in zip(rows, bands, strict=True) for b in row if b}
    )


def _substreams(con: Any, findings: Path) -> list[dict[str, Any]]:
    path = findings / "exchanges.parquet"
    if not path.is_file() or not pq.read_metadata(path).num_rows:
        return []
    con.register("flagged_exchanges", pq.read_table(path))
    rows = con.execute("""
        SELECT f.campaign_id, e.account_id, e.end_user_id, count(*)
        FROM flagged_exchanges f JOIN exchanges e USING (request_id)
        GROUP BY 1, 2, 3 ORDER BY 1, 4 DESC, 2, 3 LIMIT 500""").fetchall()
    return [
        {"campaign_id": c, "account_id": a, "end_user_id": u, "exchanges": n} for c, a, u, n in rows
    ]
