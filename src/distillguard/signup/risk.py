"""Sign-up risk from the accounts table alone, so farmed accounts can be stopped before
their first exchange.

A farm registers accounts in bursts through an abused channel, often from a handful of
uncommon e-mail domains, on shared cards and shared sign-up infrastructure. Each of
those is ordinary on its own (a company puts several accounts on one card, a class
signs up together); what a farm shows is several at once, inside a short window. The
signals are relational and run on DuckDB:

    burst          sign-ups in the account's channel within its hour, against the
                   channel's usual hourly count
    domain_cluster an e-mail domain most of whose sign-ups came within one week
    payment_reuse  accounts on the same card within three days
    shared_network sign-ups from the same /24 (or /48) within a day
    weak_check     no verification beyond an e-mail

The score maps to a verification tier (TIERS).
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import duckdb
import pyarrow as pa

from distillguard.ingest.engine import connect
from distillguard.privacy import network

WEIGHTS = {
    "burst": 2.0,
    "domain_cluster": 1.5,
    "payment_reuse": 1.5,
    "shared_network": 1.5,
    "weak_check": 0.5,
}
BIAS = 3.0
# (lowest score, tier): what to ask of an account before it may send traffic
TIERS = [
    (0.0, "standard"),
    (0.2, "phone verification"),
    (0.5, "payment or identity verification"),
    (0.8, "manual review before first use"),
]
CONCENTRATED = 0.5  # a domain with this share of its sign-ups in one week is a cluster;
# a mail provider's or a company's sign-ups spread over months

SIGNALS_SQL = """
WITH a AS (
    SELECT *, date_trunc('hour', created_at) AS hour,
           count(*) OVER (PARTITION BY email_domain) AS domain_total
    FROM accounts_in
),
per_hour AS (SELECT signup_channel, hour, count(*) AS n FROM a GROUP BY 1, 2),
usual AS (SELECT signup_channel, median(n) AS usual FROM per_hour GROUP BY 1),
w AS (
    SELECT a.*, h.n AS hour_count, u.usual,
        count(*) OVER (PARTITION BY email_domain ORDER BY created_at
            RANGE BETWEEN INTERVAL 7 DAYS PRECEDING AND INTERVAL 7 DAYS FOLLOWING)
            AS domain_week,
        count(*) OVER (PARTITION BY payment_fingerprint ORDER BY created_at
            RANGE BETWEEN INTERVAL 3 DAYS PRECEDING AND INTERVAL 3 DAYS FOLLOWING)
            AS card_days,
        count(*) OVER (PARTITION BY net ORDER BY created_at
            RANGE BETWEEN INTERVAL 1 DAYS PRECEDING AND INTERVAL 1 DAYS FOLLOWING)
            AS net_day
    FROM a LEFT JOIN per_hour h USING (signup_channel, hour) LEFT JOIN usual u USING
        (signup_channel)
)
SELECT account_id, CAST(COLUMNS(* EXCLUDE (account_id)) AS DOUBLE) FROM (SELECT account_id,
    CASE WHEN created_at IS NULL OR hour_count < 5 THEN 0.0
         ELSE least(1.0, greatest(0.0, ln(hour_count / usual) / ln(10))) END AS burst,
    CASE WHEN email_domain IS NULL OR domain_week < 3
              OR domain_week < {concentrated} * domain_total THEN 0.0
         ELSE least(1.0, (domain_week - 2) / 8) END AS domain_cluster,
    CASE WHEN payment_fingerprint IS NULL OR card_days < 2 THEN 0.0
         ELSE least(1.0, (card_days - 1) / 4) END AS payment_reuse,
    CASE WHEN net IS NULL OR net_day < 3 THEN 0.0
         ELSE least(1.0, (net_day - 2) / 5) END AS shared_network,
    CASE WHEN coalesce(lower(verification), 'none') IN ('none', 'email') THEN 1.0
         ELSE 0.0 END AS weak_check
FROM w) ORDER BY account_id
"""


def signup_risk(accounts: pa.Table) -> pa.Table:
    """Per account: each signal in 0..1, the score, the tier and the reasons."""
    accounts = accounts.append_column("net", _networks(accounts))
    with tempfile.TemporaryDirectory(prefix="distillguard-signup-") as spill:
        con = connect("1GB", Path(spill))
        try:
            con.register("accounts_in", accounts)
            signals = _arrow(con.sql(SIGNALS_SQL.format(concentrated=CONCENTRATED)))
        finally:
            con.close()
    rows = signals.to_pylist()
    scores = [_score(r) for r in rows]
    return (
        signals.append_column("score", pa.array(scores, pa.float64()))
        .append_column("tier", pa.array([tier(s) for s in scores], pa.string()))
        .append_column("reasons", pa.array([_reasons(r) for r in rows], pa.list_(pa.string())))
    )


def tier(score: float) -> str:
    return [name for low, name in TIERS if score >= low][-1]


def _score(signals: dict[str, float]) -> float:
    total = sum(WEIGHTS[k] * signals[k] for k in WEIGHTS)
    return round(1 / (1 + math.exp(-(total - BIAS))), 4)


def _reasons(signals: dict[str, float]) -> list[str]:
    return [k for k in WEIGHTS if k != "weak_check" and signals[k] > 0]


def _networks(accounts: pa.Table) -> pa.Array:
    """The sign-up network: the given prefix, else the /24 or /48 of the address."""
    given = accounts.column("signup_ip_prefix").to_pylist()
    addresses = accounts.column("signup_ip").to_pylist()
    return pa.array(
        [p if p else (network(a) if a else None) for p, a in zip(given, addresses, strict=True)],
        pa.string(),
    )


def _arrow(relation: duckdb.DuckDBPyRelation) -> pa.Table:
    table = relation.to_arrow_table() if hasattr(relation, "to_arrow_table") else relation.arrow()
    return table if isinstance(table, pa.Table) else pa.Table.from_batches(table)


__all__ = ["TIERS", "signup_risk", "tier"]
