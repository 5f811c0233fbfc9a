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

import gzip
import json
import math
import tempfile
import zlib
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq

from distillguard.errors import InputError, SchemaError
from distillguard.ingest.engine import connect
from distillguard.ingest.values import to_ts
from distillguard.privacy import network
from distillguard.schema import ACCOUNTS, conform

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


def read_accounts(path: str | Path) -> pa.Table:
    """An accounts table from Parquet, CSV or JSON Lines (either gzipped), in the
    canonical schema. Text formats are read as ingest reads them: every value as
    written (an id "0000005" stays that, not the number 5), a blank as no value, sign-up
    times in any form `to_ts` takes, mixed within a column."""
    source = Path(path)
    if not source.is_file():
        raise InputError(f"{source}: no such accounts file")
    kind = source.name.lower().removesuffix(".gz")
    try:
        if kind.endswith(".parquet"):
            table = pq.read_table(source)
        elif kind.endswith(".csv"):
            text = pcsv.ConvertOptions(column_types=dict.fromkeys(ACCOUNTS.names, pa.string()))
            table = pcsv.read_csv(source, convert_options=text)
        elif kind.endswith((".jsonl", ".json", ".ndjson")):
            table = _json_lines(source)
        else:
            raise InputError(f"{source}: accounts must be Parquet, CSV or JSON Lines")
    except (pa.ArrowInvalid, OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise InputError(f"{source}: cannot read accounts: {exc}") from None
    table = _sign_up_times(_as_text(table), str(source))
    return conform(table, ACCOUNTS, name=str(source))


def _json_lines(source: Path) -> pa.Table:
    """JSON Lines by Arrow's reader with every canonical column as text (its guesses
    would make an id "2026-03-01" a date, a 20-digit id a float, and skip the range
    check of times); line by line when a value is not text (an epoch time, a numeric
    id), or the file starts with a byte-order mark."""
    text = pa.schema([(name, pa.string()) for name in ACCOUNTS.names])
    options = pjson.ParseOptions(explicit_schema=text, unexpected_field_behavior="ignore")
    try:
        table = pjson.read_json(source, parse_options=options)
        table.validate(full=True)  # bytes that are not UTF-8 pass the reader
        return table
    except pa.ArrowInvalid:
        pass
    columns: dict[str, list[Any]] = {name: [] for name in ACCOUNTS.names}
    opener = gzip.open if source.suffix.lower() == ".gz" else open
    with opener(source, "rt", encoding="utf-8-sig") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                raise InputError(
                    f"{source}: line {number} is not JSON (JSON Lines: one object a line)"
                ) from None
            if not isinstance(record, dict):
                raise InputError(f"{source}: line {number} is not a JSON object")
            for name, values in columns.items():
                value = record.get(name)
                scalar = value is None or name == "created_at" or isinstance(value, str)
                values.append(value if scalar else json.dumps(value))
    times = _times(columns.pop("created_at"), str(source))
    table = pa.table({name: pa.array(values, pa.string()) for name, values in columns.items()})
    return table.append_column("created_at", times)


def _as_text(table: pa.Table) -> pa.Table:
    """The canonical text columns as text (an id a JSON reader took for a number), a
    blank as no value (as ingest stores it): a blank card would otherwise be one card
    shared by every account without one."""
    for field in ACCOUNTS:
        if field.name not in table.column_names or field.type != pa.string():
            continue
        column = table.column(field.name)
        if pa.types.is_integer(column.type) or pa.types.is_boolean(column.type):
            column = column.cast(pa.string())
        if pa.types.is_string(column.type):  # blank or only spaces, as ingest reads it
            blank = pc.equal(pc.utf8_trim_whitespace(column), "")
            column = pc.if_else(blank, pa.scalar(None, pa.string()), column)
        table = table.set_column(table.column_names.index(field.name), field.name, column)
    return table


def _sign_up_times(table: pa.Table, name: str) -> pa.Table:
    """`created_at` given as text or epoch numbers read as ingest reads times (ISO 8601
    of any precision and zone, RFC 2822, seconds to nanoseconds by magnitude): a CSV's
    column is text, and Arrow's own cast takes neither nine decimals nor epoch seconds."""
    if "created_at" not in table.column_names:
        return table
    column = table.column("created_at")
    kind = column.type
    if not (pa.types.is_string(kind) or pa.types.is_integer(kind) or pa.types.is_floating(kind)):
        return table
    at = table.column_names.index("created_at")
    return table.set_column(at, "created_at", _times(column.to_pylist(), name))


def _times(values: list[Any], name: str) -> pa.Array:
    times = []
    for row, value in enumerate(values, 1):
        try:
            blank = value is None or (isinstance(value, str) and not value.strip())
            times.append(None if blank else to_ts(value))
        except ValueError as exc:
            raise SchemaError(f"{name}: created_at of row {row}: {exc}") from None
    return pa.array(times, pa.timestamp("us", "UTC"))


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


__all__ = ["TIERS", "read_accounts", "signup_risk", "tier"]
