"""The account graph's own steps on hand-built inputs: renumbering the engine's edges,
feeding them to igraph, and the communities that come out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from distillguard.link import graph


def _edges(rows: list[tuple[int, int, float]]) -> pa.Table:
    a, b, w = zip(*rows, strict=True)
    return pa.table({"a": pa.array(a, pa.int32()), "b": pa.array(b, pa.int32()), "weight": list(w)})


def test_linked_nodes_are_numbered_in_order_and_unlinked_ones_left_out() -> None:
    g = graph._graph(_edges([(1, 3, 0.5), (3, 5, 0.1234567891)]))
    assert g.ids.tolist() == [1, 3, 5]  # 2 and 4 share nothing
    assert g.sources.tolist() == [0, 1]
    assert g.targets.tolist() == [1, 2]
    assert g.weights.tolist() == [0.5, 0.123456789]  # rounded: sums differ in the last bits


def test_pairs_come_in_slices_yet_all_and_in_order() -> None:
    sources, targets = np.arange(7, dtype=np.int32), np.arange(1, 8, dtype=np.int32)
    g = graph.Graph(np.arange(8, dtype=np.int32), sources, targets, np.ones(7))
    assert list(graph._pairs(g, step=3)) == [(i, i + 1) for i in range(7)]
    assert all(type(a) is int for pair in graph._pairs(g, step=3) for a in pair)


def test_two_cliques_joined_by_one_weak_edge_are_two_communities() -> None:
    cliques = [(a, b, 1.0) for block in (range(1, 6), range(6, 11)) for a in block for b in block]
    rows = sorted({(a, b, w) for a, b, w in cliques if a < b} | {(5, 6, 0.01)})
    rows.append((10, 12, 0.001))  # 11 is linked to nothing, 12 only to 10
    ids, labels = graph.communities(graph._graph(_edges(rows)))
    assert ids.tolist() == [*range(1, 11), 12]
    found = dict(zip(ids.tolist(), labels.tolist(), strict=True))
    first = {found[i] for i in range(1, 6)}
    second = {found[i] for i in (*range(6, 11), 12)}  # 12 joins where its edge leads
    assert len(first) == len(second) == 1 and first != second
    again = graph.communities(graph._graph(_edges(rows)))  # seeded
    assert all((x == y).all() for x, y in zip((ids, labels), again, strict=True))


def test_no_shared_keys_no_graph_and_no_communities() -> None:
    empty = pa.table(
        {
            "a": pa.array([], pa.int32()),
            "b": pa.array([], pa.int32()),
            "weight": pa.array([], pa.float64()),
        }
    )
    g = graph._graph(empty)
    assert len(g.ids) == len(g.sources) == len(g.weights) == 0
    ids, labels = graph.communities(g)
    assert len(ids) == len(labels) == 0


def test_communities_become_row_groups_in_order_of_their_first_node() -> None:
    from distillguard.detect.run import _members

    rows = np.array([4, 0, 7, 2, 5, 1], dtype=np.int64)
    labels = np.array([9, 3, 9, 3, 1, 1], dtype=np.int64)
    members = _members(rows, labels)
    assert list(members) == [3, 1, 9]  # first rows 0, 1, 4
    assert [m.tolist() for m in members.values()] == [[0, 2], [1, 5], [4, 7]]
    assert _members(np.empty(0, np.int64), np.empty(0, np.int64)) == {}


def test_nodes_take_profiles_in_any_order_and_unprofiled_nodes_have_no_signals() -> None:
    from distillguard.detect.run import Nodes

    nodes = Nodes(pa.array(["acct-a", "acct-b", "reseller"], pa.large_string()))
    profiles = pa.table(
        {
            "account_id": ["acct-b", "acct-a"],
            "exchanges": pa.array([40, 3], pa.int64()),
            "cot_share": [1.0, 0.25],
        }
    )
    nodes.profile(profiles)
    assert nodes.profiled.tolist() == [True, True, False]
    assert nodes.exchanges.tolist() == [3.0, 40.0, 0.0]
    assert nodes.signals["reasoning_elicitation"].tolist() == [0.25, 1.0, 0.0]
    assert nodes.named(np.array([2, 0])) == ["reseller", "acct-a"]


def test_nodes_from_a_chunked_column_are_named_from_one_array() -> None:
    """The engine returns node names in chunks; each flagged part is named by a `take`,
    which on a chunked array joins every chunk first (quadratic over thousands of parts)."""
    from distillguard.detect.run import Nodes

    column = pa.chunked_array([["acct-a", "acct-b"], ["acct-c"], ["acct-d", "acct-e"]])
    nodes = Nodes(column)
    assert isinstance(nodes.names, pa.StringArray)
    assert nodes.named(np.array([4, 1, 2])) == ["acct-e", "acct-b", "acct-c"]
    assert Nodes(pa.chunked_array([], pa.string())).named(np.array([], np.int64)) == []


def test_exclusivity_is_the_share_of_template_traffic_on_keys_used_mostly_inside(
    tmp_path: Path,
) -> None:
    """Community 1: three accounts; key 10 is theirs alone (degree 3), key 11 is held by
    ten nodes of which three are theirs (not mostly inside), key 12 is a network key
    (not a template). Community 2: three sub-streams of one account on a key of their
    own, which is one sender, not three."""
    from distillguard.engines.duck import DuckEngine

    db = DuckEngine.open(tmp_path, "256MB")
    db.run("""
        CREATE TEMP TABLE node_ids AS SELECT * FROM (VALUES
            (1, 'a', 1), (2, 'b', 2), (3, 'c', 3),
            (4, 'r|u1', 4), (5, 'r|u2', 4), (6, 'r|u3', 4)) AS t(id, node, account);
        CREATE TEMP TABLE linked AS SELECT * FROM (VALUES
            (1, 10, 'template', 0.5, 3), (2, 10, 'template', 0.5, 3), (3, 10, 'template', 0.5, 3),
            (1, 11, 'template', 0.25, 10), (2, 11, 'template', 0.25, 10),
            (3, 11, 'template', 0.25, 10), (1, 12, 'network', 1.0, 3),
            (4, 13, 'template', 1.0, 3), (5, 13, 'template', 1.0, 3), (6, 13, 'template', 1.0, 3)
        ) AS t(id, key_id, kind, share, degree);
    """)
    ids = np.array([1, 2, 3, 4, 5, 6], np.int32)
    found = graph.exclusivity(db, ids, np.array([1, 1, 1, 2, 2, 2]))
    assert found == {1: round(1.5 / 2.25, 9), 2: 0.0}
    assert graph.exclusivity(db, np.empty(0, np.int32), np.empty(0, np.int64)) == {}
    db.close()
