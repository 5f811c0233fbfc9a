"""Account profiles: the behaviour of each account over its exchanges, in SQL.

One row per account, computed by the engine from the exchanges and their content
features (digests, features/digest.py) plus the optional accounts table. Each column is a
behaviour the design brief names; none decides anything alone. A farmed account looks
like a light user on most of them; what gives a campaign away is that hundreds of
accounts share the same unusual values at once (the linkage stage's job).
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa

from distillguard.engines import Engine

SCRIPTED_AGENTS = (
    r"^(python-requests|python-httpx|curl|go-http-client|aiohttp|node-fetch|wget|okhttp|java)"
)
DEPTH_CEILING = 16000  # a max_tokens at or above this is "asking for everything"

PROFILE_SQL = """
WITH timing AS (
    SELECT account_id, avg(gap) AS gap_mean, stddev_pop(gap) AS gap_sd
    FROM (SELECT account_id, t - lag(t) OVER (PARTITION BY account_id ORDER BY t) AS gap
          FROM (SELECT account_id, epoch_us(ts) / 1000000.0 AS t FROM {source}))
    WHERE gap IS NOT NULL AND gap < 6 * 3600 GROUP BY account_id
),
hour_entropy AS (
    SELECT account_id, -sum(p * ln(p)) / ln(24) AS hour_entropy
    FROM (SELECT account_id, n / sum(n) OVER (PARTITION BY account_id) AS p
          FROM (SELECT account_id, hour(ts) AS h, count(*) AS n FROM {source} GROUP BY 1, 2))
    GROUP BY account_id
),
cap_top AS (
    SELECT account_id, capability AS top_capability, n / total AS capability_concentration
    FROM (SELECT account_id, capability, n, sum(n) OVER (PARTITION BY account_id) AS total,
                 row_number() OVER (PARTITION BY account_id ORDER BY n DESC, capability) AS rank
          FROM (SELECT account_id, capability, count(*) AS n FROM {source} GROUP BY 1, 2))
    WHERE rank = 1
),
agents AS (
    SELECT user_agent, regexp_matches(lower(user_agent), '{scripted}') AS scripted
    FROM (SELECT DISTINCT user_agent FROM {source} WHERE user_agent IS NOT NULL)
),
totals AS (
    SELECT
        x.account_id,
        count(*) AS exchanges,
        min(x.ts) AS first_seen,
        max(x.ts) AS last_seen,
        avg(CASE WHEN coalesce(x.turn_index, 0) = 0 THEN 1 ELSE 0 END) AS single_turn_share,
        avg(coalesce(x.turn_index, 0)) AS mean_turn_index,
        avg(x.cot_score) AS cot_mean,
        avg(CASE WHEN x.cot_score >= 0.5 THEN 1 ELSE 0 END) AS cot_share,
        sum(x.output_tokens) / nullif(sum(x.input_tokens), 0) AS output_input_ratio,
        avg(CASE WHEN x.max_tokens >= {ceiling} THEN 1 ELSE 0 END) AS max_tokens_ceiling_share,
        avg(CASE WHEN x.reasoning_requested THEN 1 ELSE 0 END) AS reasoning_share,
        avg(CASE WHEN x.status = 429 THEN 1 ELSE 0 END) AS rate_limited_share,
        avg(coalesce(x.tools_declared, 0)) AS tools_declared_mean,
        avg(CASE WHEN a.scripted THEN 1 ELSE 0 END) AS scripted_agent_share
    FROM {source} x LEFT JOIN agents a ON x.user_agent = a.user_agent
    GROUP BY x.account_id
){distinct}
SELECT
    t.account_id,
    t.exchanges,
    t.first_seen,
    t.last_seen,
    hour_entropy.hour_entropy,
    timing.gap_sd / nullif(timing.gap_mean, 0) AS interarrival_cv,
    t.single_turn_share,
    t.mean_turn_index,
    cap_top.top_capability,
    cap_top.capability_concentration,
    t.cot_mean,
    t.cot_share,
    t.output_input_ratio,
    t.max_tokens_ceiling_share,
    t.reasoning_share,
    t.rate_limited_share,
    t.tools_declared_mean,
    t.scripted_agent_share{counted}
FROM totals t
LEFT JOIN hour_entropy USING (account_id)
LEFT JOIN timing USING (account_id)
LEFT JOIN cap_top USING (account_id)
{joins}
"""

# Distinct values per account, each counted in its own grouping: DuckDB's distinct
# aggregates inside one wide GROUP BY took twice as long (31 s against 14 s for the
# whole profile at 10M exchanges). Per count: the value counted, the columns it gives.
DISTINCT_COUNTS = {
    "active_days": (
        "CAST(ts AS DATE)",
        "active_days, t.exchanges / active_days AS exchanges_per_active_day",
    ),
    "prompts": ("prompt_hash", "prompts / t.exchanges AS prompt_diversity"),
    "ip_prefixes": ("ip_prefix", "ip_prefixes"),
    "user_agents": ("user_agent", "user_agents"),
    "end_users": ("end_user_id", "end_users"),
    "system_prompts": ("system_hash", "system_prompts"),
    "models": ("model", "models"),
}


def profile(
    engine: Engine, source: str = "exchanges", counts: Iterable[str] = tuple(DISTINCT_COUNTS)
) -> pa.Table:
    """Profiles from the view `source` (digests of exchanges, grouped by its account_id
    column); joined with the view `accounts` (sign-up data) when there is one. A
    source may group sub-streams (account, unit separator, end user): sign-up data is
    then that of the account. `counts` names the distinct counts to make, each a
    grouping of the whole traffic: a caller that reads none of them asks for none. Rows
    come in no particular order: sorting them would copy the table while it is whole
    (a row per node, 2.3M at the largest day measured)."""
    counts = list(counts)
    distinct = "".join(
        f",\ndistinct_{name} AS (SELECT account_id, count(v) AS {name} FROM "
        f"(SELECT DISTINCT account_id, {DISTINCT_COUNTS[name][0]} AS v FROM {{source}}) "
        "GROUP BY account_id)"
        for name in counts
    )
    counted = "".join(f",\n    {DISTINCT_COUNTS[name][1]}" for name in counts)
    joins = "\n".join(f"LEFT JOIN distinct_{name} USING (account_id)" for name in counts)
    sql = PROFILE_SQL.replace("{distinct}", distinct).replace("{counted}", counted)
    sql = sql.replace("{joins}", joins)
    sql = sql.format(source=source, ceiling=DEPTH_CEILING, scripted=SCRIPTED_AGENTS)
    if engine.has("accounts"):
        sql = f"""
            SELECT p.*, a.created_at, a.signup_channel, a.verification, a.payment_fingerprint,
                   a.email_domain, a.signup_ip_prefix,
                   (epoch_us(p.first_seen) - epoch_us(a.created_at)) / 1000000.0
                       AS seconds_signup_to_first_use
            FROM ({sql}) p
            LEFT JOIN accounts a ON a.account_id = split_part(p.account_id, chr(31), 1)"""
    return engine.arrow(sql)
