"""The analyst report: one offline HTML file, every chart rendered in a real browser.

Headless Chromium (Debian's package; `make test` installs it) opens the report with the
network cut off; any console error fails the test, every chart must have drawn, and a
screenshot is kept in test-artifacts/ for a person to look at.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from distillguard.cli import main
from distillguard.detect import detect
from distillguard.simulate import simulate
from tests.conftest import two_campaigns

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="module")
def findings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("report")
    scenario = two_campaigns("report", seed=11, days=3, coders=14)
    simulate(scenario, folder / "sim")
    detect(folder / "sim", folder / "findings")
    return folder


def test_the_report_is_self_contained_and_complete(findings: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    args = ["report", str(findings / "findings"), "--out", str(out)]
    assert main([*args, "--labels", str(findings / "sim")]) == 0
    html = out.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing fetched
    assert "<script" not in html
    campaigns = json.loads((findings / "findings" / "campaigns.json").read_text())
    for c in campaigns:
        assert f"id='{c['id']}'" in html
        assert html.count(f"data-chart='{c['id']}-") == 3
    for section in (
        "Triage",
        "Shared infrastructure",
        "Template examples",
        "Evidence behind the flag",
        "Flagged sub-streams",
        "Evaluation against labels",
        "payment fingerprints",
        "sign-up bursts",
    ):
        assert section in html, section


def test_redacted_reports_hold_no_prompt_text(findings: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "report.html"
    assert main(["report", str(findings / "findings"), "--out", str(out), "--redact"]) == 0
    html = out.read_text()
    prompts = pq.read_table(findings / "sim" / "exchanges.parquet", columns=["prompt_text"])
    assert "[redacted:" in html
    for text in prompts.column(0).to_pylist()[:2000]:
        if text and len(text) > 30:
            assert text[:30] not in html


def test_findings_without_a_summary_need_the_input(findings: Path, tmp_path: Path) -> None:
    copy = tmp_path / "f"
    shutil.copytree(findings / "findings", copy)
    (copy / "summary.json").unlink()
    assert main(["report", str(copy), "--out", str(tmp_path / "r.html")]) == 3
    args = ["report", str(copy), "--out", str(tmp_path / "r.html")]
    assert main([*args, "--input", str(findings / "sim")]) == 0
    assert main(["report", str(tmp_path / "nothing"), "--out", str(tmp_path / "r.html")]) == 3


def test_traffic_of_another_run_is_refused(
    findings: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another run's traffic made every table of the report read "none", in silence."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(findings / "sim" / "exchanges.parquet")
    at = table.column_names.index("account_id")
    other = pc.binary_join_element_wise("other-", table.column("account_id"), "")
    (tmp_path / "other").mkdir()
    pq.write_table(table.set_column(at, "account_id", other), tmp_path / "other" / "x.parquet")
    args = ["report", str(findings / "findings"), "--out", str(tmp_path / "r.html")]
    assert main([*args, "--input", str(tmp_path / "other")]) == 3
    assert "none of the campaigns' accounts has an exchange in it" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it)"
)
def test_traffic_that_is_not_exchanges_is_refused_and_bare_exchanges_serve(
    findings: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--input given an empty file, the accounts or the findings is exit 3 naming it;
    exchanges with the required columns alone make a report."""
    import pyarrow.parquet as pq

    (tmp_path / "empty.parquet").write_bytes(b"")
    sim, found = findings / "sim", findings / "findings"
    for given in (tmp_path / "empty.parquet", sim / "accounts.parquet", found / "accounts.parquet"):
        args = ["report", str(found), "--out", str(tmp_path / "r.html"), "--input", str(given)]
        assert main(args) == 3
        err = capsys.readouterr().err
        assert str(given) in err and "Traceback" not in err
    required = ["request_id", "ts", "account_id", "model"]
    bare = pq.read_table(sim / "exchanges.parquet", columns=required)
    pq.write_table(bare, tmp_path / "bare.parquet")
    args = ["report", str(found), "--out", str(tmp_path / "r.html")]
    assert main([*args, "--input", str(tmp_path / "bare.parquet")]) == 0
    odd = tmp_path / "odd"
    shutil.copytree(found, odd)
    (odd / "summary.json").write_text("[]")
    assert main(["report", str(odd), "--out", str(tmp_path / "r2.html")]) == 3
    assert "pass --input" in capsys.readouterr().err


def test_every_chart_renders_in_chromium_without_console_errors(
    findings: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    out = tmp_path / "report.html"
    assert main(["report", str(findings / "findings"), "--out", str(out)]) == 0
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        context = browser.new_context(offline=True, viewport={"width": 1200, "height": 900})
        page = context.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
        page.goto(out.as_uri())
        sizes = page.eval_on_selector_all(
            "figure.chart",
            """figures => figures.map(f => {
                const svg = f.querySelector('svg');
                const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
                return [f.dataset.chart, box.width, box.height,
                        svg ? svg.querySelectorAll('path, rect, line, circle').length : 0];
            })""",
        )
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        browser.close()
    assert errors == []
    assert len(sizes) >= 6
    for name, width, height, marks in sizes:
        assert width > 100 and height > 50 and marks > 3, name


def test_a_store_read_by_a_report_keeps_the_files_it_listed(
    findings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new accounts table committed between the report listing the store's files and
    reading them deleted the old file under it: an internal error. The report now holds
    the store as detect does, and the superseded file stays until it is done. Its
    accounts are the ones detect read, once (the store's and the summary's same file
    were both read, and each account counted twice)."""
    from distillguard.ingest import Options, ingest
    from distillguard.report import data

    store = tmp_path / "store"
    ingest([findings / "sim" / "exchanges.parquet"], store, Options())
    ingest([findings / "sim" / "accounts.parquet"], store, Options(table="accounts"))
    detect(store, tmp_path / "found")
    gathered = data.gather(tmp_path / "found", None, False, None)
    for campaign in gathered["campaigns"]:
        infrastructure = gathered["details"][campaign["id"]]["infrastructure"]
        counted = sum(c["accounts"] for c in infrastructure["sign-up channels"])
        members = {*campaign["accounts"], *(s["account_id"] for s in campaign["substreams"])}
        assert 0 < counted <= len(members)  # each account once
    check = data.readable

    def overtaken(files: list[Path]) -> None:
        ingest([findings / "sim" / "accounts.parquet"], store, Options(table="accounts"))
        check(files)

    monkeypatch.setattr(data, "readable", overtaken)
    out = tmp_path / "r.html"
    assert main(["report", str(tmp_path / "found"), "--out", str(out)]) == 0
    assert "Triage" in out.read_text()


def test_accounts_held_back_for_review_have_their_section() -> None:
    from distillguard.report.html import render

    held = {
        "accounts": ["acct-<1>", "acct-2", "acct-3"],
        "score": 0.8603,
        "evidence": ["reasoning_elicitation", "private_templates"],
        "campaign_id": None,
    }
    summary = {"held_back": [held], "trusted_channels": ["security-research"]}
    html = render({"campaigns": [], "summary": summary, "details": {}}, redact=False)
    assert "Held back for review" in html and "(security-research)" in html
    assert "0.860" in html and "acct-&lt;1&gt;, acct-2, acct-3" in html
    plain = render({"campaigns": [], "summary": {}, "details": {}}, redact=False)
    assert "Held back" not in plain


def test_the_triage_table_counts_sub_streams_apart_from_accounts() -> None:
    """A sub-stream is an end user's traffic inside another's account: the campaign
    section, campaigns.json and the CLI count them apart, so the triage table does."""
    from distillguard.report.html import _triage

    campaign = {
        "id": "campaign-003",
        "score": 0.9,
        "confidence": 1.0,
        "accounts": ["a", "b", "c"],
        "substreams": [{"account_id": "shop", "end_user_id": f"u{i}"} for i in range(6)],
        "exchange_count": 466,
        "first_seen": "2026-04-22T00:00:00Z",
        "last_seen": "2026-04-23T00:00:00Z",
        "capability_mix": {"coding": 466},
        "recommended_action": "suspend",
    }
    assert "<td class='n'>3 + 6 sub-streams</td>" in _triage([campaign])
    assert "<td class='n'>3</td>" in _triage([{**campaign, "substreams": []}])
