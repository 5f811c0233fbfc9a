"""Campaign findings as MISP events, for peers who share through MISP.

One event per campaign, with the same privacy rules as the STIX bundle (intel/stix.py):
clients and template fingerprints as they are, accounts, cards and networks as tokens
under the sharing key (left out without one), raw network ranges only when asked. The
file holds a JSON list of `{"Event": ...}` objects, each of which MISP's event import
(or PyMISP's `add_event`) takes as it is.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from datetime import datetime
from typing import Any

from pymisp import MISPEvent

from distillguard.errors import UsageError
from distillguard.intel.stix import ATLAS, MARKINGS, NAMESPACE, Sharing, _is_network
from distillguard.privacy import TOKEN_HEX


def events(campaigns: list[dict[str, Any]], sharing: Sharing) -> list[dict[str, Any]]:
    if sharing.tlp not in MARKINGS:
        raise UsageError(f"--tlp takes one of {', '.join(MARKINGS)}, not {sharing.tlp!r}")
    return [json.loads(_event(c, sharing).to_json()) for c in campaigns]


def _event(c: dict[str, Any], sharing: Sharing) -> MISPEvent:
    event = MISPEvent()
    event.uuid = str(uuid.uuid5(NAMESPACE, f"misp|{sharing.producer}|{c['id']}|{c['first_seen']}"))
    event.info = f"Distillation campaign {c['id']} ({sharing.producer})"
    if c["first_seen"]:
        event.set_date(datetime.fromisoformat(c["first_seen"].replace("Z", "+00:00")).date())
    event.threat_level_id = 1 if c["score"] >= 0.9 else 2
    event.analysis = 2
    event.distribution = 0
    event.add_tag(f"tlp:{sharing.tlp}")
    for code, name in ATLAS.items():
        event.add_tag(f'misp-galaxy:mitre-atlas-attack-pattern="{name} - {code}"')
    mix = ", ".join(f"{k} {v}" for k, v in list(c["capability_mix"].items())[:3])
    event.add_attribute(
        "comment",
        f"{len(c['accounts'])} accounts, {len(c.get('substreams', []))} sub-streams of mixed "
        f"accounts, {c['exchange_count']} exchanges ({mix}); score "
        f"{c['score']:.3f}, confidence {c['confidence']:.3f}; recommended action "
        f"{c['recommended_action']}",
        category="Other",
        to_ids=False,
    )
    indicators = c.get("indicators", [])
    for agent in sorted({i["user_agent"] for i in indicators if i.get("user_agent")}):
        event.add_attribute("user-agent", agent, category="Network activity", to_ids=False)
    for band in c.get("template_fingerprints", []):
        event.add_attribute(
            "text", band, category="Other", comment="distillguard template fingerprint"
        )
    for i in indicators:
        if i["kind"] == "system_prompt":
            event.add_attribute(
                "text", i["value"], category="Other", comment="system prompt BLAKE2b-64"
            )
        if i["kind"] == "network" and sharing.include_addresses and _is_network(i["value"]):
            event.add_attribute("ip-src", i["value"], category="Network activity", to_ids=True)
    if sharing.key:
        for kind, values in (
            ("account", c["accounts"]),
            ("payment", [i["value"] for i in indicators if i["kind"] == "payment"]),
            ("network", [i["value"] for i in indicators if i["kind"] == "network"]),
        ):
            for value in values:
                token = hmac.new(sharing.key, value.encode(), hashlib.sha256).hexdigest()
                event.add_attribute(
                    "text",
                    token[:TOKEN_HEX],
                    category="Other",
                    comment=f"{kind} token (HMAC-SHA256 under the sharing key)",
                    disable_correlation=kind == "account",
                )
    return event
