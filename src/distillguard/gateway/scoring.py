"""One request's decision, the same in the gateway and in the LiteLLM plugin: what the
exchange adds to its account's state, the account's verdict against the batch findings,
and the policy's answer. A state store that fails gets the policy's fail-open or
fail-closed answer, never an exception."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import lru_cache

import pyarrow as pa

from distillguard.features.capability import COT_PATTERNS
from distillguard.features.template import band_keys, signatures, skeleton
from distillguard.gateway.findings import Findings
from distillguard.gateway.policy import Decision, Policy
from distillguard.gateway.state import Seen, Store, verdict
from distillguard.privacy import Pseudonymiser, network
from distillguard.profile.accounts import SCRIPTED_AGENTS

log = logging.getLogger("distillguard.gateway")
COT = re.compile("|".join(COT_PATTERNS), re.IGNORECASE)
SCRIPTED = re.compile(SCRIPTED_AGENTS, re.IGNORECASE)
_network = lru_cache(maxsize=1 << 16)(network)  # clients come back from the same addresses


@dataclass
class Scorer:
    policy: Policy
    store: Store
    findings: Findings
    pseudonymiser: Pseudonymiser

    def decide(self, account: str, prompt: str, agent: str, address: str) -> Decision:
        ident = self.pseudonymiser.token(account)
        seen = Seen(
            ident, bool(COT.search(prompt)), bool(SCRIPTED.match(agent)), self._bands(prompt)
        )
        try:
            profile = self.store.add(seen)
        except Exception as exc:  # a shared store that is down: the policy says open or closed
            log.warning("state store unavailable: %s", type(exc).__name__)
            return self.policy.unavailable("the state store")
        prefix = _network(address) or ""
        found = verdict(
            profile, self.findings.accounts.get(ident), (prefix, agent) in self.findings.networks
        )
        return self.policy.decide(found.score, found.flagged, found.evidence)

    def _bands(self, prompt: str) -> list[str]:
        """The batch campaigns' template fingerprints this prompt carries."""
        if not self.findings.fingerprints or not prompt:
            return []
        keys = (f"{int(b):016x}" for b in band_keys(signatures(skeleton(pa.array([prompt]))))[0])
        return [k for k in keys if k in self.findings.fingerprints]
