"""The digest of an exchange: what detection needs of it, without its text.

Detection reads an exchange's text once, to compute its content features; every later
stage needs only the digest: the exchange's metadata and those features. Digests are
written per input file and may be kept between runs (`detect --cache`), so a nightly
run featurises only the new day and never re-reads the text of history.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from distillguard.features.content import FEATURES, INPUT_COLUMNS, featurise
from distillguard.schema import EXCHANGES

# Bump when the features or this schema change: cached digests are then recomputed.
VERSION = 4  # 2: word hashes by the compiled tokeniser; 3: compiled prompt hashes;
# 4: masks in the compiled scan, as one pass
KEPT = (
    "request_id",
    "ts",
    "account_id",
    "model",
    "end_user_id",
    "ip_prefix",
    "user_agent",
    "input_tokens",
    "output_tokens",
    "reasoning_requested",
    "max_tokens",
    "tools_declared",
    "turn_index",
    "status",
)
FEATURED = ("capability", "cot_score", "template_bands", "system_hash", "prompt_hash")
DIGEST = pa.schema([EXCHANGES.field(n) for n in KEPT] + [FEATURES.field(n) for n in FEATURED])
READ = tuple(dict.fromkeys(KEPT + INPUT_COLUMNS))  # the columns a digest is made from


def digest(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The digest of each exchange in `batch`, which holds the READ columns."""
    features = featurise(batch)
    kept = [pc.cast(batch.column(n), DIGEST.field(n).type) for n in KEPT]
    return pa.RecordBatch.from_arrays(kept + [features.column(n) for n in FEATURED], schema=DIGEST)
