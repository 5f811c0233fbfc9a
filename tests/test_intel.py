"""Sharing findings: valid STIX 2.1 with nothing private in it, and an OCSF feed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from stix2validator import ValidationOptions, validate_string

from distillguard.cli import main
from distillguard.intel.siem import events
from distillguard.intel.stix import ATLAS, EXTENSION_ID, Sharing, export

RAW_ACCOUNT = "acct-planted-7731"
RAW_END_USER = "user-planted-0042"
RAW_PREFIX = "203.0.113.0/24"
RAW_CARD = "card-planted-4242"


def _campaigns() -> list[dict[str, Any]]:
    return [
        {
            "id": "campaign-001",
            "score": 0.97,
            "confidence": 0.999,
            "accounts": [RAW_ACCOUNT, "acct-planted-7732", "acct-planted-7733"],
            "substreams": [{"account_id": "acct-reseller-1", "end_user_id": RAW_END_USER}],
            "exchange_count": 5400,
            "first_seen": "2026-04-22T00:00:00Z",
            "last_seen": "2026-04-28T23:10:00Z",
            "capability_mix": {"coding": 4000, "agentic": 1400},
            "evidence": [
                {"signal": "reasoning_elicitation", "strength": 0.9, "detail": "90% of ..."},
                {"signal": "linked_by_template", "strength": 1.0, "detail": "312 template keys"},
                {"signal": "linked_by_payment", "strength": 1.0, "detail": "2 payment keys"},
            ],
            "indicators": [
                {"kind": "network", "value": RAW_PREFIX, "user_agent": "it's-a/1.0", "accounts": 3},
                {"kind": "payment", "value": RAW_CARD, "accounts": 2},
                {"kind": "system_prompt", "value": "595a2f4e4ec28c28", "accounts": 3},
            ],
            "template_fingerprints": ["9699a6d7a8252fe9", "0aa36d7b08310118"],
            "recommended_action": "suspend",
        }
    ]


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (str(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [str(value)]


def _valid(bundle: dict[str, Any]) -> None:
    result = validate_string(json.dumps(bundle), ValidationOptions(version="2.1"))
    assert result.is_valid, [str(e) for e in result.errors]


def test_the_bundle_is_valid_stix_with_every_part_the_issue_names() -> None:
    bundle = export(_campaigns(), Sharing(producer="Lab A", key=b"k" * 32))
    _valid(bundle)
    types = {o["type"] for o in bundle["objects"]}
    assert {
        "identity",
        "campaign",
        "attack-pattern",
        "infrastructure",
        "indicator",
        "observed-data",
        "sighting",
        "relationship",
        "extension-definition",
        "user-account",
    } <= types
    atlas = {
        r["external_id"]
        for o in bundle["objects"]
        if o["type"] == "attack-pattern"
        for r in o["external_references"]
    }
    assert atlas == set(ATLAS)
    (campaign,) = [o for o in bundle["objects"] if o["type"] == "campaign"]
    evidence = campaign["extensions"][EXTENSION_ID]
    assert evidence["template_fingerprints"] == ["9699a6d7a8252fe9", "0aa36d7b08310118"]
    assert evidence["linked_by"] == {"template": 312, "payment": 2}
    for o in bundle["objects"]:
        if o["type"] not in ("user-account", "marking-definition"):
            assert o["object_marking_refs"], o["type"]


def test_nothing_raw_leaves_by_default() -> None:
    for sharing in (Sharing(), Sharing(key=b"k" * 32)):
        text = json.dumps(export(_campaigns(), sharing))
        for planted in (RAW_ACCOUNT, RAW_END_USER, RAW_PREFIX, "203.0.113", RAW_CARD, "reseller-1"):
            assert planted not in text
        assert "acct-planted" not in text


def test_addresses_leave_only_when_asked_and_as_patterns() -> None:
    bundle = export(_campaigns(), Sharing(include_addresses=True))
    _valid(bundle)
    patterns = [o["pattern"] for o in bundle["objects"] if o["type"] == "indicator"]
    assert f"[ipv4-addr:value ISSUBSET '{RAW_PREFIX}']" in patterns
    assert any("'it\\'s-a/1.0'" in p for p in patterns)  # quotes escaped in the pattern
    assert RAW_ACCOUNT not in json.dumps(bundle)


def test_peers_with_the_same_key_get_the_same_tokens_and_ids() -> None:
    one = export(_campaigns(), Sharing(producer="Lab A", key=b"k" * 32))
    two = export(_campaigns(), Sharing(producer="Lab A", key=b"k" * 32))
    other = export(_campaigns(), Sharing(producer="Lab A", key=b"q" * 32))

    def evidence(bundle: dict[str, Any]) -> dict[str, Any]:
        (c,) = [o for o in bundle["objects"] if o["type"] == "campaign"]
        return dict(c["extensions"][EXTENSION_ID])

    assert evidence(one)["account_tokens"] == evidence(two)["account_tokens"]
    assert evidence(one)["account_tokens"] != evidence(other)["account_tokens"]
    assert [o["id"] for o in one["objects"]] == [o["id"] for o in two["objects"]]
    assert "payment_tokens" not in evidence(export(_campaigns(), Sharing()))


def test_ocsf_feed_has_one_finding_per_flagged_account_and_substream() -> None:
    lines = list(events(_campaigns()))
    assert len(lines) == 4
    first = lines[0]
    assert (first["class_uid"], first["category_uid"], first["type_uid"]) == (2004, 2, 200401)
    assert first["severity"] == "Critical" and first["confidence_score"] == 100
    assert first["actor"]["user"]["uid"] == RAW_ACCOUNT
    assert lines[-1]["unmapped"]["end_user_id"] == RAW_END_USER
    assert first["finding_info"]["first_seen_time"] == 1776816000000


def test_export_on_the_command_line(tmp_path: Path) -> None:
    findings = tmp_path / "findings"
    findings.mkdir()
    (findings / "campaigns.json").write_text(json.dumps(_campaigns()))
    out = tmp_path / "bundle.json"
    assert main(["intel", "export", str(findings), "--out", str(out), "--tlp", "green"]) == 0
    _valid(json.loads(out.read_text()))
    feed = tmp_path / "feed.jsonl"
    assert main(["intel", "export", str(findings), "--out", str(feed), "--format", "ocsf"]) == 0
    assert len(feed.read_text().splitlines()) == 4


@pytest.mark.parametrize(
    ("content", "code"),
    [(None, 3), ("{not json", 3), ('{"a": 1}', 3), ("[]", 0)],
)
def test_bad_findings_are_refused_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, code: int
) -> None:
    findings = tmp_path / "findings"
    findings.mkdir()
    if content is not None:
        (findings / "campaigns.json").write_text(content)
    assert main(["intel", "export", str(findings), "--out", str(tmp_path / "b.json")]) == code
    assert "Traceback" not in capsys.readouterr().err


def _without(path: str) -> list[dict[str, Any]]:
    """The hand-built campaigns with one field (`evidence.0.signal`) taken out."""
    campaigns = _campaigns()
    *parents, last = path.split(".")
    where: Any = campaigns[0]
    for step in parents:
        where = where[int(step)] if step.isdigit() else where[step]
    del where[last]
    return campaigns


@pytest.mark.parametrize(
    "missing", ["confidence", "first_seen", "evidence.0.signal", "indicators.1.kind"]
)
@pytest.mark.parametrize("form", ["stix", "misp", "ocsf", "report"])
def test_findings_missing_a_field_are_refused_by_every_reader(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], missing: str, form: str
) -> None:
    findings = tmp_path / "findings"
    findings.mkdir()
    (findings / "campaigns.json").write_text(json.dumps(_without(missing)))
    out = ["--out", str(tmp_path / "out")]
    args = ["report", str(findings), *out] if form == "report" else [
        "intel", "export", str(findings), "--format", form, *out]  # fmt: skip
    assert main(args) == 3
    err = capsys.readouterr().err
    assert f"{missing.rsplit('.', 1)[-1]} missing" in err and "Traceback" not in err


def test_findings_of_an_earlier_version_still_export(tmp_path: Path) -> None:
    """Fields added later (sub-streams, indicators, template fingerprints) are optional."""
    findings = tmp_path / "findings"
    findings.mkdir()
    older = _campaigns()
    for key in ("substreams", "indicators", "template_fingerprints"):
        del older[0][key]
    (findings / "campaigns.json").write_text(json.dumps(older))
    for form in ("stix", "misp", "ocsf"):
        out = tmp_path / f"{form}.json"
        assert main(["intel", "export", str(findings), "--format", form, "--out", str(out)]) == 0


def test_an_unknown_marking_is_a_usage_error(tmp_path: Path) -> None:
    findings = tmp_path / "findings"
    findings.mkdir()
    (findings / "campaigns.json").write_text(json.dumps(_campaigns()))
    args = ["intel", "export", str(findings), "--out", str(tmp_path / "b.json"), "--tlp", "pink"]
    assert main(args) == 2


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A provider's traffic, its findings and the bundle it shares (with ranges)."""
    from distillguard.detect import detect
    from distillguard.simulate import simulate
    from distillguard.simulate.scenario import Campaign, Population, Scenario

    folder = tmp_path_factory.mktemp("shared")
    scenario = Scenario(
        name="peer",
        seed=3,
        days=2,
        legitimate=[Population("developer", 30), Population("chat", 60)],
        campaigns=[Campaign(id="coders", accounts=15, capability="coding")],
    )
    simulate(scenario, folder / "sim")
    detect(folder / "sim", folder / "findings")
    (folder / "key").write_bytes(b"s" * 32)
    bundle = folder / "bundle.json"
    args = ["intel", "export", str(folder / "findings"), "--out", str(bundle)]
    assert main([*args, "--key-file", str(folder / "key"), "--include-addresses"]) == 0
    return folder


def test_a_peers_campaign_is_found_in_our_traffic(shared: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "m"
    args = ["intel", "match", str(shared / "bundle.json"), str(shared / "sim"), "--out", str(out)]
    assert main([*args, "--key-file", str(shared / "key")]) == 0
    report = json.loads((out / "report.json").read_text())
    (found,) = report["peer_campaigns"].values()
    labels = pq.read_table(shared / "sim" / "labels.parquet").to_pylist()
    campaign = {r["account_id"] for r in labels if r["campaign_id"]}
    legitimate = {r["account_id"] for r in labels if not r["campaign_id"]}
    matched = set(found["accounts"])
    assert len(matched & campaign) >= 0.9 * len(campaign)
    assert len(matched & legitimate) <= 0.01 * len(legitimate)
    assert found["by_kind"]["template"] > 0 and report["skipped"] == []
    assert pq.read_table(out / "matches.parquet").num_rows >= found["exchanges"]


def test_unusable_parts_of_a_bundle_are_named(shared: Path, tmp_path: Path) -> None:
    from distillguard.intel.match import read_bundle

    bundle = json.loads((shared / "bundle.json").read_text())
    campaign = next(o for o in bundle["objects"] if o["type"] == "campaign")
    odd = {
        "type": "indicator",
        "spec_version": "2.1",
        "id": "indicator--00000000-0000-4000-8000-000000000001",
        "created": "2026-04-22T00:00:00Z",
        "modified": "2026-04-22T00:00:00Z",
        "pattern": "[file:hashes.MD5 = 'd41d8cd98f00b204e9800998ecf8427e']",
        "pattern_type": "stix",
        "valid_from": "2026-04-22T00:00:00Z",
    }
    link = {
        "type": "relationship",
        "spec_version": "2.1",
        "id": "relationship--00000000-0000-4000-8000-000000000002",
        "created": "2026-04-22T00:00:00Z",
        "modified": "2026-04-22T00:00:00Z",
        "relationship_type": "indicates",
        "source_ref": odd["id"],
        "target_ref": campaign["id"],
    }
    malware = {"type": "malware", "spec_version": "2.1", "id": "malware--1", "name": "x"}
    bundle["objects"] += [odd, link, malware]
    path = tmp_path / "b.json"
    path.write_text(json.dumps(bundle))
    peers, skipped = read_bundle(path)
    assert len(peers) == 1 and peers[0].fingerprints
    assert any(odd["id"] in s and "pattern not used" in s for s in skipped)
    assert any("malware" in s for s in skipped)


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        '{"type": "campaign"}',
        '{"type": "bundle", "id": "bundle--x"}',
        '{"type": "bundle", "objects": [{"type": "campaign", "spec_version": "2.0"}]}',
        '{"type": "bundle", "spec_version": "2.0", "objects": [{"type": "campaign"}]}',
    ],
)
def test_a_bundle_that_is_not_stix_21_is_refused(
    shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    path = tmp_path / "b.json"
    path.write_text(content)
    args = ["intel", "match", str(path), str(shared / "sim"), "--out", str(tmp_path / "m")]
    assert main(args) == 3
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(path) in err


MISSHAPEN = {
    "a list for an id": {"id": ["x"]},
    "a list for a type": {"type": ["campaign"]},
    "a number for the extensions": {"extensions": 5},
    "a list for the extensions": {"extensions": [1]},
    "a list for our extension": {"extensions": {"EXT": [1]}},
    "a number for a list": {"extensions": {"EXT": {"user_agents": 5, "network_tokens": 7}}},
}


@pytest.mark.parametrize("shape", MISSHAPEN)
def test_a_misshapen_bundle_costs_its_odd_parts_never_the_run(
    shared: Path, tmp_path: Path, shape: str
) -> None:
    """A peer's bundle is untrusted input: a value of the wrong type is skipped (and
    named), the rest still matches; no traceback."""
    from distillguard.intel.match import match_traffic
    from distillguard.intel.stix import EXTENSION_ID

    bundle = json.loads((shared / "bundle.json").read_text())
    campaign = next(o for o in bundle["objects"] if o["type"] == "campaign")
    odd = json.loads(json.dumps(campaign).replace("campaign--", "campaign--0"))
    change = json.loads(json.dumps(MISSHAPEN[shape]).replace("EXT", EXTENSION_ID))
    odd.update(change)
    link = next(o for o in bundle["objects"] if o["type"] == "relationship")
    bundle["objects"] += [odd, {**link, "id": "relationship--odd", "source_ref": ["x"]}]
    (tmp_path / "b.json").write_text(json.dumps(bundle))
    report = match_traffic(tmp_path / "b.json", shared / "sim", tmp_path / "m", key=b"s" * 32)
    assert report["peer_campaigns"][campaign["id"]]["accounts"]


def test_a_catch_all_range_or_another_key_matches_nothing_and_says_so(
    shared: Path, tmp_path: Path
) -> None:
    """0.0.0.0/0 with a browser's user agent would match every user of that browser;
    tokens under a key we do not hold match nothing, which the report must say."""
    from distillguard.intel.match import match_traffic

    bundle = json.loads((shared / "bundle.json").read_text())
    for o in bundle["objects"]:
        if o["type"] == "indicator" and "ISSUBSET" in o.get("pattern", ""):
            o["pattern"] = "[ipv4-addr:value ISSUBSET '0.0.0.0/0']"
    (tmp_path / "b.json").write_text(json.dumps(bundle))
    report = match_traffic(tmp_path / "b.json", shared / "sim", tmp_path / "m", key=b"o" * 32)
    (found,) = report["peer_campaigns"].values()
    assert found["usable"]["network_ranges"] == 0 and found["by_kind"]["network"] == 0
    assert any("range too wide" in s for s in report["skipped"])
    assert any("not ours" in s for s in report["skipped"])
    keyless = match_traffic(shared / "bundle.json", shared / "sim", tmp_path / "k")
    assert any("no --key-file was given" in s for s in keyless["skipped"])


def test_an_empty_bundle_matches_nothing_and_odd_paths_are_refused(
    shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text('{"type": "bundle", "id": "bundle--x", "objects": []}')
    sim, out = str(shared / "sim"), tmp_path / "m"
    assert main(["intel", "match", str(empty), sim, "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["peer_campaigns"] == {}
    assert (out / "matches.parquet").is_file()
    assert main(["intel", "match", str(tmp_path), sim, "--out", str(tmp_path / "m2")]) == 3
    assert main(["intel", "match", str(empty), sim, "--out", str(empty)]) == 2
    err = capsys.readouterr().err
    assert "cannot read the bundle" in err and "a file, not a folder" in err
    assert "Traceback" not in err


def test_damaged_traffic_is_refused_by_name(
    shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    traffic = tmp_path / "traffic"
    traffic.mkdir()
    damaged = traffic / "exchanges.parquet"
    damaged.write_bytes((shared / "sim" / "exchanges.parquet").read_bytes()[:4000])
    bundle = str(shared / "bundle.json")
    assert main(["intel", "match", bundle, str(traffic), "--out", str(tmp_path / "m")]) == 3
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"{damaged}: not a readable Parquet file" in err


def test_misp_events_follow_the_same_privacy_rules(tmp_path: Path) -> None:
    findings = tmp_path / "findings"
    findings.mkdir()
    (findings / "campaigns.json").write_text(json.dumps(_campaigns()))
    out = tmp_path / "misp.json"
    assert main(["intel", "export", str(findings), "--out", str(out), "--format", "misp"]) == 0
    text = out.read_text()
    (item,) = json.loads(text)
    event = item["Event"]
    assert event["info"].startswith("Distillation campaign campaign-001")
    assert {t["name"] for t in event["Tag"]} >= {"tlp:amber"}
    assert any("AML.T0024.002" in t["name"] for t in event["Tag"])
    values = {a["type"]: a["value"] for a in event["Attribute"]}
    assert values["user-agent"] == "it's-a/1.0"
    for planted in (RAW_ACCOUNT, RAW_PREFIX, RAW_CARD, "acct-planted"):
        assert planted not in text
    (tmp_path / "key").write_bytes(b"k" * 32)
    args = ["intel", "export", str(findings), "--out", str(out), "--format", "misp"]
    assert main([*args, "--include-addresses", "--key-file", str(tmp_path / "key")]) == 0
    assert RAW_PREFIX in out.read_text() and RAW_ACCOUNT not in out.read_text()
