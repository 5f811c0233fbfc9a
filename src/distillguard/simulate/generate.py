"""Exchanges from account plans, one account-day at a time, streamed to Parquet.

Timing: each account draws its sessions from a diurnal profile in its own time zone
(or around the clock), and its exchanges inside a session with short gaps, which gives
legitimate traffic the burstiness ServeGen shows. Campaign accounts pace themselves
under their rate limit and balance load evenly over the day unless told to mimic human
timing. Every random draw comes from generators seeded by the scenario seed and the
account, so a seed always yields the same traffic.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from statistics import NormalDist
from typing import Any

from distillguard.simulate import text
from distillguard.simulate.accounts import RESIDENTIAL, Plan, agent, ip_in
from distillguard.simulate.populations import diurnal


def days_of(
    plan: Plan, start: datetime, days: int, seed: int, model: str, prompts: text.Prompts
) -> Iterator[list[dict[str, Any]]]:
    """Each day's exchanges of one account (a list of row dicts)."""
    rng = random.Random(seed * 1_000_003 + plan.index)
    prompts.rng = rng
    for day in range(days):
        moment = start + timedelta(days=day)
        if plan.campaign is not None:
            rows = _campaign_day(plan, moment, day, rng, prompts, model)
        else:
            rows = _legit_day(plan, moment, rng, prompts, model)
        if rows:
            yield rows


def _times(
    rng: random.Random,
    count: int,
    session_mean: float,
    weights: list[float],
    day: datetime,
    tz_offset: int,
    gap: float,
) -> list[datetime]:
    """`count` arrival times on `day`, grouped into sessions started per the diurnal weights."""
    times: list[datetime] = []
    sessions = max(1, math.ceil(count / max(session_mean, 1)))
    for s in range(sessions):
        size = count // sessions + (1 if s < count % sessions else 0)
        hour = rng.choices(range(24), weights)[0]
        t = day + timedelta(hours=hour - tz_offset, seconds=rng.uniform(0, 3600))
        for _ in range(size):
            times.append(day + timedelta(seconds=(t - day).total_seconds() % 86400))
            t += timedelta(seconds=rng.expovariate(1 / gap))
    return times  # wrapped into the day: a day's traffic stays in its UTC day


def _legit_day(
    plan: Plan, day: datetime, rng: random.Random, prompts: text.Prompts, model: str
) -> list[dict[str, Any]]:
    b = plan.behaviour
    assert b is not None
    if rng.random() > b.active_share:
        return []
    weekend = day.weekday() >= 5 and b.diurnal in ("business", "human")
    count = _poisson(rng, plan.daily_rate * (0.35 if weekend else 1.0))
    if count == 0:
        return []
    gap = 15.0 if plan.population == "coding_agent" else 2.0 if b.session_mean > 50 else 90.0
    times = _times(rng, count, b.session_mean, diurnal(b.diurnal), day, plan.tz_offset, gap)
    rows = []
    conversation, turn = None, 0
    for i, ts in enumerate(times):
        if turn == 0 or rng.random() > 1 - 1 / max(b.turns_mean, 1):
            conversation, turn = f"conv-{rng.getrandbits(48):012x}", 0
        rows.append(_legit_row(plan, ts, rng, prompts, model, conversation, turn, i))
        turn += 1
    return rows


def _legit_row(
    plan: Plan,
    ts: datetime,
    rng: random.Random,
    prompts: text.Prompts,
    model: str,
    conversation: str | None,
    turn: int,
    i: int,
) -> dict[str, Any]:
    b = plan.behaviour
    assert b is not None
    if plan.template and rng.random() < b.template_share:
        fill = text.fill_batch if plan.population == "batch_job" else text.fill_enterprise
        prompt = fill(plan.template, rng)
    else:
        prompt = prompts.make(b.prompts)
    reasoning = rng.random() < b.reasoning_share
    tools = rng.randint(*b.tools) if b.tools[1] else 0
    return {
        "ts": ts,
        "account_id": plan.account_id,
        "prompt_text": prompt,
        "model": plan.new_model if plan.switch_at and ts >= plan.switch_at else model,
        "api_key_id": f"key-{plan.account_id[-6:]}-{i % 2}",
        "end_user_id": f"eu-{rng.randrange(b.end_users):05d}" if b.end_users else None,
        "ip": _legit_ip(plan, rng),
        "user_agent": plan.agent,
        "operation": "batch" if plan.population == "batch_job" else "chat",
        "system_text": plan.system,
        "input_tokens": _lognormal(rng, b.tokens_in, len(prompt) // 4 + 1),
        "output_tokens": _lognormal(rng, b.tokens_out, 1),
        "reasoning_requested": reasoning,
        "max_tokens": rng.choice(b.max_tokens),
        "temperature": rng.choice([0.0, 0.2, 0.7, 1.0]),
        "tools_declared": tools,
        "tool_calls": rng.randint(0, 3) if tools else 0,
        "conversation_id": conversation if b.turns_mean > 1 else None,
        "turn_index": turn if b.turns_mean > 1 else 0,
        "status": 429 if rng.random() < 0.004 else 200,
        "stream": rng.random() < 0.5,
        "_campaign": None,
    }


def _legit_ip(plan: Plan, rng: random.Random) -> str:
    if plan.population in ("chat", "developer") and rng.random() < 0.1:
        return ip_in(rng, RESIDENTIAL)  # on the move: a phone, a café
    if len(plan.prefixes) > 1 or (plan.behaviour and plan.behaviour.network == "datacenter"):
        return f"{rng.choice(plan.prefixes)}.{rng.randrange(2, 250)}"
    return plan.home_ip


def _campaign_day(
    plan: Plan, day: datetime, index: int, rng: random.Random, prompts: text.Prompts, model: str
) -> list[dict[str, Any]]:
    c = plan.campaign
    assert c is not None and plan.pool is not None
    end = c.start_day + (c.duration_days or 10**6)
    if not c.start_day <= index < end:
        return []
    ev = set(c.evasions)
    count = min(c.rate_limit_per_day, _poisson(rng, plan.daily_rate))
    if count == 0:
        return []
    if "human_timing" in ev:
        times = _times(rng, count, 4, diurnal("human"), day, plan.tz_offset, 60.0)
    else:  # load balanced around the clock: evenly spaced, a little jitter
        step = 86400 / count
        offset = rng.uniform(0, step)
        times = [
            day
            + timedelta(
                seconds=min(86399.0, max(0.0, offset + k * step + rng.uniform(-0.1, 0.1) * step))
            )
            for k in range(count)
        ]
    if not ev & ROW_SHAPING and c.infrastructure != "residential_proxy":
        return _plain_rows(plan, times, rng, model, "residential_per_account" in ev)
    rows: list[dict[str, Any]] = []
    for ts in times:
        if len(rows) >= c.rate_limit_per_day:  # wrapper turns count against the limit too
            break
        turns = (
            min(rng.randint(2, 4), c.rate_limit_per_day - len(rows)) if ("multi_turn" in ev) else 1
        )
        conversation = f"conv-{rng.getrandbits(48):012x}" if "multi_turn" in ev else None
        for turn in range(turns):
            rows.append(
                _campaign_row(
                    plan,
                    ts + timedelta(seconds=20 * turn),
                    rng,
                    prompts,
                    model,
                    conversation,
                    turn,
                    ev,
                )
            )
    return rows


ROW_SHAPING = {"chit_chat", "multi_turn", "diversify", "human_timing"}


def _plain_rows(
    plan: Plan, times: list[datetime], rng: random.Random, model: str, own_address: bool
) -> list[dict[str, Any]]:
    """Campaign rows without row-shaping evasions: the bulk of a large campaign, made
    with one random draw per row (the same fields as `_campaign_row`)."""
    c = plan.campaign
    assert c is not None and plan.pool is not None
    agentic = c.capability in ("agentic", "mixed")
    prefixes, templates, item = plan.prefixes, plan.templates, plan.pool.item
    key = f"key-{plan.account_id[-6:]}-0"
    rows = []
    for ts in times:
        bits = rng.getrandbits(64)
        k = plan.campaign_rank + c.accounts * (bits & 0xFFFFF)
        prompt = item(k, templates)
        ip = (
            plan.home_ip
            if own_address
            else (f"{prefixes[(bits >> 20) % len(prefixes)]}.{2 + (bits >> 28) % 248}")
        )
        rows.append(
            {
                "ts": ts,
                "account_id": plan.account_id,
                "prompt_text": prompt,
                "model": plan.new_model if plan.switch_at and ts >= plan.switch_at else model,
                "api_key_id": key,
                "end_user_id": None,
                "ip": ip,
                "user_agent": plan.agent,
                "operation": "chat",
                "system_text": plan.system,
                "input_tokens": len(prompt) // 4 + 5 + (bits >> 36) % 36,
                "output_tokens": LOG_OUTPUT[(bits >> 42) % len(LOG_OUTPUT)],
                "reasoning_requested": True,
                "max_tokens": 32000,
                "temperature": 1.0,
                "tools_declared": 4 + (bits >> 50) % 5 if agentic else 0,
                "tool_calls": 1 + (bits >> 53) % 3 if agentic else 0,
                "conversation_id": None,
                "turn_index": 0,
                "status": 429 if (bits >> 56) % 50 == 0 else 200,
                "stream": False,
                "_campaign": c.id,
            }
        )
    return rows


# Quantiles of the campaign's output-length distribution (lognormal, mu 7.2, sigma 0.5),
# looked up by a random index instead of drawn one by one.
LOG_OUTPUT = [
    round(math.exp(7.2 + 0.5 * _z))
    for _z in (NormalDist().inv_cdf((i + 0.5) / 512) for i in range(512))
]


def _campaign_row(
    plan: Plan,
    ts: datetime,
    rng: random.Random,
    prompts: text.Prompts,
    model: str,
    conversation: str | None,
    turn: int,
    ev: set[str],
) -> dict[str, Any]:
    c = plan.campaign
    assert c is not None and plan.pool is not None
    chatty = "chit_chat" in ev and rng.random() < 0.2
    wrapper = "multi_turn" in ev and turn > 0
    if chatty or wrapper:
        prompt = rng.choice(text.CHIT_CHAT) if chatty else "Continue, and go deeper on each step."
        capability_row = False
    else:
        k = plan.campaign_rank + c.accounts * rng.randrange(1 << 20)  # this account's share
        templates = plan.templates
        if "diversify" in ev and rng.random() < 0.5:
            prompt = prompts.make(rng.choice(["developer", "chat", "benchmark"]))
        else:
            prompt = plan.pool.item(k, templates)
        capability_row = True
    agentic = c.capability in ("agentic", "mixed")
    ip = (
        ip_in(rng, RESIDENTIAL)
        if c.infrastructure == "residential_proxy" and "residential_per_account" not in ev
        else f"{rng.choice(plan.prefixes)}.{rng.randrange(2, 250)}"
        if "residential_per_account" not in ev
        else plan.home_ip
    )
    return {
        "ts": ts,
        "account_id": plan.account_id,
        "prompt_text": prompt,
        "model": plan.new_model if plan.switch_at and ts >= plan.switch_at else model,
        "api_key_id": f"key-{plan.account_id[-6:]}-0",
        "end_user_id": None,
        "ip": ip,
        "user_agent": plan.agent if "human_timing" not in ev else agent(rng, "sdk"),
        "operation": "chat",
        "system_text": plan.system,
        "input_tokens": len(prompt) // 4 + rng.randint(5, 40),
        "output_tokens": int(rng.lognormvariate(7.2, 0.5)) if capability_row else 60,
        "reasoning_requested": capability_row,
        "max_tokens": 32000,
        "temperature": 1.0,
        "tools_declared": rng.randint(4, 8) if agentic else 0,
        "tool_calls": rng.randint(1, 3) if agentic and capability_row else 0,
        "conversation_id": conversation,
        "turn_index": turn,
        "status": 429 if rng.random() < 0.02 else 200,
        "stream": False,
        "_campaign": c.id,
    }


def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    if mean > 50:  # normal approximation, fast and close enough at this size
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _lognormal(rng: random.Random, params: tuple[float, float], floor: int) -> int:
    return max(floor, int(rng.lognormvariate(params[0], params[1])))
