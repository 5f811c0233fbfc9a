"""Which of the batch campaigns' template fingerprints the gateway's prompts carry,
found off the request path.

A template fingerprint is an LSH band key of a prompt's skeleton (features/template.py):
the same Arrow code as batch detection, so the keys are identical. One prompt at a time
that code costs milliseconds (each Arrow regular-expression call compiles its pattern);
a batch of prompts costs about the same, and Arrow releases the GIL while it works. So
prompts are queued, matched in a worker thread a few times a second, and their
fingerprints added to their accounts' state: the evidence counts from the account's
next request on. It is cumulative evidence (three fingerprints or more), so one request
of delay changes nothing for a campaign account sending hundreds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import pyarrow as pa

from distillguard.features.template import band_keys, signatures, skeleton
from distillguard.gateway.findings import Findings
from distillguard.gateway.state import Store

log = logging.getLogger("distillguard.gateway")
MATCH_SECONDS = 0.25  # each batch costs ~4 ms of pattern compiling: not too many
MAX_QUEUED = 50_000  # prompts waiting; past this, new ones are not matched (and logged)


def carried(prompts: list[str], fingerprints: Mapping[str, str]) -> list[list[str]]:
    """Per prompt, the fingerprints (hex band keys) it carries among `fingerprints`."""
    if not prompts:
        return []
    keys = band_keys(signatures(skeleton(pa.array(prompts, pa.string()))))
    return [[k for k in (f"{int(b):016x}" for b in row) if k in fingerprints] for row in keys]


class Matcher:
    """Queues (account, prompt) pairs and matches them in batches in a worker thread."""

    def __init__(self, store: Store, findings: Findings) -> None:
        self.store = store
        self.findings = findings  # read at each batch: findings are reloaded
        self.queue: list[tuple[str, str]] = []
        self.dropped = 0

    @staticmethod
    def warm() -> None:
        """Load the compiled MinHash code and Arrow's kernels now, at start-up, rather
        than in the first batch while requests are being served."""
        carried(["warm up"], {})

    def submit(self, loop: asyncio.AbstractEventLoop, account: str, prompt: str) -> None:
        if len(self.queue) >= MAX_QUEUED:
            self.dropped += 1
            return
        if not self.queue:
            loop.call_later(MATCH_SECONDS, lambda: loop.create_task(self._match()))
        self.queue.append((account, prompt))

    async def _match(self) -> None:
        batch, self.queue = self.queue, []
        if self.dropped:
            log.warning("template matching behind: %d prompts not matched", self.dropped)
            self.dropped = 0
        fingerprints = self.findings.fingerprints
        try:
            found = await asyncio.to_thread(carried, [p for _, p in batch], fingerprints)
        except Exception:  # a bug here must not stop the gateway; it is logged
            log.exception("template matching failed for %d prompts", len(batch))
            return
        carrying = [
            (account, keys) for (account, _), keys in zip(batch, found, strict=True) if keys
        ]
        if carrying:
            try:
                self.store.add_fingerprints(carrying)
            except Exception as exc:  # a shared store that is down: this evidence is lost
                log.warning("state store unavailable: %s", type(exc).__name__)
