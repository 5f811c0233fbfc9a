"""Batch findings as the gateway uses them, reloaded when detection writes new ones.

From a findings folder: flagged accounts with their campaign and score, the campaigns'
networks (prefix and client), their template fingerprints, and the accounts held back
for review (`detect --trusted-channel`), which those indicators are not matched against:
they were made from the same group's traffic, and the operator vouches for them. The
folder is checked every few seconds; a new `campaigns.json` or `accounts.parquet`
replaces the old view at once, without a restart. A folder being rewritten (a missing
or half-written file, or a file replaced while it was read) keeps the previous view
until the next check.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

log = logging.getLogger("distillguard.gateway")
HELD_BACK = "trusted_channel"  # the first reason of an account detect held back


class Findings:
    def __init__(self, folder: str | Path | None) -> None:
        self.folder = Path(folder) if folder else None
        self.accounts: dict[str, dict[str, Any]] = {}
        self.networks: set[tuple[str, str]] = set()
        self.fingerprints: dict[str, str] = {}
        self.held: frozenset[str] = frozenset()
        self._stamp: tuple[float, ...] = ()
        self.loads = 0

    def refresh(self) -> bool:
        """Reload if the files changed; whether it did."""
        if self.folder is None:
            return False
        files = [self.folder / "campaigns.json", self.folder / "accounts.parquet"]
        try:
            stamp = tuple(f.stat().st_mtime_ns for f in files)
        except OSError:  # not there (yet)
            return False
        if stamp == self._stamp:
            return False
        try:
            campaigns = json.loads(files[0].read_text())
            columns = ["account_id", "flagged", "campaign_id", "reasons"]
            flagged = pq.read_table(files[1], columns=columns)
            if tuple(f.stat().st_mtime_ns for f in files) != stamp:
                return False  # replaced while read: the next check reads the new set whole
            self._index(campaigns, flagged.to_pylist())
        except (OSError, ValueError):
            return False
        except (KeyError, TypeError, AttributeError):  # not detect's findings
            log.warning("findings in %s are not detect's; keeping the previous ones", self.folder)
            self._stamp = stamp  # said once, until the files change again
            return False
        self._stamp = stamp
        self.loads += 1
        return True

    def _index(self, campaigns: list[dict[str, Any]], flagged: list[dict[str, Any]]) -> None:
        """The view of the findings, replaced whole or, when they do not fit, not at all."""
        by_id = {c["id"]: c for c in campaigns}
        accounts = {
            r["account_id"]: {
                "campaign_id": r["campaign_id"],
                "score": by_id.get(r["campaign_id"], {}).get("score", 0.5),
                "signals": [
                    e["signal"] for e in by_id.get(r["campaign_id"], {}).get("evidence", [])[:4]
                ],
            }
            for r in flagged
            if r["flagged"]
        }
        networks = {
            (i["value"], i.get("user_agent") or "")
            for c in campaigns
            for i in c.get("indicators", [])
            if i["kind"] == "network"
        }
        fingerprints = {f: c["id"] for c in campaigns for f in c.get("template_fingerprints", [])}
        held = frozenset(
            r["account_id"] for r in flagged if (r["reasons"] or [None])[0] == HELD_BACK
        )
        self.accounts, self.networks, self.fingerprints = accounts, networks, fingerprints
        self.held = held
