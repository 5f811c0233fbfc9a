"""Legitimate populations: per-account behaviour of the users a detector must not flag.

Each population's numbers come from the public traces fitted in `fitted.json`
(tools/fit_traffic.py): token lengths from the Azure code and conversation traces and
ServeGen's reasoning clients, burstiness and the diurnal profile from ServeGen's
per-client windows. Volumes are set per population relative to ServeGen's client
volumes (API clients there are apps; a person sends far less).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any


@cache
def fitted() -> dict[str, Any]:
    return json.loads(resources.files("distillguard.simulate").joinpath("fitted.json").read_text())


@dataclass(frozen=True)
class Behaviour:
    """How one kind of account uses the API."""

    daily_median: float  # exchanges per active day, lognormal median across accounts
    daily_sigma: float  # spread of that median across accounts (log scale)
    active_share: float  # share of days the account is active at all
    diurnal: str  # "human" (fitted profile, local time), "flat", "business", "night"
    session_mean: float  # exchanges per session (bursts); 1 = independent requests
    turns_mean: float  # mean conversation depth
    tokens_in: tuple[float, float]  # lognormal (mu, sigma)
    tokens_out: tuple[float, float]
    prompts: str  # prompt generator name (simulate/text.py)
    tools: tuple[int, int] = (0, 0)  # tools declared, min..max
    reasoning_share: float = 0.05
    max_tokens: tuple[int, ...] = (512, 1024, 2048, 4096)
    channel: str = "self-serve"
    verification: tuple[str, ...] = ("email", "card")
    network: str = "residential"  # residential, office, campus, datacenter
    agents: str = "sdk"  # sdk, browser, scripted
    end_users: int = 0  # distinct end users carried (enterprise apps, resellers)
    template_share: float = 0.0  # share of prompts from the account's own fixed template
    accounts_per_payment: tuple[int, int] = (1, 1)


def _tokens(source: str, key: str) -> tuple[float, float]:
    fit = fitted()[source][key]
    return (fit["mu"], fit["sigma"])


@cache
def behaviours() -> dict[str, Behaviour]:
    chat_in, chat_out = (
        _tokens("azure_conversation", "input_tokens"),
        _tokens("azure_conversation", "output_tokens"),
    )
    code_in, code_out = (
        _tokens("azure_code", "input_tokens"),
        _tokens("azure_code", "output_tokens"),
    )
    reason_in, reason_out = (
        _tokens("servegen_reasoning", "input_tokens"),
        _tokens("servegen_reasoning", "output_tokens"),
    )
    return {
        "developer": Behaviour(
            25,
            0.9,
            0.7,
            "human",
            4,
            2.0,
            code_in,
            chat_out,
            "developer",
            tools=(0, 3),
            agents="sdk",
        ),
        "chat": Behaviour(
            8,
            0.8,
            0.5,
            "human",
            3,
            3.0,
            chat_in,
            chat_out,
            "chat",
            agents="browser",
            verification=("email", "phone"),
        ),
        "coding_agent": Behaviour(
            300,
            0.7,
            0.85,
            "flat",
            40,
            12.0,
            code_in,
            code_out,
            "agentic",
            tools=(8, 24),
            reasoning_share=0.3,
            agents="sdk",
            max_tokens=(8192, 16384, 32000),
        ),
        "enterprise_app": Behaviour(
            4000,
            0.8,
            1.0,
            "business",
            1,
            1.0,
            chat_in,
            chat_out,
            "enterprise",
            channel="enterprise",
            verification=("kyc",),
            network="datacenter",
            agents="scripted",
            end_users=5000,
            template_share=0.95,
        ),
        "batch_job": Behaviour(
            9000,
            0.6,
            0.4,
            "night",
            500,
            1.0,
            chat_in,
            (3.0, 0.5),
            "batch",
            network="datacenter",
            agents="scripted",
            template_share=1.0,
            max_tokens=(16, 64),
        ),
        "researcher": Behaviour(
            250,
            0.8,
            0.3,
            "human",
            120,
            1.0,
            reason_in,
            reason_out,
            "benchmark",
            reasoning_share=0.9,
            channel="security-research",
            agents="scripted",
            network="campus",
            max_tokens=(4096, 8192),
        ),
        "education": Behaviour(
            12,
            0.7,
            0.6,
            "business",
            5,
            3.0,
            code_in,
            chat_out,
            "student",
            channel="education",
            verification=("email",),
            network="campus",
            agents="browser",
        ),
        "multi_account_company": Behaviour(
            60,
            0.7,
            0.75,
            "business",
            6,
            2.0,
            code_in,
            chat_out,
            "developer",
            tools=(0, 6),
            network="office",
            verification=("card",),
            accounts_per_payment=(3, 8),
        ),
        "reseller": Behaviour(
            2500,
            0.6,
            1.0,
            "human",
            1,
            2.0,
            chat_in,
            chat_out,
            "reseller",
            network="datacenter",
            agents="sdk",
            end_users=800,
            channel="self-serve",
            verification=("card",),
        ),
    }


def diurnal(kind: str) -> list[float]:
    """Hourly weights (local time) for a timing style; the human one is fitted."""
    if kind == "human":
        return list(fitted()["servegen_language_clients"]["diurnal_profile_local"])
    if kind == "business":
        weights = [0.2] * 7 + [1.0, 2.0, 3.0, 3.0, 2.5, 2.0, 3.0, 3.0, 2.5, 2.0, 1.0] + [0.4] * 6
    elif kind == "night":
        weights = [3.0] * 5 + [1.0] * 2 + [0.05] * 15 + [1.0] * 2
    else:
        weights = [1.0] * 24
    total = sum(weights)
    return [w / total for w in weights]
