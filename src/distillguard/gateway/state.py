"""Per-account state kept online, and the score it gives.

Each exchange adds a few counts to its account: exchanges, chain-of-thought asks,
scripted clients, and which of the batch campaigns' template fingerprints it carried.
Memory per account is bounded (counters, and at most FINGERPRINT_CAP fingerprints); the
embedded store keeps at most MAX_ACCOUNTS accounts, least recently seen out first.
Several gateway replicas share state through Redis instead (`--redis URL`).

The score is the strongest of: the account's batch finding (its campaign's score), a
campaign's network with its client, three or more of a campaign's template
fingerprints, and the account's own behaviour (asking for reasoning from a script).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Protocol

MAX_ACCOUNTS = 200_000
FINGERPRINT_CAP = 64
MIN_EXCHANGES = 20  # behaviour counts from this many exchanges on
FINGERPRINTS_TO_MATCH = 3


@dataclass
class Seen:
    """What one exchange adds to its account (the campaign fingerprints its prompt
    carries come later: gateway/templates.py)."""

    account: str
    cot: bool
    scripted: bool


@dataclass
class Profile:
    exchanges: int = 0
    cot: int = 0
    scripted: int = 0
    fingerprints: set[str] = field(default_factory=set)


class Store(Protocol):
    def add(self, seen: Seen) -> Profile: ...

    def add_fingerprints(self, carrying: list[tuple[str, list[str]]]) -> None: ...


class MemoryStore:
    def __init__(self, max_accounts: int = MAX_ACCOUNTS) -> None:
        self._accounts: OrderedDict[str, Profile] = OrderedDict()
        self._max = max_accounts

    def add(self, seen: Seen) -> Profile:
        profile = self._accounts.pop(seen.account, None) or Profile()
        self._accounts[seen.account] = profile
        if len(self._accounts) > self._max:
            self._accounts.popitem(last=False)
        profile.exchanges += 1
        profile.cot += seen.cot
        profile.scripted += seen.scripted
        return profile

    def add_fingerprints(self, carrying: list[tuple[str, list[str]]]) -> None:
        """Campaign fingerprints found in accounts' prompts (accounts since evicted are
        skipped)."""
        for account, keys in carrying:
            profile = self._accounts.get(account)
            if profile is None:
                continue
            for key in keys:
                if len(profile.fingerprints) < FINGERPRINT_CAP:
                    profile.fingerprints.add(key)


class RedisStore:
    """The same state in Redis, shared by replicas: a hash of counters and a capped set
    of fingerprints per account, both expiring after `ttl` seconds without traffic."""

    def __init__(self, url: str, ttl: int = 7 * 86400) -> None:
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=0.05, socket_connect_timeout=0.05)
        self._ttl = ttl

    def add(self, seen: Seen) -> Profile:
        key = f"dg:acct:{seen.account}"
        pipe = self._redis.pipeline()
        pipe.hincrby(key, "exchanges", 1)
        pipe.hincrby(key, "cot", int(seen.cot))
        pipe.hincrby(key, "scripted", int(seen.scripted))
        pipe.expire(key, self._ttl)
        # Fingerprints last while the account is active: once it carries enough, its
        # prompts are no longer matched, so matching no longer renews them.
        pipe.expire(key + ":fp", self._ttl)
        pipe.smembers(key + ":fp")
        result: list[Any] = pipe.execute()
        fingerprints = {m.decode() for m in result[-1]}
        return Profile(int(result[0]), int(result[1]), int(result[2]), fingerprints)

    def add_fingerprints(self, carrying: list[tuple[str, list[str]]]) -> None:
        """One round trip for a batch; the set per account stays about FINGERPRINT_CAP."""
        pipe = self._redis.pipeline()
        for account, keys in carrying:
            key = f"dg:acct:{account}:fp"
            pipe.sadd(key, *keys[:FINGERPRINT_CAP])
            pipe.expire(key, self._ttl)
        pipe.execute()


@dataclass
class Verdict:
    score: float
    evidence: set[str]
    flagged: bool


def verdict(
    profile: Profile, batch: dict[str, Any] | None, campaign_network: bool, held: bool = False
) -> Verdict:
    """The account's score and evidence, from its state and the batch findings. A `held`
    account (held back for review by detection) is not matched to the campaigns'
    networks and templates: they were made partly from its own traffic."""
    score, evidence = 0.0, set()
    if batch is not None:
        score = float(batch["score"])
        evidence |= {f"batch:{batch['campaign_id']}", *batch.get("signals", [])}
    if campaign_network and not held:
        score = max(score, 0.8)
        evidence.add("campaign_network")
    if not held and len(profile.fingerprints) >= FINGERPRINTS_TO_MATCH:
        score = max(score, 0.85)
        evidence.add("campaign_templates")
    if profile.exchanges >= MIN_EXCHANGES:
        cot = profile.cot / profile.exchanges
        scripted = profile.scripted / profile.exchanges
        if cot > 0.5:
            evidence.add("reasoning_elicitation")
        if scripted > 0.5:
            evidence.add("scripted_clients")
        score = max(score, 0.5 * cot * scripted)
    return Verdict(round(score, 4), evidence, batch is not None)
