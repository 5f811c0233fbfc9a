"""The evaluator on hand-built cases whose answers are worked out by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from distillguard.errors import InputError, SchemaError
from distillguard.evaluate import evaluate, render
from distillguard.evaluate import metrics as m


def test_confusion_and_average_precision() -> None:
    c = m.confusion([True, False, True, False, False], [True, True, False, False, False])
    assert (c.tp, c.fp, c.fn, c.tn) == (1, 1, 1, 2)
    assert (c.precision, c.recall, c.fpr) == (0.5, 0.5, pytest.approx(1 / 3))
    # ranks: T (P=1), F, T (P=2/3), F -> AP = 1/2 * 1 + 1/2 * 2/3
    assert m.average_precision([True, False, True, False], [0.9, 0.8, 0.7, 0.1]) == pytest.approx(
        5 / 6
    )
    assert m.average_precision([True, False], [0.5, 0.5]) == pytest.approx(0.5)  # a tie


def test_adjusted_rand_index_known_values() -> None:
    assert m.adjusted_rand_index([0, 0, 1, 1], [5, 5, 9, 9]) == 1.0
    # contingency pairs 1, row pairs 2, column pairs 1, n pairs 6: (1 - 1/3) / (3/2 - 1/3)
    assert m.adjusted_rand_index([0, 0, 1, 1], [0, 0, 1, 2]) == pytest.approx(4 / 7)


@given(st.lists(st.integers(0, 4), min_size=2, max_size=40))
def test_ari_of_a_partition_with_itself_is_one(labels: list[int]) -> None:
    assert m.adjusted_rand_index(labels, [f"x{v}" for v in labels]) == pytest.approx(1.0)


def test_campaign_matching() -> None:
    truth = ["A", "A", "A", "A", "B", "B", None, None]
    pred = ["p1", "p1", "p1", "p2", "p1", None, "p3", None]
    a, b = m.match_campaigns(truth, pred)
    assert (a.best, a.overlap, a.fragments) == ("p1", 3, 2)
    assert a.purity == pytest.approx(3 / 4) and a.completeness == pytest.approx(3 / 4)
    assert (b.best, b.overlap, b.completeness) == ("p1", 1, 0.5)


def test_time_to_detect() -> None:
    day = 86400.0
    points = [(3 * day, 0.6), (1 * day, 0.2), (2 * day, 0.5)]
    assert m.time_to_detect(0.5 * day, points) == pytest.approx(1.5 * day)
    assert m.time_to_detect(0.0, [(day, 0.1)]) is None


def _write(
    folder: Path, name: str, rows: list[dict[str, object]], schema: pa.Schema | None = None
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / name)


@pytest.fixture
def case(tmp_path: Path) -> tuple[Path, Path]:
    """Six accounts: campaign C (a1-a3), legitimate developers (d1, d2) and a reseller r1
    that carried two of C's exchanges."""
    labels, findings = tmp_path / "labels", tmp_path / "findings"
    _write(
        labels,
        "labels.parquet",
        [
            {"account_id": "a1", "campaign_id": "C", "role": "campaign"},
            {"account_id": "a2", "campaign_id": "C", "role": "campaign"},
            {"account_id": "a3", "campaign_id": "C", "role": "campaign"},
            {"account_id": "d1", "campaign_id": None, "role": "developer"},
            {"account_id": "d2", "campaign_id": None, "role": "developer"},
            {"account_id": "r1", "campaign_id": None, "role": "reseller"},
        ],
    )
    ts = "2026-04-22T00:00:00"
    exchanges = [
        ("e1", "a1"),
        ("e2", "a1"),
        ("e3", "a2"),
        ("e4", "a3"),
        ("e5", "d1"),
        ("e6", "r1"),
        ("e7", "r1"),
        ("e8", "r1"),
    ]
    _write(
        labels,
        "exchanges.parquet",
        [{"request_id": r, "account_id": a, "ts": ts} for r, a in exchanges],
    )
    _write(
        labels,
        "exchange_labels.parquet",
        [{"request_id": "e6", "campaign_id": "C"}, {"request_id": "e7", "campaign_id": "C"}],
    )
    _write(
        findings,
        "accounts.parquet",
        [
            {"account_id": "a1", "score": 0.9, "flagged": True, "campaign_id": "P"},
            {"account_id": "a2", "score": 0.8, "flagged": True, "campaign_id": "P"},
            {"account_id": "d1", "score": 0.7, "flagged": True, "campaign_id": "Q"},
            {"account_id": "a3", "score": 0.2, "flagged": False, "campaign_id": None},
        ],
    )
    _write(findings, "exchanges.parquet", [{"request_id": "e6", "campaign_id": "P"}])
    return findings, labels


def test_evaluate_a_hand_built_case(case: tuple[Path, Path]) -> None:
    findings, labels = case
    report = evaluate(findings, labels)
    a = report["accounts"]
    assert (a["tp"], a["fp"], a["fn"], a["tn"]) == (2, 1, 1, 2)
    assert a["precision"] == pytest.approx(2 / 3) and a["recall"] == pytest.approx(2 / 3)
    assert a["false_positive_rate"] == pytest.approx(1 / 3)
    # scores: a1 .9 T, a2 .8 T, d1 .7 F, a3 .2 T, d2/r1 0 F -> AP = 1/3 + 1/3 + 1/3 * 3/4
    assert a["pr_auc"] == pytest.approx(1 / 3 + 1 / 3 + 0.25)
    fpr = report["false_positive_rate_by_population"]
    assert fpr["developer"]["false_positive_rate"] == 0.5 and fpr["reseller"]["flagged"] == 0
    c = report["campaigns"]["per_campaign"]["C"]
    assert (c["best_match"], c["purity"], c["completeness"], c["fragments"]) == (
        "P",
        1.0,
        pytest.approx(2 / 3),
        1,
    )
    e = report["exchanges"]
    # campaign exchanges e1-e4 (own accounts) and e6, e7 (via r1): flagged e1, e2, e3, e6
    assert (e["campaign_exchanges"], e["flagged"], e["in_mixed_accounts"]) == (6, 4, 2)
    assert e["mixed_recall"] == 0.5
    assert "precision 0.6667" in render(report)
    assert "not in the labels" not in render(report)
    report["accounts"]["flagged_but_not_labelled"] = 13  # labels of other traffic
    assert "13 flagged account(s) are not in the labels" in render(report)


@pytest.mark.parametrize(
    ("name", "content", "said"),
    [
        ("exchange_labels.parquet", b"", "not a readable Parquet file"),
        ("exchange_labels.parquet", "labels.parquet", "not the exchange labels"),
        ("exchanges.parquet", "labels.parquet", "not the simulated exchanges"),
    ],
)
def test_a_labels_folder_with_a_wrong_file_is_refused_by_name(
    case: tuple[Path, Path], name: str, content: bytes | str, said: str
) -> None:
    findings, labels = case
    body = (labels / content).read_bytes() if isinstance(content, str) else content
    (labels / name).write_bytes(body)
    with pytest.raises(InputError, match=said) as refused:
        evaluate(findings, labels)
    assert name in str(refused.value)


def test_time_to_detect_over_a_series(case: tuple[Path, Path], tmp_path: Path) -> None:
    findings, labels = case
    series = tmp_path / "series"
    _write(
        series / "2026-04-22",
        "accounts.parquet",
        [{"account_id": "a1", "score": 0.9, "flagged": True, "campaign_id": "P"}],
    )
    _write(
        series / "2026-04-24",
        "accounts.parquet",
        [
            {"account_id": "a1", "score": 0.9, "flagged": True, "campaign_id": "P"},
            {"account_id": "a2", "score": 0.9, "flagged": True, "campaign_id": "P"},
        ],
    )
    report = evaluate(findings, labels, series)
    assert report["time_to_detect_days"] == {"C": 2.0}


def test_missing_columns_are_named(case: tuple[Path, Path]) -> None:
    findings, labels = case
    _write(findings, "accounts.parquet", [{"account_id": "a1", "score": 0.9}])
    with pytest.raises(SchemaError, match="'flagged' is missing"):
        evaluate(findings, labels)
    _write(labels, "labels.parquet", [{"campaign_id": "C"}])
    with pytest.raises(SchemaError, match="'account_id' is missing"):
        evaluate(findings, labels)


def test_eval_cli_prints_json(case: tuple[Path, Path], tmp_path: Path) -> None:
    from distillguard.cli import main

    findings, labels = case
    out = tmp_path / "report.json"
    assert (
        main(
            [
                "eval",
                "--findings",
                str(findings),
                "--labels",
                str(labels),
                "--json",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads(out.read_text())["accounts"]["tp"] == 2


def test_a_wholly_flagged_mixed_account_counts_against_its_customers(
    case: tuple[Path, Path],
) -> None:
    findings, labels = case
    _write(
        findings,
        "accounts.parquet",
        [
            {"account_id": "a1", "score": 0.9, "flagged": True, "campaign_id": "P"},
            {"account_id": "r1", "score": 0.9, "flagged": True, "campaign_id": "P"},
        ],
    )
    e = evaluate(findings, labels)["exchanges"]
    assert e["mixed_recall"] == 1.0
    assert e["mixed_false_positive_rate"] == 1.0  # e8, r1's own customer, is flagged too
    # legitimate exchanges: e5 (d1) and e8 (r1); e8 is flagged through its account
    assert e["legitimate_exchange_false_positive_rate"] == 0.5


def test_duplicate_findings_and_empty_labels_are_refused(case: tuple[Path, Path]) -> None:
    from distillguard.errors import InputError

    findings, labels = case
    _write(
        findings,
        "accounts.parquet",
        [
            {"account_id": "a1", "score": 0.9, "flagged": True, "campaign_id": "P"},
            {"account_id": "a1", "score": 0.1, "flagged": False, "campaign_id": None},
        ],
    )
    with pytest.raises(InputError, match="'a1' more than once"):
        evaluate(findings, labels)
    _write(
        labels,
        "labels.parquet",
        [],
        schema=pa.schema(
            [("account_id", pa.string()), ("campaign_id", pa.string()), ("role", pa.string())]
        ),
    )
    _write(
        findings,
        "accounts.parquet",
        [{"account_id": "a1", "score": 0.9, "flagged": True, "campaign_id": "P"}],
    )
    with pytest.raises(InputError, match="empty"):
        evaluate(findings, labels)
