"""Run a scenario: plan the accounts, generate their days, write labelled tables.

Output folder:
    exchanges.parquet        the canonical exchanges table
    accounts.parquet         sign-up data of every account
    labels.parquet           account_id, campaign_id (null when legitimate), role
    exchange_labels.parquet  request_id, campaign_id of campaign exchanges sent through
                             other (reseller) accounts
    truth.json               the scenario and per-campaign facts (size, window, volume)
    otel/, litellm/          the same exchanges as product logs, when asked for

Rows stream to Parquet in bounded batches, so memory does not grow with the traffic.
"""

from __future__ import annotations

import json
import os
import random
import sys
from collections import Counter
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, time
from functools import lru_cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from distillguard.errors import UsageError, stops_held, unless_stopped
from distillguard.privacy import network
from distillguard.schema import ACCOUNTS, EXCHANGE_LABELS, EXCHANGES, LABELS, conform
from distillguard.simulate import text
from distillguard.simulate.accounts import Plan, campaign_plans, legitimate_plans
from distillguard.simulate.generate import days_of
from distillguard.simulate.scenario import Scenario
from distillguard.store import exclusive, in_store, replacing_all

FLUSH_ROWS = 100_000


@dataclass
class Facts:
    """What was generated, for truth.json and the summary line."""

    exchanges: int = 0
    by_campaign: Counter[str] = field(default_factory=Counter)
    by_population: Counter[str] = field(default_factory=Counter)
    windows: dict[str, list[datetime]] = field(default_factory=dict)
    proxied: Counter[str] = field(default_factory=Counter)


class _Tables:
    """Streams exchanges (and proxied-exchange labels) to Parquet files."""

    def __init__(self, folder: Path, formats: tuple[str, ...]) -> None:
        self.folder = folder
        self.exchanges = pq.ParquetWriter(folder / ".exchanges.tmp", EXCHANGES, compression="zstd")
        self.labels = pq.ParquetWriter(folder / ".exchange_labels.tmp", EXCHANGE_LABELS)
        self.rows: list[dict[str, Any]] = []
        self.proxied: list[dict[str, Any]] = []
        self.exporters = [_exporter(name, folder) for name in formats]

    def add(self, rows: list[dict[str, Any]]) -> None:
        self.rows.extend(rows)
        if len(self.rows) >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            table = _columns(self.rows)
            self.exchanges.write_table(table)
            for exporter in self.exporters:
                exporter.write(table)
            self.rows = []
        if self.proxied:
            self.labels.write_table(pa.Table.from_pylist(self.proxied, schema=EXCHANGE_LABELS))
            self.proxied = []

    def abandon(self) -> None:
        """Remove the half-written files, leaving any earlier simulation as it was."""
        for writer in (self.exchanges, self.labels):
            writer.close()
        for name in (".exchanges.tmp", ".exchange_labels.tmp"):
            (self.folder / name).unlink(missing_ok=True)
        for exporter in self.exporters:
            exporter.abandon()

    def finish(self) -> None:
        """Everything written, still under temporary names."""
        self.flush()
        self.exchanges.close()
        self.labels.close()
        for exporter in self.exporters:
            exporter.finish()

    def publish(self) -> None:
        os.replace(self.folder / ".exchanges.tmp", self.folder / "exchanges.parquet")
        os.replace(self.folder / ".exchange_labels.tmp", self.folder / "exchange_labels.parquet")
        for exporter in self.exporters:
            exporter.publish()


def _columns(rows: list[dict[str, Any]]) -> pa.Table:
    """Row dicts to the canonical table, column by column (much faster than from_pylist).
    The address's network is filled in as ingestion would."""
    prefix = lru_cache(maxsize=1 << 16)(network)
    for row in rows:
        row["ip_prefix"] = prefix(row["ip"]) if row["ip"] else None
    arrays = [pa.array([r.get(f.name) for r in rows], f.type) for f in EXCHANGES]
    return pa.Table.from_arrays(arrays, schema=EXCHANGES)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _exporter(name: str, folder: Path) -> Any:
    from distillguard.simulate import export

    return export.EXPORTERS[name](folder / name)


def simulate(
    scenario: Scenario,
    out: str | Path,
    *,
    corpus: str | None = None,
    formats: tuple[str, ...] = (),
    progress: bool = False,
) -> Facts:
    """Generate the scenario's traffic into the folder `out`."""
    folder = Path(out)
    _check_out(folder)
    start = datetime.combine(scenario.start, time(), tzinfo=UTC)
    r = random.Random(scenario.seed)
    legit = legitimate_plans(scenario, r, start)
    farmed = campaign_plans(scenario, r, start, len(legit))
    plans = legit + farmed
    routes = _proxy_routes(scenario, legit, r)
    prompts = text.Prompts(random.Random(scenario.seed), text.Corpus(corpus) if corpus else None)
    ids = random.Random(scenario.seed ^ 0x5EED)
    facts = Facts()
    with exclusive(folder / ".lock", f"--out {folder} is being written by another simulation"):
        tables = _Tables(folder, formats)
        try:
            for plan in _progress(plans, progress):
                for rows in days_of(
                    plan, start, scenario.days, scenario.seed, scenario.model, prompts
                ):
                    for row in rows:
                        row["request_id"] = f"{ids.getrandbits(64):016x}"
                        _route(row, plan, routes, ids, tables, facts)
                        _count(row, plan, facts)
                    tables.add(rows)
            tables.finish()
            small = (folder / name for name in ("accounts.parquet", "labels.parquet", "truth.json"))
            with ExitStack() as renaming, replacing_all(*small) as (accounts, labels, truth):
                _write_small_tables(accounts, labels, truth, plans, scenario, facts)
                unless_stopped()
                renaming.enter_context(stops_held())  # to the last small file's rename
                tables.publish()  # once every file is written, all renamed together
        except BaseException:  # stopped (Ctrl-C, a scheduler's SIGTERM) or failed
            tables.abandon()
            raise
    return facts


def _check_out(folder: Path) -> None:
    """Make the folder, refusing one the simulation's files would damage: a file, a
    store, findings (whose accounts.parquet and exchanges.parquet it would replace)."""
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--out {folder}: a file, not a folder")
    if in_store(folder):
        raise UsageError(f"--out {folder} is a store or inside one: give it a folder of its own")
    if (folder / "campaigns.json").is_file():
        raise UsageError(
            f"--out {folder} holds findings (campaigns.json), which the simulation's files "
            "would replace or mix with: give it a folder of its own"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file where a folder on the way should be
        raise UsageError(f"--out {folder}: cannot make it ({exc.strerror})") from None


def _proxy_routes(scenario: Scenario, legit: list[Plan], r: random.Random) -> dict[str, Any]:
    """Per campaign with proxy mixing: the reseller accounts it hides behind, and how much."""
    resellers = [p for p in legit if p.population == "reseller"]
    return {
        c.id: (r.sample(resellers, c.proxy_mix.resellers), c.proxy_mix.share)
        for c in scenario.campaigns
        if c.proxy_mix
    }


def _route(
    row: dict[str, Any],
    plan: Plan,
    routes: dict[str, Any],
    r: random.Random,
    tables: _Tables,
    facts: Facts,
) -> None:
    campaign = row.get("_campaign")
    if campaign not in routes or r.random() >= routes[campaign][1]:
        return
    reseller: Plan = r.choice(routes[campaign][0])
    row.update(
        account_id=reseller.account_id,
        api_key_id=f"key-{reseller.account_id[-6:]}-0",
        end_user_id=f"eu-{plan.account_id[-8:]}",
        user_agent=reseller.agent,
        ip=f"{r.choice(reseller.prefixes)}.{r.randrange(2, 250)}",
    )
    tables.proxied.append({"request_id": row["request_id"], "campaign_id": campaign})
    facts.proxied[campaign] += 1


def _count(row: dict[str, Any], plan: Plan, facts: Facts) -> None:
    facts.exchanges += 1
    campaign = row.pop("_campaign")
    if campaign is None:
        facts.by_population[plan.population] += 1
        return
    facts.by_campaign[campaign] += 1
    stamp = row["ts"]
    window = facts.windows.setdefault(campaign, [stamp, stamp])
    if stamp < window[0]:
        window[0] = stamp
    elif stamp > window[1]:
        window[1] = stamp


def _write_small_tables(
    accounts_to: Path,
    labels_to: Path,
    truth_to: Path,
    plans: list[Plan],
    scenario: Scenario,
    facts: Facts,
) -> None:
    accounts = [
        {
            "account_id": p.account_id,
            "created_at": p.created_at,
            "payment_fingerprint": p.payment,
            "email_domain": p.email_domain,
            "signup_ip": p.home_ip,
            "signup_channel": p.channel,
            "verification": p.verification,
            "country": p.country,
        }
        for p in plans
    ]
    labels = [
        {
            "account_id": p.account_id,
            "campaign_id": p.campaign.id if p.campaign else None,
            "role": "campaign" if p.campaign else p.population,
        }
        for p in plans
    ]
    table = conform(pa.Table.from_pylist(accounts), ACCOUNTS)
    pq.write_table(table, accounts_to, compression="zstd")
    pq.write_table(pa.Table.from_pylist(labels, schema=LABELS), labels_to, compression="zstd")
    truth = {
        "scenario": json.loads(json.dumps(asdict(scenario), default=str)),
        "exchanges": facts.exchanges,
        "legitimate_exchanges_by_population": dict(facts.by_population),
        "campaigns": {
            c.id: {
                "accounts": c.accounts,
                "exchanges": facts.by_campaign[c.id],
                "proxied_exchanges": facts.proxied[c.id],
                "first_ts": _iso(facts.windows.get(c.id, [None, None])[0]),
                "last_ts": _iso(facts.windows.get(c.id, [None, None])[1]),
                "capability": c.capability,
                "evasions": c.evasions,
            }
            for c in scenario.campaigns
        },
    }
    truth_to.write_text(json.dumps(truth, indent=1) + "\n")


def _progress(plans: list[Plan], enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(plans, desc="simulate", unit="account", file=sys.stderr, disable=not enabled)
