"""Campaign scores: how much a linked group of accounts behaves like one harvesting
operation, and the evidence for it.

Each indicator is a share in 0..1 averaged over the group's members, so it can be read
and checked: asks for reasoning, scripted clients, around-the-clock traffic, machine
regularity, fresh accounts, one capability, token ceilings. Legitimate groups (a
company's accounts on one card, a campus, a coding-agent product's users) are linked
too, but score low on these. The weights are set by hand for now and are meant to be
calibrated on traffic (issue 4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from distillguard.link.evidence import SEPARATOR

# What is being taken: legitimate power users (a research lab running benchmarks with
# chain of thought from a script) show these too.
HARVEST: dict[str, float] = {
    "reasoning_elicitation": 2.0,
    "reasoning_effort": 0.8,
    "scripted_clients": 1.2,
    "single_capability": 0.6,
    "token_ceiling": 0.8,
}
# That many accounts are one operator: its own templates, farmed accounts, a machine's
# schedule. The group's size counts here too.
COORDINATION: dict[str, float] = {
    "private_templates": 1.6,
    "fresh_accounts": 1.2,
    "machine_regularity": 1.5,
    "around_the_clock": 1.0,
}
INDICATORS = HARVEST | COORDINATION
SIZE_WEIGHT = 0.8
FULL_COORDINATION = 1.5  # harvest signals count in full only from this much coordination
BIAS = 4.5
THRESHOLD = 0.5


@dataclass
class Evidence:
    """One reason, with its strength (0..1) and what a person can check."""

    signal: str
    strength: float
    detail: str


@dataclass
class Scored:
    community: int
    members: list[str]
    score: float
    evidence: list[Evidence] = field(default_factory=list)


def indicators(profiles: list[dict[str, Any]], private_templates: float = 0.0) -> dict[str, float]:
    """Group means of the indicators over member profiles, and the group's share of
    template traffic on skeletons no one outside it uses (see `link.graph.exclusivity`)."""

    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else 0.0

    def scripted(p: dict[str, Any]) -> float:
        # A sub-stream's client is its reseller's server, not the end user's choice.
        return 0.0 if SEPARATOR in p.get("account_id", "") else p["scripted_agent_share"] or 0.0

    def fresh(p: dict[str, Any]) -> float:
        age = p.get("seconds_signup_to_first_use")
        return 0.0 if age is None else 1.0 if age < 7 * 86400 else 0.0

    return {
        "reasoning_elicitation": mean([p["cot_share"] or 0.0 for p in profiles]),
        "scripted_clients": mean([scripted(p) for p in profiles]),
        "around_the_clock": mean(
            [1.0 if (p["hour_entropy"] or 0) > 0.9 else 0.0 for p in profiles]
        ),
        "machine_regularity": mean(
            [
                1.0
                if p["interarrival_cv"] is not None
                and p["interarrival_cv"] < 0.6
                and p["exchanges"] >= 10
                else 0.0
                for p in profiles
            ]
        ),
        "fresh_accounts": mean([fresh(p) for p in profiles]),
        "single_capability": mean([p["capability_concentration"] or 0.0 for p in profiles]),
        "token_ceiling": mean([p["max_tokens_ceiling_share"] or 0.0 for p in profiles]),
        "reasoning_effort": mean([p["reasoning_share"] or 0.0 for p in profiles]),
        "private_templates": private_templates,
    }


def score(values: dict[str, float], size: int) -> float:
    """Logistic combination of the indicators. Harvest signals count in proportion to the
    evidence of coordination, so a few heavy legitimate users who ask for reasoning do not
    score as a campaign, while a farm that hides its harvest still does."""
    coordination = sum(w * values.get(k, 0.0) for k, w in COORDINATION.items())
    coordination += SIZE_WEIGHT * min(1.0, math.log(max(size, 1)) / math.log(50))
    harvest = sum(w * values.get(k, 0.0) for k, w in HARVEST.items())
    total = coordination + harvest * min(1.0, coordination / FULL_COORDINATION)
    return 1 / (1 + math.exp(-(total - BIAS)))


def explain(values: dict[str, float], size: int, link_kinds: dict[str, int]) -> list[Evidence]:
    """Evidence items, strongest first."""
    items = [
        Evidence(k, round(v, 3), f"{v:.0%} of the group's accounts/traffic")
        for k, v in values.items()
        if v > 0.2
    ]
    for kind, count in sorted(link_kinds.items(), key=lambda kv: -kv[1]):
        items.append(
            Evidence(
                f"linked_by_{kind}", 1.0, f"{count} {kind.replace('_', ' ')} keys shared by members"
            )
        )
    if size > 1:
        items.append(Evidence("group_size", min(1.0, size / 50), f"{size} linked accounts"))
    else:
        items.append(Evidence("single_account", 1.0, "one account harvesting at volume alone"))
    return sorted(items, key=lambda e: -e.strength)


def action(score_value: float, values: dict[str, float], threshold: float = THRESHOLD) -> str:
    """A recommended response, from watching to suspending: the further above the
    flagging threshold, the firmer."""
    if score_value >= max(0.9, threshold):
        return "suspend"
    if score_value >= max(0.75, threshold):
        return "withhold reasoning" if values["reasoning_elicitation"] > 0.5 else "throttle"
    if score_value >= threshold:
        return "step-up verification"
    return "watch"
