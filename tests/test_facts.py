"""What a flagged campaign did, on hand-built tables: counts, window, mix, shared keys."""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb
import pyarrow as pa

from distillguard.campaigns.facts import campaign_facts
from distillguard.engines.duck import DuckEngine

DAY = datetime(2026, 3, 1, tzinfo=UTC)


def _engine() -> DuckEngine:
    """Two farm accounts (a, b), a bystander (c), and d whose one exchange, like a's
    summaries, carries no time."""
    con = duckdb.connect()
    exchanges = [
        ("a", "coding", DAY.replace(hour=9)),
        ("a", "coding", DAY.replace(hour=11)),
        ("a", "summarise", None),
        ("b", "coding", DAY.replace(hour=10)),
        ("b", "reasoning", DAY.replace(hour=12)),
        ("c", "coding", DAY.replace(hour=1)),
        ("d", "summarise", None),
    ]
    con.register(
        "node_exchanges",
        pa.table(
            {
                "node": [e[0] for e in exchanges],
                "capability": [e[1] for e in exchanges],
                "ts": pa.array([e[2] for e in exchanges], pa.timestamp("us", tz="UTC")),
            }
        ),
    )
    con.register("node_ids", pa.table({"id": [1, 2, 3, 4], "node": ["a", "b", "c", "d"]}))
    evidence = [
        (1, "template", "tb:ff", 5),
        (2, "template", "tb:ff", 3),
        (1, "network", "ip:10.0.0.0/24|bot", 3),
        (2, "network", "ip:10.0.0.0/24|bot", 2),
        (3, "network", "ip:10.0.0.0/24|bot", 1),
        (3, "template", "tb:ee", 9),
    ]
    con.register(
        "evidence",
        pa.table(
            {k: [e[i] for e in evidence] for i, k in enumerate(("id", "kind", "key", "hits"))}
        ),
    )
    return DuckEngine(con)


def test_a_campaigns_facts_count_its_members_only_and_skip_missing_times() -> None:
    facts = campaign_facts(_engine(), {"a": "campaign-001", "b": "campaign-001"})
    fact = facts["campaign-001"]
    assert fact["exchanges"] == 5
    assert (fact["first_seen"], fact["last_seen"]) == (
        "2026-03-01T09:00:00Z",
        "2026-03-01T12:00:00Z",
    )
    assert list(fact["mix"].items()) == [("coding", 3), ("reasoning", 1), ("summarise", 1)]
    assert fact["links"] == {"network": 1, "template": 1}
    assert fact["top"] == [("network", "ip:10.0.0.0/24|bot", 2)]
    assert fact["fingerprints"] == ["00000000000000ff"]


def test_a_campaign_without_any_time_has_no_window() -> None:
    facts = campaign_facts(_engine(), {"d": "campaign-002"})
    assert facts["campaign-002"]["exchanges"] == 1
    assert facts["campaign-002"]["first_seen"] is None
    assert facts["campaign-002"]["last_seen"] is None
    assert campaign_facts(_engine(), {}) == {}
