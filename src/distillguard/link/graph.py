"""The account graph: weighted edges from shared evidence keys, then Leiden communities.

Blocking keeps it sparse. A key shared by a few nodes links every pair of them; a key
shared by many links each node to its neighbours in a ring (in a fixed pseudo-random
order), which keeps the group connected with one edge per node instead of all pairs.
A key's weight falls with the number of nodes that share it (rarer is stronger) and
rises with how much of each node's traffic carries it, so one shared office network or
one common phrase does not make a campaign, while hundreds of accounts drawing from one
template pool do.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import igraph
import numpy as np
import pyarrow as pa

from distillguard.engines import Engine

PAIR_LIMIT = 60  # keys shared by more nodes are linked as a ring
MIN_SHARE = 0.05  # a network or prompt key on less of a node's traffic is ignored
MIN_TEMPLATE_HITS = 2  # a template band a node used once is noise; a pool is reused
BANDS = 21
KIND_WEIGHT = {
    "template": 1.0,
    "system_prompt": 0.5,
    "network": 0.6,
    "payment": 2.0,
    "signup_burst": 1.0,
    "synchrony": 0.5,
}
RESOLUTION = 0.05  # CPM resolution: the edge weight density a community must exceed
# One pass of Leiden's moves and refinement: a second (igraph's default) changed no
# flagged account at 1M and 10M exchanges or on the many-accounts day, and took 1.3-2.4 s
# more on one core (docs/performance.md, change 35); to convergence took 55 s at 1M.
LEIDEN_ITERATIONS = 1


@dataclass
class Graph:
    """The linked nodes by number (node_ids.id, ascending, so in name order); edges as
    positions into them and a weight, NumPy arrays all, so that a graph of millions of
    nodes and edges holds no Python object per node or edge."""

    ids: np.ndarray
    sources: np.ndarray
    targets: np.ndarray
    weights: np.ndarray


def build(engine: Engine) -> Graph:
    """Edges between nodes from the `evidence` table (id, kind, key, hits). Edges
    are sorted by the engine and weights rounded, so the communities do not depend on
    the order an engine returns rows in or on the order it summed them. Nodes and keys
    are numbered before the rings and pairs are formed (node_ids, key_degree): grouping
    and joining on integers rather than names is what keeps the edge query fast. Leaves
    `keyed` (id, kind, key, share) and `linked` (the keys more than one node holds,
    numbered) for the later stages."""
    engine.register(
        "kind_weight", pa.table({"kind": list(KIND_WEIGHT), "weight": list(KIND_WEIGHT.values())})
    )
    engine.run(f"""
        CREATE OR REPLACE TEMP TABLE node_totals AS
            SELECT id, kind, sum(hits) / CASE WHEN kind = 'template' THEN {BANDS} ELSE 1 END
                   AS total
            FROM evidence GROUP BY 1, 2;
        CREATE OR REPLACE TEMP TABLE keyed AS
            SELECT e.id, e.kind, e.key, e.hits / t.total AS share
            FROM evidence e JOIN node_totals t USING (id, kind)
            WHERE (e.kind = 'template' AND e.hits >= {MIN_TEMPLATE_HITS})
               OR (e.kind <> 'template' AND e.hits / t.total >= {MIN_SHARE});
        CREATE OR REPLACE TEMP TABLE key_degree AS
            SELECT key, kind, degree,
                   CAST(row_number() OVER (ORDER BY key, kind) AS INTEGER) AS key_id
            FROM (SELECT key, kind, count(*) AS degree FROM keyed GROUP BY 1, 2
                  HAVING count(*) > 1);
        CREATE OR REPLACE TEMP TABLE linked AS
            SELECT k.id, d.key_id, k.kind, k.share, d.degree
            FROM keyed k JOIN key_degree d USING (key, kind);
    """)
    total_nodes = engine.rows("SELECT count(DISTINCT id) FROM evidence")[0][0]
    # Members and pairs are tables, not common table expressions: as one query, on a day
    # of 2.3M active accounts, it ran out of DuckDB's 1 GB (the window and the self-join
    # at once); in three steps it stays within it.
    engine.run(f"""
        CREATE OR REPLACE TEMP TABLE members AS
            SELECT l.id, l.key_id, l.kind, l.share, l.degree,
                   row_number() OVER (PARTITION BY l.key_id ORDER BY n.ring) AS pos
            FROM linked l JOIN node_ids n USING (id);
        CREATE OR REPLACE TEMP TABLE pairs AS
            SELECT a.id AS a, b.id AS b, a.kind, a.degree, least(a.share, b.share) AS s
            FROM members a JOIN members b ON a.key_id = b.key_id AND a.id < b.id
            WHERE a.degree <= {PAIR_LIMIT}
            UNION ALL
            SELECT a.id, b.id, a.kind, a.degree, least(a.share, b.share)
            FROM members a JOIN members b ON a.key_id = b.key_id
                 AND b.pos = CASE WHEN a.pos = a.degree THEN 1 ELSE a.pos + 1 END
            WHERE a.degree > {PAIR_LIMIT};
    """)
    table = engine.arrow(f"""
        SELECT least(a, b) AS a, greatest(a, b) AS b,
               sum(w.weight * s * pow(ln(1 + {total_nodes} / degree) / ln(1 + {total_nodes}),
                                      CASE WHEN kind = 'template' THEN 2 ELSE 1 END))
              AS weight
        FROM pairs JOIN kind_weight w USING (kind) WHERE a <> b GROUP BY 1, 2 ORDER BY 1, 2
    """)
    engine.unregister("kind_weight")
    # Nothing reads these two again, and DuckDB would keep them in memory while Leiden
    # builds its graph (docs/performance.md, change 40).
    engine.run("DROP TABLE IF EXISTS pairs; DROP TABLE IF EXISTS members")
    return _graph(table)


def _graph(edges: pa.Table) -> Graph:
    """The graph of edges (a, b, weight), a < b, between node numbers, sorted by (a, b),
    with the linked nodes numbered from 0 in name order. Node numbers are in name order
    already (NODES_SQL), so a node's position is the count of linked numbers below it:
    no sort here, and no copy of the edges but the renumbered pair (at 12M edges the
    sort and the copies took 13 s and 1.1 GB)."""
    a, b = (edges.column(i).to_numpy() for i in (0, 1))
    linked = np.zeros(int(max(a.max(), b.max())) + 1 if len(a) else 0, dtype=bool)
    linked[a] = True
    linked[b] = True
    position = (np.cumsum(linked) - 1).astype(np.int32)
    weights = np.round(edges.column(2).to_numpy(), 9)
    return Graph(np.flatnonzero(linked).astype(np.int32), position[a], position[b], weights)


def communities(graph: Graph, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Leiden communities (CPM, weighted) of the graph's nodes: the numbers of the nodes
    in a community of two or more, and their community's number, in node order."""
    if not len(graph.sources):
        return np.empty(0, np.int32), np.empty(0, np.int64)
    g = igraph.Graph(n=len(graph.ids), edges=_pairs(graph))
    import random

    random.seed(seed)
    igraph.set_random_number_generator(random)
    parts = g.community_leiden(
        objective_function="CPM",
        weights=graph.weights,
        resolution=RESOLUTION,
        n_iterations=LEIDEN_ITERATIONS,
    )
    membership = np.asarray(_attach(graph, list(parts.membership)), dtype=np.int64)
    grouped = np.bincount(membership)[membership] >= 2
    return graph.ids[grouped], membership[grouped]


def _pairs(graph: Graph, step: int = 1 << 16) -> Iterator[tuple[int, int]]:
    """The edges as pairs of Python ints, made a slice at a time as igraph reads them.
    igraph walks a NumPy array row by row (17 s against 9 s for 12M edges), and a list
    of all the pairs at once held about 160 bytes an edge (2 GB at 12M edges, the
    detection's peak on a day of 580k active accounts); a slice at a time holds next to
    nothing."""
    for start in range(0, len(graph.sources), step):
        sources, targets = graph.sources[start : start + step], graph.targets[start : start + step]
        yield from zip(sources.tolist(), targets.tolist(), strict=True)


def _attach(graph: Graph, membership: list[int], share: float = 0.5) -> list[int]:
    """Move each node of a small community (under 3 nodes) into the community that holds
    most of its edge weight, when that is at least `share` of it. A campaign's sub-stream
    inside a reseller account is linked to the campaign by a few strong edges; CPM alone
    leaves it outside a large community, whose threshold grows with its size."""
    sizes = np.bincount(membership)
    small = sizes[np.asarray(membership)] < 3
    touching = small[graph.sources] | small[graph.targets]  # only these edges matter
    weight_to: dict[int, dict[int, float]] = {}
    for a, b, w in zip(
        graph.sources[touching].tolist(),
        graph.targets[touching].tolist(),
        graph.weights[touching].tolist(),
        strict=True,
    ):
        for node, other in ((a, b), (b, a)):
            if small[node]:
                to = weight_to.setdefault(node, {})
                to[membership[other]] = to.get(membership[other], 0.0) + w
    moved = list(membership)
    for node, weights in weight_to.items():
        target, strongest = max(weights.items(), key=lambda kv: kv[1])
        if sizes[target] >= 3 and strongest >= share * sum(weights.values()):
            moved[node] = target
    return moved


def exclusivity(engine: Engine, ids: np.ndarray, labels: np.ndarray) -> dict[int, float]:
    """Per community: the share of its members' template traffic on skeletons used mostly
    inside it (by at least three of its nodes, from at least three accounts). A campaign's
    operator writes its own templates; legitimate groups that share templates share
    common ones (a homework assignment, a coding tool's prompts) used far beyond them, or
    are one account's end users. `ids` and `labels` are as `communities` gives them."""
    if not len(ids):
        return {}
    engine.register("node_group", pa.table({"id": ids, "community": labels}))
    rows = engine.rows("""
        WITH t AS (
            SELECT l.key_id, l.share, g.community, l.degree, n.account
            FROM linked l JOIN node_ids n USING (id) JOIN node_group g USING (id)
            WHERE l.kind = 'template'
        ),
        inside AS (
            SELECT community, key_id, count(*) AS n, count(DISTINCT account) AS accounts,
                   any_value(degree) AS degree, sum(share) AS share
            FROM t GROUP BY 1, 2
        )
        SELECT community,
               sum(CASE WHEN n >= 3 AND accounts >= 3 AND n >= 0.5 * degree
                        THEN share ELSE 0 END) / sum(share)
        FROM inside GROUP BY 1
    """)
    engine.unregister("node_group")
    # Rounded as edge weights are: the engine's parallel sums differ in the last bits.
    return {community: round(float(value or 0.0), 9) for community, value in rows}


__all__ = ["Graph", "build", "communities", "exclusivity"]
