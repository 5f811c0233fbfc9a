"""The gateway's scoring and policies as a LiteLLM guardrail, for providers who already
run the LiteLLM proxy (`pip install 'distillguard[litellm]'`).

In the proxy's config:

    guardrails:
      - guardrail_name: distillguard
        litellm_params:
          guardrail: distillguard.gateway.litellm_plugin.DistillguardGuardrail
          mode: [pre_call, post_call]
          default_on: true

and DISTILLGUARD_FINDINGS / DISTILLGUARD_POLICY in the proxy's environment name the
findings folder (reloaded when it changes) and the policy file. Before a call: block,
step-up and throttle end the request with the status the gateway would give; after it,
`withhold_reasoning` takes the reasoning out of the response.
"""

from __future__ import annotations

import os
import time
from typing import Any

from fastapi import HTTPException
from litellm.integrations.custom_guardrail import CustomGuardrail

from distillguard.gateway import api, policy
from distillguard.gateway.findings import Findings
from distillguard.gateway.scoring import Scorer
from distillguard.gateway.state import MemoryStore, Store
from distillguard.privacy import Pseudonymiser, load_key

STATUS = {"block": 403, "step_up": 403, "throttle": 429}
RELOAD_SECONDS = 5.0


class DistillguardGuardrail(CustomGuardrail):
    def __init__(
        self,
        findings: str | None = None,
        policy_file: str | None = None,
        redis: str | None = None,
        key_file: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        store: Store = MemoryStore()
        if redis or os.environ.get("DISTILLGUARD_REDIS"):
            from distillguard.gateway.state import RedisStore

            store = RedisStore(redis or os.environ["DISTILLGUARD_REDIS"])
        key_path = key_file or os.environ.get("DISTILLGUARD_KEY_FILE")
        self.scorer = Scorer(
            policy.load(policy_file or os.environ.get("DISTILLGUARD_POLICY")),
            store,
            Findings(findings or os.environ.get("DISTILLGUARD_FINDINGS")),
            Pseudonymiser(load_key(key_path) if key_path else None),
        )
        self.scorer.findings.refresh()
        self._checked = time.monotonic()
        self._withhold: set[str] = set()

    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict[str, Any], call_type: str
    ) -> dict[str, Any]:
        if time.monotonic() - self._checked > RELOAD_SECONDS:
            self.scorer.findings.refresh()
            self._checked = time.monotonic()
        account = str(getattr(user_api_key_dict, "api_key", None) or "anonymous")
        prompt = _prompt(data)
        headers = (data.get("proxy_server_request") or {}).get("headers") or {}
        agent = headers.get("user-agent", "")
        address = str((data.get("metadata") or {}).get("requester_ip_address") or "")
        decision = self.scorer.decide(account, prompt, agent, address)
        if decision.action in STATUS:
            raise HTTPException(
                status_code=STATUS[decision.action],
                detail={"error": decision.reason, "action": decision.action},
                headers={"Retry-After": str(decision.retry_after)}
                if decision.action == "throttle"
                else None,
            )
        if decision.action == "withhold_reasoning":
            data.setdefault("metadata", {})["distillguard_withhold_reasoning"] = True
        return data

    async def async_post_call_success_hook(
        self, data: dict[str, Any], user_api_key_dict: Any, response: Any
    ) -> Any:
        if not (data.get("metadata") or {}).get("distillguard_withhold_reasoning"):
            return response
        for choice in getattr(response, "choices", None) or []:
            message = getattr(choice, "message", None)
            for field in api.REASONING_KEYS:
                if message is not None and getattr(message, field, None) is not None:
                    setattr(message, field, None)
        return response


def _prompt(data: dict[str, Any]) -> str:
    messages = data.get("messages")
    if isinstance(messages, list):
        return api.last_user([m for m in messages if isinstance(m, dict)])
    return api.text_of(data.get("input") or data.get("prompt") or "")
