"""The gateway against a fake upstream on loopback: pass-through, streaming, policies,
findings reloaded while it runs, recording, metrics, bad input and upstream faults."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from distillguard.gateway import api
from distillguard.gateway.policy import Policy, Rule
from distillguard.gateway.server import Config, Running
from distillguard.schema import FINDINGS_ACCOUNTS
from tests.conftest import free_port, wait_for_port

KEY = "sk-test-farm-001"
ACCOUNT = hashlib.sha256(KEY.encode()).hexdigest()[:16]
AUTH = {"Authorization": f"Bearer {KEY}"}
CHAT = {"model": "m", "messages": [{"role": "user", "content": "Write a sort in Python"}]}


async def _upstream_chat(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    model = body["model"]
    if model == "slow":
        await asyncio.sleep(2)
    if model == "boom":
        return web.json_response({"error": "internal"}, status=500)
    if model == "reset":
        request.transport.close()  # type: ignore[union-attr]
        await asyncio.sleep(1)
    if body.get("stream"):
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'data: {"choices":[{"delta":{"reasoning_content":"think"}}]}\n\n')
        await asyncio.sleep(1.0)
        await response.write(b'data: {"choices":[{"delta":{"content":"done"}}]}\n\n')
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response
    return web.json_response(
        {
            "id": "c1",
            "choices": [
                {"message": {"role": "assistant", "content": "ok", "reasoning_content": "secret"}}
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2},
        }
    )


async def _upstream_messages(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    events = [
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": ""},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "hmm"},
        },
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "hi"}},
        {"type": "content_block_stop", "index": 1},
    ]
    for e in events:
        await response.write(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode())
    await response.write_eof()
    return response


@dataclass
class Client:
    """A client of a gateway serving on loopback: paths relative to it."""

    session: aiohttp.ClientSession
    port: int

    def post(self, path: str, **options: Any) -> Any:
        return self.session.post(path, **options)

    def get(self, path: str, **options: Any) -> Any:
        return self.session.get(path, **options)


@asynccontextmanager
async def gateway(config: Config) -> AsyncIterator[Client]:
    async with Running(config) as running:
        base = f"http://127.0.0.1:{running.port}"
        async with aiohttp.ClientSession(base_url=base) as session:
            yield Client(session, running.port)


Run = Callable[[Client], Awaitable[None]]


def _run(tmp_path: Path, check: Run, **options: Any) -> None:
    async def main() -> None:
        upstream = web.Application()
        upstream.router.add_post("/v1/chat/completions", _upstream_chat)
        upstream.router.add_post("/v1/messages", _upstream_messages)
        async with TestServer(upstream) as up:
            config = Config(upstream=str(up.make_url("")), record=str(tmp_path / "rec"), **options)
            async with gateway(config) as client:
                await check(client)

    asyncio.run(main())


def _findings(folder: Path, score: float = 0.95, evidence: str = "reasoning_elicitation") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    campaign = {"id": "campaign-001", "score": score, "evidence": [{"signal": evidence}]}
    (folder / "campaigns.json").write_text(json.dumps([campaign]))
    table = pa.Table.from_pylist(
        [
            {
                "account_id": ACCOUNT,
                "score": score,
                "flagged": True,
                "campaign_id": "campaign-001",
                "reasons": [],
            }
        ],
        schema=FINDINGS_ACCOUNTS,
    )
    pq.write_table(table, folder / "accounts.parquet")


def test_a_request_passes_through_and_is_recorded(tmp_path: Path) -> None:
    async def check(client: Client) -> None:
        r = await client.post("/v1/chat/completions", json=CHAT, headers=AUTH)
        assert r.status == 200
        assert (await r.json())["choices"][0]["message"]["content"] == "ok"
        metrics = await (await client.get("/metrics")).text()
        assert 'distillguard_decisions_total{action="allow"} 1.0' in metrics
        assert "distillguard_scoring_seconds_bucket" in metrics

    _run(tmp_path, check)
    (part,) = (tmp_path / "rec").rglob("*.parquet")
    row = pq.read_table(part).to_pylist()[0]
    assert row["account_id"] == ACCOUNT and row["prompt_text"] == "Write a sort in Python"
    assert row["ip_prefix"] == "127.0.0.0/24" and KEY not in json.dumps(row, default=str)


def test_streams_pass_through_as_they_arrive(tmp_path: Path) -> None:
    async def check(client: Client) -> None:
        started = time.monotonic()
        r = await client.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=AUTH)
        first = await r.content.readline()
        assert b"reasoning_content" in first and time.monotonic() - started < 0.9
        rest = await r.content.read()
        assert b"[DONE]" in rest

    _run(tmp_path, check)


def test_bad_requests_get_the_errors_their_clients_expect(tmp_path: Path) -> None:
    async def check(client: Client) -> None:
        cases = [
            ("/v1/chat/completions", b"{not json", AUTH, 400, "error"),
            ("/v1/chat/completions", b'{"model": "m", "messages": "x\xff"}', AUTH, 400, "error"),
            ("/v1/chat/completions", b"[1, 2]", AUTH, 400, "error"),
            ("/v1/chat/completions", b'{"messages": []}', AUTH, 400, "error"),
            (
                "/v1/chat/completions",
                b'{"model": "m", "messages": [], "metadata": 1}',
                AUTH,
                400,
                "error",
            ),
            (
                "/v1/messages",
                b'{"model": "m", "messages": [], "thinking": "on"}',
                AUTH,
                400,
                "type",
            ),
            ("/v1/chat/completions", json.dumps(CHAT).encode(), {}, 401, "error"),
            ("/v1/messages", json.dumps(CHAT).encode(), {}, 401, "type"),
            ("/v1/embeddings", json.dumps(CHAT).encode(), AUTH, 404, "error"),
            ("/v1/chat/completions", b"{" + b" " * 3000 + b"}", AUTH, 413, "error"),
        ]
        for path, data, headers, status, top in cases:
            r = await client.post(
                path, data=data, headers={**headers, "Content-Type": "application/json"}
            )
            body = await r.json()
            assert r.status == status, (path, data[:20], r.status)
            assert top in body and "Traceback" not in json.dumps(body)
        r = await client.post("/v1/messages", data=b"{", headers={"x-api-key": KEY})
        assert (await r.json())["error"]["type"] == "invalid_request_error"

    _run(tmp_path, check, max_body=2048)


def test_upstream_faults_become_clean_errors(tmp_path: Path) -> None:
    async def check(client: Client) -> None:
        for model, status in (("boom", 502), ("reset", 502), ("slow", 504)):
            r = await client.post(
                "/v1/chat/completions", json={**CHAT, "model": model}, headers=AUTH
            )
            assert r.status == status, model
            assert "upstream" in (await r.json())["error"]["message"]

    _run(tmp_path, check, upstream_timeout=0.5)


def test_flagged_accounts_are_blocked_and_findings_reload_while_running(tmp_path: Path) -> None:
    findings = tmp_path / "findings"

    async def check(client: Client) -> None:
        assert (await client.post("/v1/chat/completions", json=CHAT, headers=AUTH)).status == 200
        _findings(findings)
        await asyncio.sleep(0.3)
        r = await client.post("/v1/chat/completions", json=CHAT, headers=AUTH)
        assert r.status == 403 and "suspended" in (await r.json())["error"]["message"]

    findings.mkdir()
    _run(tmp_path, check, findings=str(findings), reload_every=0.1)


def test_findings_that_are_not_detects_keep_the_previous_view(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from distillguard.gateway.findings import Findings

    folder = tmp_path / "findings"
    _findings(folder)
    view = Findings(folder)
    assert view.refresh() and ACCOUNT in view.accounts
    for body in ('[{"x": 1}]', '{"id": 1}', '[{"id": "c", "indicators": [{"value": 1}]}]'):
        (folder / "campaigns.json").write_text(body)
        os.utime(folder / "campaigns.json", ns=(time.time_ns(), time.time_ns() + len(body)))
        assert not view.refresh() and ACCOUNT in view.accounts, body
    assert "are not detect's" in caplog.text


def test_findings_replaced_while_read_are_read_again_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """detect renames the accounts before the campaigns; a reload between the two would
    pair one run's accounts with another's campaigns, so it is dropped and redone."""
    from distillguard.gateway import findings as module

    folder = tmp_path / "findings"
    _findings(folder, score=0.6)
    view = module.Findings(folder)
    read = pq.read_table

    def while_detect_writes(*args: Any, **kwargs: Any) -> pa.Table:
        _findings(folder, score=0.99)  # the next run's files land between the two reads
        monkeypatch.setattr(module.pq, "read_table", read)
        return read(*args, **kwargs)

    monkeypatch.setattr(module.pq, "read_table", while_detect_writes)
    assert not view.refresh() and not view.accounts
    assert view.refresh() and view.accounts[ACCOUNT]["score"] == 0.99


def test_template_matching_runs_below_the_serving_process(tmp_path: Path) -> None:
    _findings(tmp_path / "findings")

    async def main() -> None:
        config = Config(upstream="http://127.0.0.1:9", findings=str(tmp_path / "findings"))
        async with Running(config) as running:
            assert running.matching is not None
            matcher_nice = running.matching.submit(os.nice, 0).result(timeout=60)
            assert matcher_nice >= min(19, os.nice(0) + 10)

    asyncio.run(main())


def test_gateway_processes_allocate_arrow_memory_from_the_c_heap() -> None:
    code = (
        "import pyarrow as pa; from distillguard.gateway.workers import steady_memory; "
        "steady_memory(); print(pa.default_memory_pool().backend_name)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "system"


def test_reasoning_is_withheld_from_replies_and_streams(tmp_path: Path) -> None:
    _findings(tmp_path / "findings", score=0.8)

    async def check(client: Client) -> None:
        r = await client.post("/v1/chat/completions", json=CHAT, headers=AUTH)
        message = (await r.json())["choices"][0]["message"]
        assert message == {"role": "assistant", "content": "ok"}
        r = await client.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=AUTH)
        text = await r.text()
        assert "reasoning_content" not in text and '"content":"done"' in text
        messages = {"model": "c", "max_tokens": 10, "messages": [{"role": "user", "content": "q"}]}
        r = await client.post("/v1/messages", json=messages, headers={"x-api-key": KEY})
        text = await r.text()
        assert "thinking" not in text and '"text": "hi"' in text.replace(
            '"text":"hi"', '"text": "hi"'
        )

    _run(tmp_path, check, findings=str(tmp_path / "findings"))


def test_throttling_says_when_to_come_back(tmp_path: Path) -> None:
    _findings(tmp_path / "findings", score=0.6)
    policy = Policy(rules=(Rule("throttle", {"flagged": True}, retry_after=17),))

    async def check(client: Client) -> None:
        r = await client.post("/v1/chat/completions", json=CHAT, headers=AUTH)
        assert r.status == 429 and r.headers["Retry-After"] == "17"

    _run(tmp_path, check, findings=str(tmp_path / "findings"), policy=policy)


def test_reasoning_removal_on_hand_built_bodies() -> None:
    responses = {
        "output": [{"type": "reasoning", "summary": []}, {"type": "message", "content": []}],
        "reasoning": {"effort": "high"},
    }
    assert api.without_reasoning(responses) == {
        "output": [{"type": "message", "content": []}],
        "reasoning": {"effort": "high"},
    }
    claude = {"content": [{"type": "thinking", "thinking": "x"}, {"type": "text", "text": "y"}]}
    assert api.without_reasoning(claude) == {"content": [{"type": "text", "text": "y"}]}
    assert api.stream_event_without_reasoning("[DONE]", set()) == "[DONE]"


REDIS = shutil.which("redis-server")


class _Redis:
    """A real redis-server on a free loopback port, which a test can stop and restart."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                str(REDIS),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_for_port(self.port, 10)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.mark.skipif(REDIS is None, reason="redis-server is not installed (make test installs it)")
def test_an_active_accounts_fingerprints_outlive_the_ttl_in_redis(tmp_path: Path) -> None:
    """Once an account carries enough fingerprints its prompts are no longer matched, so
    its traffic itself must keep them: they expire only when the account goes quiet."""
    from distillguard.gateway.state import RedisStore, Seen

    server = _Redis(tmp_path)
    server.start()
    try:
        store = RedisStore(f"redis://127.0.0.1:{server.port}/0", ttl=1)
        store.add(Seen("farm", False, False))
        store.add_fingerprints([("farm", ["a", "b", "c"])])
        for _ in range(6):  # 1.5 s of traffic, past the ttl
            assert store.add(Seen("farm", False, False)).fingerprints == {"a", "b", "c"}
            time.sleep(0.25)
        time.sleep(2.2)  # then quiet past it
        assert store.add(Seen("farm", False, False)).fingerprints == set()
    finally:
        server.stop()


@pytest.mark.skipif(REDIS is None, reason="redis-server is not installed (make test installs it)")
def test_replicas_share_state_in_redis_and_follow_the_failure_policy(tmp_path: Path) -> None:
    server = _Redis(tmp_path)
    server.start()
    url = f"redis://127.0.0.1:{server.port}/0"
    scripted = {**AUTH, "User-Agent": "python-requests/2.31"}
    cot = {"model": "m", "messages": [{"role": "user", "content": "Solve it step by step."}]}
    policy = Policy(rules=(Rule("block", {"evidence": "reasoning_elicitation"}),), fail="closed")

    async def main() -> None:
        upstream = web.Application()
        upstream.router.add_post("/v1/chat/completions", _upstream_chat)
        async with TestServer(upstream) as up:
            base = str(up.make_url(""))
            config = Config(upstream=base, redis=url, policy=policy)
            async with gateway(config) as one, gateway(config) as two:
                for i in range(10):  # half the traffic through each replica
                    r = await (one if i % 2 else two).post(
                        "/v1/chat/completions", json=cot, headers=scripted
                    )
                    assert r.status == 200
                codes = set()
                for i in range(12):  # the shared count passes MIN_EXCHANGES on both
                    r = await (one if i % 2 else two).post(
                        "/v1/chat/completions", json=cot, headers=scripted
                    )
                    codes.add(r.status)
                assert 403 in codes
                server.stop()  # Redis goes away: fail closed blocks everyone
                r = await one.post(
                    "/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer other"}
                )
                assert r.status == 403
                server.start()  # and comes back: ordinary traffic flows again
                await asyncio.sleep(0.2)
                r = await one.post(
                    "/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer other"}
                )
                assert r.status == 200

    try:
        asyncio.run(main())
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules: [{action: explode}]", "needs an action"),
        ("rules: [{action: block, when: {score_over: 1}}]", "unknown key(s) score_over"),
        ("rules: [{action: throttle, retry_after: 0}]", "retry_after"),
        ("fail: sideways", "fail takes open or closed"),
        ("rules: [", "not valid YAML"),
        ("- just a list", "a mapping"),
        ("rules: [{action: block, when: {score_at_least: high}}]", "takes a number, not 'high'"),
        ("rules: [{action: block, when: {flagged: 1}}]", "flagged takes true or false"),
        ("rules: [{action: block, when: {score_below: true}}]", "score_below takes a number"),
        ("rules: [{action: block, when: {evidence: [template]}}]", "evidence takes the name"),
    ],
)
def test_a_bad_policy_file_is_refused_with_the_reason(
    tmp_path: Path, text: str, message: str
) -> None:
    from distillguard.errors import UsageError
    from distillguard.gateway import policy

    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=re.escape(message)):
        policy.load(path)


def test_a_yaml_mistake_is_one_line_saying_where(tmp_path: Path) -> None:
    from distillguard.errors import UsageError
    from distillguard.gateway import policy

    path = tmp_path / "policy.yaml"
    path.write_text("rules: [\n  - x: {\n")
    with pytest.raises(UsageError) as refused:
        policy.load(path)
    assert "\n" not in str(refused.value) and "line 2, column 3" in str(refused.value)


def test_a_policy_path_that_is_no_text_file_is_refused(tmp_path: Path) -> None:
    from distillguard.errors import UsageError
    from distillguard.gateway import policy

    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00rules")
    for path, message in ((tmp_path, "cannot read"), (tmp_path / "binary.yaml", "not UTF-8")):
        with pytest.raises(UsageError, match=message):
            policy.load(path)


def test_policy_rules_decide_in_order_with_reasons(tmp_path: Path) -> None:
    from distillguard.gateway import policy

    path = tmp_path / "policy.yaml"
    path.write_text(
        "fail: closed\nrules:\n"
        "  - {when: {score_at_least: 0.9}, action: block}\n"
        "  - {when: {evidence: campaign_templates}, action: mark}\n"
    )
    rules = policy.load(path)
    assert rules.decide(0.95, True, set()).action == "block"
    decision = rules.decide(0.5, False, {"campaign_templates"})
    assert decision.action == "mark" and "rule 2" in decision.reason
    assert rules.decide(0.1, False, set()).action == "allow"
    assert rules.unavailable("redis").action == "block"


def test_the_command_line_refuses_bad_settings() -> None:
    from distillguard.cli import main

    assert main(["gateway", "--upstream", "http://127.0.0.1:1", "--listen", "nowhere"]) == 2
    assert main(["gateway", "--upstream", "ftp://x", "--listen", "127.0.0.1:0"]) == 2


def test_a_slow_client_is_cut_off_and_does_not_hold_the_gateway(tmp_path: Path) -> None:
    async def check(client: Client) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        await writer.drain()  # ...and never sends the rest
        started = time.monotonic()
        other = await client.post("/v1/chat/completions", json=CHAT, headers=AUTH)
        assert other.status == 200 and time.monotonic() - started < 0.9
        head = await asyncio.wait_for(reader.read(200), 5)
        assert b" 408 " in head.split(b"\r\n")[0] and time.monotonic() - started < 4
        writer.close()

    _run(tmp_path, check, body_timeout=1.0)
