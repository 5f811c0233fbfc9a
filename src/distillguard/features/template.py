"""Template fingerprints: what stays of a prompt when its variable parts are masked.

A campaign fills a few templates with slot values; a legitimate user writes free text.
The skeleton (numbers, quoted strings, code, addresses masked; lower case) of two
prompts from one template is nearly the same, so their MinHash signatures agree in most
positions and they share LSH band keys, which link accounts without comparing all pairs.

Arrow does the masking in C++; compiled Numba loops split the skeletons into words and
hash them in one pass over the bytes, then form the word-pair shingles and take the
minima in another. A word is a run of letters, digits (of any script), `_`, `<` and
`>`: everything else separates words, so punctuation needs no masking pass of its own.
Hashes are computed here, never by an engine, so DuckDB and Spark runs get identical
keys.
"""

from __future__ import annotations

import functools

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
]

COT_SENTENCE = r"[^.!?\n]*(" + "|".join(COT_PATTERNS) + r")[^.!?\n]*[.!?]?"

_rng = np.random.default_rng(SEED)
_A = (_rng.integers(1, 2**63, NUM_PERM, dtype=np.uint64) << np.uint64(1)) | np.uint64(1)
_B = _rng.integers(0, 2**63, NUM_PERM, dtype=np.uint64)
_MIX = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9], dtype=np.uint64)


def skeleton(texts: pa.Array, *, lowered: bool = False, cot: np.ndarray | None = None) -> pa.Array:
    """Lower-cased text with its variable parts replaced by placeholders.

    Requests to show the reasoning are masked too: they are stock phrases shared by
    every harvesting template and by researchers' benchmark prompts, so left in they
    would link unrelated groups; the chain-of-thought score measures them instead.
    A caller that has lower-cased the texts already, or knows which rows ask for the
    reasoning (`cot`, a boolean per row: the chain-of-thought patterns match), saves
    those passes.
    """
    out = texts if lowered else pc.utf8_lower(texts)
    if cot is None:
        out = pc.replace_substring_regex(out, pattern=COT_SENTENCE, replacement=" <cot> ")
    elif cot.any():
        rows = pa.array(np.flatnonzero(cot))
        masked = pc.replace_substring_regex(
            out.take(rows), pattern=COT_SENTENCE, replacement=" <cot> "
        )
        out = pc.replace_with_mask(out, pa.array(cot), masked)
    for pattern, replacement in MASKS:
        out = pc.replace_substring_regex(out, pattern=pattern, replacement=replacement)
    return out


def signatures(skeletons: pa.Array) -> np.ndarray:
    """MinHash signatures (rows x NUM_PERM, uint32) of word bigrams; empty text gets
    the all-ones signature, which matches nothing else."""
    raw, ends = _buffers(skeletons)
    hashes = np.empty(int(ends[-1] - ends[0]) + 1, dtype=np.uint64)
    lengths = np.zeros(len(skeletons), dtype=np.int64)
    _tokens_kernel(raw, ends, hashes, lengths, _word_table())
    out = np.full((len(lengths), NUM_PERM), EMPTY, dtype=np.uint32)
    _minhash_kernel(hashes, lengths, _A, _B, _MIX[1:SHINGLE], out)
    return out


def text_hashes(texts: pa.Array) -> np.ndarray:
    """A 64-bit hash of each whole text's UTF-8 bytes (FNV-1a, then the SplitMix64
    finaliser; null hashes as empty): exact-copy detection needs identity, not a
    cryptographic digest, and BLAKE2b through Python cost a tenth of featurisation."""
    raw, ends = _buffers(texts)
    out = np.empty(len(texts), dtype=np.uint64)
    _text_hashes_kernel(raw, ends, out)
    return out


def _buffers(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The UTF-8 bytes of `texts` (nulls as empty) and each text's offsets into them."""
    texts = pc.fill_null(texts.cast(pa.large_string()), "")
    _, offsets, data = texts.buffers()
    ends = np.frombuffer(offsets, dtype=np.int64)[texts.offset : texts.offset + len(texts) + 1]
    raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    return raw, ends


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


# Token hashes: FNV-1a over a word's UTF-8 bytes, then the SplitMix64 finaliser.
FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)


def _token_hashes(tokens: pa.Array) -> np.ndarray:
    """The hash of each token as the compiled loop computes it: the definition, for
    tests."""
    mask = 2**64 - 1
    out = []
    for token in tokens.to_pylist():
        h = int(FNV_OFFSET)
        for byte in token.encode("utf-8", "surrogatepass"):
            h = ((h ^ byte) * int(FNV_PRIME)) & mask
        h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & mask
        h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & mask
        out.append(h ^ (h >> 31))
    return np.array(out, dtype=np.uint64)


@functools.cache
def _word_table() -> np.ndarray:
    """Per Unicode code point, whether it is part of a word: a letter or a digit
    (categories L and N), or `_`, `<`, `>` (of the placeholders). Letters and digits are
    by the tables of the engine that runs the masks (Arrow's RE2), not by this Python's
    `unicodedata`, whose Unicode version changes with the Python release: producers on
    different Pythons must get the same fingerprints. Planes 4 and up hold no letters or
    digits (tags, private use, unassigned); surrogates never occur in text."""
    codes = np.arange(0x40000)
    codes = codes[(codes < 0xD800) | (codes > 0xDFFF)]
    chars = pa.array(list(codes.astype("<u4").tobytes().decode("utf-32-le")), pa.string())
    word = pc.match_substring_regex(chars, pattern=r"^[\p{L}\p{N}]$")
    table = np.zeros(0x40000, dtype=np.bool_)
    table[codes] = word.to_numpy(zero_copy_only=False)
    table[[ord(c) for c in "_<>"]] = True
    return table


@numba.njit(cache=True, nogil=True)
def _finish(h: np.uint64) -> np.uint64:  # pragma: no cover - compiled
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


@numba.njit(cache=True, nogil=True)
def _tokens_kernel(
    data: np.ndarray,
    ends: np.ndarray,
    hashes: np.ndarray,
    lengths: np.ndarray,
    word: np.ndarray,
) -> int:  # pragma: no cover - compiled
    # One pass over the bytes: split each text into words and hash them as it goes.
    # Written as one loop with the character test inline: a helper function per byte
    # made it six times slower (11 ns a byte against 2).
    n = 0
    for row in range(ends.shape[0] - 1):
        i, end = ends[row], ends[row + 1]
        h = FNV_OFFSET
        inside = False
        words = 0
        while i < end:
            b = data[i]
            width = 1
            if b < 0x80:
                is_word = word[b]
            else:
                code = np.int64(-1)  # a stray continuation byte separates
                if b >= 0xF0:
                    width, code = 4, np.int64(b & 0x07)
                elif b >= 0xE0:
                    width, code = 3, np.int64(b & 0x0F)
                elif b >= 0xC0:
                    width, code = 2, np.int64(b & 0x1F)
                if i + width > end:
                    width, code = end - i, np.int64(-1)
                else:
                    for k in range(1, width):
                        code = (code << 6) | np.int64(data[i + k] & 0x3F)
                is_word = 0 <= code < word.shape[0] and word[code]
            if is_word:
                for k in range(width):
                    h = (h ^ np.uint64(data[i + k])) * FNV_PRIME
                inside = True
            elif inside:
                hashes[n] = _finish(h)
                n += 1
                words += 1
                inside = False
                h = FNV_OFFSET
            i += width
        if inside:
            hashes[n] = _finish(h)
            n += 1
            words += 1
        lengths[row] = words
    return n


@numba.njit(cache=True, nogil=True)
def _text_hashes_kernel(
    data: np.ndarray, ends: np.ndarray, out: np.ndarray
) -> None:  # pragma: no cover - compiled
    for row in range(ends.shape[0] - 1):
        h = FNV_OFFSET
        for i in range(ends[row], ends[row + 1]):
            h = (h ^ np.uint64(data[i])) * FNV_PRIME
        out[row] = _finish(h)


@numba.njit(cache=True, nogil=True)
def _minhash_kernel(
    hashes: np.ndarray,
    lengths: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    mix: np.ndarray,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled
    # The hot loop of featurisation, compiled: each text's shingles are formed from its
    # word hashes as they are read (h[i] * mix[0] + h[i + 1] for word pairs; a text
    # shorter than a shingle has its words as shingles), then 64 multiply-adds each
    # (wrapping modulo 2**64), keeping the high word's minimum per row. Forming the
    # shingles in NumPy first cost as much as the minima.
    width = mix.shape[0] + 1
    start = 0
    for row in range(lengths.shape[0]):
        n = lengths[row]
        count = n - width + 1 if n >= width else n
        for i in range(count):
            x = hashes[start + i]
            if n >= width:
                for o in range(1, width):
                    x = x * mix[o - 1] + hashes[start + i + o]
            for p in range(a.shape[0]):
                value = np.uint32((a[p] * x + b[p]) >> np.uint64(32))
                if value < out[row, p]:
                    out[row, p] = value
        start += n


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Estimated Jaccard similarity of two signatures."""
    return float(np.mean(a == b))
