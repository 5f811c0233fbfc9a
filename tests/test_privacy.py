"""Pseudonymisation: keyed, consistent, prefix-preserving, and the key never leaks."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from distillguard.errors import StoreError, UsageError
from distillguard.privacy import Pseudonymiser, load_key, network
from tests.conftest import SAMPLES, rows, run

KEY = b"an-operator-secret-of-32-bytes!!"


@given(st.ip_addresses(v=4))
def test_v4_prefix_is_the_slash_24(address: object) -> None:
    text = str(address)
    assert network(text) == ".".join(text.split(".")[:3]) + ".0/24"
    assert network(f"{text}:443") == network(text)


def test_addresses_in_their_forms() -> None:
    assert network("2001:db8:1234:5678::1") == "2001:db8:1234::/48"
    assert network("[2001:db8:1234:5678::1]:8443") == "2001:db8:1234::/48"
    assert network("203.0.113.9, 10.0.0.1") == "203.0.113.0/24"  # X-Forwarded-For: first hop
    assert network("::ffff:203.0.113.9") == "203.0.113.0/24"
    assert network("not-an-ip") is None


def test_tokens_are_keyed_and_consistent() -> None:
    one, two = Pseudonymiser(KEY), Pseudonymiser(b"another-key-another-key!")
    assert one.token("acct-1") == one.token("acct-1") != two.token("acct-1")
    assert one.token("acct-1") != one.token("acct-2") and len(one.token("x")) == 32
    assert one.prefix("203.0.113.9") == one.prefix("203.0.113.200") != one.prefix("203.0.114.9")
    assert one.key_id and one.key_id != two.key_id


def test_a_keyed_store_holds_no_raw_identifier_and_never_the_key(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY + b"\n")
    run(SAMPLES / "logs", tmp_path / "s", key=load_key(key_file))
    stored = rows(tmp_path / "s")
    row = stored["req-7f3a9c01"]
    expected = Pseudonymiser(KEY)
    assert row["account_id"] == expected.token("org-harbor")
    assert row["end_user_id"] == expected.token("user-17")
    network_row = stored["req-7f3a9c10"]
    assert network_row["ip"] == expected.token("203.0.113.45")
    assert network_row["ip_prefix"] == expected.token("203.0.113.0/24")
    raw = [b"org-harbor", b"user-17", b"203.0.113.45", b"203.0.113.0", KEY]
    for path in (tmp_path / "s" / "exchanges").rglob("*.parquet"):
        data = path.read_bytes()
        assert not [v for v in raw if v in data], path
    assert KEY not in (tmp_path / "s" / "manifest.json").read_bytes()


def test_mixing_keys_in_one_store_is_refused(tmp_path: Path) -> None:
    run(SAMPLES / "logs" / "helicone_export.jsonl", tmp_path / "s", key=KEY)
    with pytest.raises(StoreError, match="key id"):
        run(SAMPLES / "logs" / "helicone_export.jsonl", tmp_path / "s", key=b"x" * 32)
    with pytest.raises(StoreError, match="pseudonymised"):
        run(SAMPLES / "logs" / "helicone_export.jsonl", tmp_path / "s")


def test_short_or_missing_key_files(tmp_path: Path) -> None:
    (tmp_path / "short").write_bytes(b"tiny")
    with pytest.raises(UsageError, match="at least 16"):
        load_key(tmp_path / "short")
    with pytest.raises(UsageError, match="cannot read"):
        load_key(tmp_path / "absent")


@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "account_id": st.text(min_size=1, max_size=8),
                "end_user_id": st.none() | st.text(max_size=8),
                "ip": st.none() | st.sampled_from(["10.1.2.3", "2001:db8::1", "not-an-ip"]),
            }
        ),
        min_size=1,
        max_size=5,
    ),
    st.sampled_from([None, b"k" * 32]),
)
def test_a_row_is_pseudonymised_as_its_table_would_be(rows_: list[dict], key: bytes | None) -> None:
    import pyarrow as pa

    from distillguard.schema import EXCHANGES

    names = ["account_id", "end_user_id", "api_key_id", "ip", "ip_prefix"]
    full = [{name: row.get(name) for name in names} for row in rows_]
    table = pa.Table.from_pylist(full, schema=pa.schema([EXCHANGES.field(n) for n in names]))
    pseudonymiser = Pseudonymiser(key)
    expected = pseudonymiser.apply(table, "exchanges").to_pylist()
    assert [pseudonymiser.apply_row(row, "exchanges") for row in full] == expected
