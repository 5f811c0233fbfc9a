"""TAXII 2.1 push and pull against a real server (medallion) on loopback.

medallion 3.0 reads an object's `version` property as a timestamp when it serves a
collection, so a stored `extension-definition` (whose `version` is "1.0") makes every
later read fail. The server here runs with that one function corrected (see
SERVER below); `--skip-extension-definitions` is the client-side way round it for a
server one cannot fix, and is tested against the unpatched behaviour too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from distillguard.cli import main
from distillguard.intel.stix import Sharing, export
from tests.conftest import free_port, wait_for_port

COLLECTION = "365fed99-08fa-fdcd-a1b3-fb247eb41d01"
SERVER = """
import sys
import medallion.backends.memory_backend as backend
import medallion.common as common
import medallion.filters.basic_filter as basic_filter
from medallion.scripts.run import main

if sys.argv.pop(1) == "fixed":
    original = common.find_att

    def find_att(obj):
        if obj.get("type") == "extension-definition":
            obj = {k: v for k, v in obj.items() if k != "version"}
        return original(obj)

    for module in (common, backend, basic_filter):
        module.find_att = find_att
sys.exit(main())
"""


def _server(tmp: Path, fixed: bool) -> Iterator[str]:
    port = free_port()
    root = f"http://127.0.0.1:{port}/api1/"
    data = {
        "/discovery": {"title": "t", "default": root, "api_roots": [root]},
        "api1": {
            "information": {
                "title": "api1",
                "versions": ["application/taxii+json;version=2.1"],
                "max_content_length": 100_000_000,
            },
            "status": [],
            "collections": [
                {
                    "id": COLLECTION,
                    "title": "distillation",
                    "can_read": True,
                    "can_write": True,
                    "media_types": ["application/stix+json;version=2.1"],
                    "objects": [],
                    "manifest": [],
                }
            ],
        },
    }
    (tmp / "data.json").write_text(json.dumps(data))
    config = {
        "backend": {
            "module": "medallion.backends.memory_backend",
            "module_class": "MemoryBackend",
            "filename": str(tmp / "data.json"),
        },
        "users": {"peer": "secret"},
        "taxii": {"max_page_size": 100},
    }
    (tmp / "config.json").write_text(json.dumps(config))
    (tmp / "server.py").write_text(SERVER)
    process = subprocess.Popen(
        [
            sys.executable,
            str(tmp / "server.py"),
            "fixed" if fixed else "as-is",
            "--port",
            str(port),
            str(tmp / "config.json"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, 20)
    try:
        yield f"{root}collections/{COLLECTION}/"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def collection(tmp_path: Path) -> Iterator[str]:
    yield from _server(tmp_path, fixed=True)


@pytest.fixture
def unfixed(tmp_path: Path) -> Iterator[str]:
    yield from _server(tmp_path, fixed=False)


def _bundle(tmp_path: Path) -> Path:
    campaigns: list[dict[str, Any]] = [
        {
            "id": "campaign-001",
            "score": 0.95,
            "confidence": 0.99,
            "accounts": ["a1", "a2", "a3"],
            "exchange_count": 900,
            "first_seen": "2026-04-22T00:00:00Z",
            "last_seen": "2026-04-23T00:00:00Z",
            "capability_mix": {"coding": 900},
            "evidence": [{"signal": "linked_by_template", "strength": 1.0, "detail": "9 keys"}],
            "indicators": [
                {
                    "kind": "network",
                    "value": "198.51.100.0/24",
                    "user_agent": "curl/8",
                    "accounts": 3,
                }
            ],
            "template_fingerprints": ["00000000000000ff", "0000000000000abc", "0000000000000def"],
            "recommended_action": "suspend",
        }
    ]
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(export(campaigns, Sharing(producer="Lab A"))))
    return path


@pytest.fixture
def password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAXII_PASSWORD", "secret")


def test_push_then_pull_gives_back_every_object(
    collection: str, tmp_path: Path, password: None
) -> None:
    bundle = _bundle(tmp_path)
    assert main(["intel", "push", str(bundle), "--collection", collection, "--user", "peer"]) == 0
    out = tmp_path / "pulled.json"
    assert (
        main(["intel", "pull", "--collection", collection, "--user", "peer", "--out", str(out)])
        == 0
    )
    sent = {o["id"] for o in json.loads(bundle.read_text())["objects"]}
    got = {o["id"] for o in json.loads(out.read_text())["objects"]}
    assert got == sent


def test_a_second_push_reports_each_refused_object(
    collection: str, tmp_path: Path, password: None, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = _bundle(tmp_path)
    args = ["intel", "push", str(bundle), "--collection", collection, "--user", "peer"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 7  # medallion refuses objects it already holds
    captured = capsys.readouterr()
    assert captured.out.startswith("0 of ") and "refused campaign--" in captured.err


def test_a_server_that_fails_on_definitions_can_still_be_used(
    unfixed: str, tmp_path: Path, password: None
) -> None:
    bundle = _bundle(tmp_path)
    args = ["intel", "push", str(bundle), "--collection", unfixed, "--user", "peer"]
    assert main([*args, "--skip-extension-definitions"]) == 0
    out = tmp_path / "pulled.json"
    assert (
        main(["intel", "pull", "--collection", unfixed, "--user", "peer", "--out", str(out)]) == 0
    )
    types = {o["type"] for o in json.loads(out.read_text())["objects"]}
    assert "campaign" in types and "extension-definition" not in types


def test_wrong_password_and_a_server_that_is_down_are_reported(
    collection: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bundle = _bundle(tmp_path)
    monkeypatch.setenv("TAXII_PASSWORD", "wrong")
    assert main(["intel", "push", str(bundle), "--collection", collection, "--user", "peer"]) == 7
    assert "401" in capsys.readouterr().err
    down = f"http://127.0.0.1:{free_port()}/api1/collections/{COLLECTION}/"
    assert main(["intel", "pull", "--collection", down, "--out", str(tmp_path / "x.json")]) == 7
    err = capsys.readouterr().err
    assert "cannot be reached" in err and "Traceback" not in err
    assert not (tmp_path / "x.json").exists()
