"""Template fingerprints: what stays of a prompt when its variable parts are masked.

A campaign fills a few templates with slot values; a legitimate user writes free text.
The skeleton (numbers, quoted strings, code, addresses masked; lower case) of two
prompts from one template is nearly the same, so their MinHash signatures agree in most
positions and they share LSH band keys, which link accounts without comparing all pairs.

Arrow does the masking and tokenising in C++, tokens are hashed once per distinct
token, NumPy forms the shingles and a compiled Numba loop takes the minima. Hashes are computed
here, never by an engine, so DuckDB and Spark runs get identical keys.
"""

from __future__ import annotations

import hashlib

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from distillguard.features.capability import COT_PATTERNS

NUM_PERM = 64
ROWS = 3  # 21 bands of 3: prompts at Jaccard 0.45 share a band 87 % of the time, at
BANDS = NUM_PERM // ROWS  # 0.2 16 %, at 0.1 2 % (1 - (1 - J**ROWS) ** BANDS)
SHINGLE = 2
SEED = 20260422
EMPTY = np.uint32(0xFFFFFFFF)

MASKS = [  # order matters: code before quotes, quotes before numbers
    (r"```[\s\S]*?```", " <code> "),
    (r"`[^`\n]+`", " <code> "),
    (r"https?://\S+", " <url> "),
    (r"[\w.+-]+@[\w-]+\.[\w.]+", " <email> "),
    (r"\b[0-9a-f]{8,}\b", " <hex> "),
    (r"\"[^\"\n]{1,200}\"|'[^'\n]{1,200}'", " <quote> "),
    (r"\d+(?:[.,]\d+)*", " <n> "),
    (r"[^\p{L}\p{N}_<>\s]+", " "),  # punctuation; letters of every script stay
]

COT_SENTENCE = r"[^.!?\n]*(" + "|".join(COT_PATTERNS) + r")[^.!?\n]*[.!?]?"

_rng = np.random.default_rng(SEED)
_A = (_rng.integers(1, 2**63, NUM_PERM, dtype=np.uint64) << np.uint64(1)) | np.uint64(1)
_B = _rng.integers(0, 2**63, NUM_PERM, dtype=np.uint64)
_MIX = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9], dtype=np.uint64)


def skeleton(texts: pa.Array) -> pa.Array:
    """Lower-cased text with its variable parts replaced by placeholders.

    Requests to show the reasoning are masked too: they are stock phrases shared by
    every harvesting template and by researchers' benchmark prompts, so left in they
    would link unrelated groups; the chain-of-thought score measures them instead.
    """
    out = pc.utf8_lower(texts)
    out = pc.replace_substring_regex(out, pattern=COT_SENTENCE, replacement=" <cot> ")
    for pattern, replacement in MASKS:
        out = pc.replace_substring_regex(out, pattern=pattern, replacement=replacement)
    return out


def signatures(skeletons: pa.Array) -> np.ndarray:
    """MinHash signatures (rows x NUM_PERM, uint32) of word bigrams; empty text gets
    the all-ones signature, which matches nothing else."""
    tokens = _words(skeletons)
    raw = pc.fill_null(pc.list_value_length(tokens), 0).to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(tokens)
    keep = pc.not_equal(flat, "").to_numpy(zero_copy_only=False)  # "" splits into [""]
    owners = np.repeat(np.arange(len(raw)), raw.astype(np.int64))
    lengths = np.bincount(owners[keep], minlength=len(raw)).astype(np.int64)
    flat = flat.filter(pa.array(keep))
    hashes = _token_hashes(flat)
    shingles, owners = _shingles(hashes, lengths)
    out = np.full((len(lengths), NUM_PERM), EMPTY, dtype=np.uint32)
    _minhash(shingles, owners, out)
    return out


WHITESPACE = r"[\s\x{0b}\x{1c}-\x{1f}\x{85}\p{Z}]+"  # what str.split() splits on


def _words(texts: pa.Array) -> pa.Array:
    """Each text's words. Not `utf8_split_whitespace`: in pyarrow 26 it sometimes keeps
    a trailing space on a text's last word, depending on the bytes after the text
    (found by a property test), which made signatures depend on batch neighbours."""
    spaced = pc.replace_substring_regex(texts, pattern=WHITESPACE, replacement=" ")
    return pc.split_pattern(pc.utf8_trim(spaced, characters=" "), pattern=" ")


def band_keys(sigs: np.ndarray) -> np.ndarray:
    """LSH band keys (rows x BANDS, uint64): two prompts share a key when one band of
    their signatures is identical. Empty signatures get key 0, which is never linked."""
    bands = sigs[:, : BANDS * ROWS].reshape(len(sigs), BANDS, ROWS).astype(np.uint64)
    keys = np.zeros((len(sigs), BANDS), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for r in range(ROWS):
            keys = (keys ^ bands[:, :, r]) * np.uint64(0x100000001B3)
        keys ^= np.arange(BANDS, dtype=np.uint64) * _MIX[0]
    keys[(sigs == EMPTY).all(axis=1)] = 0
    return keys


def _token_hashes(flat: pa.Array) -> np.ndarray:
    """64-bit hashes of every token, hashing each distinct token once."""
    if len(flat) == 0:
        return np.zeros(0, dtype=np.uint64)
    encoded = pc.dictionary_encode(flat)
    vocabulary = encoded.dictionary.to_pylist()
    table = np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little")
            for t in vocabulary
        ),
        dtype=np.uint64,
        count=len(vocabulary),
    )
    return table[encoded.indices.to_numpy(zero_copy_only=False)]


def _shingles(hashes: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of consecutive token pairs inside each text (single tokens for texts
    shorter than a shingle), and the row each belongs to."""
    owners = np.repeat(np.arange(len(lengths)), lengths)
    if len(hashes) == 0:
        return hashes, owners
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    position = np.arange(len(hashes)) - starts
    row_length = lengths[owners]
    combined = hashes.copy()
    with np.errstate(over="ignore"):
        for offset in range(1, SHINGLE):
            shifted = np.zeros_like(hashes)
            shifted[:-offset] = hashes[offset:]
            combined = combined * _MIX[offset] + shifted
    short = row_length < SHINGLE
    keep = short | (position + SHINGLE <= row_length)
    values = np.where(short, hashes, combined)
    return values[keep], owners[keep]


def _minhash(shingles: np.ndarray, owners: np.ndarray, out: np.ndarray) -> None:
    """Per row, the minimum over its shingles of each multiply-shift permutation."""
    if len(shingles):
        _minhash_kernel(shingles, owners.astype(np.int64), _A, _B, out)


@numba.njit(cache=True, nogil=True)
def _minhash_kernel(
    shingles: np.ndarray, owners: np.ndarray, a: np.ndarray, b: np.ndarray, out: np.ndarray
) -> None:  # pragma: no cover - compiled
    # The hot loop of featurisation, compiled: one pass over the shingles, 64 multiply-
    # adds each (wrapping modulo 2**64), keeping the high word's minimum per row.
    for i in range(shingles.shape[0]):
        x = shingles[i]
        row = owners[i]
        for p in range(a.shape[0]):
            value = np.uint32((a[p] * x + b[p]) >> np.uint64(32))
            if value < out[row, p]:
                out[row, p] = value


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Estimated Jaccard similarity of two signatures."""
    return float(np.mean(a == b))
