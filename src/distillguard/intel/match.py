"""A peer's shared campaigns matched against one's own traffic.

From a peer's STIX bundle we take, per campaign, what our traffic can be compared with:
template fingerprints (band keys of prompt skeletons, computed the same way here), and
networks, either raw ranges (`[ipv4-addr:value ISSUBSET '...']` patterns) or tokens
under a sharing key both sides hold, each with the clients seen on them. An account
matches a peer campaign when its exchanges carry at least MIN_FINGERPRINTS of the
campaign's fingerprints, or come from one of its networks with one of its clients. A
client string alone (an SDK half the world uses) or one colliding band matches nothing.
Objects and patterns we do not use are named in the report, not silently dropped.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from distillguard.detect.inputs import (
    digests,
    exchanges_only,
    inputs,
    load,
    not_among_logs,
    readable,
)
from distillguard.engines import Engine, open_engine
from distillguard.errors import InputError, UsageError
from distillguard.features.digest import DIGEST
from distillguard.features.pool import default_workers
from distillguard.intel.stix import EXTENSION_ID
from distillguard.privacy import key_id, token
from distillguard.store import in_store, replacing_all

MIN_FINGERPRINTS = 3
WIDEST = {4: 16, 6: 32}  # a shared range wider than this (prefix length) is no campaign's
USED = {"campaign", "indicator", "relationship"}
INFORMATIONAL = {
    "identity",
    "marking-definition",
    "extension-definition",
    "attack-pattern",
    "infrastructure",
    "observed-data",
    "sighting",
    "user-account",
}
RANGE = re.compile(r"^\[ipv4-addr:value ISSUBSET '([0-9./]+)'\]$")
AGENT = re.compile(
    r"^\[network-traffic:extensions\.'http-request-ext'\.request_header\.'User-Agent' = "
    r"'((?:[^'\\]|\\.)*)'\]$"
)


@dataclass
class PeerCampaign:
    id: str
    name: str
    fingerprints: set[int] = field(default_factory=set)
    agents: set[str] = field(default_factory=set)
    ranges: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)
    network_tokens: set[str] = field(default_factory=set)
    key_id: str = ""  # names the sharing key its tokens are under


def read_bundle(path: str | Path) -> tuple[list[PeerCampaign], list[str]]:
    """The peer campaigns of a STIX 2.1 bundle, and what was skipped (named)."""
    try:
        bundle = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such bundle") from None
    except OSError as exc:  # a folder, no permission
        raise InputError(f"{path}: cannot read the bundle ({exc.strerror})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not JSON ({exc})") from None
    if not isinstance(bundle, dict) or bundle.get("type") != "bundle":
        raise InputError(f"{path}: not a STIX bundle (no top-level type 'bundle')")
    objects = bundle.get("objects")
    if not isinstance(objects, list):
        raise InputError(f"{path}: the bundle has no objects list")
    versions = {
        str(o["spec_version"]) for o in objects if isinstance(o, dict) and "spec_version" in o
    }
    if "spec_version" in bundle:  # STIX 2.0 put it on the bundle; 2.1 on each object
        versions.add(str(bundle["spec_version"]))
    if versions - {"2.1"}:
        raise InputError(f"{path}: STIX spec version {', '.join(sorted(versions))}; we read 2.1")
    campaigns: dict[str, PeerCampaign] = {}
    skipped: list[str] = []
    shaped = [o for o in objects if _shaped(o)]  # a peer's bundle is untrusted input
    if len(shaped) < len(objects):
        skipped.append(f"{len(objects) - len(shaped)} object(s) without a text type and id")
    for o in shaped:
        if o["type"] == "campaign":
            campaigns[o["id"]] = _campaign(o)
    indicators = {o["id"]: o for o in shaped if o["type"] == "indicator"}
    for o in shaped:
        if o["type"] == "relationship" and o.get("relationship_type") == "indicates":
            target, source = (
                campaigns.get(_text(o.get("target_ref"))),
                indicators.get(_text(o.get("source_ref"))),
            )
            if target and source and not _apply(source, target):
                skipped.append(
                    f"{source['id']}: pattern not used (unsupported, or a range too "
                    f"wide): {source.get('pattern')}"
                )
        elif o["type"] not in USED | INFORMATIONAL:
            skipped.append(f"{o.get('id', o['type'])}: object type {o['type']} not used")
    return list(campaigns.values()), skipped


def _shaped(o: Any) -> bool:
    return isinstance(o, dict) and isinstance(o.get("type"), str) and isinstance(o.get("id"), str)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _texts(evidence: dict[str, Any], name: str) -> list[str]:
    values = evidence.get(name)
    return [v for v in values if isinstance(v, str)] if isinstance(values, list) else []


def _campaign(o: dict[str, Any]) -> PeerCampaign:
    peer = PeerCampaign(o["id"], str(o.get("name", o["id"])))
    extensions = o.get("extensions")
    evidence = extensions.get(EXTENSION_ID) if isinstance(extensions, dict) else None
    evidence = evidence if isinstance(evidence, dict) else {}
    for value in _texts(evidence, "template_fingerprints"):
        if re.fullmatch(r"[0-9a-f]{1,16}", value):
            peer.fingerprints.add(int(value, 16))
    peer.agents |= set(_texts(evidence, "user_agents"))
    peer.network_tokens |= set(_texts(evidence, "network_tokens"))
    peer.key_id = _text(evidence.get("key_id"))
    return peer


def _apply(indicator: dict[str, Any], peer: PeerCampaign) -> bool:
    """Add what a supported pattern says to the campaign; False if unsupported."""
    pattern = str(indicator.get("pattern", "")).strip()
    if indicator.get("pattern_type") != "stix":
        return False
    found = RANGE.match(pattern)
    if found:
        try:
            network = ipaddress.ip_network(found.group(1), strict=False)
        except ValueError:
            return False
        if network.prefixlen < WIDEST[network.version]:  # 0.0.0.0/0 and a browser's
            return False  # user agent would match every user of that browser
        peer.ranges.append(network)
        return True
    found = AGENT.match(pattern)
    if found:
        peer.agents.add(re.sub(r"\\(.)", r"\1", found.group(1)))
        return True
    return False


def match(db: Engine, peers: list[PeerCampaign], key: bytes | None) -> pa.Table:
    """(request_id, account_id, peer_campaign, kind) of our exchanges that match, from
    the `exchanges` digests on `db`; kind is template or network."""
    fingerprints = [(p.id, band) for p in peers for band in p.fingerprints]
    db.register(
        "peer_fingerprints",
        pa.table(
            {
                "peer_campaign": pa.array([c for c, _ in fingerprints], pa.string()),
                "band": pa.array([b for _, b in fingerprints], pa.uint64()),
            }
        ),
    )
    template = db.arrow(f"""
        WITH hits AS (
            SELECT x.request_id, x.account_id, f.peer_campaign, f.band
            FROM (SELECT request_id, account_id, unnest(template_bands) AS band
                  FROM exchanges) x
            JOIN peer_fingerprints f ON CAST(x.band AS UBIGINT) = f.band
        ),
        accounts AS (
            SELECT account_id, peer_campaign FROM hits GROUP BY 1, 2
            HAVING count(DISTINCT band) >= {MIN_FINGERPRINTS}
        )
        SELECT DISTINCT h.request_id, h.account_id, h.peer_campaign, 'template' AS kind
        FROM hits h JOIN accounts USING (account_id, peer_campaign)""")
    db.unregister("peer_fingerprints")
    networks = _networks(db, peers, key)
    db.register("peer_networks", networks)
    network = db.arrow("""
        SELECT x.request_id, x.account_id, n.peer_campaign, 'network' AS kind
        FROM exchanges x JOIN peer_networks n
          ON x.ip_prefix = n.ip_prefix AND x.user_agent = n.user_agent""")
    db.unregister("peer_networks")
    return pa.concat_tables([template, network]).sort_by(
        [("peer_campaign", "ascending"), ("request_id", "ascending"), ("kind", "ascending")]
    )


def _networks(db: Engine, peers: list[PeerCampaign], key: bytes | None) -> pa.Table:
    """(ip_prefix, user_agent, peer_campaign) of our own prefixes and clients that fall
    in a peer campaign's ranges or tokens, with one of its clients."""
    rows = db.rows(
        "SELECT DISTINCT ip_prefix, user_agent FROM exchanges "
        "WHERE ip_prefix IS NOT NULL AND user_agent IS NOT NULL"
    )
    found: list[tuple[str, str, str]] = []
    for prefix, agent in rows:
        net = _network(prefix)
        mine = token(key, prefix) if key else None
        for p in peers:
            if agent not in p.agents:
                continue
            inside = net is not None and any(_within(net, r) for r in p.ranges)
            if inside or (mine is not None and mine in p.network_tokens):
                found.append((prefix, agent, p.id))
    return pa.table(
        {
            "ip_prefix": pa.array([f[0] for f in found], pa.string()),
            "user_agent": pa.array([f[1] for f in found], pa.string()),
            "peer_campaign": pa.array([f[2] for f in found], pa.string()),
        }
    )


def _within(net: Any, wider: Any) -> bool:
    return bool(net.version == wider.version and net.subnet_of(wider))


def _network(prefix: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(prefix, strict=False)
    except ValueError:
        return None


def match_traffic(
    bundle: str | Path,
    source: str | Path,
    out: str | Path,
    key: bytes | None = None,
    memory_limit: str = "1GB",
) -> dict[str, Any]:
    """Match a peer's bundle against the traffic at `source`; writes out/matches.parquet
    and out/report.json, and returns the report."""
    if Path(out).exists() and not Path(out).is_dir():
        raise UsageError(f"--out {out}: a file, not a folder")
    if in_store(Path(out)):
        raise UsageError(f"--out {out} is a store or inside one: put the matches elsewhere")
    not_among_logs("--out", Path(out) / "matches.parquet")
    peers, skipped = read_bundle(bundle)
    skipped += _other_keys(peers, key)
    files, _ = inputs(source)
    readable(files)
    exchanges_only(files)
    work = Path(tempfile.mkdtemp(prefix="distillguard-match-"))
    db = open_engine("duckdb", work, memory_limit)
    try:
        folders, _ = digests(db, files, work, None, default_workers())
        load(db, "exchanges", folders, DIGEST)
        matches = match(db, peers, key)
    finally:
        db.close()
        shutil.rmtree(work, ignore_errors=True)
    report = _report(peers, skipped, matches)
    Path(out).mkdir(parents=True, exist_ok=True)
    with replacing_all(Path(out) / "matches.parquet", Path(out) / "report.json") as (rows, text):
        pq.write_table(matches, rows)
        text.write_bytes(json.dumps(report, indent=1).encode())
    return report


def _other_keys(peers: list[PeerCampaign], key: bytes | None) -> list[str]:
    """The campaigns whose network tokens no match can use: under another sharing key
    than ours (or we gave none), said rather than matching nothing in silence."""
    ours = key_id(key) if key else ""
    return [
        f"{p.id}: its {len(p.network_tokens)} network token(s) are under sharing key "
        f"{p.key_id or 'unnamed'}, "
        + (f"not ours ({ours})" if key else "and no --key-file was given")
        + ": network matching is off for them"
        for p in peers
        if p.network_tokens and (not key or (p.key_id and p.key_id != ours))
    ]


def _report(peers: list[PeerCampaign], skipped: list[str], matches: pa.Table) -> dict[str, Any]:
    rows = matches.to_pylist()
    per: dict[str, dict[str, Any]] = {}
    for p in peers:
        mine = [r for r in rows if r["peer_campaign"] == p.id]
        per[p.id] = {
            "name": p.name,
            "accounts": sorted({r["account_id"] for r in mine}),
            "exchanges": len({r["request_id"] for r in mine}),
            "by_kind": {k: sum(1 for r in mine if r["kind"] == k) for k in ("template", "network")},
            "usable": {
                "template_fingerprints": len(p.fingerprints),
                "network_ranges": len(p.ranges),
                "network_tokens": len(p.network_tokens),
                "user_agents": len(p.agents),
            },
        }
    return {"peer_campaigns": per, "skipped": skipped}
