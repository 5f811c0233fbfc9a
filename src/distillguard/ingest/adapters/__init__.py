"""Adapters turn one product's log record into canonical rows.

An adapter has a `name`, the `table` it fills, `sniff(record) -> bool` to recognise
its format from content, and `rows(record)` yielding, per exchange in the record, a
dict of canonical fields (values still raw), a Reject with a reason, or None for a
record that is not an exchange (a tool span, a trace). Partial rows that must be joined
across files carry `_join_key` and `_side` ('a' main, 'b' companion, 'ctx' context).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from distillguard.ingest.adapters.bedrock import BedrockAdapter
from distillguard.ingest.adapters.common import Reject
from distillguard.ingest.adapters.helicone import HeliconeAdapter
from distillguard.ingest.adapters.langfuse import LangfuseAdapter
from distillguard.ingest.adapters.litellm import PayloadAdapter, SpendLogsAdapter
from distillguard.ingest.adapters.mapped import CanonicalAdapter, MappedAdapter
from distillguard.ingest.adapters.openai_batch import OpenAIBatchAdapter
from distillguard.ingest.adapters.otel import OtelAdapter

__all__ = ["FORMATS", "Adapter", "Reject", "detect", "make"]


class Adapter(Protocol):
    name: str
    table: str

    def sniff(self, value: Any) -> bool: ...

    def rows(self, value: Any) -> Iterator[dict[str, Any] | Reject | None]: ...


# Sniffing order: the most specific signatures first, canonical last.
FORMATS: dict[str, type] = {
    "otel": OtelAdapter,
    "bedrock": BedrockAdapter,
    "openai-batch": OpenAIBatchAdapter,
    "litellm-spendlogs": SpendLogsAdapter,
    "litellm-payload": PayloadAdapter,
    "helicone": HeliconeAdapter,
    "langfuse": LangfuseAdapter,
    "canonical": CanonicalAdapter,
}


def make(name: str, table: str = "exchanges") -> Adapter:
    if name == "canonical":
        return CanonicalAdapter(table)
    adapter: Adapter = FORMATS[name]()
    return adapter


def detect(samples: list[Any], table: str = "exchanges") -> Adapter | None:
    """The adapter that recognises most of the sample records, or None."""
    candidates = [make(n, table) for n in FORMATS if table == "exchanges" or n == "canonical"]
    best, hits = None, 0
    for adapter in candidates:
        score = sum(1 for s in samples if adapter.sniff(s))
        if score > hits:
            best, hits = adapter, score
    return best


__all__ += ["MappedAdapter"]
