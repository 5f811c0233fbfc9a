"""Campaign findings as a STIX 2.1 bundle a peer organisation can ingest.

Per campaign: the `campaign`, what it did (`attack-pattern`s with MITRE ATLAS
references), the clients and networks it came from (`infrastructure`, `indicator`s with
STIX patterns), what was seen (`observed-data` of the accounts, a `sighting` by the
producer), the `relationship`s between them, all under a TLP marking and created by the
producer's `identity`. What STIX has no object for (template fingerprints, behaviour,
scores) travels in a property extension declared by an `extension-definition`.

Private by default: no prompt text, no addresses, no raw account identifiers. Account,
card and network identifiers appear only as keyed hashes under the sharing key, which a
group of peers agrees on so each can hash its own traffic and match (`intel match`);
without a key, accounts get hashes under a key made for this export alone (unlinkable)
and cards and networks are left out. Raw network ranges as STIX patterns only when the
operator asks (`include_addresses`). Template fingerprints are MinHash band keys of
masked prompt skeletons: the same on every engine and for every producer, and not
reversible to text.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import stix2

from distillguard.errors import UsageError
from distillguard.privacy import key_id, token

NAMESPACE = uuid.UUID("5b0d4c1e-7f5a-4d3e-9a8e-0d15711a9a2d")  # distillguard's STIX ids
EXTENSION_ID = "extension-definition--3f2c7a51-9b44-4e0b-8d7e-6a1f0c2d5e47"
EXTENSION_SCHEMA = (
    "distillguard campaign evidence, version 1. Properties: score and confidence (0..1); "
    "accounts, substreams and exchanges (counts); capability_mix (capability: "
    "exchanges); behaviour (signal: strength 0..1); linked_by (evidence kind: shared "
    "keys); template_fingerprints (16-hex MinHash LSH band keys of masked prompt "
    "skeletons: 64 permutations, 21 bands of 3, word bigrams); system_prompt_hashes "
    "(16-hex BLAKE2b-64 of exact system prompts); account_tokens, payment_tokens, "
    "network_tokens (HMAC-SHA256 under the sharing key named by key_id, 32 hex); "
    "user_agents; recommended_action."
)
ATLAS = {
    "AML.T0024.002": "Extract AI Model",
    "AML.T0005": "Create Proxy AI Model",
    "AML.T0048.004": "AI Intellectual Property Theft",
}
MARKINGS = {
    "clear": stix2.TLP_WHITE,
    "green": stix2.TLP_GREEN,
    "amber": stix2.TLP_AMBER,
    "red": stix2.TLP_RED,
}
MAX_ACCOUNT_OBJECTS = 1000  # user-account objects per campaign; the count is exact


@dataclass(frozen=True)
class Sharing:
    """What the operator shares: under which name, key and marking."""

    producer: str = "distillguard operator"
    key: bytes | None = None
    include_addresses: bool = False
    tlp: str = "amber"


def export(
    campaigns: list[dict[str, Any]], sharing: Sharing, now: datetime | None = None
) -> dict[str, Any]:
    """A STIX 2.1 bundle (as a dict) of the campaigns from a findings `campaigns.json`."""
    if sharing.tlp not in MARKINGS:
        raise UsageError(f"--tlp takes one of {', '.join(MARKINGS)}, not {sharing.tlp!r}")
    build = _Builder(sharing, now or datetime.now(UTC))
    objects: list[Any] = [
        build.marking,
        build.identity,
        build.extension,
        *build.patterns.values(),
    ]
    for campaign in campaigns:
        objects += build.campaign(campaign)
    bundle = stix2.Bundle(objects=objects, allow_custom=True)
    result: dict[str, Any] = json.loads(bundle.serialize())
    return result


def _id(kind: str, *parts: str) -> str:
    return f"{kind}--{uuid.uuid5(NAMESPACE, '|'.join(parts))}"


class _Builder:
    def __init__(self, sharing: Sharing, now: datetime) -> None:
        self.sharing = sharing
        self.now = now
        self.key = sharing.key or secrets.token_bytes(32)  # unlinkable without a key
        self.marking = MARKINGS[sharing.tlp]
        self.identity = stix2.Identity(
            id=_id("identity", sharing.producer),
            name=sharing.producer,
            identity_class="organization",
            created=now,
            modified=now,
            object_marking_refs=[self.marking.id],
        )
        common = self._common()
        self.extension = stix2.ExtensionDefinition(
            id=EXTENSION_ID,
            name="distillguard campaign evidence",
            description="Evidence of a distillation campaign that STIX has no property for.",
            schema=EXTENSION_SCHEMA,
            version="1.0",
            extension_types=["property-extension"],
            **common,
        )
        self.patterns = {
            code: stix2.AttackPattern(
                id=_id("attack-pattern", code),
                name=name,
                external_references=[
                    {
                        "source_name": "mitre-atlas",
                        "external_id": code,
                        "url": f"https://atlas.mitre.org/techniques/{code}",
                    }
                ],
                **common,
            )
            for code, name in ATLAS.items()
        }

    def _common(self) -> dict[str, Any]:
        return {
            "created": self.now,
            "modified": self.now,
            "created_by_ref": self.identity.id,
            "object_marking_refs": [self.marking.id],
        }

    def token(self, value: str) -> str:
        return token(self.key, value)

    def campaign(self, c: dict[str, Any]) -> list[Any]:
        common = self._common()
        scope = (self.sharing.producer, c["id"], c["first_seen"] or "")
        campaign = stix2.Campaign(
            id=_id("campaign", *scope),
            name=f"Distillation campaign {c['id']} ({self.sharing.producer})",
            description=_describe(c),
            first_seen=c["first_seen"],
            last_seen=c["last_seen"],
            objective="Harvest a model's outputs to train a copy (distillation).",
            extensions={EXTENSION_ID: self._evidence(c)},
            allow_custom=True,
            **common,
        )
        objects: list[Any] = [campaign]
        objects += [
            _relate(campaign.id, "uses", p.id, scope, common) for p in self.patterns.values()
        ]
        network = [i for i in c.get("indicators", []) if i["kind"] == "network"]
        if network:
            infrastructure = stix2.Infrastructure(
                id=_id("infrastructure", *scope),
                name=f"{c['id']} clients and networks",
                infrastructure_types=["anonymization"],
                description=f"{len(network)} network prefixes with scripted clients shared "
                "by the campaign's accounts (proxy or hosting pools).",
                **common,
            )
            objects += [
                infrastructure,
                _relate(campaign.id, "uses", infrastructure.id, scope, common),
            ]
            for indicator in self._indicators(network, c, scope, common):
                objects += [
                    indicator,
                    _relate(indicator.id, "indicates", campaign.id, scope, common),
                ]
        objects += self._sighting(c, campaign.id, scope, common)
        return objects

    def _evidence(self, c: dict[str, Any]) -> dict[str, Any]:
        indicators = c.get("indicators", [])
        body: dict[str, Any] = {
            "extension_type": "property-extension",
            "score": c["score"],
            "confidence": c["confidence"],
            "accounts": len(c["accounts"]),
            "substreams": len(c.get("substreams", [])),
            "exchanges": c["exchange_count"],
            "capability_mix": c["capability_mix"],
            "behaviour": {
                e["signal"]: e["strength"]
                for e in c["evidence"]
                if not e["signal"].startswith("linked_by_")
            },
            "linked_by": {
                e["signal"].removeprefix("linked_by_"): int(e["detail"].split()[0])
                for e in c["evidence"]
                if e["signal"].startswith("linked_by_")
            },
            "template_fingerprints": c.get("template_fingerprints", []),
            "system_prompt_hashes": [
                i["value"] for i in indicators if i["kind"] == "system_prompt"
            ],
            "user_agents": sorted({i["user_agent"] for i in indicators if i.get("user_agent")}),
            "account_tokens": sorted(self.token(a) for a in c["accounts"]),
            "recommended_action": c["recommended_action"],
        }
        if self.sharing.key:
            body["key_id"] = key_id(self.sharing.key)
            body["payment_tokens"] = [
                self.token(i["value"]) for i in indicators if i["kind"] == "payment"
            ]
            body["network_tokens"] = [
                self.token(i["value"]) for i in indicators if i["kind"] == "network"
            ]
        return {k: v for k, v in body.items() if v != [] and v != {}}  # STIX: none empty

    def _indicators(
        self,
        network: list[dict[str, Any]],
        c: dict[str, Any],
        scope: tuple[str, ...],
        common: dict[str, Any],
    ) -> list[Any]:
        patterns = {
            f"[network-traffic:extensions.'http-request-ext'.request_header.'User-Agent' = "
            f"'{_quote(agent)}']": f"Client of {c['id']}: {agent}"
            for agent in sorted({i["user_agent"] for i in network if i.get("user_agent")})
        }
        if self.sharing.include_addresses:
            for i in network:
                if _is_network(i["value"]):
                    patterns[f"[ipv4-addr:value ISSUBSET '{i['value']}']"] = (
                        f"Network of {c['id']}: {i['accounts']} accounts"
                    )
        return [
            stix2.Indicator(
                id=_id("indicator", *scope, pattern),
                name=name,
                pattern=pattern,
                pattern_type="stix",
                pattern_version="2.1",
                valid_from=c["first_seen"] or self.now,
                indicator_types=["anomalous-activity"],
                **common,
            )
            for pattern, name in patterns.items()
        ]

    def _sighting(
        self, c: dict[str, Any], campaign_id: str, scope: tuple[str, ...], common: dict[str, Any]
    ) -> list[Any]:
        accounts = sorted(c["accounts"])[:MAX_ACCOUNT_OBJECTS]
        users = [
            stix2.UserAccount(user_id=self.token(a), account_type="distillguard-api-account")
            for a in accounts
        ]
        if not users:  # a campaign of sub-streams only: its mixed accounts
            users = [
                stix2.UserAccount(user_id=self.token(s["account_id"]), account_type="reseller")
                for s in c.get("substreams", [])[:MAX_ACCOUNT_OBJECTS]
            ]
        users = list({u.id: u for u in users}.values())
        observed = stix2.ObservedData(
            id=_id("observed-data", *scope),
            first_observed=c["first_seen"] or self.now,
            last_observed=c["last_seen"] or self.now,
            number_observed=max(1, min(c["exchange_count"], 999_999_999)),
            object_refs=[u.id for u in users],
            **common,
        )
        sighting = stix2.Sighting(
            id=_id("sighting", *scope),
            sighting_of_ref=campaign_id,
            observed_data_refs=[observed.id],
            where_sighted_refs=[self.identity.id],
            first_seen=c["first_seen"] or self.now,
            last_seen=c["last_seen"] or self.now,
            count=max(1, min(c["exchange_count"], 999_999_999)),
            **common,
        )
        return [*users, observed, sighting]


def _relate(
    source: str, kind: str, target: str, scope: tuple[str, ...], common: dict[str, Any]
) -> Any:
    return stix2.Relationship(
        id=_id("relationship", *scope, source, kind, target),
        source_ref=source,
        relationship_type=kind,
        target_ref=target,
        **common,
    )


def _describe(c: dict[str, Any]) -> str:
    mix = ", ".join(f"{k} {v}" for k, v in list(c["capability_mix"].items())[:3])
    return (
        f"{len(c['accounts'])} accounts and {len(c.get('substreams', []))} sub-streams of "
        f"mixed accounts acting as one operation; {c['exchange_count']} exchanges "
        f"({mix}). Score {c['score']:.3f}, confidence {c['confidence']:.3f}; recommended "
        f"action: {c['recommended_action']}."
    )


def _quote(value: str) -> str:
    """A string for a STIX pattern literal."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _is_network(value: str) -> bool:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False  # already a keyed token: pseudonymised at ingest
    return True
