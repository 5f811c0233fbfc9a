"""Detection end to end on seeded simulated traffic: a recall floor at a false-positive
ceiling, one predicted campaign per true campaign, sub-streams of mixed accounts."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from distillguard.cli import main
from distillguard.detect import detect
from distillguard.evaluate import evaluate
from distillguard.simulate import simulate
from distillguard.simulate.scenario import Campaign, Population, ProxyMix, Scenario
from tests.conftest import stopped_after_features


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("traffic")
    people = {
        "developer": 60,
        "chat": 150,
        "coding_agent": 4,
        "education": 40,
        "multi_account_company": 12,
        "researcher": 3,
        "reseller": 2,
    }
    scenario = Scenario(
        name="t",
        seed=21,
        days=4,
        legitimate=[Population(k, v) for k, v in people.items()],
        campaigns=[
            Campaign(id="coders", accounts=25, capability="coding", start_day=1),
            Campaign(
                id="resold",
                accounts=15,
                capability="reasoning",
                start_day=1,
                proxy_mix=ProxyMix(resellers=2, share=0.5),
            ),
        ],
    )
    simulate(scenario, folder)
    return folder


def test_campaigns_are_found_whole_and_legitimate_users_are_not(
    traffic: Path, tmp_path: Path
) -> None:
    summary = detect(traffic, tmp_path / "findings")
    report = evaluate(tmp_path / "findings", traffic)
    accounts = report["accounts"]
    assert accounts["recall"] >= 0.95 and accounts["false_positive_rate"] <= 0.01
    for name, match in report["campaigns"]["per_campaign"].items():
        assert match["completeness"] >= 0.95 and match["purity"] >= 0.9, name
    exchanges = report["exchanges"]
    assert exchanges["recall"] >= 0.95 and exchanges["mixed_recall"] >= 0.9
    assert exchanges["mixed_false_positive_rate"] <= 0.01
    assert summary["campaigns"] == 2
    saved = json.loads((tmp_path / "findings" / "summary.json").read_text())
    assert saved["seconds"].keys() >= {"features", "leiden", "campaigns"}
    assert saved["peak_memory_mib"]["main"] > 50  # an interpreter with Arrow and DuckDB


def test_findings_explain_themselves(traffic: Path, tmp_path: Path) -> None:
    assert main(["detect", str(traffic), "--out", str(tmp_path / "f")]) == 0
    campaigns = json.loads((tmp_path / "f" / "campaigns.json").read_text())
    for c in campaigns:
        assert {
            "id",
            "score",
            "confidence",
            "accounts",
            "exchange_count",
            "first_seen",
            "last_seen",
            "capability_mix",
            "evidence",
            "indicators",
            "recommended_action",
        } <= set(c)
        assert c["evidence"] and all(
            {"signal", "strength", "detail"} <= set(e) for e in c["evidence"]
        )
        assert c["recommended_action"] in (
            "watch",
            "step-up verification",
            "throttle",
            "withhold reasoning",
            "suspend",
        )


def test_detect_refuses_an_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["detect", str(tmp_path / "empty"), "--out", str(tmp_path / "f")]) == 3


def test_missing_optional_columns_degrade_and_required_ones_are_named(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {
            "request_id": f"r{i}",
            "ts": f"2026-04-22T{i % 24:02d}:00:00+00:00",
            "account_id": f"a{i % 5}",
            "model": "m",
        }
        for i in range(50)
    ]
    table = pa.Table.from_pylist(rows).set_column(
        1, "ts", pa.array([r["ts"] for r in rows]).cast(pa.timestamp("us", tz="UTC"))
    )
    pq.write_table(table, tmp_path / "bare.parquet")
    assert main(["detect", str(tmp_path / "bare.parquet"), "--out", str(tmp_path / "f")]) == 0
    pq.write_table(table.drop(["model"]), tmp_path / "broken.parquet")
    assert main(["detect", str(tmp_path / "broken.parquet"), "--out", str(tmp_path / "g")]) == 3


def _hand_built(tmp_path: Path) -> Path:
    """Ten fresh accounts on one card sending one harvesting template around the clock,
    and an enterprise app sending its one template for 300 end users."""
    from datetime import UTC, datetime, timedelta

    import pyarrow as pa
    import pyarrow.parquet as pq

    from distillguard.schema import ACCOUNTS, EXCHANGES, conform

    tmp_path.mkdir(exist_ok=True)
    start = datetime(2026, 4, 22, tzinfo=UTC)
    rows, accounts = [], []
    for a in range(10):
        accounts.append(
            {
                "account_id": f"farm{a}",
                "created_at": start - timedelta(hours=3),
                "payment_fingerprint": "card-1",
                "signup_channel": "education",
            }
        )
        for i in range(48):
            rows.append(
                {
                    "request_id": f"f{a}-{i}",
                    "ts": start + timedelta(minutes=30 * i + a),
                    "account_id": f"farm{a}",
                    "model": "m",
                    "user_agent": "curl/8.5.0",
                    "prompt_text": f"Implement solution {a * 100 + i} for the parser of "
                    f"module {i % 7} in Rust with tests. Show your reasoning step by step.",
                    "max_tokens": 32000,
                    "reasoning_requested": True,
                    "end_user_id": None,
                    "ip_prefix": "198.51.100.0/24",
                }
            )
    accounts.append(
        {
            "account_id": "shop",
            "created_at": start - timedelta(days=400),
            "payment_fingerprint": "card-2",
            "signup_channel": "enterprise",
        }
    )
    for i in range(900):
        rows.append(
            {
                "request_id": f"s{i}",
                "ts": start + timedelta(minutes=i),
                "model": "m",
                "account_id": "shop",
                "user_agent": "python-requests/2.31.0",
                "prompt_text": f"Customer #{1000 + i} asks: where is order {i}? Answer "
                "in two sentences from the account notes.",
                "max_tokens": 256,
                "reasoning_requested": False,
                "end_user_id": f"eu-{i % 300}",
                "ip_prefix": "203.0.113.0/24",
            }
        )
    pq.write_table(conform(pa.Table.from_pylist(rows), EXCHANGES), tmp_path / "exchanges.parquet")
    pq.write_table(conform(pa.Table.from_pylist(accounts), ACCOUNTS), tmp_path / "accounts.parquet")
    return tmp_path


def test_ten_accounts_on_one_card_are_one_campaign_and_the_enterprise_app_is_not(
    tmp_path: Path,
) -> None:
    import pyarrow.parquet as pq

    folder = _hand_built(tmp_path / "in")
    detect(folder, tmp_path / "f")
    flagged = {
        r["account_id"]: r["campaign_id"]
        for r in pq.read_table(tmp_path / "f" / "accounts.parquet").to_pylist()
        if r["flagged"]
    }
    assert set(flagged) == {f"farm{a}" for a in range(10)}
    assert len(set(flagged.values())) == 1
    assert pq.read_table(tmp_path / "f" / "exchanges.parquet").num_rows == 0  # no shop traffic


def _enrol(folder: Path, farms: range, channel: str, age_days: float | None) -> None:
    """Put accounts farm{i} of the hand-built traffic in `channel`, signed up
    `age_days` (and 3i hours more) before the traffic starts (the farm's own are three
    hours old); None: sign-up time unknown."""
    from datetime import UTC, datetime, timedelta

    import pyarrow as pa
    import pyarrow.parquet as pq

    path = folder / "accounts.parquet"
    rows = pq.read_table(path).to_pylist()
    for row in rows:
        if row["account_id"] in {f"farm{a}" for a in farms}:
            row["signup_channel"] = channel
            start, a = datetime(2026, 4, 22, tzinfo=UTC), int(row["account_id"][4:])
            row["created_at"] = (
                None if age_days is None else start - timedelta(days=age_days, hours=3 * a)
            )
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(path)), path)


def _flags(findings: Path) -> dict[str, tuple[bool, str | None, list[str]]]:
    import pyarrow.parquet as pq

    return {
        r["account_id"]: (r["flagged"], r["campaign_id"], r["reasons"])
        for r in pq.read_table(findings / "accounts.parquet").to_pylist()
    }


def test_accounts_of_a_trusted_channel_are_held_back_and_the_rest_flagged(
    tmp_path: Path,
) -> None:
    """Five of the farm's accounts are old members of a research programme the operator
    vouches for: they are listed for review, not flagged; the other five still are."""
    folder = _hand_built(tmp_path / "in")
    _enrol(folder, range(5), "security-research", age_days=200)
    summary = detect(folder, tmp_path / "f", trusted_channels=["security-research", " "])
    flags = _flags(tmp_path / "f")
    assert {a for a, (flagged, _, _) in flags.items() if flagged} == {
        f"farm{a}" for a in range(5, 10)
    }
    (held,) = summary["held_back"]
    assert held["accounts"] == [f"farm{a}" for a in range(5)]
    assert held["campaign_id"] == flags["farm5"][1] and held["score"] > summary["threshold"]
    assert all(
        flags[a][1] is None and flags[a][2][0] == "trusted_channel" for a in held["accounts"]
    )
    assert summary["trusted_channels"] == ["security-research"]
    assert summary["trusted_accounts"] == 5
    saved = json.loads((tmp_path / "f" / "summary.json").read_text())
    assert saved["held_back"] == summary["held_back"]
    assert detect(folder, tmp_path / "g")["held_back"] == []  # trust is the operator's word


SIGNED_UP = ["fresh", "in one hour", "across an hour", "unknown", "twice", "an older twin"]


@pytest.mark.parametrize("signed_up", SIGNED_UP)
def test_a_trusted_channel_covers_only_accounts_known_to_be_no_farm_s(
    tmp_path: Path, signed_up: str
) -> None:
    """A farm that enrols its accounts in the programme is flagged all the same: new
    at first use, made in a burst (even long before the run's window, and across the
    end of an hour), or of unknown age; nor is an account the file names twice, in two
    channels or with two sign-up times (the older one would pass for an aged account)."""
    from datetime import timedelta

    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = _hand_built(tmp_path / "in")
    age = 1.0 if signed_up in ("fresh", "an older twin") else 200.0
    _enrol(folder, range(10), "security-research", None if signed_up == "unknown" else age)
    path = folder / "accounts.parquet"
    rows = pq.read_table(path).to_pylist()
    if signed_up == "in one hour":
        for row in rows:
            row["created_at"] = rows[0]["created_at"]
    if signed_up == "across an hour":  # two sign-ups in each of five clock hours
        first = rows[0]["created_at"].replace(minute=30)
        for i, row in enumerate(rows[:10]):
            row["created_at"] = first + timedelta(hours=i // 2, minutes=i % 2)
    if signed_up == "twice":
        rows += [{**row, "signup_channel": "self-serve"} for row in rows]
    if signed_up == "an older twin":
        rows += [{**row, "created_at": row["created_at"] - timedelta(days=700)} for row in rows]
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(path)), path)
    summary = detect(folder, tmp_path / "f", trusted_channels=["security-research"])
    assert summary["flagged_accounts"] == 10 and summary["held_back"] == []
    assert summary["trusted_accounts"] == 0


def test_an_account_named_twice_near_a_sign_up_counts_once_towards_its_burst(
    tmp_path: Path,
) -> None:
    """farm5 is named at two times either side of farm0's sign-up: it is not trusted
    itself, and it is one account beside farm0, not the two a burst would need."""
    from datetime import timedelta

    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = _hand_built(tmp_path / "in")
    _enrol(folder, range(5), "security-research", age_days=200)
    path = folder / "accounts.parquet"
    rows = pq.read_table(path).to_pylist()
    first = next(row for row in rows if row["account_id"] == "farm0")["created_at"]
    for row in rows:
        if row["account_id"] == "farm5":
            row["signup_channel"] = "security-research"
            row["created_at"] = first - timedelta(minutes=30)
            rows.append({**row, "created_at": first + timedelta(minutes=30)})
            break
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(path)), path)
    summary = detect(folder, tmp_path / "f", trusted_channels=["security-research"])
    assert [group["accounts"] for group in summary["held_back"]] == [[f"farm{a}" for a in range(5)]]


def test_trusted_channels_on_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _hand_built(tmp_path / "in")
    _enrol(folder, range(10), "security-research", age_days=200)
    args = ["detect", str(folder), "--out", str(tmp_path / "f"), "--quiet"]
    assert main([*args, "--trusted-channel", "enterprise,security-research"]) == 0
    out = capsys.readouterr().out
    misspelt = ["detect", str(folder), "--out", str(tmp_path / "m"), "--quiet"]
    assert main([*misspelt, "--trusted-channel", "security-reserch"]) == 0
    assert "no account is trusted: none of security-reserch has one known" in (
        capsys.readouterr().err
    )
    assert out.startswith("0 campaign(s); 0 accounts")
    assert "held back for review: 10 account(s) of a trusted channel" in out
    assert not any(flagged for flagged, _, _ in _flags(tmp_path / "f").values())
    exchanges = folder / "exchanges.parquet"
    alone = ["detect", str(exchanges), "--out", str(tmp_path / "g"), "--quiet"]
    assert main([*alone, "--trusted-channel", "security-research"]) == 2
    assert "--trusted-channel reads the accounts' sign-up channels" in capsys.readouterr().err


ACCOUNT_FILES = ["nanoseconds", "text with nine decimals", "epoch seconds", "csv"]


@pytest.mark.parametrize("form", ACCOUNT_FILES)
def test_an_operator_s_accounts_file_is_read_in_the_forms_it_comes_in(
    tmp_path: Path, form: str
) -> None:
    """pandas writes nanoseconds, a warehouse export text or epoch numbers, a
    spreadsheet CSV: each is the same accounts table (here trusting five accounts)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    folder = _hand_built(tmp_path / "in")
    _enrol(folder, range(5), "security-research", age_days=200)
    table = pq.read_table(folder / "accounts.parquet")
    at = table.column_names.index("created_at")
    created = table.column("created_at")
    given = tmp_path / ("accounts.csv" if form == "csv" else "accounts.parquet")
    if form == "nanoseconds":
        table = table.set_column(at, "created_at", created.cast(pa.timestamp("ns", "UTC")))
    elif form == "text with nine decimals":
        text = pc.strftime(created, format="%Y-%m-%dT%H:%M:%S.000000000Z")
        table = table.set_column(at, "created_at", text)
    elif form == "epoch seconds":
        seconds = pc.divide(created.cast(pa.int64()), 10**6)
        table = table.set_column(at, "created_at", seconds)
    if form == "csv":
        pcsv.write_csv(table, given)
    else:
        pq.write_table(table, given)
    summary = detect(folder, tmp_path / "f", accounts=given, trusted_channels=["security-research"])
    assert summary["trusted_accounts"] == 5
    assert summary["accounts_matched"]["in_traffic"] == summary["accounts_matched"]["accounts"]
    assert summary["accounts_input"] == [str(given)]


def test_an_accounts_file_keyed_unlike_the_traffic_is_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Raw ids beside a pseudonymised store match no account: sign-up evidence then
    sees nothing, which the operator must hear."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    folder = _hand_built(tmp_path / "in")
    table = pq.read_table(folder / "accounts.parquet")
    raw = pc.utf8_upper(table.column("account_id"))
    pq.write_table(table.set_column(0, "account_id", raw), tmp_path / "raw.parquet")
    args = ["detect", str(folder), "--out", str(tmp_path / "f"), "--quiet"]
    assert main([*args, "--accounts", str(tmp_path / "raw.parquet")]) == 0
    err = capsys.readouterr().err
    assert f"none of the {table.num_rows} accounts in the accounts table is an account" in err
    assert main([*args, "--accounts", str(folder / "accounts.parquet")]) == 0
    assert "none of the" not in capsys.readouterr().err
    findings = tmp_path / "f" / "accounts.parquet"  # account ids, and no sign-up data
    again = ["detect", str(folder), "--out", str(tmp_path / "g"), "--quiet"]
    assert main([*again, "--accounts", str(findings)]) == 3
    assert "no sign-up data in it" in capsys.readouterr().err


def test_the_summary_counts_flagged_accounts_as_the_accounts_file_flags_them(
    tmp_path: Path,
) -> None:
    """The shop (a mixed account) pays with the farm's card, so its own node joins the
    farm's campaign; a mixed account is never flagged whole, and the count agrees."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = _hand_built(tmp_path / "in")
    path = folder / "accounts.parquet"
    rows = pq.read_table(path).to_pylist()
    for row in rows:
        row["payment_fingerprint"] = "card-1"
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(path)), path)
    summary = detect(folder, tmp_path / "f")
    flags = _flags(tmp_path / "f")
    assert not flags["shop"][0]
    assert summary["flagged_accounts"] == sum(f for f, _, _ in flags.values()) == 10


def test_each_stage_s_end_is_a_line_on_stderr_unless_quiet(
    traffic: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["detect", str(traffic), "--out", str(tmp_path / "a"), "--json"]) == 0
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if " done in " in line]
    stages = ["features", "profiles", "evidence", "edges", "leiden", "campaigns"]
    assert [line.split()[2] for line in lines] == stages
    assert all(line.startswith("distillguard detect: ") and " MiB)" in line for line in lines)
    assert list(json.loads(captured.out)["seconds"]) == stages  # stdout is the JSON alone
    assert main(["detect", str(traffic), "--out", str(tmp_path / "b"), "--quiet"]) == 0
    assert " done in " not in capsys.readouterr().err


def test_until_and_accounts_are_checked(traffic: Path, tmp_path: Path) -> None:
    assert (
        main(["detect", str(traffic), "--out", str(tmp_path / "a"), "--until", "not-a-date"]) == 2
    )
    assert (
        main(["detect", str(traffic), "--out", str(tmp_path / "b"), "--until", "2001-01-01"]) == 3
    )
    assert (
        main(
            [
                "detect",
                str(traffic),
                "--out",
                str(tmp_path / "c"),
                "--accounts",
                str(tmp_path / "absent.parquet"),
            ]
        )
        == 3
    )


def test_account_ids_with_separators_are_accounts(tmp_path: Path) -> None:
    folder = _hand_built(tmp_path / "in")
    _rename_accounts(folder, "org|")
    summary = detect(folder, tmp_path / "f")
    campaigns = json.loads((tmp_path / "f" / "campaigns.json").read_text())
    assert summary["flagged_accounts"] == 10 and summary["flagged_substreams"] == 0
    assert len(campaigns[0]["accounts"]) == 10
    assert any(e["signal"].startswith("linked_by_") for e in campaigns[0]["evidence"])


@pytest.mark.parametrize("since", [None, "2026-04-22T16:00:00+00:00"])
def test_the_findings_list_every_account_of_the_window_once(
    tmp_path: Path, since: str | None
) -> None:
    """The farm's accounts send no end user; the shop (mixed: 300 end users) sends
    nothing but end users' traffic, and nothing after 15:00."""
    from datetime import datetime

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    folder = _hand_built(tmp_path / "in")
    exchanges = pq.read_table(folder / "exchanges.parquet")
    if since:
        ts = exchanges.column("ts")
        exchanges = exchanges.filter(
            pc.greater_equal(ts, pa.scalar(datetime.fromisoformat(since), ts.type))
        )
    detect(folder, tmp_path / "f", since=since)
    listed = pq.read_table(tmp_path / "f" / "accounts.parquet").column("account_id").to_pylist()
    assert listed == sorted(set(exchanges.column("account_id").to_pylist()))
    assert ("shop" in listed) == (since is None)


def _rename_accounts(folder: Path, prefix: str) -> None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    for name in ("exchanges", "accounts"):
        table = pq.read_table(folder / f"{name}.parquet")
        ids = pc.binary_join_element_wise(prefix, table.column("account_id"), "")
        table = table.set_column(table.schema.get_field_index("account_id"), "account_id", ids)
        pq.write_table(table, folder / f"{name}.parquet")


def test_an_account_id_holding_the_sub_stream_separator_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _hand_built(tmp_path / "in")
    _rename_accounts(folder, "org\x1f")
    assert main(["detect", str(folder), "--out", str(tmp_path / "f")]) == 3
    err = capsys.readouterr().err
    assert "11 account id(s) in the exchanges" in err and "U+001F" in err
    assert "Traceback" not in err and not (tmp_path / "f").exists()


def test_an_accounts_file_id_holding_the_separator_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Sign-up data joins nodes by name: this row would attach to a sub-stream."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = _hand_built(tmp_path / "in")
    accounts = pq.read_table(folder / "accounts.parquet")
    row = accounts.slice(0, 1).to_pylist()[0] | {"account_id": "shop\x1feu-1"}
    extra = pa.Table.from_pylist([row], schema=accounts.schema)
    pq.write_table(pa.concat_tables([accounts, extra]), folder / "accounts.parquet")
    assert main(["detect", str(folder), "--out", str(tmp_path / "f")]) == 3
    assert "1 account id(s) in the accounts" in capsys.readouterr().err


def test_an_end_user_id_holding_the_separator_is_reported_whole(tmp_path: Path) -> None:
    """The farm's ten accounts become ten end users of the shop's gateway account, each
    id holding U+001F: the sub-streams are flagged and named as they were sent."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    folder = _hand_built(tmp_path / "in")
    table = pq.read_table(folder / "exchanges.parquet")
    account = table.column("account_id")
    farm = pc.starts_with(account, "farm")
    end_user = pc.binary_join_element_wise(account, "\x1fdesk", "")
    for name, value in (("end_user_id", end_user), ("account_id", pa.scalar("shop"))):
        column = pc.if_else(farm, value, table.column(name))
        table = table.set_column(table.schema.get_field_index(name), name, column)
    pq.write_table(table, folder / "exchanges.parquet")
    (folder / "accounts.parquet").unlink()
    summary = detect(folder, tmp_path / "f")
    (campaign,) = json.loads((tmp_path / "f" / "campaigns.json").read_text())
    assert summary["flagged_substreams"] == 10 and campaign["accounts"] == []
    assert campaign["substreams"] == [
        {"account_id": "shop", "end_user_id": f"farm{a}\x1fdesk"} for a in range(10)
    ]


def test_missing_optional_columns_are_named_in_the_summary(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "request_id": ["a", "b", "c"],
            "account_id": ["x", "y", "z"],
            "model": ["m"] * 3,
            "ts": pa.array([1776816000 * 10**6] * 3, pa.timestamp("us", tz="UTC")),
        }
    )
    pq.write_table(table, tmp_path / "bare.parquet")
    summary = detect(tmp_path / "bare.parquet", tmp_path / "f")
    assert "prompt_text" in summary["missing_columns"] and "ip" in summary["missing_columns"]


@pytest.mark.parametrize("cached", [False, True])
def test_a_column_empty_in_every_file_is_named_and_one_filled_somewhere_is_not(
    traffic: Path, tmp_path: Path, cached: bool
) -> None:
    """A mapping naming a field the logs lack stores the column all null: the summary
    names it as it names an absent one, and with or without a cache alike."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(traffic / "exchanges.parquet")
    half = table.num_rows // 2
    for name in ("prompt_text", "ip"):
        at = table.column_names.index(name)
        table = table.set_column(at, name, pa.nulls(table.num_rows, table.schema.field(name).type))
    pq.write_table(table.slice(0, half), tmp_path / "a.parquet")
    pq.write_table(table.slice(half).drop_columns(["ip"]), tmp_path / "b.parquet")
    whole = pq.read_table(traffic / "exchanges.parquet").slice(0, 10)
    pq.write_table(whole.drop_columns(["prompt_text"]), tmp_path / "c.parquet")
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.parquet").rename(inputs / f"{name}.parquet")
    pq.write_table(whole.slice(0, 0), inputs / "d.parquet")  # no rows: says nothing
    cache = tmp_path / "cache" if cached else None
    summary = detect(inputs, tmp_path / "f", cache=cache)
    assert "prompt_text" in summary["missing_columns"]
    assert "ip" not in summary["missing_columns"]  # c.parquet has addresses


def test_copied_text_links_nobody_and_a_private_template_does(tmp_path: Path) -> None:
    """Thirty strangers greeting the model and running one public benchmark word for word
    are not a group; six fresh accounts filling one private template are."""
    from datetime import UTC, datetime, timedelta

    import pyarrow as pa
    import pyarrow.parquet as pq

    from distillguard.schema import EXCHANGES, conform

    start = datetime(2026, 4, 22, tzinfo=UTC)
    rows = []
    for a in range(30):
        for i in range(40):
            text = (
                "hi! how are you today?"
                if i % 2
                else f"Question {i % 10}: a train leaves at {i % 10} and travels {i % 10 * 7} "
                "km at constant speed for two hours. How far does it go? Think step by step."
            )
            rows.append(_row(f"u{a}-{i}", start + timedelta(hours=i + a), f"user{a}", text))
    for a in range(6):
        for i in range(40):
            text = (
                f"Refactor service {a * 1000 + i} of the billing ledger so that each handler "
                f"validates input {i * 3} and logs step {i}; show every step of your reasoning."
            )
            rows.append(_row(f"f{a}-{i}", start + timedelta(minutes=37 * i + a), f"farm{a}", text))
    pq.write_table(conform(pa.Table.from_pylist(rows), EXCHANGES), tmp_path / "x.parquet")
    detect(tmp_path / "x.parquet", tmp_path / "f")
    linked = {
        r["account_id"]
        for r in pq.read_table(tmp_path / "f" / "accounts.parquet").to_pylist()
        if r["score"] > 0
    }
    assert {f"farm{a}" for a in range(6)} <= linked
    assert not any(a.startswith("user") for a in linked)


def _row(request: str, ts: object, account: str, prompt: str) -> dict[str, object]:
    return {
        "request_id": request,
        "ts": ts,
        "account_id": account,
        "model": "m",
        "prompt_text": prompt,
        "max_tokens": 32000 if account.startswith("farm") else 512,
        "user_agent": "python-httpx/0.27" if account.startswith("farm") else "Mozilla/5.0",
    }


def test_fpr_outside_zero_and_one_is_a_usage_error(traffic: Path, tmp_path: Path) -> None:
    assert main(["detect", str(traffic), "--out", str(tmp_path / "f"), "--fpr", "0"]) == 2
    assert main(["detect", str(traffic), "--out", str(tmp_path / "f"), "--fpr", "1.5"]) == 2


def test_the_summary_names_the_threshold_and_how_it_was_set(traffic: Path, tmp_path: Path) -> None:
    summary = detect(traffic, tmp_path / "f", fpr=0.01)
    assert 0 < summary["threshold"] < 1
    assert "0.01" in summary["calibration"]
    strict = detect(traffic, tmp_path / "g", fpr=1e-6)
    assert strict["threshold"] >= summary["threshold"]


def test_one_account_harvesting_alone_is_a_campaign_and_power_users_are_not(
    tmp_path: Path,
) -> None:
    import pyarrow.parquet as pq

    people = {"coding_agent": 6, "batch_job": 1, "researcher": 4, "developer": 30, "chat": 60}
    scenario = Scenario(
        name="solo",
        seed=5,
        days=3,
        legitimate=[Population(k, v) for k, v in people.items()],
        campaigns=[
            Campaign(
                id="solo",
                accounts=1,
                capability="coding",
                exchanges_per_account_day=2_000,
                rate_limit_per_day=3_000,
            )
        ],
    )
    simulate(scenario, tmp_path / "t")
    detect(tmp_path / "t", tmp_path / "f")
    solo = next(
        r["account_id"]
        for r in pq.read_table(tmp_path / "t" / "labels.parquet").to_pylist()
        if r["campaign_id"]
    )
    flagged = [
        r["account_id"]
        for r in pq.read_table(tmp_path / "f" / "accounts.parquet").to_pylist()
        if r["flagged"]
    ]
    assert flagged == [solo]
    (campaign,) = json.loads((tmp_path / "f" / "campaigns.json").read_text())
    assert campaign["accounts"] == [solo]
    assert "single_account" in {e["signal"] for e in campaign["evidence"]}


def test_a_pool_of_workers_finds_exactly_what_one_process_finds(
    traffic: Path, tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    from distillguard.engines import duck

    small = duck.FEATURE_BATCH
    duck.FEATURE_BATCH = 4_096  # several batches, so the pool has work to share
    try:
        detect(traffic, tmp_path / "one", workers=1)
        detect(traffic, tmp_path / "two", workers=2)
    finally:
        duck.FEATURE_BATCH = small
    for name in ("accounts.parquet", "exchanges.parquet"):
        one = pq.read_table(tmp_path / "one" / name).sort_by(
            [("account_id", "ascending")]
            if name == "accounts.parquet"
            else [("request_id", "ascending")]
        )
        two = pq.read_table(tmp_path / "two" / name).sort_by(
            [("account_id", "ascending")]
            if name == "accounts.parquet"
            else [("request_id", "ascending")]
        )
        assert one.equals(two)
    assert (tmp_path / "one" / "campaigns.json").read_text() == (
        tmp_path / "two" / "campaigns.json"
    ).read_text()
    assert main(["detect", str(traffic), "--out", str(tmp_path / "x"), "--workers", "0"]) == 2


def test_feature_workers_are_gone_before_the_relational_stages(
    traffic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Idle workers would hold their memory while the graph stage needs it."""
    import psutil

    from distillguard.link import graph

    def command(process: psutil.Process) -> str:
        try:
            return " ".join(process.cmdline())
        except psutil.Error:  # exited, or a zombie (an earlier test's): it holds no memory
            return ""

    def workers() -> list[psutil.Process]:
        children = psutil.Process().children(recursive=True)
        return [c for c in children if "spawn_main" in command(c)]

    seen: list[int] = []
    build = graph.build
    monkeypatch.setattr(graph, "build", lambda db: seen.append(len(workers())) or build(db))
    detect(traffic, tmp_path / "findings", workers=2)
    assert seen == [0]


def test_the_pair_tables_are_gone_before_leiden(
    traffic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DuckDB keeps them in memory, which Leiden's graph needs (docs/performance.md)."""
    from distillguard.engines import Engine
    from distillguard.link import graph

    left: list[list[str]] = []
    build = graph.build

    def probe(db: Engine) -> graph.Graph:
        built = build(db)
        left.append([name for name in ("members", "pairs", "linked") if db.has(name)])
        return built

    monkeypatch.setattr(graph, "build", probe)
    detect(traffic, tmp_path / "findings")
    assert left == [["linked"]]  # the later stages read `linked`


def test_every_stage_hands_back_what_it_freed(
    traffic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Freed memory kept by the allocators would count again at Leiden's peak."""
    from distillguard.detect import memory

    ended: list[int] = []
    release = memory.release
    monkeypatch.setattr(memory, "release", lambda: ended.append(1) or release())
    summary = detect(traffic, tmp_path / "findings")
    assert len(ended) == len(summary["seconds"]) == 6


def test_release_returns_arrow_s_free_pages_and_the_c_heap() -> None:
    """Both kept what was freed here (about 300 and 220 MiB) until asked."""
    import numpy as np
    import psutil
    import pyarrow as pa
    import pyarrow.compute as pc

    from distillguard.detect import memory

    def resident() -> int:
        return psutil.Process().memory_info().rss >> 20

    memory.release()
    ones = pa.array(np.ones(1 << 17, dtype=np.int64))
    held = [pc.add(ones, i) for i in range(300)]  # 1 MiB each, from Arrow's pool
    del held
    dropped = resident()
    memory.release()
    assert dropped - resident() > 150
    if memory._malloc_trim() is None:
        pytest.skip("this C library has no malloc_trim")
    held = [bytes(1500) + i.to_bytes(4, "little") for i in range(150_000)]  # the C heap
    last = held[-1]  # it pins the heap's top, so free() alone gives nothing back
    del held
    dropped = resident()
    memory.release()
    assert dropped - resident() > 100
    assert last


def test_a_run_terminated_by_its_scheduler_leaves_nothing(traffic: Path, tmp_path: Path) -> None:
    """SIGTERM (a scheduler's timeout) while the feature workers have batches: exit 143
    with one line, no traceback, no findings, no scratch in the temporary folder."""
    import os
    import signal
    import subprocess
    import sys
    import time

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    command = [sys.executable, "-m", "distillguard.cli", "detect", str(traffic)]
    run = subprocess.Popen(
        [*command, "--out", str(tmp_path / "f")],
        env={**os.environ, "TMPDIR": str(scratch)},
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not any(scratch.glob("distillguard-batches-*")) and time.monotonic() < deadline:
        time.sleep(0.01)
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 143, err
    assert "terminated; nothing was committed" in err and "Traceback" not in err
    assert not (tmp_path / "f").exists() and not any(scratch.iterdir())


@pytest.mark.parametrize("stop, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_run_stopped_in_a_query_ends_in_one_line(
    traffic: Path, tmp_path: Path, stop: str, code: int
) -> None:
    """A signal to the process group (a scheduler's timeout, Ctrl-C) while DuckDB runs a
    query: DuckDB turns it into its own 'query interrupted' error, which was reported as
    a bug (exit 1, a traceback). It is the stop it was, and the workers say nothing."""
    args = ["detect", str(traffic), "--out", str(tmp_path / "f")]
    returncode, err = stopped_after_features(args, getattr(signal, stop))
    assert returncode == code and err.endswith("nothing was committed"), err
    assert "Traceback" not in err and not (tmp_path / "f").exists()


def test_a_failing_close_never_hides_why_a_run_failed(
    traffic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the run is already failing (or stopped), the engine's close failing too
    (Spark's JVM gone) must not take its place; on a run that went well, it is raised."""
    from distillguard.engines.duck import DuckEngine
    from distillguard.errors import InputError

    close = DuckEngine.close

    def failing_close(self: DuckEngine) -> None:
        close(self)
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(DuckEngine, "close", failing_close)
    with pytest.raises(InputError, match="no exchanges to analyse"):
        detect(traffic, tmp_path / "a", until="2001-01-01")
    with pytest.raises(ConnectionRefusedError):
        detect(traffic, tmp_path / "b")


def test_a_script_without_a_main_guard_still_gets_findings(traffic: Path, tmp_path: Path) -> None:
    """Spawned feature workers re-import an unguarded script and fail; detection says so
    and featurises in one process instead of failing. Small batches, so that the input
    is still being read when the workers fail (as it is at scale). The runs the script
    starts in the workers leave no scratch behind."""
    import os
    import subprocess
    import sys

    script = tmp_path / "unguarded.py"
    script.write_text(
        "import distillguard.engines.duck as duck\nduck.FEATURE_BATCH = 1_000\n"
        "from distillguard.detect import detect\n"
        f"print(detect({str(traffic)!r}, {str(tmp_path / 'f')!r})['campaigns'])\n"
    )
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    environment = {**os.environ, "TMPDIR": str(scratch)}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=environment
    )
    assert done.returncode == 0
    assert int(done.stdout.strip()) >= 2
    assert "continuing in one process" in done.stderr
    assert not any(scratch.iterdir())
