"""Policies: what the gateway does at each score band and piece of evidence.

A policy file (YAML) is an ordered list of rules; the first whose conditions all hold
decides. Conditions: `score_at_least`, `score_below`, `flagged` (in the batch
findings), `evidence` (a signal the online scorer or the findings name). Unknown keys
are refused when the file is loaded, so a typo never silently allows traffic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distillguard.errors import UsageError, yaml_error

ACTIONS = ("allow", "throttle", "withhold_reasoning", "mark", "step_up", "block")
CONDITIONS = {  # what each condition takes
    "score_at_least": "a number",
    "score_below": "a number",
    "flagged": "true or false",
    "evidence": "the name of a kind of evidence",
}


@dataclass(frozen=True)
class Rule:
    action: str
    when: dict[str, Any] = field(default_factory=dict)
    retry_after: int = 30

    def holds(self, score: float, flagged: bool, evidence: set[str]) -> bool:
        w = self.when
        return (
            score >= w.get("score_at_least", float("-inf"))
            and score < w.get("score_below", float("inf"))
            and (w.get("flagged") is None or w["flagged"] == flagged)
            and (w.get("evidence") is None or w["evidence"] in evidence)
        )


@dataclass(frozen=True)
class Decision:
    action: str
    reason: str
    retry_after: int = 0
    score: float | None = None  # None when no score was computed (store unavailable)


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...]
    default: str = "allow"
    fail: str = "open"  # when the scorer or its store is unavailable: open allows, closed blocks

    def decide(self, score: float, flagged: bool, evidence: set[str]) -> Decision:
        for i, rule in enumerate(self.rules):
            if rule.holds(score, flagged, evidence):
                why = f"rule {i + 1} ({_describe(rule.when)}): score {score:.2f}"
                if evidence:
                    why += f", evidence {', '.join(sorted(evidence))}"
                return Decision(rule.action, why, rule.retry_after, score)
        return Decision(self.default, f"no rule matched: score {score:.2f}", score=score)

    def unavailable(self, what: str) -> Decision:
        action = "allow" if self.fail == "open" else "block"
        return Decision(action, f"{what} unavailable; failing {self.fail}")


DEFAULT = Policy(
    rules=(
        Rule("block", {"score_at_least": 0.9}),
        Rule("withhold_reasoning", {"score_at_least": 0.75, "evidence": "reasoning_elicitation"}),
        Rule("throttle", {"score_at_least": 0.75}, retry_after=60),
        Rule("step_up", {"score_at_least": 0.5}),
    )
)


def load(path: str | Path | None) -> Policy:
    if path is None:
        return DEFAULT
    try:
        body = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path}: no such policy file") from None
    except OSError as exc:  # a folder, no permission
        raise UsageError(f"{path}: cannot read the policy file ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a policy file (not UTF-8 text)") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML ({yaml_error(exc)})") from None
    if not isinstance(body, dict) or not isinstance(body.get("rules", []), list):
        raise UsageError(f"{path}: a policy is a mapping with a list of rules")
    rules = tuple(_rule(path, i, r) for i, r in enumerate(body.get("rules", [])))
    default, fail = body.get("default", "allow"), body.get("fail", "open")
    if default not in ACTIONS:
        raise UsageError(f"{path}: default action {default!r} is not one of {', '.join(ACTIONS)}")
    if fail not in ("open", "closed"):
        raise UsageError(f"{path}: fail takes open or closed, not {fail!r}")
    return Policy(rules, default, fail)


def _rule(path: str | Path, i: int, raw: Any) -> Rule:
    where = f"{path}: rule {i + 1}"
    if not isinstance(raw, dict) or raw.get("action") not in ACTIONS:
        raise UsageError(f"{where}: needs an action, one of {', '.join(ACTIONS)}")
    unknown = set(raw) - {"action", "when", "retry_after"}
    when = raw.get("when") or {}
    if not isinstance(when, dict):
        raise UsageError(f"{where}: `when` is a mapping of conditions")
    unknown |= set(when) - set(CONDITIONS)
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    for name, value in when.items():
        if not _fits(name, value):  # else every request it meets fails
            raise UsageError(f"{where}: {name} takes {CONDITIONS[name]}, not {value!r}")
    retry = raw.get("retry_after", 30)
    if not isinstance(retry, int) or retry < 1:
        raise UsageError(f"{where}: retry_after is a positive number of seconds")
    return Rule(raw["action"], when, retry)


def _fits(condition: str, value: Any) -> bool:
    if condition == "flagged":
        return isinstance(value, bool)
    if condition == "evidence":
        return isinstance(value, str)
    return isinstance(value, int | float) and not isinstance(value, bool)


def _describe(when: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in when.items()) or "always"
