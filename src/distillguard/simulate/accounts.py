"""Account plans: who sends traffic, from where, signed up how, paying with what.

Plans are small (one per account) and made up front; exchanges are then generated one
account-day at a time from each plan. Campaign accounts are given identifiers from the
same generator as everyone else, so nothing but behaviour tells them apart.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from distillguard.simulate import text
from distillguard.simulate.populations import Behaviour, behaviours
from distillguard.simulate.scenario import Campaign, Scenario

RESIDENTIAL = [24, 47, 68, 71, 73, 76, 86, 98, 99, 174, 177, 189, 201]
DATACENTER = [34, 35, 52, 54, 104, 138, 157, 159, 167, 178, 188, 209]
VPN = [37, 45, 89, 146, 185, 193]
SDK_AGENTS = [
    "OpenAI/Python 1.{v}.0",
    "Anthropic/Python 0.{v}.0",
    "openai-node/4.{v}.1",
    "langchain-core/0.{v}.3",
]
BROWSER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/1{v}.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_{v}) AppleWebKit/605.1.15 Safari/605",
    "Mozilla/5.0 (X11; Linux x86_64; rv:1{v}.0) Gecko/20100101 Firefox/1{v}.0",
]
SCRIPTED_AGENTS = [
    "python-requests/2.3{v}.0",
    "curl/8.{v}.0",
    "Go-http-client/2.0",
    "python-httpx/0.2{v}.0",
    "aiohttp/3.{v}.5",
]
WEBMAIL = ["gmail.com", "outlook.com", "proton.me", "yahoo.com", "icloud.com"]
AGENT_PRODUCTS = [
    "You are a coding agent running in the user's terminal. Use the tools to read, "
    "edit and test code. Be concise.",
    "You are an AI pair programmer inside an IDE. Prefer minimal diffs.",
    "You are an autonomous engineer. Work in small verified steps.",
]


@dataclass
class Plan:
    """One account: identity, sign-up data, infrastructure, and how it behaves."""

    account_id: str
    index: int
    population: str  # legitimate population name, or "campaign"
    behaviour: Behaviour | None
    campaign: Campaign | None = None
    campaign_rank: int = 0  # position within its campaign (pool split, groups)
    daily_rate: float = 0.0
    tz_offset: int = 0
    created_at: datetime = datetime(2025, 1, 1)
    payment: str = ""
    email_domain: str = ""
    country: str = "US"
    channel: str = "self-serve"
    verification: str = "email"
    home_ip: str = ""
    prefixes: list[str] = field(default_factory=list)
    agent: str = ""
    system: str | None = None
    template: str | None = None
    templates: list[str] | None = None  # a campaign account's (possibly reworded) templates
    pool: text.CampaignPool | None = None
    switch_at: datetime | None = None  # when the account moves to a new model
    new_model: str | None = None


def _hex(r: random.Random, n: int = 12) -> str:
    return f"{r.getrandbits(4 * n):0{n}x}"


def ip_in(r: random.Random, firsts: list[int]) -> str:
    return f"{r.choice(firsts)}.{r.randrange(256)}.{r.randrange(256)}.{r.randrange(1, 255)}"


def prefix_in(r: random.Random, firsts: list[int]) -> str:
    return f"{r.choice(firsts)}.{r.randrange(256)}.{r.randrange(256)}"


def agent(r: random.Random, kind: str) -> str:
    pool = {"sdk": SDK_AGENTS, "browser": BROWSER_AGENTS, "scripted": SCRIPTED_AGENTS}[kind]
    return r.choice(pool).format(v=r.randrange(1, 10))


def legitimate_plans(scenario: Scenario, r: random.Random, start: datetime) -> list[Plan]:
    plans: list[Plan] = []
    kinds = behaviours()
    for spec in scenario.legitimate:
        b = kinds[spec.population]
        group: list[str] = []
        campus = prefix_in(r, RESIDENTIAL)
        for _ in range(spec.accounts):
            plan = Plan(_account_id(r), len(plans), spec.population, b)
            plan.daily_rate = b.daily_median * r.lognormvariate(0, b.daily_sigma)
            plan.tz_offset = r.choice([-8, -7, -5, -4, 0, 1, 2, 3, 5, 8, 9])
            plan.created_at = start - timedelta(days=r.uniform(5, 720))
            plan.channel = b.channel
            plan.verification = r.choice(b.verification)
            plan.country = r.choice(["US", "DE", "IN", "BR", "JP", "GB", "FR", "SG", "NL", "KR"])
            plan.agent = agent(r, b.agents)
            if not group or len(group) >= r.randint(*b.accounts_per_payment):
                group = [
                    f"pf-{_hex(r, 10)}",
                    f"{text.DOMAINS[r.randrange(10)].split()[0]}-{_hex(r, 4)}.com",
                    prefix_in(r, RESIDENTIAL),
                ]
                if b.network == "campus" and r.random() < 0.3:
                    campus = prefix_in(r, RESIDENTIAL)
            plan.payment = group[0] if b.accounts_per_payment[1] > 1 else f"pf-{_hex(r, 10)}"
            plan.email_domain = _email(r, b, group[1])
            plan.home_ip, plan.prefixes = _network(r, b, group[2], campus)
            if spec.population == "coding_agent":
                plan.system = r.choice(AGENT_PRODUCTS)
            if spec.population == "enterprise_app":
                plan.template = text.enterprise_template(r)
                plan.system = "You are a customer-support assistant. Be accurate and brief."
            if spec.population == "batch_job":
                plan.template = text.batch_template(r)
            group.append(plan.account_id)
            plans.append(plan)
    return plans


def _account_id(r: random.Random) -> str:
    return f"acct-{_hex(r)}"


def _email(r: random.Random, b: Behaviour, company: str) -> str:
    if b.channel == "education" or b.network == "campus":
        return f"univ-{_hex(r, 3)}.edu"
    if b.network in ("office", "datacenter") or b.channel == "enterprise":
        return company
    return r.choice(WEBMAIL)


def _network(r: random.Random, b: Behaviour, office: str, campus: str) -> tuple[str, list[str]]:
    if b.network == "office":
        return f"{office}.{r.randrange(2, 250)}", [office]
    if b.network == "campus":
        return f"{campus}.{r.randrange(2, 250)}", [campus]
    if b.network == "datacenter":
        prefixes = [prefix_in(r, DATACENTER) for _ in range(r.randint(1, 3))]
        return f"{prefixes[0]}.{r.randrange(2, 250)}", prefixes
    home = ip_in(r, RESIDENTIAL)
    return home, [home.rsplit(".", 1)[0]]


def _pools(scenario: Scenario) -> list[text.CampaignPool]:
    """Each campaign's prompt pool, in the scenario's order. House styles are given in
    order of start (a campaign's depends only on those starting no later), so a run
    shortened with --days, which leaves out the later campaigns, keeps the text of the
    ones it keeps."""
    order = sorted(range(len(scenario.campaigns)), key=lambda i: scenario.campaigns[i].start_day)
    pools: dict[int, text.CampaignPool] = {}
    styles: list[tuple[str, int]] = []
    for i in order:
        campaign = scenario.campaigns[i]
        pools[i] = text.CampaignPool(
            campaign.capability,
            campaign.templates,
            random.Random(zlib.crc32(campaign.id.encode()) ^ scenario.seed),
            styles,
        )
        styles.append((campaign.capability, pools[i].style))
    return [pools[i] for i in range(len(order))]


def campaign_plans(
    scenario: Scenario, r: random.Random, start: datetime, first_index: int
) -> list[Plan]:
    plans: list[Plan] = []
    pools = _pools(scenario)
    for campaign, pool in zip(scenario.campaigns, pools, strict=True):
        ev = set(campaign.evasions)
        begin = start + timedelta(days=campaign.start_day)
        prefixes = [
            prefix_in(r, DATACENTER if campaign.infrastructure == "datacenter" else VPN)
            for _ in range(campaign.prefixes)
        ]
        bursts = [begin - timedelta(days=r.uniform(0.2, 3)) for _ in range(campaign.signup_bursts)]
        domains = [
            f"student-{_hex(r, 3)}.edu"
            if campaign.signup_channel == "education"
            else f"mail-{_hex(r, 4)}.io"
            for _ in range(3)
        ]
        ua = agent(r, "scripted")
        system = r.choice([None, "You are a helpful assistant. Always show your full reasoning."])
        payment = ""
        for rank in range(campaign.accounts):
            plan = Plan(_account_id(r), first_index + len(plans), "campaign", None, campaign, rank)
            plan.daily_rate = campaign.exchanges_per_account_day * r.uniform(0.85, 1.15)
            plan.tz_offset = r.choice([-5, 0, 1, 8]) if "human_timing" in ev else 0
            if "staggered_signup" in ev:
                plan.created_at = begin - timedelta(days=r.uniform(3, 90))
            else:
                plan.created_at = r.choice(bursts) + timedelta(minutes=r.uniform(0, 120))
            if "no_shared_payment" in ev or rank % campaign.payment_group_size == 0:
                payment = f"pf-{_hex(r, 10)}"
            plan.payment = payment
            plan.email_domain = (
                r.choice(domains) if "staggered_signup" not in ev else r.choice(WEBMAIL)
            )
            plan.channel = campaign.signup_channel
            plan.verification = "email"
            plan.country = r.choice(["US", "SG", "NL", "DE"])
            if "residential_per_account" in ev:
                plan.home_ip = ip_in(r, RESIDENTIAL)
                plan.prefixes = [plan.home_ip.rsplit(".", 1)[0]]
            else:
                plan.prefixes = prefixes
                plan.home_ip = f"{r.choice(prefixes)}.{r.randrange(2, 250)}"
            plan.agent = ua if "human_timing" not in ev else agent(r, "sdk")
            plan.system = system
            rr = random.Random(plan.index)
            plan.templates = (
                [text.paraphrase(t, rr) for t in pool.templates]
                if "paraphrase" in ev
                else pool.templates
            )
            plan.pool = pool
            if campaign.model_switch:
                release = start + timedelta(days=campaign.model_switch.release_day)
                plan.switch_at = release + timedelta(hours=r.uniform(1, 20))
                plan.new_model = campaign.model_switch.model
            plans.append(plan)
    return plans
