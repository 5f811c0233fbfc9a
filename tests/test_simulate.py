"""The simulator: parameters show up in the traffic, seeds reproduce it, labels agree
with it, and each evasion changes what it claims to change."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
from datetime import UTC, datetime
from pathlib import Path
from statistics import mean, pstdev
from typing import Any

import pyarrow.parquet as pq
import pytest

from distillguard.simulate import ScenarioError, load, simulate
from distillguard.simulate.generate import _times
from distillguard.simulate.populations import behaviours, diurnal
from distillguard.simulate.scenario import Campaign, Population, ProxyMix, Scenario
from tests.conftest import SHARED_DATA
from tests.conftest import run as ingest_run


def small(*campaigns: Campaign, days: int = 3, seed: int = 5, **legit: int) -> Scenario:
    people = {"developer": 20, "chat": 40, **legit}
    return Scenario(
        name="t",
        seed=seed,
        days=days,
        legitimate=[Population(k, v) for k, v in people.items()],
        campaigns=list(campaigns),
    )


def rows(folder: Path, table: str = "exchanges") -> list[dict[str, object]]:
    return pq.read_table(folder / f"{table}.parquet").to_pylist()


def campaign_rows(folder: Path, campaign: str) -> list[dict[str, object]]:
    members = {r["account_id"] for r in rows(folder, "labels") if r["campaign_id"] == campaign}
    return [r for r in rows(folder) if r["account_id"] in members]


def digest(folder: Path) -> str:
    return hashlib.sha256(str(rows(folder)).encode()).hexdigest()


def test_a_seed_reproduces_the_traffic_and_another_does_not(tmp_path: Path) -> None:
    scenario = small(Campaign(id="c", accounts=10))
    simulate(scenario, tmp_path / "a")
    simulate(scenario, tmp_path / "b")
    simulate(small(Campaign(id="c", accounts=10), seed=6), tmp_path / "c")
    assert digest(tmp_path / "a") == digest(tmp_path / "b") != digest(tmp_path / "c")
    assert rows(tmp_path / "a", "accounts") == rows(tmp_path / "b", "accounts")


def test_labels_agree_with_the_traffic(tmp_path: Path) -> None:
    scenario = small(
        Campaign(id="c1", accounts=12, proxy_mix=ProxyMix(resellers=2, share=0.5)),
        Campaign(id="c2", accounts=8, capability="reasoning"),
        reseller=2,
    )
    facts = simulate(scenario, tmp_path)
    labels = {r["account_id"]: r for r in rows(tmp_path, "labels")}
    exchanges = rows(tmp_path)
    assert len(labels) == scenario.legitimate_accounts + 20
    assert {r["account_id"] for r in exchanges} <= set(labels)
    assert sum(1 for r in labels.values() if r["campaign_id"] == "c1") == 12
    proxied = {r["request_id"]: r["campaign_id"] for r in rows(tmp_path, "exchange_labels")}
    by_id = {r["request_id"]: r for r in exchanges}
    assert proxied and all(
        labels[by_id[rid]["account_id"]]["role"] == "reseller" for rid in proxied
    )
    own = sum(1 for r in exchanges if labels[r["account_id"]]["campaign_id"] == "c1")
    assert own + len(proxied) == facts.by_campaign["c1"]
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert truth["campaigns"]["c1"]["proxied_exchanges"] == len(proxied)
    assert len({r["request_id"] for r in exchanges}) == len(exchanges)


def test_campaign_pace_matches_its_parameters(tmp_path: Path) -> None:
    campaign = Campaign(id="c", accounts=40, exchanges_per_account_day=20, rate_limit_per_day=24)
    simulate(small(campaign, days=4), tmp_path)
    per_day: dict[tuple[object, object], int] = {}
    for r in campaign_rows(tmp_path, "c"):
        key = (r["account_id"], r["ts"].date())
        per_day[key] = per_day.get(key, 0) + 1
    counts = list(per_day.values())
    assert max(counts) <= 24
    assert abs(mean(counts) - 20) < 0.6  # jitter of +-15 % on the rate, Poisson counts
    gaps = _gaps(campaign_rows(tmp_path, "c"))
    assert pstdev(gaps) / mean(gaps) < 0.35  # load balanced: nearly even spacing


def _gaps(exchanges: list[dict[str, object]]) -> list[float]:
    out: list[float] = []
    by_account: dict[object, list[datetime]] = {}
    for r in exchanges:
        by_account.setdefault(r["account_id"], []).append(r["ts"])  # type: ignore[arg-type]
    for times in by_account.values():
        times.sort()
        out.extend(
            (b - a).total_seconds()
            for a, b in itertools.pairwise(times)
            if (b - a).total_seconds() < 6 * 3600
        )
    return out


def test_token_lengths_follow_their_fitted_lognormal(tmp_path: Path) -> None:
    simulate(small(chat=400, developer=1), tmp_path)
    labels = {r["account_id"]: r["role"] for r in rows(tmp_path, "labels")}
    logs = [
        math.log(r["output_tokens"])
        for r in rows(tmp_path)
        if labels[r["account_id"]] == "chat" and r["output_tokens"] > 1
    ]
    mu, sigma = behaviours()["chat"].tokens_out
    assert abs(mean(logs) - mu) < 4 * sigma / math.sqrt(len(logs)) + 0.02
    assert abs(pstdev(logs) - sigma) < 0.05


def test_session_times_follow_the_diurnal_weights() -> None:
    weights = diurnal("human")
    rng = random.Random(3)
    day = datetime(2026, 4, 22, tzinfo=UTC)
    times = _times(rng, 30_000, 1, weights, day, 0, 1.0)
    hours = [0] * 24
    for t in times:
        hours[int((t - day).total_seconds() // 3600) % 24] += 1
    distance = sum(abs(h / len(times) - w) for h, w in zip(hours, weights, strict=True)) / 2
    assert distance < 0.02  # total variation distance


def test_legitimate_agents_are_burstier_than_a_balanced_campaign(tmp_path: Path) -> None:
    simulate(small(Campaign(id="c", accounts=20), coding_agent=6), tmp_path)
    labels = {r["account_id"]: r["role"] for r in rows(tmp_path, "labels")}
    agents = _gaps([r for r in rows(tmp_path) if labels[r["account_id"]] == "coding_agent"])
    campaign = _gaps(campaign_rows(tmp_path, "c"))
    assert pstdev(agents) / mean(agents) > 1.0 > 3 * pstdev(campaign) / mean(campaign)


def _evasion_pair(tmp_path: Path, evasion: str, **extra: object) -> tuple[list, list, Path, Path]:
    base = Campaign(id="c", accounts=24, payment_group_size=6, **extra)  # type: ignore[arg-type]
    evaded = Campaign(id="c", accounts=24, payment_group_size=6, evasions=[evasion], **extra)  # type: ignore[arg-type]
    simulate(small(base), tmp_path / "base")
    simulate(small(evaded), tmp_path / "evaded")
    return (
        campaign_rows(tmp_path / "base", "c"),
        campaign_rows(tmp_path / "evaded", "c"),
        tmp_path / "base",
        tmp_path / "evaded",
    )


def _accounts(folder: Path, campaign: str) -> list[dict[str, object]]:
    members = {r["account_id"] for r in rows(folder, "labels") if r["campaign_id"] == campaign}
    return [r for r in rows(folder, "accounts") if r["account_id"] in members]


def test_paraphrase_rewords_templates_per_account(tmp_path: Path) -> None:
    base, evaded, _, _ = _evasion_pair(tmp_path, "paraphrase")
    assert len(_skeletons(evaded)) > 3 * len(_skeletons(base))


def _skeletons(exchanges: list[dict[str, object]]) -> set[str]:
    """Prompts with their slot values masked: what stays is the template."""
    from distillguard.simulate import text

    out = set()
    for r in exchanges:
        prompt = str(r["prompt_text"])
        for word in (*text.LANGS, *text.TASKS, *text.STRUCTURES, *text.DOMAINS):
            prompt = prompt.replace(word, "<slot>")
        out.add("".join("#" if c.isdigit() else c for c in prompt))
    return out


def test_human_timing_follows_a_day(tmp_path: Path) -> None:
    base, evaded, _, _ = _evasion_pair(tmp_path, "human_timing")
    assert (
        pstdev(_gaps(evaded)) / mean(_gaps(evaded))
        > 1.0
        > 3 * (pstdev(_gaps(base)) / mean(_gaps(base)))
    )


def test_no_shared_payment_and_staggered_signup(tmp_path: Path) -> None:
    _, _, base, evaded = _evasion_pair(tmp_path, "no_shared_payment")
    assert len({r["payment_fingerprint"] for r in _accounts(base, "c")}) == 4
    assert len({r["payment_fingerprint"] for r in _accounts(evaded, "c")}) == 24
    _, _, base, evaded = _evasion_pair(tmp_path / "s", "staggered_signup")
    span = lambda rs: (max(r["created_at"] for r in rs) - min(r["created_at"] for r in rs)).days  # noqa: E731
    assert span(_accounts(base, "c")) <= 3 < 30 <= span(_accounts(evaded, "c"))


def test_residential_address_per_account(tmp_path: Path) -> None:
    base, evaded, _, _ = _evasion_pair(tmp_path, "residential_per_account")
    prefixes = lambda rs: len({str(r["ip"]).rsplit(".", 1)[0] for r in rs})  # noqa: E731
    assert prefixes(base) <= 6 and prefixes(evaded) >= 20
    per_account = {}
    for r in evaded:
        per_account.setdefault(r["account_id"], set()).add(r["ip"])
    assert all(len(ips) == 1 for ips in per_account.values())


def test_chit_chat_multi_turn_and_diversify(tmp_path: Path) -> None:
    from distillguard.simulate.text import CHIT_CHAT

    base, evaded, _, _ = _evasion_pair(tmp_path, "chit_chat")
    share = sum(r["prompt_text"] in CHIT_CHAT for r in evaded) / len(evaded)
    assert 0.12 < share < 0.28 and not any(r["prompt_text"] in CHIT_CHAT for r in base)
    base, evaded, _, _ = _evasion_pair(tmp_path / "m", "multi_turn")
    assert max(r["turn_index"] for r in base) == 0 < max(r["turn_index"] for r in evaded)
    assert all(r["conversation_id"] for r in evaded)
    base, evaded, _, _ = _evasion_pair(tmp_path / "d", "diversify")
    templated = lambda rs: sum("Include type hints" in str(r["prompt_text"]) for r in rs) / len(rs)  # noqa: E731
    assert templated(base) > 0.95 and templated(evaded) < 0.7


def test_model_switch_within_a_day_of_release(tmp_path: Path) -> None:
    from distillguard.simulate.scenario import ModelSwitch

    campaign = Campaign(
        id="c", accounts=10, model_switch=ModelSwitch(model="frontier-2", release_day=1)
    )
    simulate(small(campaign), tmp_path)
    release = datetime(2026, 4, 23, tzinfo=UTC)
    for r in campaign_rows(tmp_path, "c"):
        hours = (r["ts"] - release).total_seconds() / 3600
        if hours < 0:
            assert r["model"] == "frontier-1"
        elif hours > 24:
            assert r["model"] == "frontier-2"


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("days: 3\ncampains: []\n", "scenario.campains: unknown key"),
        ("days: three\n", "scenario.days: expected int"),
        (
            "campaigns:\n  - id: x\n    accounts: 5\n    exchanges_per_account_day: -2\n",
            "campaigns[0].exchanges_per_account_day: -2.0 is below",
        ),
        (
            "legitimate:\n  - {population: reseller, accounts: 1}\ncampaigns:\n  - id: x\n"
            "    accounts: 5\n    proxy_mix: {resellers: 4, share: 0.5}\n",
            "campaigns[0].proxy_mix.resellers: 4 reseller accounts asked for, the scenario has 1",
        ),
        (
            "campaigns:\n  - id: x\n    accounts: 5\n    evasions: [invisibility]\n",
            "campaigns[0].evasions[0]: unknown 'invisibility'",
        ),
        ("legitimate:\n  - {population: wizards, accounts: 1}\n", "legitimate[0].population"),
    ],
)
def test_bad_scenarios_name_the_key(tmp_path: Path, yaml_text: str, message: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ScenarioError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load(str(path))


def test_a_yaml_scenario_runs_and_the_cli_reports_errors(tmp_path: Path) -> None:
    from distillguard.cli import main

    path = tmp_path / "s.yaml"
    path.write_text(
        "seed: 3\ndays: 2\nlegitimate:\n  - {population: chat, accounts: 20}\n"
        "campaigns:\n  - {id: hydra, accounts: 5, capability: grading}\n"
    )
    assert main(["simulate", "--scenario", str(path), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    assert (tmp_path / "o" / "labels.parquet").is_file()
    assert main(["simulate", "--scenario", "nope", "--out", str(tmp_path / "x")]) == 2


def test_product_log_exports_ingest_back_to_the_same_rows(tmp_path: Path) -> None:
    simulate(
        small(Campaign(id="c", accounts=5), chat=10, developer=5),
        tmp_path / "sim",
        formats=("otel", "litellm"),
    )
    original = {r["request_id"]: r for r in rows(tmp_path / "sim")}
    for name in ("otel", "litellm"):
        summary = ingest_run(tmp_path / "sim" / name, tmp_path / f"store-{name}")
        assert summary.stored == len(original) and not summary.quarantined
        from distillguard.store import Store

        for r in Store(tmp_path / f"store-{name}").read().to_pylist():
            o = original[r["request_id"]]
            assert (r["account_id"], r["ts"], r["prompt_text"], r["model"]) == (
                o["account_id"],
                o["ts"],
                o["prompt_text"],
                o["model"],
            )


def test_scale_smoke_the_alibaba_preset_shrunk(tmp_path: Path) -> None:
    scenario = load("alibaba-2026").scaled(0.002)
    from dataclasses import replace

    scenario = replace(scenario, days=3)
    facts = simulate(scenario, tmp_path)
    assert scenario.campaigns[0].accounts == 50
    expected = 50 * 25.6 * 3
    assert abs(facts.by_campaign["hydra-2026"] - expected) < 0.1 * expected


@pytest.mark.skipif(
    not (SHARED_DATA / "arena_hard").is_dir(),
    reason="../shared/data (public prompt sets) is not present beside the project",
)
def test_a_corpus_supplies_real_prompt_text(tmp_path: Path) -> None:
    from distillguard.simulate.text import Corpus

    corpus = Corpus(SHARED_DATA / "arena_hard")
    simulate(small(chat=30, developer=10), tmp_path, corpus=str(SHARED_DATA / "arena_hard"))
    real = set(corpus.texts)
    prompts = [r["prompt_text"] for r in rows(tmp_path)]
    assert sum(p in real for p in prompts) > 0.3 * len(prompts)


@pytest.mark.parametrize("evasion", ["multi_turn", "human_timing"])
def test_evasions_keep_the_daily_limit_and_the_window(tmp_path: Path, evasion: str) -> None:
    campaign = Campaign(
        id="c", accounts=10, rate_limit_per_day=30, start_day=1, duration_days=2, evasions=[evasion]
    )
    simulate(small(campaign, days=4), tmp_path)
    per_day: dict[tuple[object, object], int] = {}
    for r in campaign_rows(tmp_path, "c"):
        key = (r["account_id"], r["ts"].date())
        per_day[key] = per_day.get(key, 0) + 1
        assert datetime(2026, 4, 23, tzinfo=UTC) <= r["ts"] < datetime(2026, 4, 25, tzinfo=UTC)
    assert max(per_day.values()) <= 30


def test_odd_scales_are_refused_and_empty_groups_stay_empty() -> None:
    scenario = small(Campaign(id="c", accounts=1), researcher=0)
    for factor in (float("nan"), float("inf"), 0.0):
        with pytest.raises(ScenarioError, match="--scale"):
            scenario.scaled(factor)
    scaled = scenario.scaled(1.01)
    assert [p.accounts for p in scaled.legitimate if p.population == "researcher"] == [0]
    assert scaled.campaigns[0].accounts == 1


def test_a_shorter_run_drops_what_falls_outside_it() -> None:
    from distillguard.simulate import load
    from distillguard.simulate.scenario import check

    short = load("alibaba-2026").truncated(3)
    check(short)
    assert short.days == 3
    assert all(c.model_switch is None for c in short.campaigns)
    later = load("demo").truncated(1)
    assert all(c.start_day < 1 for c in later.campaigns)
    assert len(later.campaigns) < len(load("demo").campaigns)


@pytest.mark.parametrize("when", ["generating", "writing the small tables"])
def test_a_simulation_stopped_half_way_leaves_the_previous_one_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """Ctrl-C or a scheduler's SIGTERM while the exchanges are generated, or a full disk
    while the accounts and labels are written: the earlier simulation stays whole, and
    an export folder the stopped run made is removed."""
    from distillguard.errors import Terminated
    from distillguard.simulate import run as simulation

    scenario = Scenario(name="s", seed=1, days=1, legitimate=[Population("chat", 30)])
    simulate(scenario, tmp_path, formats=("otel",))
    names = ("exchanges.parquet", "accounts.parquet", "labels.parquet", "otel/traces.jsonl")
    before = [(tmp_path / n).read_bytes() for n in names]
    counted, small = simulation._count, simulation._write_small_tables

    def stopped(row: Any, plan: Any, facts: simulation.Facts) -> None:
        if facts.exchanges >= 50:
            raise Terminated  # as the CLI raises it on SIGTERM
        counted(row, plan, facts)

    def full_disk(*args: Any) -> None:
        small(*args)
        raise OSError(28, "No space left on device")

    if when == "generating":
        monkeypatch.setattr(simulation, "_count", stopped)
    else:
        monkeypatch.setattr(simulation, "_write_small_tables", full_disk)
    with pytest.raises((Terminated, OSError)):
        simulate(Scenario(name="s", seed=2, days=1, legitimate=[Population("chat", 30)]),
                 tmp_path, formats=("otel", "litellm"))  # fmt: skip
    assert [(tmp_path / n).read_bytes() for n in names] == before
    assert not (tmp_path / "litellm").exists()  # the folder it made is gone with its file
    assert not [p for p in tmp_path.rglob(".*") if p.is_file() and p.name != ".lock"]


def test_a_stop_during_the_renames_leaves_one_simulation_not_two(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C right after the new exchanges replaced the old: it was raised there, the
    new accounts and labels were thrown away, and the folder held one seed's exchanges
    beside another's labels. The renames now end first, then the command stops."""
    import os
    import signal

    from distillguard.cli import main

    args = ["simulate", "--scenario", "demo", "--scale", "0.01", "--days", "1", "--quiet"]
    assert main([*args, "--seed", "1", "--out", str(tmp_path)]) == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.suffix}
    rename = os.replace

    def signalled(source: str | Path, target: str | Path) -> None:
        rename(source, target)
        if Path(target).name == "exchanges.parquet":
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(os, "replace", signalled)
    assert main([*args, "--seed", "2", "--out", str(tmp_path)]) == 130
    assert "what it committed before stopping is whole" in capsys.readouterr().err
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.suffix}
    assert after.keys() == before.keys()
    changed = {name for name in after if after[name] != before[name]}
    assert changed == after.keys() - {"exchange_labels.parquet"}  # empty in both (no proxies)


def test_independent_campaigns_never_share_a_house_style_or_a_wording() -> None:
    """Each operator writes its own templates: over forty draws of the presets with
    several campaigns, no two campaigns of a scenario frame their templates alike, and
    none targeting a capability in common words a template alike (demo's seed 2 drew
    one style for two campaigns, evasive's seeds 11 and 2 one wording, by chance)."""
    import dataclasses
    import random
    from datetime import UTC, datetime

    from distillguard.simulate import load
    from distillguard.simulate.accounts import campaign_plans

    for name in ("demo", "evasive", "lone-harvesters", "mixed-proxy"):
        for seed in range(40):
            scenario = dataclasses.replace(load(name), seed=seed)
            plans = campaign_plans(
                scenario, random.Random(seed), datetime(2026, 4, 22, tzinfo=UTC), 0
            )
            pools = {p.campaign.id: p.pool for p in plans if p.campaign and p.pool}
            styles = [pool.style for pool in pools.values()]
            assert len(set(styles)) == len(styles), (name, seed)
            targets = {p.campaign.id: p.campaign.capability for p in plans if p.campaign}
            ids = sorted(pools)
            for i, one in enumerate(ids):
                for other in ids[i + 1 :]:
                    if "mixed" in (targets[one], targets[other]) or targets[one] == targets[other]:
                        wordings = pools[one].style % 3, pools[other].style % 3
                        assert wordings[0] != wordings[1], (name, seed, one, other)


def test_a_shortened_run_keeps_the_house_styles_of_the_campaigns_it_keeps() -> None:
    """`--days` leaves out the campaigns that start later; those it keeps write the same
    text as in the full run (styles are given in order of start)."""
    import dataclasses

    from distillguard.simulate import load
    from distillguard.simulate.accounts import _pools

    for name in ("demo", "lone-harvesters", "evasive"):
        for seed in range(40):
            full = dataclasses.replace(load(name), seed=seed)
            styles = {c.id: p.style for c, p in zip(full.campaigns, _pools(full), strict=True)}
            for days in range(1, full.days):
                short = full.truncated(days)
                for c, pool in zip(short.campaigns, _pools(short), strict=True):
                    assert pool.style == styles[c.id], (name, seed, days, c.id)


def test_past_six_campaigns_a_new_one_still_words_its_templates_its_own_way() -> None:
    from distillguard.simulate.text import house_style

    taken = [("coding", 0), ("coding", 1), ("agentic", 2), ("agentic", 3)]
    taken += [("reasoning", 4), ("reasoning", 5)]
    assert house_style(0, "coding", taken) % 3 == 2  # the one wording no coder uses
    assert house_style(4, "coding", taken[:2]) == 5  # a free style, unused wording
