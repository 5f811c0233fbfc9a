"""The gateway's OpenTelemetry GenAI spans, sent over real OTLP/HTTP to a receiver on
loopback and read back by distillguard's own OTel ingest adapter."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("opentelemetry.sdk", reason="distillguard[otel] is not installed")
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from distillguard.ingest.adapters.otel import OtelAdapter
from distillguard.privacy import Pseudonymiser
from tests.test_gateway import ACCOUNT, AUTH, CHAT, Client, _findings, _run

OTHER = {"Authorization": "Bearer sk-someone-else"}
KEY = b"k" * 32


class _Collector(BaseHTTPRequestHandler):
    bodies: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        _Collector.bodies.append(self.rfile.read(length))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_each_decided_request_is_a_genai_span_without_its_text(tmp_path: Path) -> None:
    _Collector.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    _findings(tmp_path / "findings")  # ACCOUNT is flagged (as its keyed token): blocked
    flagged = tmp_path / "findings" / "accounts.parquet"
    table = pq.read_table(flagged)
    token = pa.array([Pseudonymiser(KEY).token(ACCOUNT)], table.schema.field("account_id").type)
    pq.write_table(table.set_column(0, table.schema.field("account_id"), token), flagged)

    async def check(client: Client) -> None:
        assert (await client.post("/v1/chat/completions", json=CHAT, headers=OTHER)).status == 200
        assert (await client.post("/v1/chat/completions", json=CHAT, headers=AUTH)).status == 403
        failing = {**CHAT, "model": "boom"}  # the upstream answers 500: the client gets 502
        r = await client.post("/v1/chat/completions", json=failing, headers=OTHER)
        assert r.status == 502

    try:
        findings = str(tmp_path / "findings")
        _run(tmp_path, check, otel_endpoint=endpoint, findings=findings, key=KEY)
    finally:
        server.shutdown()
        server.server_close()
    assert _Collector.bodies, "no spans reached the collector"
    assert not any(b"Write a sort" in body for body in _Collector.bodies)
    documents = [
        MessageToDict(ExportTraceServiceRequest.FromString(body)) for body in _Collector.bodies
    ]
    spans = [
        span
        for d in documents
        for r in d["resourceSpans"]
        for s in r["scopeSpans"]
        for span in s["spans"]
    ]
    decisions = {
        a["key"]: a["value"] for span in spans for a in span["attributes"] if "decision" in a["key"]
    }
    assert len(spans) == 3 and decisions  # every request, the blocked and failed ones too
    rows = [row for d in documents for row in OtelAdapter().rows(d)]
    by_status = {row["status"]: row for row in rows if isinstance(row, dict)}
    assert set(by_status) == {200, 403, 502}
    blocked, allowed = by_status[403], by_status[200]
    keyed = Pseudonymiser(KEY)
    assert blocked["account_id"] == keyed.token(ACCOUNT) != ACCOUNT
    assert allowed["model"] == "m" and allowed["operation"] == "chat"
    assert allowed["prompt_text"] is None and allowed["ip"] == keyed.prefix("127.0.0.1")
    assert not any(b"127.0.0." in body for body in _Collector.bodies)
    assert allowed["input_tokens"] == 5 and allowed["output_tokens"] == 2
