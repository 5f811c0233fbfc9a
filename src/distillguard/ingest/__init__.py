"""Ingestion of real LLM-API logs into the canonical store.

The pipeline is imported when first asked for: the CLI lists the adapters' formats
for every command, and the pipeline's libraries (Arrow datasets, pandas through them)
took most of a second of each command's start."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distillguard.ingest.pipeline import Options, Summary, ingest

__all__ = ["Options", "Summary", "ingest"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from distillguard.ingest import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
