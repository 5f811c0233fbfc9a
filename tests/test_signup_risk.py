"""Sign-up risk on hand-built account tables whose answers are known."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distillguard.cli import main
from distillguard.errors import InputError, SchemaError
from distillguard.schema import ACCOUNTS, conform
from distillguard.signup import read_accounts, signup_risk
from distillguard.signup.risk import TIERS, tier

START = datetime(2026, 3, 1, tzinfo=UTC)


def _accounts() -> list[dict[str, object]]:
    """400 ordinary sign-ups spread over 200 days, a company's four accounts on one card
    over a year, and a farm: 25 accounts in one hour through the education channel on
    two cards, one uncommon domain and one /24."""
    rows: list[dict[str, object]] = []
    providers = ["gmail.com", "outlook.com", "icloud.com", "yahoo.com"]
    for i in range(400):
        rows.append(
            {
                "account_id": f"person{i}",
                "created_at": START + timedelta(hours=12 * i + (i * 7) % 5),
                "payment_fingerprint": f"card-p{i}",
                "email_domain": providers[i % 4],
                "signup_ip": f"{20 + i % 200}.{i % 250}.{(i * 3) % 250}.7",
                "signup_channel": ["self-serve", "education"][i % 2],
                "verification": "email",
            }
        )
    for i in range(4):
        rows.append(
            {
                "account_id": f"company{i}",
                "created_at": START + timedelta(days=90 * i),
                "payment_fingerprint": "card-company",
                "email_domain": "example-corp.com",
                "signup_ip": "203.0.113.10",
                "signup_channel": "self-serve",
                "verification": "kyc",
            }
        )
    for i in range(25):
        rows.append(
            {
                "account_id": f"farm{i}",
                "created_at": START + timedelta(days=100, minutes=2 * i),
                "payment_fingerprint": f"card-farm{i % 2}",
                "email_domain": "student-x1.edu",
                "signup_ip": f"198.51.100.{10 + i}",
                "signup_channel": "education",
                "verification": "email",
            }
        )
    return rows


def _scored() -> dict[str, dict[str, object]]:
    table = conform(pa.Table.from_pylist(_accounts()), ACCOUNTS)
    return {r["account_id"]: r for r in signup_risk(table).to_pylist()}


def test_a_farmed_burst_is_held_for_review_and_ordinary_sign_ups_are_not() -> None:
    scored = _scored()
    farm = [scored[f"farm{i}"] for i in range(25)]
    assert all(r["tier"] == TIERS[-1][1] for r in farm)
    assert set(farm[0]["reasons"]) == {
        "burst",
        "domain_cluster",
        "payment_reuse",
        "shared_network",
    }
    people = [scored[f"person{i}"] for i in range(400)]
    assert all(r["tier"] == "standard" for r in people)
    assert all(scored[f"company{i}"]["tier"] == "standard" for i in range(4))


def test_missing_sign_up_data_gives_no_signal_rather_than_an_error() -> None:
    table = conform(pa.Table.from_pylist([{"account_id": "a"}, {"account_id": "b"}]), ACCOUNTS)
    rows = signup_risk(table).to_pylist()
    assert [r["reasons"] for r in rows] == [[], []]
    assert all(r["tier"] == "standard" for r in rows)


@given(st.floats(0.0, 1.0))
def test_every_score_has_exactly_one_tier(score: float) -> None:
    assert tier(score) in {name for _, name in TIERS}


@settings(max_examples=30, deadline=None)
@given(st.integers(3, 40))
def test_a_bigger_burst_never_scores_lower(size: int) -> None:
    base = [r for r in _accounts() if not str(r["account_id"]).startswith("farm")]

    def farm_score(n: int) -> float:
        farm = [
            {
                "account_id": f"f{i}",
                "created_at": START + timedelta(days=100, minutes=i),
                "signup_channel": "education",
                "email_domain": "rare.example",
                "verification": "email",
            }
            for i in range(n)
        ]
        table = conform(pa.Table.from_pylist(base + farm), ACCOUNTS)
        return next(r["score"] for r in signup_risk(table).to_pylist() if r["account_id"] == "f0")

    assert farm_score(size + 5) >= farm_score(size)


def test_the_command_writes_scores_and_reads_csv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = conform(pa.Table.from_pylist(_accounts()), ACCOUNTS)
    pq.write_table(table, tmp_path / "accounts.parquet")
    out = tmp_path / "risk.parquet"
    assert (
        main(
            [
                "signup-risk",
                "--accounts",
                str(tmp_path / "accounts.parquet"),
                "--out",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["tiers"][TIERS[-1][1]] == 25
    assert pq.read_table(out).num_rows == 429
    import pyarrow.csv as pcsv

    pcsv.write_csv(table, tmp_path / "accounts.csv")
    assert read_accounts(tmp_path / "accounts.csv").num_rows == 429


def test_text_accounts_files_keep_ids_as_written_and_read_times_in_any_form(
    tmp_path: Path,
) -> None:
    """A CSV's "0000005" is an id, not the number 5 (it would match no account of the
    traffic); JSON Lines may mix epoch numbers and text in one column; either gzipped."""
    import gzip

    (tmp_path / "a.csv").write_text(
        "account_id,created_at,signup_channel\n0000005,2026-03-04T10:00:00Z,x\n"
        "0000006,1772618400,x\n0000007,,x\n"
    )
    lines = [
        {"account_id": "0000005", "created_at": 1772618400000},
        {"account_id": "0000006", "created_at": "Wed, 04 Mar 2026 10:00:00 +0000"},
        {"account_id": 7, "created_at": None, "verification": {"kind": "kyc"}},
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\n"
    (tmp_path / "a.jsonl").write_text(text)
    with gzip.open(tmp_path / "a.jsonl.gz", "wt") as packed:
        packed.write(text)
    with gzip.open(tmp_path / "a.csv.gz", "wt") as packed:
        packed.write((tmp_path / "a.csv").read_text())
    moment = datetime(2026, 3, 4, 10, tzinfo=UTC)
    for name in ("a.csv", "a.csv.gz"):
        table = read_accounts(tmp_path / name)
        assert table.column("account_id").to_pylist() == ["0000005", "0000006", "0000007"]
        assert table.column("created_at").to_pylist() == [moment, moment, None]
    (tmp_path / "bom.jsonl").write_text("\ufeff" + text)
    for name in ("a.jsonl", "a.jsonl.gz", "bom.jsonl"):
        table = read_accounts(tmp_path / name)
        assert table.column("account_id").to_pylist() == ["0000005", "0000006", "7"]
        assert table.column("created_at").to_pylist() == [moment, moment, None]
        assert table.column("verification").to_pylist()[2] == '{"kind": "kyc"}'


def test_json_lines_values_stay_as_written(tmp_path: Path) -> None:
    """Arrow's guesses would make ids "2026-03-01" and "2026-03-01T00:00:00" one date,
    and 20-digit ids one float; and take 1970 without the range check."""
    lines = [
        {"account_id": "2026-03-01", "created_at": "2026-03-01T10:00:00Z"},
        {"account_id": "2026-03-01T00:00:00", "created_at": "2026-03-01T10:00:00Z"},
        {"account_id": 12345678901234567890, "created_at": 1772359200},
        {"account_id": 12345678901234567891, "created_at": 1772359200},
    ]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    ids = read_accounts(tmp_path / "a.jsonl").column("account_id").to_pylist()
    assert ids == [
        "2026-03-01",
        "2026-03-01T00:00:00",
        "12345678901234567890",
        "12345678901234567891",
    ]
    (tmp_path / "old.jsonl").write_text(
        '{"account_id": "a", "created_at": "1970-01-01T00:00:00Z"}\n'
    )
    with pytest.raises(SchemaError, match=r"outside 2000\.\.2100"):
        read_accounts(tmp_path / "old.jsonl")
    (tmp_path / "latin1.jsonl").write_bytes(
        b'{"account_id": "caf\xe9", "created_at": "2026-03-01"}\n'
    )
    with pytest.raises(InputError, match="cannot read accounts"):
        read_accounts(tmp_path / "latin1.jsonl")


def test_blank_cells_are_no_value_not_one_shared_card(tmp_path: Path) -> None:
    """Read as text, a CSV's blank card would be the card "" that every account without
    one shares: a cluster of payment reuse out of nothing. A blank id is no id."""
    header = "account_id,created_at,payment_fingerprint,email_domain,signup_channel\n"
    rows = "".join(f"a{i},2026-03-0{i + 1},{' ' * (i % 2)},,self-serve\n" for i in range(6))
    (tmp_path / "blank.csv").write_text(header + rows)
    table = read_accounts(tmp_path / "blank.csv")
    assert table.column("payment_fingerprint").null_count == 6
    assert set(signup_risk(table).column("tier").to_pylist()) == {TIERS[0][1]}
    (tmp_path / "no-id.csv").write_text(header + ",2026-03-01,,,x\n")
    with pytest.raises(SchemaError, match="'account_id' has 1 null"):
        read_accounts(tmp_path / "no-id.csv")


def test_bad_accounts_files_are_refused_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["signup-risk", "--accounts", str(tmp_path / "absent.parquet")]) == 3
    (tmp_path / "a.txt").write_text("hello")
    assert main(["signup-risk", "--accounts", str(tmp_path / "a.txt")]) == 3
    (tmp_path / "b.csv").write_text("created_at,email_domain\n2026-01-01,x.com\n")
    assert main(["signup-risk", "--accounts", str(tmp_path / "b.csv")]) == 3
    (tmp_path / "c.parquet").write_bytes(b"not parquet")
    assert main(["signup-risk", "--accounts", str(tmp_path / "c.parquet")]) == 3
    err = capsys.readouterr().err
    assert "account_id" in err and "Traceback" not in err
    (tmp_path / "d.jsonl").write_text('{"account_id": "a"}\n[1, 2]\n')
    assert main(["signup-risk", "--accounts", str(tmp_path / "d.jsonl")]) == 3
    assert "line 2 is not a JSON object" in capsys.readouterr().err
    (tmp_path / "e.csv").write_text("account_id,created_at\na,10:00 PM on Tuesday\n")
    assert main(["signup-risk", "--accounts", str(tmp_path / "e.csv")]) == 3
    assert "created_at of row 1: unrecognised timestamp" in capsys.readouterr().err
    import gzip

    packed = gzip.compress(b'{"account_id": "a", "created_at": 1772618400}\n' * 50)
    (tmp_path / "cut.jsonl.gz").write_bytes(packed[: len(packed) // 2])
    assert main(["signup-risk", "--accounts", str(tmp_path / "cut.jsonl.gz")]) == 3
    assert "cannot read accounts" in capsys.readouterr().err
