"""The report's charts: Vega-Lite specifications, rendered to inline SVG.

Declarative specs keep each chart a few lines of data and encoding; vl-convert renders
them without a browser or network, so the report is one file that opens offline and
runs no script.
"""

from __future__ import annotations

import math
from typing import Any

import vl_convert

SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"
KIND_COLOURS = {
    "template": "#d62728",
    "network": "#1f77b4",
    "system prompt": "#9467bd",
    "payment": "#ff7f0e",
}


def svg(spec: dict[str, Any]) -> str:
    rendered: str = vl_convert.vegalite_to_svg({"$schema": SCHEMA, **spec})
    return rendered


def timeline(activity: list[dict[str, Any]]) -> str:
    return svg(
        {
            "width": 560,
            "height": 160,
            "data": {"values": activity},
            "mark": {"type": "bar", "color": "#1f77b4"},
            "encoding": {
                "x": {"field": "day", "type": "ordinal", "title": "day (UTC)"},
                "y": {"field": "exchanges", "type": "quantitative", "title": "exchanges"},
                "tooltip": [{"field": "day"}, {"field": "exchanges"}],
            },
        }
    )


def capabilities(mix: dict[str, int]) -> str:
    values = [{"capability": k, "exchanges": v} for k, v in mix.items()]
    return svg(
        {
            "width": 360,
            "height": {"step": 18},
            "data": {"values": values},
            "mark": {"type": "bar", "color": "#2ca02c"},
            "encoding": {
                "y": {"field": "capability", "type": "nominal", "sort": "-x", "title": None},
                "x": {"field": "exchanges", "type": "quantitative"},
            },
        }
    )


def link_graph(nodes: list[str], edges: list[dict[str, Any]]) -> str:
    """Accounts on a circle, a line for each pair linked by a kind of evidence."""
    place = {
        n: (math.cos(2 * math.pi * i / len(nodes)), math.sin(2 * math.pi * i / len(nodes)))
        for i, n in enumerate(nodes)
    }
    lines = [
        {
            "x": place[e["a"]][0],
            "y": place[e["a"]][1],
            "x2": place[e["b"]][0],
            "y2": place[e["b"]][1],
            "kind": e["kind"],
        }
        for e in edges
    ]
    points = [{"x": x, "y": y, "account": n} for n, (x, y) in place.items()]
    axis = {"axis": None, "scale": {"domain": [-1.1, 1.1]}}
    colour = {
        "field": "kind",
        "type": "nominal",
        "title": "linked by",
        "scale": {"domain": list(KIND_COLOURS), "range": list(KIND_COLOURS.values())},
    }
    return svg(
        {
            "width": 360,
            "height": 360,
            "layer": [
                {
                    "data": {"values": lines},
                    "mark": {"type": "rule", "opacity": 0.35},
                    "encoding": {
                        "x": {"field": "x", "type": "quantitative", **axis},
                        "y": {"field": "y", "type": "quantitative", **axis},
                        "x2": {"field": "x2"},
                        "y2": {"field": "y2"},
                        "color": colour,
                    },
                },
                {
                    "data": {"values": points},
                    "mark": {"type": "circle", "size": 60, "color": "#333"},
                    "encoding": {
                        "x": {"field": "x", "type": "quantitative", **axis},
                        "y": {"field": "y", "type": "quantitative", **axis},
                        "tooltip": [{"field": "account"}],
                    },
                },
            ],
        }
    )
