"""Ingestion of real LLM-API logs into the canonical store."""

from distillguard.ingest.pipeline import Options, Summary, ingest

__all__ = ["Options", "Summary", "ingest"]
