"""Account profiles: the behaviour of each account over its exchanges, in SQL.

One row per account, computed by the engine from the exchanges and their content
features (digests, features/digest.py) plus the optional accounts table. Each column is a
behaviour the design brief names; none decides anything alone. A farmed account looks
like a light user on most of them; what gives a campaign away is that hundreds of
accounts share the same unusual values at once (the linkage stage's job).
"""

from __future__ import annotations

import pyarrow as pa

from distillguard.engines import Engine

SCRIPTED_AGENTS = (
    r"^(python-requests|python-httpx|curl|go-http-client|aiohttp|node-fetch|wget|okhttp|java)"
)
DEPTH_CEILING = 16000  # a max_tokens at or above this is "asking for everything"

PROFILE_SQL = """
WITH x AS (
    SELECT *, epoch_us(ts) / 1000000.0 AS t, hour(ts) AS h FROM {source}
),
gaps AS (
    SELECT account_id, t - lag(t) OVER (PARTITION BY account_id ORDER BY t) AS gap FROM x
),
timing AS (
    SELECT account_id, avg(gap) AS gap_mean, stddev_pop(gap) AS gap_sd
    FROM gaps WHERE gap IS NOT NULL AND gap < 6 * 3600 GROUP BY account_id
),
hours AS (
    SELECT account_id, h, count(*) AS n FROM x GROUP BY account_id, h
),
hour_entropy AS (
    SELECT account_id, -sum(p * ln(p)) / ln(24) AS hour_entropy
    FROM (SELECT account_id, n / sum(n) OVER (PARTITION BY account_id) AS p FROM hours)
    GROUP BY account_id
),
caps AS (
    SELECT account_id, capability, count(*) AS n FROM x GROUP BY account_id, capability
),
cap_top AS (
    SELECT account_id, arg_max(capability, n) AS top_capability,
           max(n) / sum(n) AS capability_concentration
    FROM caps GROUP BY account_id
)
SELECT
    x.account_id,
    count(*) AS exchanges,
    count(DISTINCT CAST(x.ts AS DATE)) AS active_days,
    count(*) / count(DISTINCT CAST(x.ts AS DATE)) AS exchanges_per_active_day,
    min(x.ts) AS first_seen,
    max(x.ts) AS last_seen,
    any_value(hour_entropy.hour_entropy) AS hour_entropy,
    any_value(timing.gap_sd / nullif(timing.gap_mean, 0)) AS interarrival_cv,
    avg(CASE WHEN coalesce(x.turn_index, 0) = 0 THEN 1 ELSE 0 END) AS single_turn_share,
    avg(coalesce(x.turn_index, 0)) AS mean_turn_index,
    count(DISTINCT x.prompt_hash) / count(*) AS prompt_diversity,
    any_value(cap_top.top_capability) AS top_capability,
    any_value(cap_top.capability_concentration) AS capability_concentration,
    avg(x.cot_score) AS cot_mean,
    avg(CASE WHEN x.cot_score >= 0.5 THEN 1 ELSE 0 END) AS cot_share,
    sum(x.output_tokens) / nullif(sum(x.input_tokens), 0) AS output_input_ratio,
    avg(CASE WHEN x.max_tokens >= {ceiling} THEN 1 ELSE 0 END) AS max_tokens_ceiling_share,
    avg(CASE WHEN x.reasoning_requested THEN 1 ELSE 0 END) AS reasoning_share,
    avg(CASE WHEN x.status = 429 THEN 1 ELSE 0 END) AS rate_limited_share,
    avg(coalesce(x.tools_declared, 0)) AS tools_declared_mean,
    count(DISTINCT x.ip_prefix) AS ip_prefixes,
    count(DISTINCT x.user_agent) AS user_agents,
    avg(CASE WHEN regexp_matches(lower(x.user_agent), '{scripted}') THEN 1 ELSE 0 END)
        AS scripted_agent_share,
    count(DISTINCT x.end_user_id) AS end_users,
    count(DISTINCT x.system_hash) AS system_prompts,
    count(DISTINCT x.model) AS models
FROM x
LEFT JOIN hour_entropy USING (account_id)
LEFT JOIN timing USING (account_id)
LEFT JOIN cap_top USING (account_id)
GROUP BY x.account_id
"""


def profile(engine: Engine, source: str = "exchanges") -> pa.Table:
    """Profiles from the view `source` (digests of exchanges, grouped by its account_id
    column); joined with the view `accounts` (sign-up data) when there is one. A
    source may group sub-streams (account, unit separator, end user): sign-up data is
    then that of the account."""
    sql = PROFILE_SQL.format(source=source, ceiling=DEPTH_CEILING, scripted=SCRIPTED_AGENTS)
    if engine.has("accounts"):
        sql = f"""
            SELECT p.*, a.created_at, a.signup_channel, a.verification, a.payment_fingerprint,
                   a.email_domain, a.signup_ip_prefix,
                   (epoch_us(p.first_seen) - epoch_us(a.created_at)) / 1000000.0
                       AS seconds_signup_to_first_use
            FROM ({sql}) p
            LEFT JOIN accounts a ON a.account_id = split_part(p.account_id, chr(31), 1)"""
    return engine.arrow(sql).sort_by("account_id")
