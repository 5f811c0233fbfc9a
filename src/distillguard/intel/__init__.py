"""Sharing findings: STIX 2.1 bundles for peers, an OCSF feed for one's own SIEM."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from distillguard.errors import InputError


def read_campaigns(findings: str | Path) -> list[dict[str, Any]]:
    """The campaigns of a findings folder (written by `distillguard detect`)."""
    path = Path(findings) / "campaigns.json"
    if not path.is_file():
        raise InputError(f"{path}: not found (run `distillguard detect` to write findings)")
    try:
        campaigns = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(campaigns, list):
        raise InputError(f"{path}: not a findings campaigns list")
    for i, campaign in enumerate(campaigns):
        wrong = _misfit(campaign)
        if wrong:
            raise InputError(
                f"{path}: campaign {i + 1} {wrong}: not findings as this version of "
                "`distillguard detect` writes them (run it again)"
            )
    return campaigns


Fields = dict[str, type | tuple[type, ...]]
NUMBER = (int, float)
# What detect writes for each campaign, as JSON types; then what each evidence item and
# indicator holds. Readers (report, STIX, MISP, OCSF) rely on all of it.
CAMPAIGN: Fields = {
    "id": str,
    "score": NUMBER,
    "confidence": NUMBER,
    "accounts": list,
    "exchange_count": int,
    "first_seen": (str, type(None)),
    "last_seen": (str, type(None)),
    "capability_mix": dict,
    "evidence": list,
    "recommended_action": str,
}
# Later additions, which findings of earlier versions lack; checked when present.
OPTIONAL: Fields = {"substreams": list, "indicators": list, "template_fingerprints": list}
EVIDENCE: Fields = {"signal": str, "strength": NUMBER, "detail": str}
INDICATOR: Fields = {"kind": str, "value": str}


def _misfit(campaign: Any) -> str | None:
    """What is wrong with a campaign as read from campaigns.json, or None."""
    if not isinstance(campaign, dict):
        return "is not a JSON object"
    parts: list[tuple[str, Any, Fields]] = [("", campaign, CAMPAIGN)]
    parts += [("evidence item ", e, EVIDENCE) for e in campaign.get("evidence") or []]
    parts += [("indicator ", i, INDICATOR) for i in campaign.get("indicators") or []]
    for where, value, fields in parts:
        if not isinstance(value, dict):
            return f"has an {where}that is not a JSON object"
        for key, kind in fields.items():
            held = value.get(key)
            if key not in value or not isinstance(held, kind) or isinstance(held, bool):
                return f"has {where}{key} missing or of the wrong type"
    for key, kind in OPTIONAL.items():
        if key in campaign and not isinstance(campaign[key], kind):
            return f"has {key} of the wrong type"
    return None
