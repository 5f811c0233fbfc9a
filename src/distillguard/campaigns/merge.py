"""Join flagged communities that are parts of one campaign.

Community detection can cut a very large campaign (tens of thousands of accounts, linked
sparsely so the graph stays small) into many parts, each flagged on its own. Parts that
share the campaign's own keys (a template band, a payment card) held mostly by flagged
nodes are one operation and are reported as one: one card, or a few template bands
(a single band may be a phrase two operators both use). Keys that legitimate users share
too (a common phrase, a provider's network) never join anything.
"""

from __future__ import annotations

import functools

import pyarrow as pa

from distillguard.engines import Engine

KINDS = ("template", "payment")
MOSTLY_FLAGGED = 0.8  # a key joins parts only if flagged nodes hold this share of it
# Two parts join by templates when they share this many template keys: one band in
# common can be boilerplate (a framing, a chain-of-thought phrase) that two operators
# both use, while parts of one campaign share the bands of its templates by the dozen.
SHARED_TEMPLATES = 3
# Pairs sharing a key are counted exactly unless that makes more than PAIR_BUDGET pairs
# (a very large campaign cut into thousands of parts: 689M at the 1M-exchange day).
# Then a key held by more than WIDE parts pairs each of its parts with a few anchors
# instead, linear in the key's parts: its holders that hold the most such keys, so that
# most keys share their anchors and a part's keys in common with an anchor add up. A
# smaller campaign sharing a band with a bigger one can lose that band's anchors to it,
# and come out in parts; exact counts, below the budget, do not.
WIDE = 32
ANCHORS = 8
PAIR_BUDGET = 20_000_000

KEYS_SQL = """
WITH flagged AS (
    SELECT n.id, f.part, f.solo FROM flagged_parts f JOIN node_ids n USING (node)
),
held AS (
    SELECT key_id, kind, degree, part, solo, count(*) AS nodes
    FROM linked JOIN flagged USING (id) WHERE kind IN ({kinds})
    GROUP BY key_id, kind, degree, part, solo
),
joining AS (
    SELECT key_id, kind, count(*) FILTER (WHERE NOT solo) AS parts
    FROM held GROUP BY key_id, kind, degree
    HAVING sum(nodes) >= {mostly} * degree AND count(*) > 1
),
shared AS (
    SELECT h.key_id, h.kind, h.part, h.solo, j.parts
    FROM held h JOIN joining j ON h.key_id = j.key_id AND h.kind = j.kind
),
bands AS (SELECT key_id, part, parts FROM shared WHERE kind = 'template' AND NOT solo)
"""
PAIRS_NEEDED_SQL = (
    KEYS_SQL
    + """
SELECT coalesce(sum(parts * (parts - 1) / 2), 0) FROM (
    SELECT DISTINCT key_id, parts FROM bands WHERE parts > {wide})
"""
)
JOINS_SQL = (
    KEYS_SQL
    + """,
wide AS (SELECT key_id, part FROM bands WHERE parts > {wide}),
ranked AS (
    SELECT part, row_number() OVER (ORDER BY count(*) DESC, part) AS standing
    FROM wide GROUP BY part
),
holders AS (  -- k: the part's place among the key's holders, anchors first
    SELECT w.key_id, w.part, row_number() OVER (PARTITION BY w.key_id ORDER BY r.standing) AS k
    FROM wide w JOIN ranked r ON r.part = w.part
),
pairs AS (  -- each key's pair once
    SELECT a.part AS first, b.part AS second
    FROM bands a JOIN bands b ON a.key_id = b.key_id
    WHERE a.parts <= {wide} AND a.part < b.part
    UNION ALL
    SELECT least(a.part, b.part), greatest(a.part, b.part)
    FROM holders a JOIN holders b ON a.key_id = b.key_id
    WHERE a.k <= {anchors} AND b.k > a.k
)
SELECT list_sort(list(part)) FROM shared WHERE kind = 'payment' GROUP BY key_id
UNION ALL
SELECT [first, second] FROM pairs GROUP BY first, second HAVING count(*) >= {shared}
"""
)


def parts_to_join(
    engine: Engine, node_part: dict[str, int], solos: frozenset[int] = frozenset()
) -> list[int]:
    """For each part (0..n-1), the part it is joined into (its own index if none). Uses
    the graph stage's `linked` (id, key_id, kind, degree: the keys more than one node
    holds) and `node_ids` (id, node) tables. A solo part (one account the graph linked
    to no group) joins others only by payment: the graph already weighed its templates
    and left it alone, and a few colliding template bands would otherwise merge
    unrelated lone harvesters."""
    count = max(node_part.values(), default=-1) + 1
    parent = list(range(count))
    if count < 2:
        return parent
    parts = list(node_part.values())
    engine.register(
        "flagged_parts",
        pa.table({"node": list(node_part), "part": parts, "solo": [p in solos for p in parts]}),
    )
    kinds = ", ".join(f"'{k}'" for k in KINDS)
    try:
        sql = functools.partial(
            str.format, kinds=kinds, mostly=MOSTLY_FLAGGED, anchors=ANCHORS, shared=SHARED_TEMPLATES
        )
        ((needed,),) = engine.rows(sql(PAIRS_NEEDED_SQL, wide=WIDE))
        exact = 2**31 - 1  # no key is held by more parts: every pair counted
        rows = engine.rows(sql(JOINS_SQL, wide=WIDE if needed > PAIR_BUDGET else exact))
    finally:
        engine.unregister("flagged_parts")

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for (joined,) in rows:
        if not joined or len(joined) < 2:  # None when FILTER left no part
            continue
        first = root(joined[0])
        for other in joined[1:]:
            r = root(other)
            if r != first:
                parent[max(r, first)] = min(r, first)
                first = min(r, first)
    return [root(i) for i in range(count)]
