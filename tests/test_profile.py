"""Account profiles on a hand-built case whose values are worked out by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import duckdb
import pyarrow as pa
import pytest

from distillguard.engines.duck import DuckEngine
from distillguard.features.digest import digest
from distillguard.profile.accounts import profile
from distillguard.schema import EXCHANGES, conform


def _exchanges() -> pa.Table:
    start = datetime(2026, 4, 22, tzinfo=UTC)
    rows = []
    for i in range(24):  # "bot": one an hour, evenly, scripted, asking for reasoning
        rows.append(
            {
                "request_id": f"b{i}",
                "ts": start + timedelta(hours=i),
                "account_id": "bot",
                "model": "m",
                "prompt_text": f"Solve problem {i}. Explain step by step.",
                "user_agent": "python-requests/2.31.0",
                "max_tokens": 32000,
                "reasoning_requested": True,
                "input_tokens": 10,
                "output_tokens": 100,
                "ip_prefix": "203.0.113.0/24",
                "status": 429 if i == 0 else 200,
                "turn_index": 0,
            }
        )
    for i in range(4):  # "human": a burst at 9 in the morning on two days, a conversation
        rows.append(
            {
                "request_id": f"h{i}",
                "ts": start + timedelta(days=i // 2, hours=9, minutes=i),
                "account_id": "human",
                "model": "m",
                "prompt_text": "hello again",
                "user_agent": "Mozilla/5.0",
                "max_tokens": 1024,
                "turn_index": i % 2,
                "reasoning_requested": False,
                "input_tokens": 50,
                "output_tokens": 50,
                "ip_prefix": f"198.51.{i}.0/24",
                "status": 200,
            }
        )
    return conform(pa.Table.from_pylist(rows), EXCHANGES)


def _engine() -> DuckEngine:
    """An engine over the digests of `_exchanges()`, as detection reads them."""
    con = duckdb.connect()
    con.register("exchanges", digest(_exchanges().combine_chunks().to_batches()[0]))
    return DuckEngine(con)


def test_profile_of_a_bot_and_a_person() -> None:
    engine = _engine()
    engine.con.register(
        "accounts",
        pa.table(
            {
                "account_id": ["bot"],
                "created_at": [datetime(2026, 4, 21, tzinfo=UTC)],
                "signup_channel": ["education"],
                "verification": ["email"],
                "payment_fingerprint": ["pf-1"],
                "email_domain": ["x.edu"],
                "signup_ip_prefix": ["203.0.113.0/24"],
            }
        ),
    )
    rows = {r["account_id"]: r for r in profile(engine).to_pylist()}
    bot, human = rows["bot"], rows["human"]
    assert (bot["exchanges"], bot["active_days"], bot["exchanges_per_active_day"]) == (24, 1, 24)
    assert bot["hour_entropy"] == pytest.approx(1.0) and bot["interarrival_cv"] == pytest.approx(0)
    assert bot["cot_share"] == 1.0 and bot["scripted_agent_share"] == 1.0
    assert bot["max_tokens_ceiling_share"] == 1.0 and bot["rate_limited_share"] == 1 / 24
    assert bot["output_input_ratio"] == 10 and bot["prompt_diversity"] == 1.0
    assert bot["seconds_signup_to_first_use"] == 86400 and bot["signup_channel"] == "education"
    assert (human["exchanges"], human["active_days"], human["ip_prefixes"]) == (4, 2, 4)
    assert human["hour_entropy"] == 0.0 and human["single_turn_share"] == 0.5
    assert human["prompt_diversity"] == 0.25 and human["scripted_agent_share"] == 0.0
    assert human["created_at"] is None  # no sign-up record: a null, not a guess


def test_detection_s_profile_leaves_out_only_what_scoring_does_not_read() -> None:
    """Detection asks for none of the distinct counts (each a grouping of all the
    traffic); a member signal that came to read one would silently see NaN."""
    import numpy as np

    from distillguard.campaigns import score as scoring
    from distillguard.profile.accounts import DISTINCT_COUNTS

    engine = _engine()
    full = profile(engine).sort_by("account_id")
    lean = profile(engine, counts=scoring.PROFILE_COUNTS).sort_by("account_id")
    assert "prompt_diversity" in full.column_names and "models" in full.column_names
    assert "prompt_diversity" not in lean.column_names and "active_days" not in lean.column_names
    assert set(lean.column_names) < set(full.column_names)
    assert lean.equals(full.select(lean.column_names))
    signals, lean_signals = scoring.member_signals(full), scoring.member_signals(lean)
    assert signals.keys() == lean_signals.keys()
    for name in signals:
        np.testing.assert_array_equal(signals[name], lean_signals[name])
    only = profile(engine, counts=["models"])
    assert set(DISTINCT_COUNTS) & set(only.column_names) == {"models"}
