"""Evidence keys on hand-built exchanges: what links two nodes and what does not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from distillguard.features.digest import digest
from distillguard.ingest.engine import connect
from distillguard.link import evidence
from distillguard.schema import ACCOUNTS, EXCHANGES, conform

START = datetime(2026, 4, 22, tzinfo=UTC)


def _keys(
    tmp_path: Path, rows: list[dict[str, object]], accounts: list[dict[str, object]] | None = None
) -> dict[str, set[str]]:
    """kind -> keys held by two or more nodes."""
    table = conform(pa.Table.from_pylist(rows), EXCHANGES)
    con = connect("256MB", tmp_path / "spill")
    con.register("exchanges", digest(table.combine_chunks().to_batches()[0]))
    if accounts is not None:
        con.register("accounts", conform(pa.Table.from_pylist(accounts), ACCOUNTS))
    con.execute(evidence.NODES_SQL)
    con.execute(evidence.evidence_sql(accounts is not None))
    shared = con.execute(
        "SELECT kind, key FROM evidence GROUP BY 1, 2 HAVING count(DISTINCT id) > 1"
    ).fetchall()
    result: dict[str, set[str]] = {}
    for kind, key in shared:
        result.setdefault(kind, set()).add(key)
    return result


def _row(i: int, account: str, prompt: str, agent: str, minutes: int) -> dict[str, object]:
    return {
        "request_id": f"{account}-{i}",
        "ts": START + timedelta(minutes=minutes),
        "account_id": account,
        "model": "m",
        "prompt_text": prompt,
        "user_agent": agent,
        "ip_prefix": "198.51.100.0/24",
    }


def test_one_office_network_with_different_clients_is_no_link(tmp_path: Path) -> None:
    rows = [
        _row(i, f"person{p}", f"note {p} {i} about lunch plans", f"Mozilla/5.0 ({p})", 300 * i)
        for p in range(2)
        for i in range(5)
    ]
    assert "network" not in _keys(tmp_path, rows)


def test_a_shared_prefix_and_client_links(tmp_path: Path) -> None:
    rows = [
        _row(i, f"farm{p}", f"note {p} {i} about lunch plans", "python-httpx/0.27", 300 * i)
        for p in range(2)
        for i in range(5)
    ]
    assert _keys(tmp_path, rows)["network"] == {"ip:198.51.100.0/24|python-httpx/0.27"}


def test_one_skeleton_in_the_same_hour_is_synchrony_and_copies_are_not(tmp_path: Path) -> None:
    template = (
        "Implement solver {n} for the inventory ledger in Rust; reconcile batch {n} and "
        "explain every step of the reasoning behind the design in full detail please."
    )
    rows = [
        _row(i, f"farm{p}", template.format(n=100 * p + i), "a", 5 * i + p)
        for p in range(2)
        for i in range(6)
    ]
    rows += [
        _row(i, f"fan{p}", "hi! how are you today? tell me something nice", "b", 5 * i + p)
        for p in range(2)
        for i in range(6)
    ]
    keys = _keys(tmp_path, rows)
    assert keys["synchrony"]  # the farm's skeleton in the same hour
    assert keys["template"]  # and by template
    fans = [r for r in rows if str(r["account_id"]).startswith("fan")]
    assert set(_keys(tmp_path / "fans", fans)) == {"network"}  # a copied greeting links nobody


def test_a_sign_up_burst_is_three_accounts_in_a_channel_hour_not_two(tmp_path: Path) -> None:
    """Two students who signed up in the same hour are a coincidence (one was flagged
    with a farm's community that way); three or more sign-ups through one channel are a
    burst, whether or not each sent traffic."""

    def signups(count: int) -> list[dict[str, object]]:
        return [
            {
                "account_id": f"student{p}",
                "created_at": START - timedelta(days=30, minutes=-10 * p),
                "signup_channel": "education",
            }
            for p in range(count)
        ]

    rows = [
        _row(i, f"student{p}", f"homework {p} {i} on loops", f"Mozilla/5.0 ({p})", 300 * i)
        for p in range(3)
        for i in range(3)
    ]
    burst = {"burst:education:2026-03-23 00:00:00+00"}
    assert "signup_burst" not in _keys(tmp_path / "two", rows, signups(2))
    assert _keys(tmp_path / "three", rows, signups(3))["signup_burst"] == burst
    twice = signups(2) + signups(1)  # one account's row written twice is one sign-up
    assert "signup_burst" not in _keys(tmp_path / "twice", rows, twice)
    quiet = [row for row in rows if row["account_id"] != "student2"]
    assert _keys(tmp_path / "quiet", quiet, signups(3))["signup_burst"] == burst
