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
    if not isinstance(campaigns, list) or not all(
        isinstance(c, dict) and {"id", "accounts", "score"} <= set(c) for c in campaigns
    ):
        raise InputError(f"{path}: not a findings campaigns list")
    return campaigns
