"""Built-in scenarios. Each is a function so every call gets a fresh, mutable copy."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from distillguard.simulate.scenario import (
    EVASIONS,
    Campaign,
    ModelSwitch,
    Population,
    ProxyMix,
    Scenario,
)


def _legit(scale: float = 1.0, **extra: float) -> list[Population]:
    base: dict[str, float] = {
        "developer": 250,
        "chat": 800,
        "coding_agent": 15,
        "enterprise_app": 1,
        "batch_job": 1,
        "researcher": 6,
        "education": 200,
        "multi_account_company": 40,
        "reseller": 3,
    }
    base.update(extra)
    return [Population(name, max(1, round(n * scale))) for name, n in base.items()]


def demo() -> Scenario:
    """About 200k exchanges over a week; three campaigns of different kinds."""
    return Scenario(
        name="demo",
        seed=7,
        days=7,
        legitimate=_legit(),
        campaigns=[
            Campaign(
                id="hydra-coding",
                accounts=60,
                capability="coding",
                start_day=1,
                signup_channel="education",
            ),
            Campaign(
                id="cot-harvest",
                accounts=40,
                capability="reasoning",
                start_day=2,
                signup_channel="startup-program",
                infrastructure="vpn",
                model_switch=ModelSwitch(model="frontier-2", release_day=4),
            ),
            Campaign(
                id="agent-via-resellers",
                accounts=30,
                capability="agentic",
                start_day=1,
                signup_channel="security-research",
                proxy_mix=ProxyMix(resellers=2, share=0.4),
            ),
        ],
    )


def evasive() -> Scenario:
    """The demo's traffic, with campaigns that switch on every evasion between them."""
    every = list(EVASIONS)
    return Scenario(
        name="evasive",
        seed=11,
        days=7,
        legitimate=_legit(),
        campaigns=[
            Campaign(
                id="quiet-coders",
                accounts=60,
                capability="coding",
                start_day=1,
                evasions=["paraphrase", "human_timing", "staggered_signup"],
            ),
            Campaign(
                id="scattered-cot",
                accounts=40,
                capability="reasoning",
                start_day=1,
                infrastructure="residential_proxy",
                evasions=["no_shared_payment", "residential_per_account", "chit_chat"],
            ),
            Campaign(id="everything", accounts=40, capability="mixed", start_day=2, evasions=every),
        ],
    )


def mixed_proxy() -> Scenario:
    """Campaign traffic hidden inside reseller accounts that also serve real customers."""
    return Scenario(
        name="mixed-proxy",
        seed=13,
        days=7,
        legitimate=_legit(reseller=6),
        campaigns=[
            Campaign(
                id="resold-coding",
                accounts=50,
                capability="coding",
                start_day=1,
                proxy_mix=ProxyMix(resellers=3, share=0.6),
            ),
            Campaign(
                id="resold-grading",
                accounts=30,
                capability="grading",
                start_day=2,
                proxy_mix=ProxyMix(resellers=2, share=0.9),
            ),
        ],
    )


def hard_negatives() -> Scenario:
    """No campaign at all: the legitimate users who look most like attackers."""
    return Scenario(
        name="hard-negatives",
        seed=17,
        days=7,
        legitimate=_legit(
            coding_agent=40,
            enterprise_app=3,
            batch_job=3,
            researcher=20,
            multi_account_company=120,
            reseller=5,
        ),
    )


def lone_harvesters() -> Scenario:
    """Three accounts that each harvest at volume on their own, amid the hard negatives:
    campaigns of one account must surface without linkage to corroborate them."""
    solo = {"accounts": 1, "exchanges_per_account_day": 2_500.0, "rate_limit_per_day": 3_000}
    return Scenario(
        name="lone-harvesters",
        seed=19,
        days=7,
        legitimate=hard_negatives().legitimate,
        campaigns=[
            Campaign(id="solo-coding", capability="coding", start_day=1, **solo),  # type: ignore[arg-type]
            Campaign(id="solo-cot", capability="reasoning", start_day=2, **solo),  # type: ignore[arg-type]
            Campaign(id="solo-agent", capability="agentic", start_day=0, **solo),  # type: ignore[arg-type]
        ],
    )


def alibaba_2026() -> Scenario:
    """The reported campaign: 25,000 accounts, 28.8M exchanges in 45 days (22 April to
    5 June), about 26 a day each, aimed at coding and agentic skills, moving to a new
    model within a day of its release; beside about 17M legitimate exchanges from about
    19,000 accounts (expected from the populations' fitted rates)."""
    return Scenario(
        name="alibaba-2026",
        seed=2026,
        start=date(2026, 4, 22),
        days=45,
        # counts before the x20: 10 enterprise apps, 5 batch jobs, 100 coding-agent users,
        # 20 resellers, 10,000 chat users, 5,000 developers, 4,000 students, ...
        legitimate=_legit(
            20.0, enterprise_app=0.5, batch_job=0.25, coding_agent=5, reseller=1, chat=500
        ),
        campaigns=[
            Campaign(
                id="hydra-2026",
                accounts=25_000,
                capability="mixed",
                exchanges_per_account_day=25.6,
                rate_limit_per_day=30,
                start_day=0,
                signup_channel="education",
                signup_bursts=40,
                payment_group_size=12,
                prefixes=300,
                templates=400,
                model_switch=ModelSwitch(model="frontier-2", release_day=30),
            ),
        ],
    )


PRESETS: dict[str, Callable[[], Scenario]] = {
    "demo": demo,
    "evasive": evasive,
    "mixed-proxy": mixed_proxy,
    "hard-negatives": hard_negatives,
    "lone-harvesters": lone_harvesters,
    "alibaba-2026": alibaba_2026,
}
