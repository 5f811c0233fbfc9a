"""The LiteLLM guardrail decides as the gateway does (LiteLLM imported, not mocked)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network at import
litellm = pytest.importorskip("litellm", reason="the litellm extra is not installed")

from fastapi import HTTPException  # noqa: E402
from litellm.proxy._types import UserAPIKeyAuth  # noqa: E402
from litellm.types.utils import ModelResponse  # noqa: E402

from distillguard.gateway.litellm_plugin import DistillguardGuardrail  # noqa: E402
from tests.test_gateway import _findings  # noqa: E402

CHAT = {"messages": [{"role": "user", "content": "Explain step by step."}], "metadata": {}}


def _guardrail(findings: Path) -> DistillguardGuardrail:
    return DistillguardGuardrail(findings=str(findings), guardrail_name="distillguard")


def test_a_flagged_key_is_blocked_before_the_call(tmp_path: Path) -> None:
    import hashlib

    _findings(tmp_path / "f", score=0.95)
    guard = _guardrail(tmp_path / "f")
    key = hashlib.sha256(b"sk-test-farm-001").hexdigest()[:16]  # as the gateway names it
    with pytest.raises(HTTPException) as blocked:
        asyncio.run(
            guard.async_pre_call_hook(UserAPIKeyAuth(api_key=key), None, dict(CHAT), "acompletion")
        )
    assert blocked.value.status_code == 403
    other = asyncio.run(
        guard.async_pre_call_hook(
            UserAPIKeyAuth(api_key="someone"), None, dict(CHAT), "acompletion"
        )
    )
    assert other["messages"] == CHAT["messages"]


def test_reasoning_is_taken_out_of_the_response(tmp_path: Path) -> None:
    import hashlib

    _findings(tmp_path / "f", score=0.8)
    guard = _guardrail(tmp_path / "f")
    key = hashlib.sha256(b"sk-test-farm-001").hexdigest()[:16]
    data = asyncio.run(
        guard.async_pre_call_hook(
            UserAPIKeyAuth(api_key=key), None, {**CHAT, "metadata": {}}, "acompletion"
        )
    )
    response = ModelResponse(
        choices=[{"message": {"role": "assistant", "content": "ok", "reasoning_content": "why"}}]
    )
    out = asyncio.run(guard.async_post_call_success_hook(data, None, response))
    message = out.choices[0].message
    assert message.content == "ok" and getattr(message, "reasoning_content", None) is None
