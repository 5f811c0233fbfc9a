"""Which of the batch campaigns' template fingerprints the gateway's prompts carry,
found off the request path.

A template fingerprint is an LSH band key of a prompt's skeleton (features/template.py):
the same Arrow code as batch detection, so the keys are identical. One prompt at a time
that code costs milliseconds (each Arrow regular-expression call compiles its pattern);
a batch of prompts costs about the same. So prompts are queued and their band keys
computed in batches a few times a second, in a separate process when the gateway serves
(in a thread the work held the GIL long enough to push a competing thread's p99 wait
from 0.7 to 5.7 ms), which also looks the keys up among the fingerprints; the serving
process adds the few hits to their accounts' state, where the evidence counts from the
account's next request on. It is cumulative evidence (three fingerprints or more), so
one request of delay changes nothing for a campaign account sending hundreds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterable
from concurrent.futures import Executor

import numpy as np
import pyarrow as pa

from distillguard.features.template import band_keys, signatures
from distillguard.gateway.findings import Findings
from distillguard.gateway.state import Store

log = logging.getLogger("distillguard.gateway")
MATCH_SECONDS = 0.25  # each batch costs ~4 ms of pattern compiling: not too many
MAX_QUEUED = 50_000  # prompts waiting; past this, new ones are not matched (and logged)


def in_background() -> None:
    """The matching process yields the CPU to the serving one: it works in bursts of
    tens of milliseconds, and on a small machine a request waiting behind such a burst
    is a slow request. Lower priority, not idle-only: under full load it still matches.
    Where priorities cannot be changed (no `os.nice`), it runs as it is."""
    with contextlib.suppress(AttributeError, OSError):
        os.nice(10)


def keys_of(prompts: list[str]) -> np.ndarray:
    """The LSH band keys (prompts x bands, uint64) of each prompt's skeleton, computed
    once per distinct prompt: chat repeats itself and harvests resend items, and the
    matching process shares the machine with the serving one."""
    encoded = pa.array(prompts, pa.string()).dictionary_encode()
    distinct = band_keys(signatures(encoded.dictionary))
    return distinct[encoded.indices.to_numpy(zero_copy_only=False)]


def carried(prompts: list[str], known: np.ndarray) -> list[tuple[int, list[str]]]:
    """(position, fingerprints) of each prompt that carries any of the `known` band keys
    (numbers, from `numbers`). Run in the matching process, so that only the few hits
    cross back: looking every prompt's keys up in the serving process held its event
    loop up to 3.7 ms a batch (measured at 1,000 requests a second)."""
    if not prompts:
        return []
    keys = keys_of(prompts)
    hits = np.isin(keys, known)
    return [
        (int(i), [f"{int(k):016x}" for k in keys[i][hits[i]]])
        for i in np.flatnonzero(hits.any(axis=1))
    ]


def numbers(fingerprints: Iterable[str]) -> np.ndarray:
    """Fingerprints (hex band keys) as the numbers `carried` compares."""
    return np.array([int(f, 16) for f in fingerprints], dtype=np.uint64)


class Matcher:
    """Queues (account, prompt) pairs and matches them in batches in `executor` (a
    process pool when serving) or, without one, a thread."""

    def __init__(self, store: Store, findings: Findings, executor: Executor | None = None) -> None:
        self.store = store
        self.findings = findings  # read at each batch: findings are reloaded
        self.executor = executor
        self.queue: list[tuple[str, str]] = []
        self.dropped = 0
        self.scheduled = False  # a batch is waiting or being matched: the next one waits
        self._known = (-1, numbers({}))  # the fingerprints as numbers, per findings load

    def warm(self) -> None:
        """Load the compiled MinHash code and Arrow's kernels now, at start-up, rather
        than in the first batch while requests are being served."""
        if self.executor is None:
            keys_of(["warm up"])
        else:
            self.executor.submit(keys_of, ["warm up"]).result()

    def submit(self, loop: asyncio.AbstractEventLoop, account: str, prompt: str) -> None:
        if len(self.queue) >= MAX_QUEUED:
            self.dropped += 1
            return
        self.queue.append((account, prompt))
        if not self.scheduled:
            self._schedule(loop)

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        self.scheduled = True
        loop.call_later(MATCH_SECONDS, lambda: loop.create_task(self._match()))

    async def _match(self) -> None:
        try:
            await self._match_queued()
        finally:
            self.scheduled = False
            if self.queue:  # what came meanwhile: the next batch, after the same wait
                self._schedule(asyncio.get_running_loop())

    async def _match_queued(self) -> None:
        batch, self.queue = self.queue, []
        if self.dropped:
            log.warning("template matching behind: %d prompts not matched", self.dropped)
            self.dropped = 0
        if self._known[0] != self.findings.loads:
            self._known = (self.findings.loads, numbers(self.findings.fingerprints))
        if not len(self._known[1]):
            return  # findings without fingerprints: nothing to look for
        loop = asyncio.get_running_loop()
        prompts = [p for _, p in batch]
        try:
            found = await loop.run_in_executor(self.executor, carried, prompts, self._known[1])
        except Exception:  # a bug here must not stop the gateway; it is logged
            log.exception("template matching failed for %d prompts", len(batch))
            return
        carrying = [(batch[i][0], hits) for i, hits in found]
        if carrying:
            try:
                self.store.add_fingerprints(carrying)
            except Exception as exc:  # a shared store that is down: this evidence is lost
                log.warning("state store unavailable: %s", type(exc).__name__)
