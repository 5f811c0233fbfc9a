"""Trust the operator extends to a sign-up channel (`detect --trusted-channel`): which
accounts it covers. A vetted research programme's members running a scripted
evaluation with chain of thought look, by their traffic alone, like a small harvest;
only the operator knows who they are. Trust stops where the accounts look farmed.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from distillguard.campaigns.score import FRESH_SECONDS
from distillguard.engines import Engine
from distillguard.link.evidence import MIN_BURST

TRUSTED_SQL = """
WITH signups AS (  -- one channel and one sign-up time, however many rows name the account
    SELECT account_id, min(signup_channel) AS channel, min(created_at) AS created_at,
           floor(epoch_us(min(created_at)) / 3600000000) AS hour
    FROM accounts GROUP BY account_id
    HAVING count(*) = count(signup_channel) AND count(*) = count(created_at)
       AND min(signup_channel) = max(signup_channel) AND min(created_at) = max(created_at)
       AND min(signup_channel) IN (SELECT channel FROM trusted_channels)
),
hours AS (
    SELECT DISTINCT signup_channel AS channel, account_id,
           floor(epoch_us(created_at) / 3600000000) AS hour
    FROM accounts WHERE signup_channel IN (SELECT channel FROM trusted_channels)
),
near AS (  -- accounts signed up through the channel in its hour and the hours either side
    SELECT s.account_id, count(DISTINCT h.account_id) AS signups
    FROM signups s CROSS JOIN (SELECT -1 AS shift UNION ALL SELECT 0 UNION ALL SELECT 1) d
    JOIN hours h ON h.channel = s.channel AND h.hour = s.hour + d.shift
    GROUP BY s.account_id
),
first_use AS (SELECT account_id, min(ts) AS first FROM exchanges GROUP BY account_id)
SELECT n.id FROM signups s
JOIN near b ON b.account_id = s.account_id
JOIN node_ids n ON n.node = s.account_id
JOIN first_use f ON f.account_id = s.account_id
WHERE b.signups < {MIN_BURST} AND epoch_us(f.first) - epoch_us(s.created_at) >= {FRESH_US}
"""


def trusted_nodes(engine: Engine, count: int, channels: list[str]) -> np.ndarray:
    """Which of the `count` nodes (node_ids, row = id - 1) are accounts that signed up
    through one of `channels`. Trust needs one known channel and sign-up time, neither
    in a burst through the channel (MIN_BURST sign-ups in its hour and the hours either
    side, so a burst across an hour's end counts) nor fresh at first use: a farm that
    enrols its new accounts in the programme (the demo's reseller campaign does) is not
    covered by it. Whole accounts only: the end users inside a reseller's account are
    not vouched for by the reseller's programme. Needs the `accounts` and `exchanges`
    tables."""
    trusted = np.zeros(count, dtype=bool)
    if not channels:
        return trusted
    engine.register("trusted_channels", pa.table({"channel": channels}))
    try:
        sql = TRUSTED_SQL.replace("{MIN_BURST}", str(MIN_BURST))
        ids = engine.rows(sql.replace("{FRESH_US}", str(FRESH_SECONDS * 1_000_000)))
    finally:
        engine.unregister("trusted_channels")
    trusted[np.array([i for (i,) in ids], dtype=np.int64) - 1] = True
    return trusted
