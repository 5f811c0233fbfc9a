"""What each flagged campaign did, for all campaigns in one pass over the traffic:
exchange count and window, capability mix, the kinds of evidence its members share,
and the shared keys an analyst can act on (prefixes, cards, system prompts).

Per-campaign queries would re-read the exchanges once per campaign; a large campaign
that Leiden splits into many parts would make that quadratic in practice.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from distillguard.engines import Engine

TOP_KEYS = 10
TOP_FINGERPRINTS = 50  # template band keys (most members first) a campaign carries
ACTIONABLE = ("network", "payment", "system_prompt")


def campaign_facts(engine: Engine, node_campaign: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Per campaign id: exchanges, first_seen, last_seen, mix, links, top keys. Uses the
    `node_exchanges`, `evidence` and `node_ids` relations (evidence joined on node
    numbers)."""
    facts: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"exchanges": 0, "first_seen": None, "last_seen": None, "mix": {}, "links": {}}
    )
    if not node_campaign:
        return {}
    engine.register(
        "flagged_nodes",
        pa.table({"node": list(node_campaign), "campaign_id": list(node_campaign.values())}),
    )
    try:
        engine.run("""
            CREATE OR REPLACE TEMP TABLE flagged_ids AS
            SELECT n.id, f.campaign_id FROM flagged_nodes f JOIN node_ids n USING (node)""")
        for cid, capability, n, first, last in engine.rows("""
            SELECT campaign_id, capability, count(*),
                   min(min(epoch_us(ts))) OVER (PARTITION BY campaign_id),
                   max(max(epoch_us(ts))) OVER (PARTITION BY campaign_id)
            FROM node_exchanges JOIN flagged_nodes USING (node) GROUP BY 1, 2
            ORDER BY 1, 3 DESC, 2"""):
            fact = facts[cid]
            fact["mix"][capability] = n
            fact["exchanges"] += n
            fact.update(first_seen=_iso(first), last_seen=_iso(last))
        for cid, kind, n in engine.rows("""
            SELECT campaign_id, kind, count(*) FROM (
                SELECT campaign_id, kind, key FROM evidence JOIN flagged_ids USING (id)
                GROUP BY 1, 2, 3 HAVING count(*) >= 2)
            GROUP BY 1, 2 ORDER BY 1, 2"""):
            facts[cid]["links"][kind] = n
        kinds = ", ".join(f"'{k}'" for k in ACTIONABLE)
        top = engine.rows(f"""
            SELECT campaign_id, kind, key, n FROM (
                SELECT campaign_id, kind, key, count(*) AS n,
                       row_number() OVER (PARTITION BY campaign_id
                                          ORDER BY count(*) DESC, kind, key) AS rank
                FROM evidence JOIN flagged_ids USING (id)
                WHERE kind IN ({kinds}) GROUP BY 1, 2, 3)
            WHERE rank <= {TOP_KEYS} ORDER BY campaign_id, rank""")
        for cid, kind, key, n in top:
            facts[cid].setdefault("top", []).append((kind, key, n))
        for cid, key in engine.rows(f"""
            SELECT campaign_id, key FROM (
                SELECT campaign_id, key, row_number() OVER (PARTITION BY campaign_id
                    ORDER BY count(*) DESC, sum(hits) DESC, key) AS rank
                FROM evidence JOIN flagged_ids USING (id)
                WHERE kind = 'template' GROUP BY 1, 2)
            WHERE rank <= {TOP_FINGERPRINTS} ORDER BY campaign_id, rank"""):
            band = int(key.removeprefix("tb:"), 16)
            facts[cid].setdefault("fingerprints", []).append(f"{band:016x}")
    finally:
        engine.unregister("flagged_nodes")
    return dict(facts)


def _iso(micros: int | None) -> str | None:
    if micros is None:
        return None
    return datetime.fromtimestamp(micros / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
