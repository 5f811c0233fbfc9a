"""Scenarios: what traffic to simulate, read from YAML or a built-in preset.

A scenario names legitimate populations (how many accounts of each built-in kind) and
campaigns (hydra clusters with their capability, pace, infrastructure and evasions).
Loading is strict: an unknown key, a wrong type or an impossible value is refused with
the key's path and the reason, because a typo silently ignored would make every number
measured on that traffic meaningless.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from distillguard.errors import UsageError, yaml_error

POPULATIONS = (
    "developer",
    "chat",
    "coding_agent",
    "enterprise_app",
    "batch_job",
    "researcher",
    "education",
    "multi_account_company",
    "reseller",
)
CAPABILITIES = ("coding", "agentic", "reasoning", "grading", "mixed")
INFRASTRUCTURE = ("datacenter", "vpn", "residential_proxy")
CHANNELS = ("education", "startup-program", "security-research", "self-serve")
EVASIONS = (
    "paraphrase",
    "human_timing",
    "no_shared_payment",
    "residential_per_account",
    "staggered_signup",
    "chit_chat",
    "multi_turn",
    "diversify",
)


class ScenarioError(UsageError):
    """A scenario that cannot be simulated; the message names the key."""


@dataclass
class Population:
    population: str
    accounts: int


@dataclass
class ModelSwitch:
    model: str
    release_day: int


@dataclass
class ProxyMix:
    resellers: int = 2
    share: float = 0.3


@dataclass
class Campaign:
    id: str
    accounts: int
    capability: str = "coding"
    exchanges_per_account_day: float = 26.0
    rate_limit_per_day: int = 30
    start_day: int = 0
    duration_days: int | None = None
    signup_channel: str = "education"
    signup_bursts: int = 3
    payment_group_size: int = 8
    infrastructure: str = "datacenter"
    prefixes: int = 6
    templates: int = 24
    model_switch: ModelSwitch | None = None
    proxy_mix: ProxyMix | None = None
    evasions: list[str] = field(default_factory=list)


@dataclass
class Scenario:
    name: str = "custom"
    seed: int = 7
    start: date = date(2026, 4, 22)
    days: int = 7
    model: str = "frontier-1"
    legitimate: list[Population] = field(default_factory=list)
    campaigns: list[Campaign] = field(default_factory=list)

    @property
    def legitimate_accounts(self) -> int:
        return sum(p.accounts for p in self.legitimate)

    def truncated(self, days: int) -> Scenario:
        """The first `days` days of the scenario: campaigns that would start later and
        model releases that would come later are left out (a shorter run of the same
        world, not an invalid one)."""
        campaigns = [
            replace(
                c,
                model_switch=c.model_switch
                if c.model_switch and c.model_switch.release_day < days
                else None,
            )
            for c in self.campaigns
            if c.start_day < days
        ]
        return replace(self, days=days, campaigns=campaigns)

    def scaled(self, factor: float) -> Scenario:
        """The same scenario with every account count multiplied (at least one each)."""
        if not math.isfinite(factor) or factor <= 0:
            raise ScenarioError(f"--scale must be a positive number, got {factor}")
        needed = max((c.proxy_mix.resellers for c in self.campaigns if c.proxy_mix), default=1)
        legit = [
            Population(
                p.population,
                _scale(p.accounts, factor, needed if p.population == "reseller" else 1),
            )
            for p in self.legitimate
        ]
        campaigns = [_replace(c, accounts=_scale(c.accounts, factor, 1)) for c in self.campaigns]
        out = _replace(self, legitimate=legit, campaigns=campaigns)
        check(out)
        return out


def _scale(count: int, factor: float, floor: int) -> int:
    """A count times the factor; a group that exists keeps at least `floor` members and
    an empty one stays empty."""
    return 0 if count == 0 else max(floor, round(count * factor))


def _replace(obj: Any, **changes: Any) -> Any:
    from dataclasses import replace

    return replace(obj, **changes)


# -- loading ---------------------------------------------------------------------------


def load(name_or_path: str) -> Scenario:
    """A preset by name, or a YAML file."""
    from distillguard.simulate.presets import PRESETS

    if name_or_path in PRESETS:
        return PRESETS[name_or_path]()
    path = Path(name_or_path)
    if not path.is_file():
        raise ScenarioError(
            f"no preset or file named {name_or_path!r}; presets: {', '.join(PRESETS)}"
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path} is not valid YAML: {yaml_error(exc)}") from None
    scenario = build(Scenario, raw if raw is not None else {}, "scenario")
    if scenario.name == "custom":
        scenario.name = path.stem
    check(scenario)
    return scenario


def build(cls: type, raw: Any, where: str) -> Any:
    """A dataclass from a YAML mapping, refusing unknown keys and wrong types."""
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: expected a mapping, got {type(raw).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ScenarioError(f"{where}.{unknown[0]}: unknown key; known: {', '.join(known)}")
    values = {name: _value(known[name].type, raw[name], f"{where}.{name}") for name in raw}
    try:
        return cls(**values)
    except TypeError as exc:
        raise ScenarioError(f"{where}: {exc}") from None


SCALARS: dict[str, type | tuple[type, ...]] = {
    "int": int,
    "float": (int, float),
    "str": str,
    "date": date,
}
NESTED = {
    "Population": Population,
    "Campaign": Campaign,
    "ModelSwitch": ModelSwitch,
    "ProxyMix": ProxyMix,
}


def _value(kind: Any, raw: Any, where: str) -> Any:
    text = str(kind)
    if text.startswith("list["):
        inner = text[5:-1]
        if not isinstance(raw, list):
            raise ScenarioError(f"{where}: expected a list, got {type(raw).__name__}")
        return [_value(inner, item, f"{where}[{i}]") for i, item in enumerate(raw)]
    if text.endswith(" | None"):
        return None if raw is None else _value(text[: -len(" | None")], raw, where)
    if text in NESTED:
        return build(NESTED[text], raw, where)
    expected = SCALARS[text]
    if isinstance(raw, bool) or not isinstance(raw, expected):
        raise ScenarioError(f"{where}: expected {text}, got {type(raw).__name__} {raw!r}")
    return float(raw) if text == "float" else raw  # type: ignore[arg-type]


MAX_DAYS = 3660  # ten years; runs longer than this are a typo, not a plan
MAX_ACCOUNTS = 100_000_000  # more than one machine can simulate: a larger --scale is a typo


def check(s: Scenario) -> None:
    """Refuse values that cannot be simulated, naming the key."""
    _at_least(s.days, 1, "days")
    if s.days > MAX_DAYS:
        raise ScenarioError(f"days: {s.days} is above the maximum {MAX_DAYS}")
    accounts = sum(p.accounts for p in s.legitimate) + sum(c.accounts for c in s.campaigns)
    if accounts > MAX_ACCOUNTS:
        raise ScenarioError(
            f"{accounts:,} accounts (with --scale) is above the maximum {MAX_ACCOUNTS:,}"
        )
    for i, pop in enumerate(s.legitimate):
        if pop.population not in POPULATIONS:
            raise ScenarioError(
                f"legitimate[{i}].population: unknown {pop.population!r}; "
                f"known: {', '.join(POPULATIONS)}"
            )
        _at_least(pop.accounts, 0, f"legitimate[{i}].accounts")
    resellers = sum(p.accounts for p in s.legitimate if p.population == "reseller")
    ids = set()
    for i, c in enumerate(s.campaigns):
        key = f"campaigns[{i}]"
        if c.id in ids:
            raise ScenarioError(f"{key}.id: {c.id!r} is used twice")
        ids.add(c.id)
        _at_least(c.accounts, 1, f"{key}.accounts")
        _at_least(c.exchanges_per_account_day, 0.01, f"{key}.exchanges_per_account_day")
        _at_least(c.rate_limit_per_day, 1, f"{key}.rate_limit_per_day")
        _at_least(c.signup_bursts, 1, f"{key}.signup_bursts")
        _at_least(c.payment_group_size, 1, f"{key}.payment_group_size")
        _at_least(c.prefixes, 1, f"{key}.prefixes")
        _at_least(c.templates, 1, f"{key}.templates")
        _one_of(c.capability, CAPABILITIES, f"{key}.capability")
        _one_of(c.infrastructure, INFRASTRUCTURE, f"{key}.infrastructure")
        _one_of(c.signup_channel, CHANNELS, f"{key}.signup_channel")
        for j, evasion in enumerate(c.evasions):
            _one_of(evasion, EVASIONS, f"{key}.evasions[{j}]")
        if not 0 <= c.start_day < s.days:
            raise ScenarioError(f"{key}.start_day: {c.start_day} is outside the {s.days} days")
        if c.duration_days is not None:
            _at_least(c.duration_days, 1, f"{key}.duration_days")
        if c.model_switch and not 0 <= c.model_switch.release_day < s.days:
            raise ScenarioError(f"{key}.model_switch.release_day: outside the {s.days} days")
        if c.proxy_mix:
            if not 0 < c.proxy_mix.share <= 1:
                raise ScenarioError(f"{key}.proxy_mix.share: {c.proxy_mix.share} is not in (0, 1]")
            if not 1 <= c.proxy_mix.resellers <= resellers:
                raise ScenarioError(
                    f"{key}.proxy_mix.resellers: {c.proxy_mix.resellers} "
                    f"reseller accounts asked for, the scenario has {resellers}"
                )


def _at_least(value: float, floor: float, where: str) -> None:
    if value < floor:
        raise ScenarioError(f"{where}: {value} is below the minimum {floor}")


def _one_of(value: str, allowed: tuple[str, ...], where: str) -> None:
    if value not in allowed:
        raise ScenarioError(f"{where}: unknown {value!r}; known: {', '.join(allowed)}")
