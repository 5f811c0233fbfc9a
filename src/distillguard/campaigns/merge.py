"""Join flagged communities that are parts of one campaign.

Community detection can cut a very large campaign (tens of thousands of accounts, linked
sparsely so the graph stays small) into many parts, each flagged on its own. Parts that
share the campaign's own keys (a template band, a payment card) held mostly by flagged
nodes are one operation and are reported as one. Keys that legitimate users share too
(a common phrase, a provider's network) never join anything.
"""

from __future__ import annotations

import pyarrow as pa

from distillguard.engines import Engine

KINDS = ("template", "payment")
MOSTLY_FLAGGED = 0.8  # a key joins parts only if flagged nodes hold this share of it


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
        rows = engine.rows(f"""
            WITH flagged AS (
                SELECT n.id, f.part, f.solo FROM flagged_parts f JOIN node_ids n USING (node)
            ),
            held AS (
                SELECT key_id, kind, degree, part, solo, count(*) AS nodes
                FROM linked JOIN flagged USING (id) WHERE kind IN ({kinds})
                GROUP BY key_id, kind, degree, part, solo
            )
            SELECT list_sort(list(part) FILTER (WHERE kind = 'payment' OR NOT solo))
            FROM held GROUP BY key_id, kind, degree
            HAVING sum(nodes) >= {MOSTLY_FLAGGED} * degree AND count(*) > 1
        """)
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
