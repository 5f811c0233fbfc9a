"""Exchange content features: a pure function from an Arrow batch to an Arrow batch.

The same function runs in a local process pool and inside Spark's `mapInArrow`, so it
takes only columns of the canonical exchanges table and returns one row per input row:

    request_id        the exchange
    capability        coding, agentic, math_reasoning, grading, translation, creative,
                      chain_of_thought or general_chat
    cot_score         0..1: how hard the request asks for the model's reasoning
    template_sig      MinHash signature (64 x uint32) of the prompt's skeleton
    template_bands    LSH band keys (21 x uint64); 0 means no prompt
    system_hash       hex BLAKE2b-64 of the exact system prompt, null without one
    prompt_hash       64-bit hash of the exact prompt, null without one: text that many
                      senders send verbatim (greetings, public benchmarks) is told apart
                      from a template filled by one sender
    prompt_chars      length of the prompt in characters
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from distillguard.features.capability import label, text_scores
from distillguard.features.template import (
    BANDS,
    NUM_PERM,
    band_keys,
    signatures,
    text_hashes,
)

FEATURES = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("capability", pa.string()),
        pa.field("cot_score", pa.float32()),
        pa.field("template_sig", pa.list_(pa.uint32(), NUM_PERM)),
        pa.field("template_bands", pa.list_(pa.uint64(), BANDS)),
        pa.field("system_hash", pa.string()),
        pa.field("prompt_hash", pa.uint64()),
        pa.field("prompt_chars", pa.int32()),
    ]
)
INPUT_COLUMNS = (
    "request_id",
    "prompt_text",
    "system_text",
    "tools_declared",
    "reasoning_requested",
    "max_tokens",
)


def featurise(batch: pa.RecordBatch | pa.Table) -> pa.RecordBatch:
    """Content features of each exchange in `batch` (see the module docstring)."""

    def column(name: str) -> pa.Array | None:
        if name not in batch.schema.names:
            return None
        values = batch.column(name)
        return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values

    prompts = column("prompt_text")
    if prompts is None:
        prompts = pa.nulls(batch.num_rows, pa.string())
    # Harvests and chat both repeat prompts: each distinct text is featurised once.
    encoded = pc.dictionary_encode(pc.fill_null(prompts, ""))
    texts, index = encoded.dictionary, encoded.indices.to_numpy()
    lowered = pc.utf8_lower(texts)
    scores, cot_hits = text_scores(lowered, lowered=True)
    capability, cot = label(
        scores[index],
        cot_hits[index],
        column("tools_declared"),
        column("reasoning_requested"),
        column("max_tokens"),
    )
    sigs = signatures(lowered, lowered=True, cot=cot_hits > 0)
    bands = band_keys(sigs)[index]
    sigs = sigs[index]
    system = column("system_text")
    arrays = [
        column("request_id"),
        capability,
        cot,
        pa.FixedSizeListArray.from_arrays(pa.array(sigs.ravel(), pa.uint32()), NUM_PERM),
        pa.FixedSizeListArray.from_arrays(pa.array(bands.ravel(), pa.uint64()), BANDS),
        _hashes(system) if system is not None else pa.nulls(batch.num_rows, pa.string()),
        _prompt_hashes(texts, index, prompts.is_null()),
        pa.array(pc.utf8_length(texts).to_numpy()[index], pa.int32()),
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=FEATURES)


def _hashes(texts: pa.Array) -> pa.Array:
    """Exact fingerprints of texts, computing each distinct text's hash once."""
    encoded = pc.dictionary_encode(texts)
    digests = [
        hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
        if t is not None
        else None
        for t in encoded.dictionary.to_pylist()
    ]
    table = pa.array(digests, pa.string())
    indices = encoded.indices
    return pc.take(table, indices) if len(table) else pa.nulls(len(texts), pa.string())


def _prompt_hashes(texts: pa.Array, index: np.ndarray, missing: pa.Array) -> pa.Array:
    """The hash of each distinct text, spread to its rows; null where no prompt."""
    distinct = text_hashes(texts)
    return pa.array(distinct[index], pa.uint64(), mask=missing.to_numpy(zero_copy_only=False))


def signature_matrix(features: pa.Table | pa.RecordBatch) -> np.ndarray:
    """The template signatures of a features table as a (rows x 64) uint32 matrix."""
    column = features.column("template_sig")
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.flatten().to_numpy().reshape(-1, NUM_PERM)
