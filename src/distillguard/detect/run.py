"""`distillguard detect`: from canonical traffic to campaigns, in five steps.

1. content features of every exchange, a batch at a time (features/);
2. sub-streams: accounts carrying many end users are split by end user (link/evidence);
3. profiles of every account and sub-stream, in SQL (profile/);
4. the evidence graph and its Leiden communities (link/graph);
5. scores, evidence and actions per community, written as findings (campaigns/score).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from distillguard.campaigns import score as scoring
from distillguard.campaigns.calibrate import Calibration, calibrate
from distillguard.campaigns.facts import campaign_facts
from distillguard.campaigns.merge import parts_to_join
from distillguard.errors import InputError, SchemaError, UsageError
from distillguard.features.content import INPUT_COLUMNS
from distillguard.features.pool import default_workers, featurise_to
from distillguard.ingest.engine import arrow_reader, connect, sql_list
from distillguard.ingest.values import to_ts
from distillguard.link import evidence, graph
from distillguard.link.evidence import SEPARATOR
from distillguard.profile.accounts import profile
from distillguard.schema import ACCOUNTS, EXCHANGES, FINDINGS_ACCOUNTS, FINDINGS_EXCHANGES
from distillguard.store import MANIFEST, Store, atomic_write

FEATURE_BATCH = 65_536
MIN_GROUP = 3  # a campaign is several accounts or sub-streams acting together
SOLO_EXCHANGES = 1_000  # ... or one account harvesting at this volume on its own


def inputs(path: str | Path) -> tuple[list[Path], list[Path]]:
    """Exchange and account Parquet files of a store, a simulator folder or a file."""
    source = Path(path)
    if (source / MANIFEST).is_file():
        store = Store(source)
        return store.files("exchanges"), store.files("accounts")
    if source.is_file():
        return [source], []
    if (source / "exchanges.parquet").is_file():
        accounts = source / "accounts.parquet"
        return [source / "exchanges.parquet"], [accounts] if accounts.is_file() else []
    if source.is_dir():
        files = sorted(source.rglob("*.parquet"))
        if files:
            return files, []
    raise InputError(
        f"{source}: no store, exchanges.parquet or Parquet files to read "
        "(ingest log files first with `distillguard ingest`)"
    )


def detect(
    source: str | Path,
    out: str | Path,
    *,
    accounts: str | Path | None = None,
    until: str | None = None,
    fpr: float = 0.001,
    memory_limit: str = "1GB",
    workers: int | None = None,
) -> dict[str, Any]:
    if not 0 < fpr < 1:
        raise UsageError("--fpr takes a false-positive rate strictly between 0 and 1")
    if workers is not None and workers < 1:
        raise UsageError("--workers takes a positive number of processes")
    exchange_files, account_files = inputs(source)
    if accounts is not None:
        if not Path(accounts).is_file():
            raise InputError(f"{accounts}: no such accounts file")
        account_files = [Path(accounts)]
    if until is not None:
        try:
            until = to_ts(until).isoformat()
        except ValueError as exc:
            raise UsageError(f"--until: {exc}") from None
    work = Path(tempfile.mkdtemp(prefix="distillguard-detect-"))
    clock = Stopwatch()
    try:
        con = connect(memory_limit, work / "spill")
        window = f"WHERE ts < TIMESTAMPTZ '{until}'" if until else ""
        raw = f"read_parquet({sql_list(exchange_files)}, union_by_name = true)"
        filler = _missing(con, raw)
        con.execute(f"CREATE VIEW exchanges AS SELECT * {filler} FROM {raw} {window}")
        if account_files:
            raw_accounts = f"read_parquet({sql_list(account_files)}, union_by_name = true)"
            account_filler = _missing(con, raw_accounts, ACCOUNTS, "accounts")
            con.execute(f"CREATE VIEW accounts AS SELECT * {account_filler} FROM {raw_accounts}")
        if not con.execute("SELECT count(*) FROM exchanges").fetchall()[0][0]:
            raise InputError("no exchanges to analyse" + (f" before {until}" if until else ""))
        _features(con, work / "features", workers or default_workers())
        clock.lap("features")
        con.execute(evidence.NODES_SQL)
        con.execute(
            "CREATE VIEW by_node AS SELECT * REPLACE (node AS account_id) FROM node_exchanges"
        )
        profiles = {r["account_id"]: r for r in profile(con, "by_node").to_pylist()}
        clock.lap("profiles")
        con.execute(evidence.VERBATIM_SQL)
        con.execute("CREATE TEMP TABLE evidence AS " + evidence.evidence_sql(bool(account_files)))
        clock.lap("evidence")
        g = graph.build(con)
        groups = graph.communities(g)
        clock.lap("graph")
        findings = _findings(con, g, groups, profiles, fpr)
        findings["summary"]["missing_columns"] = [
            part.rsplit(" AS ", 1)[1] for part in filler.split(", ")[1:]
        ]
        _write(Path(out), findings)
        clock.lap("campaigns")
        findings["summary"]["seconds"] = clock.laps
        return findings["summary"]
    finally:
        shutil.rmtree(work, ignore_errors=True)


class Stopwatch:
    """Seconds spent per stage, for the summary and the performance notes."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.laps[stage] = round(now - self._last, 2)
        self._last = now


DUCK_TYPES = {
    "string": "VARCHAR",
    "int64": "BIGINT",
    "int32": "INTEGER",
    "double": "DOUBLE",
    "bool": "BOOLEAN",
}


def _missing(
    con: duckdb.DuckDBPyConnection,
    source: str,
    schema: pa.Schema = EXCHANGES,
    name: str = "exchanges",
) -> str:
    """Null columns for the optional columns the input lacks (the signals that need them
    then see nothing); a missing required column is refused, named."""
    present = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    absent = [f for f in schema if f.name not in present]
    required = [f.name for f in absent if not f.nullable]
    if required:
        raise SchemaError(f"the {name} lack required column(s): {', '.join(required)}")
    return "".join(f", CAST(NULL AS {DUCK_TYPES[str(f.type)]}) AS {f.name}" for f in absent)


def _features(con: duckdb.DuckDBPyConnection, folder: Path, workers: int) -> None:
    present = {r[0] for r in con.execute("DESCRIBE exchanges").fetchall()}
    columns = ", ".join(c for c in INPUT_COLUMNS if c in present)
    featurise_to(
        lambda: arrow_reader(con.sql(f"SELECT {columns} FROM exchanges"), FEATURE_BATCH),
        folder,
        workers,
    )
    con.execute(f"CREATE VIEW features AS SELECT * FROM read_parquet('{folder}/*.parquet')")


def _findings(
    con: duckdb.DuckDBPyConnection,
    g: graph.Graph,
    groups: dict[str, int],
    profiles: dict[str, dict[str, Any]],
    fpr: float,
) -> dict[str, Any]:
    members: dict[int, list[str]] = {}
    for node, community in groups.items():
        members.setdefault(community, []).append(node)
    scored = []
    private = graph.exclusivity(con, groups)
    for community, nodes in members.items():
        if len(nodes) < MIN_GROUP:
            continue
        values = scoring.indicators(
            [profiles[n] for n in nodes if n in profiles], private.get(community, 0.0)
        )
        s = scoring.score(values, len(nodes))
        scored.append((community, nodes, s, values))
    calibration = calibrate([item[2] for item in scored], fpr)
    solos, solo_calibration = _solos(members, profiles, fpr)
    node_score: dict[str, float] = {}
    parts = []
    for _community, nodes, s, values in scored + solos:
        for node in nodes:
            node_score[node] = s
        fitted = calibration if len(nodes) > 1 else solo_calibration
        if s >= fitted.threshold:
            parts.append((nodes, s, values, fitted))
    flagged = _join_parts(con, parts, profiles)
    ids = [f"campaign-{rank + 1:03d}" for rank in range(len(flagged))]
    node_campaign: dict[str, str] = {}
    for cid, (nodes, s, _values, _fitted) in zip(ids, flagged, strict=True):
        for node in nodes:
            node_campaign[node] = cid
            node_score[node] = max(node_score[node], s)
    facts = campaign_facts(con, node_campaign)
    campaigns = [_campaign(facts[cid], cid, *part) for cid, part in zip(ids, flagged, strict=True)]
    return {
        "campaigns": campaigns,
        "node_campaign": node_campaign,
        "node_score": node_score,
        "accounts": _account_rows(
            con,
            node_campaign,
            node_score,
            {c["id"]: [e["signal"] for e in c["evidence"][:4]] for c in campaigns},
        ),
        "exchanges": _substream_exchanges(con, node_campaign),
        "summary": {
            "campaigns": len(campaigns),
            "nodes": len(profiles),
            "linked_nodes": len(groups),
            "edges": len(g.sources),
            "flagged_accounts": sum(1 for n in node_campaign if SEPARATOR not in n),
            "flagged_substreams": sum(1 for n in node_campaign if SEPARATOR in n),
            "threshold": round(calibration.threshold, 4),
            "calibration": calibration.describe(),
            "single_account_calibration": solo_calibration.describe(),
        },
    }


Part = tuple[list[str], float, dict[str, float], Calibration]


def _join_parts(
    con: duckdb.DuckDBPyConnection, parts: list[Part], profiles: dict[str, dict[str, Any]]
) -> list[Part]:
    """Flagged parts joined into campaigns (campaigns/merge.py), strongest first. A
    joined campaign is scored on all its members; it keeps its strongest part's score
    if that is higher."""
    roots = parts_to_join(con, {n: i for i, part in enumerate(parts) for n in part[0]})
    joined: dict[int, list[int]] = {}
    for i, root in enumerate(roots):
        joined.setdefault(root, []).append(i)
    result = []
    for members in joined.values():
        if len(members) == 1:
            result.append(parts[members[0]])
            continue
        nodes = sorted(n for i in members for n in parts[i][0])
        private = sum(parts[i][2]["private_templates"] * len(parts[i][0]) for i in members)
        values = scoring.indicators([profiles[n] for n in nodes], private / len(nodes))
        s = max([scoring.score(values, len(nodes))] + [parts[i][1] for i in members])
        result.append((nodes, s, values, parts[members[0]][3]))
    return sorted(result, key=lambda part: (-part[1], part[0][0]))


def _solos(
    members: dict[int, list[str]], profiles: dict[str, dict[str, Any]], fpr: float
) -> tuple[list[tuple[int, list[str], float, dict[str, float]]], Calibration]:
    """Accounts outside every group that harvest at volume on their own, scored alone.
    Their threshold is the calibrated one for lone accounts, never below the default:
    one account has no linkage to corroborate it."""
    grouped = {n for nodes in members.values() if len(nodes) >= MIN_GROUP for n in nodes}
    solos = []
    for node, p in profiles.items():
        if node in grouped or (p["exchanges"] or 0) < SOLO_EXCHANGES:
            continue
        values = scoring.indicators([p])
        solos.append((-1, [node], scoring.score(values, 1), values))
    fitted = calibrate([item[2] for item in solos], fpr)
    return solos, replace(fitted, threshold=max(fitted.threshold, scoring.THRESHOLD))


def _campaign(
    facts: dict[str, Any],
    cid: str,
    nodes: list[str],
    s: float,
    values: dict[str, float],
    calibration: Calibration,
) -> dict[str, Any]:
    accounts = sorted(n for n in nodes if SEPARATOR not in n)
    return {
        "id": cid,
        "score": round(s, 4),
        "confidence": round(calibration.confidence(s), 4),
        "accounts": accounts,
        "substreams": [
            dict(zip(("account_id", "end_user_id"), n.split(SEPARATOR), strict=True))
            for n in sorted(nodes)
            if SEPARATOR in n
        ],
        "exchange_count": facts["exchanges"],
        "first_seen": facts["first_seen"],
        "last_seen": facts["last_seen"],
        "capability_mix": facts["mix"],
        "evidence": [e.__dict__ for e in scoring.explain(values, len(nodes), facts["links"])],
        "indicators": [_indicator(k, v, n) for k, v, n in facts.get("top", [])],
        "recommended_action": scoring.action(s, values, calibration.threshold),
    }


def _indicator(kind: str, key: str, accounts: int) -> dict[str, Any]:
    """A shared key as an analyst reads it; a network key is a prefix and a client."""
    value = key.split(":", 1)[1]
    if kind == "network":
        prefix, agent = value.split("|", 1)
        return {"kind": kind, "value": prefix, "user_agent": agent or None, "accounts": accounts}
    return {"kind": kind, "value": value, "accounts": accounts}


def _account_rows(
    con: duckdb.DuckDBPyConnection,
    node_campaign: dict[str, str],
    node_score: dict[str, float],
    reasons: dict[str, list[str]],
) -> list[dict[str, Any]]:
    """One row per account; a flagged one carries its campaign's strongest evidence.
    A mixed account is never flagged whole: its flagged sub-streams are in exchanges."""
    rows = []
    mixed = {r[0] for r in con.execute("SELECT account_id FROM mixed").fetchall()}
    for (account,) in con.execute("SELECT DISTINCT account_id FROM exchanges").fetchall():
        cid = None if account in mixed else node_campaign.get(account)
        s = node_score.get(account, 0.0)
        rows.append(
            {
                "account_id": account,
                "score": round(s, 4),
                "flagged": cid is not None,
                "campaign_id": cid,
                "reasons": reasons[cid] if cid else [],
            }
        )
    return rows


def _substream_exchanges(con: duckdb.DuckDBPyConnection, node_campaign: dict[str, str]) -> pa.Table:
    """Exchanges of flagged sub-streams inside mixed accounts, with their campaign."""
    flagged = [(n, c) for n, c in node_campaign.items() if SEPARATOR in n]
    if not flagged:
        return FINDINGS_EXCHANGES.empty_table()
    con.register(
        "flagged_substreams",
        pa.table({"node": [n for n, _ in flagged], "campaign_id": [c for _, c in flagged]}),
    )
    relation = con.sql(
        "SELECT request_id, campaign_id FROM node_exchanges JOIN flagged_substreams USING (node)"
    )
    table = relation.to_arrow_table() if hasattr(relation, "to_arrow_table") else relation.arrow()
    return table.cast(FINDINGS_EXCHANGES)


def _write(out: Path, findings: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(findings["accounts"], schema=FINDINGS_ACCOUNTS)
    tmp = out / ".accounts.parquet.tmp"
    pq.write_table(table, tmp)
    tmp.replace(out / "accounts.parquet")
    atomic_write(out / "campaigns.json", json.dumps(findings["campaigns"], indent=1).encode())
    tmp = out / ".exchanges.parquet.tmp"
    pq.write_table(findings["exchanges"], tmp)
    tmp.replace(out / "exchanges.parquet")
