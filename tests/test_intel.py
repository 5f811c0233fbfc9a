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


def test_an_unknown_marking_is_a_usage_error(tmp_path: Path) -> None:
    findings = tmp_path / "findings"
    findings.mkdir()
    (findings / "campaigns.json").write_text(json.dumps(_campaigns()))
    args = ["intel", "export", str(findings), "--out", str(tmp_path / "b.json"), "--tlp", "pink"]
    assert main(args) == 2
