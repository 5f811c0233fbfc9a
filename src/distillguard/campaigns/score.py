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

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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
FRESH_SECONDS = 7 * 86400  # an account first used this soon after sign-up is fresh
# The profiles' distinct counts (profile/accounts.py) that `member_signals` reads: none.
# Detection asks the engine for these only, each being a grouping of the whole traffic.
PROFILE_COUNTS: tuple[str, ...] = ()


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


def member_signals(profiles: pa.Table) -> dict[str, np.ndarray]:
    """Each member's part in each indicator (0..1), an array per indicator in the rows'
    order: a group's indicator is the mean over its members. Columns, not a dict per
    member, so that scoring every group of a million accounts costs a few arrays."""

    def column(name: str) -> np.ndarray:  # a missing column or value is NaN
        if name not in profiles.column_names:
            return np.full(len(profiles), np.nan)
        values = pc.cast(profiles.column(name), pa.float64())
        return values.to_numpy(zero_copy_only=False)

    def share(name: str) -> np.ndarray:
        return np.nan_to_num(column(name))

    # A sub-stream's client is its reseller's server, not the end user's choice.
    substream = pc.match_substring(profiles.column("account_id"), SEPARATOR)
    substream = substream.to_numpy(zero_copy_only=False)
    with np.errstate(invalid="ignore"):  # NaN compares false: no timing, no sign-up date
        regular = (column("interarrival_cv") < 0.6) & (share("exchanges") >= 10)
        fresh = column("seconds_signup_to_first_use") < FRESH_SECONDS
    return {
        "reasoning_elicitation": share("cot_share"),
        "scripted_clients": np.where(substream, 0.0, share("scripted_agent_share")),
        "around_the_clock": (share("hour_entropy") > 0.9).astype(np.float64),
        "machine_regularity": regular.astype(np.float64),
        "fresh_accounts": fresh.astype(np.float64),
        "single_capability": share("capability_concentration"),
        "token_ceiling": share("max_tokens_ceiling_share"),
        "reasoning_effort": share("reasoning_share"),
    }


def indicators(
    signals: dict[str, np.ndarray],
    rows: np.ndarray | None = None,
    private_templates: float = 0.0,
) -> dict[str, float]:
    """One group's indicators: the means of its members' signals (`rows`; all when
    None), and its share of template traffic on skeletons no one outside it uses (see
    `link.graph.exclusivity`)."""
    picked = {k: v if rows is None else v[rows] for k, v in signals.items()}
    values = {k: float(v.mean()) if len(v) else 0.0 for k, v in picked.items()}
    return values | {"private_templates": private_templates}


def group_indicators(
    signals: dict[str, np.ndarray], labels: np.ndarray, groups: int
) -> dict[str, np.ndarray]:
    """Every group's member means at once: the mean of each signal per label (labels
    0..groups-1; rows labelled -1 belong to no group). A group without members reads 0."""
    inside = labels >= 0
    counts = np.bincount(labels[inside], minlength=groups)
    size = np.maximum(counts, 1)
    return {
        k: np.bincount(labels[inside], weights=v[inside], minlength=groups) / size
        for k, v in signals.items()
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
