"""Template fingerprints: what stays of a prompt when its variable parts are masked.

A campaign fills a few templates with slot values; a legitimate user writes free text.
The skeleton (numbers, quoted strings, code, addresses masked; lower case) of two
prompts from one template is nearly the same, so their MinHash signatures agree in most
positions and they share LSH band keys, which link accounts without comparing all pairs.

Arrow lower-cases in C++; one compiled Numba pass over the bytes then masks the variable
parts, splits the rest into words and hashes them, and another forms the word-pair
shingles and takes the minima. A word is a run of letters, digits (of any script), `_`,
`<` and `>`: everything else separates words, so punctuation needs no masking pass of
its own. Hashes are computed here, never by an engine, so DuckDB and Spark runs get
identical keys.
"""

from __future__ import annotations

import functools
import re

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

# The masks, applied as one pass of their alternation: at each position the first that
# matches wins (code before quotes, quotes before numbers) and the pass resumes after
# it. Written for Python's `re` with ASCII classes (\d is 0-9, \b between ASCII word and
# non-word characters): `skeleton` applies them with `re`, `_scan_kernel` byte by byte.
MASKS = [
    (r"```[\s\S]*?```", "<code>"),
    (r"`[^`\n]+`", "<code>"),
    (r"https?://\S+", "<url>"),
    (r"[\w.+-]+@[\w-]+\.[\w.]+", "<email>"),
    (r"\b[0-9a-f]{8,}\b", "<hex>"),
    (r"\"[^\"\n]{1,200}\"|'[^'\n]{1,200}'", "<quote>"),
    (r"\d+(?:[.,]\d+)*", "<n>"),
]
_MASK = re.compile("|".join(f"({pattern})" for pattern, _ in MASKS), re.ASCII)

COT_SENTENCE = r"[^.!?\n]*(" + "|".join(COT_PATTERNS) + r")[^.!?\n]*[.!?]?"

_rng = np.random.default_rng(SEED)
_A = (_rng.integers(1, 2**63, NUM_PERM, dtype=np.uint64) << np.uint64(1)) | np.uint64(1)
_B = _rng.integers(0, 2**63, NUM_PERM, dtype=np.uint64)
_MIX = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9], dtype=np.uint64)


def skeleton(texts: pa.Array, *, lowered: bool = False, cot: np.ndarray | None = None) -> pa.Array:
    """Lower-cased text with its variable parts replaced by placeholders: the definition
    that `signatures` computes in compiled code, as text for tests and for reading. Not
    for traffic: Python's `re` takes time quadratic in a long run of address characters
    with no `@`, where the compiled scan stays linear.

    Requests to show the reasoning are masked too: they are stock phrases shared by
    every harvesting template and by researchers' benchmark prompts, so left in they
    would link unrelated groups; the chain-of-thought score measures them instead.
    """
    out = _reasoning_masked(texts, lowered, cot)
    masked = [None if t is None else _MASK.sub(_placeholder, t) for t in out.to_pylist()]
    return pa.array(masked, pa.string())


def _placeholder(match: re.Match[str]) -> str:
    """The placeholder of the mask `match` came from, spaced to be a word of its own."""
    return f" {MASKS[(match.lastindex or 1) - 1][1]} "


def signatures(
    texts: pa.Array, *, lowered: bool = False, cot: np.ndarray | None = None
) -> np.ndarray:
    """MinHash signatures (rows x NUM_PERM, uint32) of the word bigrams of each text's
    skeleton; a skeleton without words gets the all-ones signature, which matches
    nothing else. A caller that has lower-cased the texts already, or knows which rows
    ask for the reasoning (`cot`, a boolean per row: the chain-of-thought patterns
    match), saves those passes."""
    hashes, lengths = _word_hashes(_reasoning_masked(texts, lowered, cot))
    out = np.full((len(lengths), NUM_PERM), EMPTY, dtype=np.uint32)
    _minhash_kernel(hashes, lengths, _A, _B, _MIX[1:SHINGLE], out)
    return out


def _reasoning_masked(texts: pa.Array, lowered: bool, cot: np.ndarray | None) -> pa.Array:
    """The texts lower-cased, with their requests for the reasoning masked: by Arrow,
    in the rows `cot` names (every row when it is None)."""
    out = texts if lowered else pc.utf8_lower(texts)
    if cot is None:
        return pc.replace_substring_regex(out, pattern=COT_SENTENCE, replacement=" <cot> ")
    if not cot.any():
        return out
    rows = pa.array(np.flatnonzero(cot))
    masked = pc.replace_substring_regex(out.take(rows), pattern=COT_SENTENCE, replacement=" <cot> ")
    return pc.replace_with_mask(out, pa.array(cot), masked)


def _word_hashes(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The hashes of each text's skeleton words, all texts' in one array, and how many
    each text has: the masks applied and the words split by one compiled scan."""
    raw, ends = _buffers(texts)
    hashes = np.empty(int(ends[-1] - ends[0]) + 1, dtype=np.uint64)
    lengths = np.zeros(len(texts), dtype=np.int64)
    n = _scan_kernel(raw, ends, hashes, lengths, _word_table(), _CLASSES, _placeholders())
    return hashes[:n], lengths


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
    by the tables of Arrow's RE2 (which runs the other patterns), not by this Python's
    `unicodedata`, whose Unicode version changes with the Python release: producers on
    different Pythons must get the same fingerprints. Planes 4 and up hold no letters or
    digits (tags, private use, unassigned); surrogates never occur in text."""
    codes = np.arange(0x40000)
    codes = codes[(codes < 0xD800) | (codes > 0xDFFF)]
    every = pa.array([codes.astype("<u4").tobytes().decode("utf-32-le")])
    # One string of every code point, each other character replaced by NUL (itself not
    # a word character): a fifth of the time of a match per character, paid by every
    # worker as it starts.
    kept = pc.replace_substring_regex(every, pattern=r"[^\p{L}\p{N}]", replacement="\x00")
    table = np.zeros(0x40000, dtype=np.bool_)
    table[codes] = np.frombuffer(kept[0].as_py().encode("utf-32-le"), dtype="<u4") != 0
    table[[ord(c) for c in "_<>"]] = True
    return table


# Byte classes for the compiled scan, as Python's `re` defines them with ASCII classes.
_WORD, _LOCAL, _DOMAIN, _TAIL, _SPACE, _HEX, _DIGIT, _START = (1 << k for k in range(8))


def _classes() -> np.ndarray:
    table = np.zeros(256, dtype=np.uint8)
    word = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_"
    for flag, members in (
        (_WORD, word),
        (_LOCAL, word + b".+-"),
        (_DOMAIN, word + b"-"),
        (_TAIL, word + b"."),
        (_SPACE, b" \t\n\r\f\v"),
        (_HEX, b"0123456789abcdef"),
        (_DIGIT, b"0123456789"),
        (_START, b"`\"'h0123456789"),  # bytes where a mask other than an address may start
    ):
        table[list(members)] |= flag
    return table


_CLASSES = _classes()


@functools.cache
def _placeholders() -> np.ndarray:
    """The word hash of each mask's placeholder, in the order of MASKS."""
    return _token_hashes(pa.array([name for _, name in MASKS]))


@numba.njit(cache=True, nogil=True)
def _finish(h: np.uint64) -> np.uint64:  # pragma: no cover - compiled
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


@numba.njit(cache=True, nogil=True, inline="always")
def _mask_at(
    data: np.ndarray, i: int, start: int, end: int, cls: np.ndarray, email_from: int
) -> tuple[int, int, int]:  # pragma: no cover - compiled
    # Which mask matches at i (its number in MASKS, -1 for none), where its match ends,
    # and the first position an address may still start at: none can before the end of
    # a run of address characters that no valid `@domain.tld` follows.
    b = data[i]
    if b == 96:  # `: a code block, else inline code
        j = i + 3
        if j <= end and data[i + 1] == 96 and data[i + 2] == 96:
            while j + 3 <= end:
                if data[j] == 96 and data[j + 1] == 96 and data[j + 2] == 96:
                    return 0, j + 3, email_from
                j += 1
        j = i + 1
        while j < end and data[j] != 96 and data[j] != 10:
            j += 1
        if j < end and data[j] == 96 and j > i + 1:
            return 1, j + 1, email_from
        return -1, i, email_from
    if b == 104 and i + 7 < end and data[i + 1] == data[i + 2] == 116 and data[i + 3] == 112:
        j = i + 5 if data[i + 4] == 115 else i + 4  # http, https
        if j + 3 < end and data[j] == 58 and data[j + 1] == 47 and data[j + 2] == 47:
            j += 3
            if not cls[data[j]] & _SPACE:
                while j < end and not cls[data[j]] & _SPACE:
                    j += 1
                return 2, j, email_from
    if cls[b] & _LOCAL and i >= email_from:
        k = i
        while k < end and cls[data[k]] & _LOCAL:
            k += 1
        if k < end and data[k] == 64:  # @
            m = k + 1
            while m < end and cls[data[m]] & _DOMAIN:
                m += 1
            if m > k + 1 and m + 1 < end and data[m] == 46 and cls[data[m + 1]] & _TAIL:
                t = m + 1
                while t < end and cls[data[t]] & _TAIL:
                    t += 1
                return 3, t, email_from
        email_from = k
    if cls[b] & _HEX and (i == start or not cls[data[i - 1]] & _WORD):
        k = i
        while k < end and cls[data[k]] & _HEX:
            k += 1
        if k - i >= 8 and (k == end or not cls[data[k]] & _WORD):
            return 4, k, email_from
    if b == 34 or b == 39:  # a quote of 1 to 200 characters on one line
        j, chars = i + 1, 0
        while j < end and data[j] != b and data[j] != 10 and chars <= 200:
            chars += (data[j] & 0xC0) != 0x80
            j += 1
        if j < end and data[j] == b and 1 <= chars <= 200:
            return 5, j + 1, email_from
    if cls[b] & _DIGIT:
        k = i + 1
        while True:
            while k < end and cls[data[k]] & _DIGIT:
                k += 1
            if k + 1 < end and (data[k] == 46 or data[k] == 44) and cls[data[k + 1]] & _DIGIT:
                k += 1
            else:
                return 6, k, email_from
    return -1, i, email_from


@numba.njit(cache=True, nogil=True)
def _scan_kernel(
    data: np.ndarray,
    ends: np.ndarray,
    hashes: np.ndarray,
    lengths: np.ndarray,
    word: np.ndarray,
    cls: np.ndarray,
    placeholders: np.ndarray,
) -> int:  # pragma: no cover - compiled
    # One pass over the bytes: mask, split each text into words and hash them as it
    # goes. Masks are tried only at bytes that can start one. Written as one loop with
    # the character test inline: a helper function per byte made it six times slower
    # (11 ns a byte against 2).
    n = 0
    for row in range(ends.shape[0] - 1):
        start, end = ends[row], ends[row + 1]
        i = start
        h = FNV_OFFSET
        inside = False
        words = 0
        email_from = start
        while i < end:
            b = data[i]
            width, mask = 1, -1
            if b < 0x80:
                c = cls[b]
                if (
                    c & _START
                    or (c & _LOCAL and i >= email_from)
                    or (c & _HEX and (i == start or not cls[data[i - 1]] & _WORD))
                ):
                    mask, stop, email_from = _mask_at(data, i, start, end, cls, email_from)
                is_word = mask < 0 and word[b]
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
            if mask >= 0:  # the placeholder, as a word of its own
                hashes[n] = placeholders[mask]
                n += 1
                words += 1
                i = stop
            else:
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
