"""Findings as a SIEM feed: one OCSF Detection Finding (class 2004) per flagged account.

JSON Lines, one event per flagged account and per flagged sub-stream of a mixed
account, in OCSF 1.3's Detection Finding shape, so a SIEM that reads OCSF maps it
without a parser of ours. The feed is for the operator's own systems: it names the
accounts (they are what an analyst acts on). Fields outside OCSF's class go under
`unmapped`. The shape is stable: fields are added, never renamed or removed, within a
major version of distillguard.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from distillguard import __version__

OCSF_VERSION = "1.3.0"
CLASS_UID = 2004  # Detection Finding
CATEGORY_UID = 2  # Findings
ACTIVITY_CREATE = 1
SEVERITY = ((0.9, 5, "Critical"), (0.75, 4, "High"), (0.5, 3, "Medium"), (0.0, 2, "Low"))


def events(campaigns: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """OCSF Detection Findings for every flagged account and sub-stream."""
    for c in campaigns:
        for account in c["accounts"]:
            yield _event(c, account, None)
        for part in c.get("substreams", []):
            yield _event(c, part["account_id"], part["end_user_id"])


def _event(c: dict[str, Any], account: str, end_user: str | None) -> dict[str, Any]:
    severity_id, severity = next((i, n) for floor, i, n in SEVERITY if c["score"] >= floor)
    uid = f"{c['id']}:{account}" + (f":{end_user}" if end_user else "")
    return {
        "class_uid": CLASS_UID,
        "class_name": "Detection Finding",
        "category_uid": CATEGORY_UID,
        "category_name": "Findings",
        "activity_id": ACTIVITY_CREATE,
        "activity_name": "Create",
        "type_uid": CLASS_UID * 100 + ACTIVITY_CREATE,
        "severity_id": severity_id,
        "severity": severity,
        "status_id": 1,
        "status": "New",
        "time": _millis(c["last_seen"]),
        "confidence_score": round(100 * c["confidence"]),
        "metadata": {
            "version": OCSF_VERSION,
            "product": {
                "name": "distillguard",
                "vendor_name": "distillguard",
                "version": __version__,
            },
        },
        "finding_info": {
            "uid": uid,
            "title": f"Account in distillation campaign {c['id']}",
            "desc": "Linked accounts harvesting model outputs to train a copy; "
            f"{len(c['accounts'])} accounts, {c['exchange_count']} exchanges.",
            "types": ["distillation campaign"],
            "first_seen_time": _millis(c["first_seen"]),
            "last_seen_time": _millis(c["last_seen"]),
            "attacks": [
                {"technique": {"uid": "AML.T0024.002", "name": "Extract AI Model"}},
            ],
        },
        "actor": {"user": {"uid": account}},
        "remediation": {"desc": c["recommended_action"]},
        "unmapped": {
            "campaign_id": c["id"],
            "campaign_score": c["score"],
            "end_user_id": end_user,
            "evidence": [e["signal"] for e in c["evidence"][:6]],
            "capability_mix": c["capability_mix"],
        },
    }


def _millis(moment: str | None) -> int | None:
    if not moment:
        return None
    return int(datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp() * 1000)
