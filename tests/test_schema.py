"""The canonical schema module: exact columns, conform() and its errors."""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
import pytest

from distillguard.errors import SchemaError
from distillguard.schema import ACCOUNTS, EXCHANGES, TABLES, conform, required


def test_tables_match_the_design_brief() -> None:
    assert EXCHANGES.names[:5] == ["request_id", "ts", "account_id", "model", "prompt_text"]
    assert required(EXCHANGES) == ["request_id", "ts", "account_id", "model"]
    assert EXCHANGES.field("ts").type == pa.timestamp("us", tz="UTC")
    assert set(TABLES) >= {"exchanges", "accounts", "labels", "exchange_labels"}
    assert {"payment_fingerprint", "signup_channel", "verification"} <= set(ACCOUNTS.names)
    assert TABLES["findings_accounts"].names == [
        "account_id",
        "score",
        "flagged",
        "campaign_id",
        "reasons",
    ]


def _minimal(**extra: pa.Array) -> pa.Table:
    columns = {
        "request_id": pa.array(["a"]),
        "ts": pa.array([datetime(2026, 4, 22, 9, 0)], pa.timestamp("us")),
        "account_id": pa.array(["acct"]),
        "model": pa.array(["m"]),
        **extra,
    }
    return pa.table(columns)


def test_conform_adds_optional_columns_orders_and_assumes_utc() -> None:
    table = conform(_minimal(input_tokens=pa.array([5], pa.int32()), junk=pa.array([1])), EXCHANGES)
    assert table.schema == EXCHANGES
    assert table.column("input_tokens").type == pa.int64()
    assert str(table.column("ts")[0].as_py()) == "2026-04-22 09:00:00+00:00"


def test_conform_converts_zoned_timestamps() -> None:
    ts = pa.array([datetime(2026, 4, 22, 11, 0)], pa.timestamp("ms", tz="Europe/Paris"))
    table = conform(_minimal(ts=ts), EXCHANGES)
    assert table.column("ts")[0].as_py().hour == 11  # stored as UTC instant, same moment


def test_conform_errors_name_the_column() -> None:
    with pytest.raises(SchemaError, match="'model' is missing"):
        conform(_minimal().drop(["model"]), EXCHANGES)
    with pytest.raises(SchemaError, match="'account_id' has 1 null"):
        conform(_minimal(account_id=pa.array([None], pa.string())), EXCHANGES)
    with pytest.raises(SchemaError, match="'input_tokens'"):
        conform(_minimal(input_tokens=pa.array(["lots"])), EXCHANGES)
