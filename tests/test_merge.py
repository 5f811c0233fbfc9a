"""Joining flagged parts into campaigns: which shared keys join, and which do not."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest

from distillguard.campaigns import merge
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


@pytest.mark.parametrize("budget", [0, merge.PAIR_BUDGET])
def test_bands_many_flagged_parts_hold_join_them_without_counting_pairs(
    budget: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A campaign cut into more parts than pairs are counted for (budget 0: anchors)
    or not: parts sharing three of its bands join; one band alone (a phrase) does not,
    however many hold it."""
    monkeypatch.setattr(merge, "PAIR_BUDGET", budget)
    nodes = [f"n{i}" for i in range(WIDE + 5)]
    parts = {n: i for i, n in enumerate(nodes)}
    three = _engine([(n, "template", f"tb:{b}") for n in nodes for b in range(3)])
    assert parts_to_join(three, parts) == [0] * len(nodes)
    one = _engine([(n, "template", "tb:1") for n in nodes])
    assert parts_to_join(one, parts) == list(range(len(nodes)))


def test_two_campaigns_in_many_parts_sharing_a_phrase_stay_two() -> None:
    """Campaign a in 20 parts and b in 13, each part holding its campaign's five bands,
    all holding one band of a chain-of-thought phrase: two campaigns, not one."""
    rows, parts = [], {}
    for campaign, count in (("a", 20), ("b", 13)):
        for i in range(count):
            node = f"{campaign}{i}"
            parts[node] = len(parts)
            rows += [(node, "template", f"tb:{campaign}{b}") for b in range(5)]
            rows.append((node, "template", "tb:phrase"))
    assert parts_to_join(_engine(rows), parts) == [0] * 20 + [20] * 13


def test_lone_harvesters_do_not_make_a_band_wide() -> None:
    """Solo parts never join by templates, and do not count towards a key's parts."""
    solos = [f"solo{i}" for i in range(WIDE + 1)]
    rows = [(n, "template", "tb:1") for n in ["a1", "b1", *solos]]
    parts = {n: i for i, n in enumerate(["a1", "b1", *solos])}
    joined = parts_to_join(_engine(rows), parts, frozenset(range(2, len(parts))))
    assert joined == list(range(len(parts)))


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


def test_a_campaign_whose_parts_hold_different_bands_comes_out_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """120 parts, each holding 5 of the campaign's 12 bands, anchored (over the pair
    budget): with a single anchor per band, parts shared their bands with different
    anchors and 15 campaigns came out; exact pair counts give one, and so do 8."""
    import random

    monkeypatch.setattr(merge, "PAIR_BUDGET", 0)
    r = random.Random(120)
    rows = [(f"p{i}", "template", f"tb:{k}") for i in range(120) for k in r.sample(range(12), 5)]
    parts = {f"p{i}": i for i in range(120)}
    assert set(parts_to_join(_engine(rows), parts)) == {0}


def test_within_the_budget_a_smaller_campaign_keeps_its_bands() -> None:
    """Campaign a (40 parts, bands a0-a3) and b (40 parts, b0-b9, and a0 and a1 as
    boilerplate): anchored, b's parts hold more wide bands and took a0's and a1's
    anchors, and a came out in 41 parts; counted exactly, two campaigns."""
    rows, parts = [], {}
    for campaign, bands in (("a", ["a0", "a1", "a2", "a3"]), ("b", [f"b{i}" for i in range(10)])):
        for i in range(40):
            node = f"{campaign}{i}"
            parts[node] = len(parts)
            held = bands + (["a0", "a1"] if campaign == "b" else [])
            rows += [(node, "template", f"tb:{band}") for band in held]
    assert parts_to_join(_engine(rows), parts) == [0] * 40 + [40] * 40
