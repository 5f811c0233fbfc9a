"""The account graph's own steps on hand-built inputs: renumbering the engine's edges,
feeding them to igraph, and the communities that come out."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from distillguard.link import graph


def _edges(rows: list[tuple[int, int, float]]) -> pa.Table:
    a, b, w = zip(*rows, strict=True)
    return pa.table({"a": pa.array(a, pa.int32()), "b": pa.array(b, pa.int32()), "weight": list(w)})


def test_linked_nodes_are_numbered_in_name_order_and_unlinked_ones_left_out() -> None:
    names = pa.table({"id": pa.array([3, 1, 2, 5, 4], pa.int32()), "node": list("cabed")})
    g = graph._graph(names, _edges([(1, 3, 0.5), (3, 5, 0.1234567891)]))
    assert g.nodes == ["a", "c", "e"]  # b and d share nothing
    assert g.sources.tolist() == [0, 1]
    assert g.targets.tolist() == [1, 2]
    assert g.weights.tolist() == [0.5, 0.123456789]  # rounded: sums differ in the last bits


def test_pairs_come_in_slices_yet_all_and_in_order() -> None:
    sources, targets = np.arange(7, dtype=np.int32), np.arange(1, 8, dtype=np.int32)
    g = graph.Graph([str(i) for i in range(8)], sources, targets, np.ones(7))
    assert list(graph._pairs(g, step=3)) == [(i, i + 1) for i in range(7)]
    assert all(type(a) is int for pair in graph._pairs(g, step=3) for a in pair)


def test_two_cliques_joined_by_one_weak_edge_are_two_communities() -> None:
    cliques = [(a, b, 1.0) for block in (range(1, 6), range(6, 11)) for a in block for b in block]
    rows = sorted({(a, b, w) for a, b, w in cliques if a < b} | {(5, 6, 0.01)})
    names = pa.table(
        {"id": pa.array(range(1, 12), pa.int32()), "node": [f"n{i:02d}" for i in range(1, 12)]}
    )
    found = graph.communities(graph._graph(names, _edges(rows)))
    assert len(found) == 10  # n11 is linked to nothing
    first = {found[f"n{i:02d}"] for i in range(1, 6)}
    second = {found[f"n{i:02d}"] for i in range(6, 11)}
    assert len(first) == len(second) == 1 and first != second
    assert found == graph.communities(graph._graph(names, _edges(rows)))  # seeded


def test_no_shared_keys_no_graph_and_no_communities() -> None:
    names = pa.table({"id": pa.array([1, 2], pa.int32()), "node": ["a", "b"]})
    empty = pa.table(
        {
            "a": pa.array([], pa.int32()),
            "b": pa.array([], pa.int32()),
            "weight": pa.array([], pa.float64()),
        }
    )
    g = graph._graph(names, empty)
    assert g.nodes == [] and len(g.sources) == len(g.weights) == 0
    assert graph.communities(g) == {}
