"""The analyst report as one self-contained HTML file: no script, no external resource.

A triage table of every campaign, then a section per campaign (activity, capabilities,
the account-link graph, shared infrastructure, example prompts, the evidence behind the
flag), the flagged sub-streams of mixed accounts, and the evaluation when labels are
given. Every value from the data is escaped.
"""

from __future__ import annotations

from html import escape
from typing import Any

from distillguard.report import charts

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:2px solid #ddd}h3{margin-bottom:.3em}
table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #ddd;padding:3px 8px;
text-align:left;vertical-align:top}th{background:#f4f4f4}td.n{text-align:right}
.grid{display:flex;flex-wrap:wrap;gap:1.5em}figure{margin:0}figcaption{color:#555}
.action{font-weight:600}.example{font-family:ui-monospace,monospace;white-space:pre-wrap}
.muted{color:#777}
"""


def render(report: dict[str, Any], redact: bool) -> str:
    campaigns = report["campaigns"]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>distillguard report</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>Distillation campaigns</h1>",
        _overview(report, redact),
        _triage(campaigns),
    ]
    for c in campaigns:
        if c["id"] in report["details"]:
            parts.append(_campaign(c, report["details"][c["id"]]))
    parts.append(_substreams(report.get("substreams", [])))
    parts.append(_held_back(report["summary"]))
    if "evaluation" in report:
        parts.append(_evaluation(report["evaluation"]))
    parts.append("</body></html>")
    return "\n".join(parts)


def _overview(report: dict[str, Any], redact: bool) -> str:
    s = report["summary"]
    flagged = s.get("flagged_accounts", sum(len(c["accounts"]) for c in report["campaigns"]))
    text = (
        f"{len(report['campaigns'])} campaign(s); {flagged} accounts and "
        f"{s.get('flagged_substreams', 0)} sub-streams of mixed accounts flagged."
    )
    if "calibration" in s:
        text += f" {s['calibration']}"
    note = " Prompt text is redacted." if redact else ""
    return f"<p>{escape(text)}{note}</p>"


def _members(c: dict[str, Any]) -> str:
    """Accounts, and sub-streams of mixed accounts apart: a sub-stream is one end user's
    traffic inside someone else's account, not an account to suspend."""
    streams = len(c.get("substreams", []))
    return f"{len(c['accounts'])}" + (f" + {streams} sub-streams" if streams else "")


def _triage(campaigns: list[dict[str, Any]]) -> str:
    head = (
        "<h2>Triage</h2><table><tr><th>campaign</th><th>score</th><th>confidence</th>"
        "<th>accounts</th><th>exchanges</th><th>first seen</th><th>last seen</th>"
        "<th>capability mix</th><th>recommended action</th></tr>"
    )
    rows = []
    for c in campaigns:
        total = sum(c["capability_mix"].values()) or 1
        mix = ", ".join(f"{k} {v / total:.0%}" for k, v in list(c["capability_mix"].items())[:3])
        rows.append(
            f"<tr><td><a href='#{escape(c['id'])}'>{escape(c['id'])}</a></td>"
            f"<td class='n'>{c['score']:.3f}</td><td class='n'>{c['confidence']:.3f}</td>"
            f"<td class='n'>{_members(c)}</td>"
            f"<td class='n'>{c['exchange_count']:,}</td><td>{escape(str(c['first_seen']))}</td>"
            f"<td>{escape(str(c['last_seen']))}</td><td>{escape(mix)}</td>"
            f"<td class='action'>{escape(c['recommended_action'])}</td></tr>"
        )
    return head + "".join(rows) + "</table>"


def _figure(name: str, caption: str, svg: str) -> str:
    return (
        f"<figure class='chart' data-chart='{escape(name)}'>{svg}"
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def _campaign(c: dict[str, Any], d: dict[str, Any]) -> str:
    cid = c["id"]
    figures = [
        _figure(f"{cid}-activity", "exchanges per day", charts.timeline(d["activity"])),
        _figure(
            f"{cid}-capabilities",
            "capability of the exchanges",
            charts.capabilities(c["capability_mix"]),
        ),
    ]
    links = d["links"]
    if len(links["nodes"]) > 1:
        caption = (
            f"{len(links['nodes'])} of {len(c['accounts'])} accounts; a line for each pair "
            "sharing a key, coloured by kind of evidence"
        )
        figures.append(
            _figure(f"{cid}-links", caption, charts.link_graph(links["nodes"], links["edges"]))
        )
    parts = [
        f"<h2 id='{escape(cid)}'>{escape(cid)}: {escape(c['recommended_action'])}</h2>",
        f"<p>Score {c['score']:.3f} (confidence {c['confidence']:.3f}); "
        f"{len(c['accounts'])} accounts, {len(c.get('substreams', []))} sub-streams, "
        f"{c['exchange_count']:,} exchanges from {escape(str(c['first_seen']))} to "
        f"{escape(str(c['last_seen']))}.</p>",
        "<div class='grid'>" + "".join(figures) + "</div>",
        "<h3>Evidence behind the flag</h3><table><tr><th>signal</th><th>strength</th>"
        "<th>detail</th></tr>"
        + "".join(
            f"<tr><td>{escape(e['signal'])}</td><td class='n'>{e['strength']:.2f}</td>"
            f"<td>{escape(e['detail'])}</td></tr>"
            for e in c["evidence"]
        )
        + "</table>",
        _infrastructure(d["infrastructure"]),
        _examples(d["examples"]),
    ]
    return "\n".join(parts)


def _infrastructure(found: dict[str, list[dict[str, Any]]]) -> str:
    parts = ["<h3>Shared infrastructure</h3><div class='grid'>"]
    for name, rows in found.items():
        body = (
            "".join(
                f"<tr><td>{escape(r['value'])}</td><td class='n'>{r['accounts']}</td>"
                + (
                    f"<td class='n'>{r['exchanges']}</td>"
                    if r["exchanges"] is not None
                    else "<td></td>"
                )
                + "</tr>"
                for r in rows
            )
            or "<tr><td colspan='3' class='muted'>none</td></tr>"
        )
        parts.append(
            f"<table><tr><th>{escape(name)}</th><th>accounts</th><th>exchanges</th></tr>"
            f"{body}</table>"
        )
    parts.append("</div><p class='muted'>ASNs are not in the canonical schema.</p>")
    return "".join(parts)


def _examples(examples: list[dict[str, Any]]) -> str:
    if not examples:
        return ""
    rows = "".join(
        f"<tr><td class='n'>{e['similarity']:.2f}</td>"
        f"<td class='example'>{escape(e['text'])}</td></tr>"
        for e in examples
    )
    return (
        "<h3>Template examples</h3><p class='muted'>Similarity: the template fingerprint's "
        "agreement with the first example (MinHash of the masked skeleton).</p>"
        f"<table><tr><th>similarity</th><th>prompt</th></tr>{rows}</table>"
    )


def _substreams(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<h2>Flagged sub-streams of mixed accounts</h2><p class='muted'>None.</p>"
    body = "".join(
        f"<tr><td>{escape(r['campaign_id'])}</td><td>{escape(r['account_id'])}</td>"
        f"<td>{escape(str(r['end_user_id']))}</td><td class='n'>{r['exchanges']:,}</td></tr>"
        for r in rows
    )
    return (
        "<h2>Flagged sub-streams of mixed accounts</h2><p>Only these end users' exchanges "
        "are flagged; the accounts' other traffic is not.</p><table><tr><th>campaign</th>"
        f"<th>account</th><th>end user</th><th>exchanges</th></tr>{body}</table>"
    )


def _held_back(summary: dict[str, Any]) -> str:
    """Accounts of trusted sign-up channels that scored as a campaign: not flagged, so
    not acted on, but someone should ask their programme (detect --trusted-channel)."""
    groups = summary.get("held_back") or []
    if not groups:
        return ""
    body = "".join(
        f"<tr><td class='n'>{g['score']:.3f}</td><td>{escape(g['campaign_id'] or '')}</td>"
        f"<td>{escape(', '.join(g['evidence']))}</td>"
        f"<td>{escape(', '.join(g['accounts']))}</td></tr>"
        for g in groups
    )
    channels = ", ".join(summary.get("trusted_channels", []))
    return (
        "<h2>Held back for review</h2><p>Accounts of the trusted sign-up channels "
        f"({escape(channels)}) that scored as a campaign. They are not flagged; review them "
        "with their programme.</p><table><tr><th>score</th><th>beside campaign</th>"
        f"<th>strongest signals</th><th>accounts</th></tr>{body}</table>"
    )


def _evaluation(e: dict[str, Any]) -> str:
    a = e["accounts"]
    rows = [
        ("precision", a.get("precision")),
        ("recall", a.get("recall")),
        ("false-positive rate", a.get("false_positive_rate")),
        ("adjusted Rand index", e.get("campaigns", {}).get("adjusted_rand_index")),
        ("campaign exchange recall", e.get("exchanges", {}).get("recall")),
    ]
    body = "".join(
        f"<tr><td>{escape(k)}</td><td class='n'>{'' if v is None else f'{v:.4f}'}</td></tr>"
        for k, v in rows
    )
    return f"<h2>Evaluation against labels</h2><table>{body}</table>"
