"""Joining flagged parts into campaigns: which shared keys join, and which do not."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from distillguard.campaigns.merge import SHARED_TEMPLATES, WIDE, parts_to_join
from distillguard.engines.duck import DuckEngine


def _engine(rows: list[tuple[str, str, str]]) -> DuckEngine:
    """The graph stage's tables as it would leave them for these (node, kind, key) rows:
    nodes numbered, and the keys more than one node holds numbered with their degree."""
    con = duckdb.connect()
    con.register(
        "held_keys",
        pa.table({k: [r[i] for r in rows] for i, k in enumerate(("node", "kind", "key"))}),
    )
    con.execute("""
        CREATE TABLE node_ids AS
            SELECT CAST(row_number() OVER (ORDER BY node) AS INTEGER) AS id, node
            FROM (SELECT DISTINCT node FROM held_keys);
        CREATE TABLE linked AS
            SELECT id, key_id, kind, degree FROM (
                SELECT n.id, k.kind, dense_rank() OVER (ORDER BY k.key, k.kind) AS key_id,
                       count(*) OVER (PARTITION BY k.key, k.kind) AS degree
                FROM held_keys k JOIN node_ids n USING (node))
            WHERE degree > 1
    """)
    return DuckEngine(con)


def _sharing(bands: int) -> list[tuple[str, str, str]]:
    """Two groups (a1, a2 and b1) holding `bands` template bands in common."""
    return [(n, "template", f"tb:{i}") for i in range(bands) for n in ("a1", "a2", "b1")]


def test_groups_sharing_their_own_templates_join() -> None:
    engine = _engine(_sharing(SHARED_TEMPLATES))
    assert parts_to_join(engine, {"a1": 0, "a2": 0, "b1": 1}) == [0, 0]


def test_one_band_in_common_is_not_one_operation() -> None:
    """Two operators framing different templates with the same boilerplate share a band
    or two, and stay two campaigns (seed 2 of the demo preset joined two this way)."""
    engine = _engine(_sharing(SHARED_TEMPLATES - 1))
    assert parts_to_join(engine, {"a1": 0, "a2": 0, "b1": 1}) == [0, 1]


def test_a_band_many_flagged_parts_hold_joins_them_all() -> None:
    """A campaign cut into many parts: one band held by more parts than pairs are
    counted for joins them without a pair count."""
    nodes = [f"n{i}" for i in range(WIDE + 1)]
    engine = _engine([(n, "template", "tb:1") for n in nodes])
    assert parts_to_join(engine, {n: i for i, n in enumerate(nodes)}) == [0] * len(nodes)
    few = nodes[:WIDE]
    engine = _engine([(n, "template", "tb:1") for n in few])
    assert parts_to_join(engine, {n: i for i, n in enumerate(few)}) == list(range(WIDE))


def test_a_key_mostly_held_outside_the_flagged_parts_joins_nothing() -> None:
    rows = [("a1", "template", "tb:1"), ("b1", "template", "tb:1")]
    rows += [(f"person{i}", "template", "tb:1") for i in range(5)]
    assert parts_to_join(_engine(rows), {"a1": 0, "b1": 1}) == [0, 1]


def test_lone_harvesters_join_by_payment_only() -> None:
    shared_band = [("x", "template", "tb:7"), ("y", "template", "tb:7")]
    solos = frozenset({0, 1})
    assert parts_to_join(_engine(shared_band), {"x": 0, "y": 1}, solos) == [0, 1]
    one_card = [*shared_band, ("x", "payment", "pay:c"), ("y", "payment", "pay:c")]
    assert parts_to_join(_engine(one_card), {"x": 0, "y": 1}, solos) == [0, 0]
