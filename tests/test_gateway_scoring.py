"""Online scoring agrees with batch detection: the same chain-of-thought rule, the same
template fingerprints (matched off the request path, counted from the next request)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from distillguard.features.capability import COT_PATTERNS, text_scores
from distillguard.features.template import band_keys, signatures
from distillguard.gateway.findings import Findings
from distillguard.gateway.policy import DEFAULT, Policy, Rule
from distillguard.gateway.scoring import COT, Scorer
from distillguard.gateway.server import Config
from distillguard.gateway.state import MemoryStore
from distillguard.privacy import Pseudonymiser
from distillguard.schema import FINDINGS_ACCOUNTS
from tests.test_gateway import AUTH, _upstream_chat, gateway

PIECES = [*(p.replace("\\b", "").replace("[- ]", " ") for p in COT_PATTERNS[:3]), "step-by-step"]
WORDS = st.sampled_from(
    [
        "Step",
        "by",
        "step",
        "think",
        "through",
        "SHOW",
        "your",
        "work",
        "Chain",
        "of",
        "thought",
        "<think>",
        "reasoning",
        "behind",
        "x",
        "2+2",
        "Ünï",
        "İ",
        ".",
        "!",
        "\n",
        "explain",
        "the",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(WORDS | st.text(max_size=6), max_size=30).map(" ".join))
def test_the_gateway_flags_chain_of_thought_as_batch_detection_does(text: str) -> None:
    _, batch = text_scores(pa.array([text]))
    assert bool(COT.search(text.lower())) == bool(batch[0] > 0)


TEMPLATE = 'Refactor the function "{}" in module "{}" and explain every design decision.'


def _fingerprints(prompts: list[str]) -> list[str]:
    keys = band_keys(signatures(pa.array(prompts)))
    return sorted({f"{int(k):016x}" for row in keys for k in row})


def test_template_fingerprints_count_from_the_next_request(tmp_path: Path) -> None:
    findings = tmp_path / "findings"
    findings.mkdir()
    campaign = {
        "id": "campaign-001",
        "score": 0.9,
        "template_fingerprints": _fingerprints([TEMPLATE.format("parse_row", "io")]),
    }
    (findings / "campaigns.json").write_text(json.dumps([campaign]))
    empty = FINDINGS_ACCOUNTS.empty_table()  # no flagged accounts: templates alone
    pq.write_table(empty, findings / "accounts.parquet")
    policy = Policy(rules=(Rule("mark", {"evidence": "campaign_templates"}),))

    async def main() -> None:
        upstream = web.Application()
        upstream.router.add_post("/v1/chat/completions", _upstream_chat)
        async with TestServer(upstream) as up:
            config = Config(upstream=str(up.make_url("")), findings=str(findings), policy=policy)
            async with gateway(config) as client:
                prompt = TEMPLATE.format("load_user", "db")
                chat = {"model": "m", "messages": [{"role": "user", "content": prompt}]}
                first = await client.post("/v1/chat/completions", json=chat, headers=AUTH)
                assert "x-distillguard-mark" not in first.headers  # matched after it
                await asyncio.sleep(0.25 + 0.6)  # the matcher's batch interval, and its work
                again = await client.post("/v1/chat/completions", json=chat, headers=AUTH)
                assert again.headers.get("x-distillguard-mark") == "1"
                other = {**chat, "messages": [{"role": "user", "content": "What is a monad?"}]}
                key = {"Authorization": "Bearer another-account"}
                for _ in range(2):
                    r = await client.post("/v1/chat/completions", json=other, headers=key)
                    assert "x-distillguard-mark" not in r.headers
                    await asyncio.sleep(0.2)

    asyncio.run(main())


def test_without_an_event_loop_templates_are_matched_at_once(tmp_path: Path) -> None:
    findings = Findings(None)
    findings.fingerprints = dict.fromkeys(_fingerprints([TEMPLATE.format("a", "b")]), "c-1")
    scorer = Scorer(DEFAULT, MemoryStore(), findings, Pseudonymiser(None))
    scorer.decide("acct", TEMPLATE.format("c", "d"), "curl/8", "10.0.0.1")
    decision = scorer.decide("acct", "hello", "curl/8", "10.0.0.1")
    assert "campaign_templates" in decision.reason


def test_an_account_with_enough_fingerprints_is_not_matched_again(tmp_path: Path) -> None:
    """A campaign account sends most of the prompts an attack brings; once it carries
    enough fingerprints for the evidence, matching the rest would change nothing."""
    findings = Findings(None)
    findings.fingerprints = dict.fromkeys(_fingerprints([TEMPLATE.format("a", "b")]), "c-1")
    store = MemoryStore()
    scorer = Scorer(DEFAULT, store, findings, Pseudonymiser(None))
    matched: list[str] = []
    scorer._templates = lambda account, prompt: matched.append(prompt)  # type: ignore[method-assign]
    scorer.decide("acct", TEMPLATE.format("c", "d"), "curl/8", "10.0.0.1")
    assert len(matched) == 1
    store.add_fingerprints([("acct", sorted(findings.fingerprints)[:3])])
    for _ in range(3):
        decision = scorer.decide("acct", TEMPLATE.format("e", "f"), "curl/8", "10.0.0.1")
        assert "campaign_templates" in decision.reason
    assert len(matched) == 1
    scorer.decide("other", TEMPLATE.format("g", "h"), "curl/8", "10.0.0.1")
    assert len(matched) == 2  # another account still is


def test_repeated_prompts_get_the_keys_they_get_alone() -> None:
    """Band keys are computed once per distinct prompt in a batch; each row still gets
    exactly its own prompt's keys (batch detection's keys, so findings match)."""
    from distillguard.gateway.templates import keys_of

    prompts = [TEMPLATE.format("parse_row", "io"), "", "Summarise this article on tides briefly."]
    batch = [prompts[i] for i in (0, 1, 0, 2, 2, 0)]
    keys = keys_of(batch)
    assert keys.shape[0] == len(batch)
    for row, prompt in zip(keys, batch, strict=True):
        assert (row == keys_of([prompt])[0]).all()
    assert not (keys_of([prompts[0]]) == keys_of([prompts[2]])).all()


def test_only_prompts_that_carry_a_fingerprint_come_back() -> None:
    """The matching process returns the positions of the prompts carrying a known key,
    each with exactly the known keys it carries; the rest stay in that process."""
    from distillguard.gateway.templates import carried, keys_of, numbers

    farm, other = TEMPLATE.format("parse_row", "io"), "Summarise this article on tides."
    known = [f"{int(k):016x}" for k in keys_of([farm])[0][:2]]
    found = carried([other, farm, other, farm], numbers([*known, "00000000000000ff"]))
    assert [i for i, _ in found] == [1, 3]
    assert all(sorted(keys) == sorted(known) for _, keys in found)
    assert carried([other], numbers(known)) == []
    assert carried([], numbers(known)) == []


def test_accounts_held_back_are_not_matched_to_the_campaign_they_were_grouped_with(
    tmp_path: Path,
) -> None:
    """Detection held back a trusted researcher grouped with a farm: the farm's network
    and templates, made partly from the researcher's traffic, do not throttle it."""
    findings = tmp_path / "findings"
    findings.mkdir()
    campaign = {
        "id": "campaign-001",
        "score": 0.9,
        "indicators": [{"kind": "network", "value": "10.0.0.0/24", "user_agent": "curl/8"}],
        "template_fingerprints": _fingerprints([TEMPLATE.format("a", "b")]),
    }
    (findings / "campaigns.json").write_text(json.dumps([campaign]))
    accounts = [
        ("farm", True, "campaign-001", ["reasoning_elicitation"]),
        ("researcher", False, None, ["trusted_channel", "reasoning_elicitation"]),
        ("other", False, None, []),
    ]
    table = pa.Table.from_pylist(
        [
            dict(zip(("account_id", "flagged", "campaign_id", "reasons"), a, strict=True))
            | {"score": 0.9}
            for a in accounts
        ],
        schema=FINDINGS_ACCOUNTS,
    )
    pq.write_table(table, findings / "accounts.parquet")
    loaded = Findings(findings)
    assert loaded.refresh() and loaded.held == {"researcher"}
    scorer = Scorer(DEFAULT, MemoryStore(), loaded, Pseudonymiser(None))
    for _ in range(4):
        held = scorer.decide("researcher", TEMPLATE.format("c", "d"), "curl/8", "10.0.0.7")
        stranger = scorer.decide("other", TEMPLATE.format("e", "f"), "curl/8", "10.0.0.8")
    assert "campaign_network" not in held.reason and "campaign_templates" not in held.reason
    assert held.action == "allow"
    assert "campaign_network" in stranger.reason and "campaign_templates" in stranger.reason
