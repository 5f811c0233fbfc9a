"""Cutting one JSON document into its items without trusting it.

ijson (yajl) reads a sound document fast, but stops for good at its first flaw (a
number beyond 64 bits, bytes that are not UTF-8), turns a lone surrogate escape into
'?', and needs memory that grows with the square of the nesting depth. `Screen` sits
between the file and ijson and stops the fast way, before ijson sees them, at bytes that
could nest deeper than MAX_DEPTH or hold a lone surrogate. `cut_items` is the careful way
on from there: it finds each item's bytes with a string-aware bracket count, in bounded
memory, and leaves judging them to orjson as for JSON Lines, so a flaw costs one item.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

import numpy as np

MAX_DEPTH = 1024  # orjson's limit, so a record nests as deep in a document as in a line
SURROGATE_SPAN = 12  # bytes of an escaped surrogate pair, \\uD83D\\uDE00
LONE_SURROGATE = re.compile(
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)
HIGH_SURROGATE = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}")
STRING_OR_CUT = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\Z)', re.DOTALL)
STRING_REST = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
TOKEN = re.compile(rb'[\[\]{},:"]|[^\s\[\]{},:"]+')
BARE_REST = re.compile(rb'[^\s\[\]{},:"]*')
NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
STEP = np.zeros(256, np.int32)
STEP[list(b"[{")] = 1
STEP[list(b"]}")] = -1


class Suspect(Exception):
    """The fast way must stop here: the bytes ahead need the careful way."""


class Screen:
    """A file-like view for ijson that raises Suspect instead of passing on bytes that
    may nest deeper than MAX_DEPTH or hold a lone surrogate escape.

    Depth is bounded from above by counting brackets, strings and all, which costs a
    memchr; only a chunk that pushes the bound past the limit is counted exactly (under
    both guesses of whether it starts inside a string). `settle` is told of each item
    ijson yields: the depth is then back at `level` plus what the last chunk opened.
    A chunk never ends on a backslash or inside an escaped surrogate pair.
    """

    def __init__(self, handle: IO[bytes], level: int) -> None:
        self.handle = handle
        self.level = level
        self.bound = level
        self.opened = 0
        self.held = b""

    def read(self, size: int = -1) -> bytes:
        if size == 0:
            return b""
        fresh = self.handle.read(max(size - len(self.held), 1) if size > 0 else -1)
        data, self.held = self.held + fresh, b""
        if fresh:
            cut = _safe_cut(data)
            data, self.held = data[:cut], data[cut:]
        self._check(data)
        return data

    def settle(self, depth: int | None = None) -> None:
        """The reader knows the depth here (the items' level by default): the depth at
        the end of the last chunk is at most that plus what the chunk opened."""
        known = self.level if depth is None else depth
        self.bound = min(self.bound, known + self.opened)

    def _check(self, data: bytes) -> None:
        if b"\\u" in data and LONE_SURROGATE.search(data):
            raise Suspect("a lone surrogate escape")
        self.opened = data.count(b"[") + data.count(b"{")
        if self.bound + self.opened <= MAX_DEPTH:
            self.bound += self.opened
            return
        rise, change = _exact_climb(data)
        if self.bound + rise > MAX_DEPTH:
            raise Suspect(f"nesting deeper than {MAX_DEPTH}")
        self.bound = max(self.bound + change, 0)


def _safe_cut(data: bytes) -> int:
    """Where to end a chunk so that it does not end on a backslash or between the halves
    of an escaped surrogate pair: before the escapes in its last bytes."""
    cut = data.find(b"\\", max(len(data) - SURROGATE_SPAN, 0))
    if cut < 0:
        return len(data)
    while cut > 0 and data[cut - 1] == ord("\\"):
        cut -= 1
    if cut >= 6 and HIGH_SURROGATE.fullmatch(data, cut - 6, cut):
        cut -= 6
    return cut or len(data)


def _exact_climb(data: bytes) -> tuple[int, int]:
    """The highest rise in depth within `data` and its net change, outside strings, as the
    larger of the two readings: starting outside a string or inside one."""
    rises, changes = [], []
    for text in (data, b'"' + data):
        brackets = STRING_OR_CUT.sub(b"", text).translate(None, NOT_BRACKETS)
        depth = np.cumsum(STEP[np.frombuffer(brackets, np.uint8)])
        rises.append(int(depth.max(initial=0)))
        changes.append(int(depth[-1]) if len(depth) else 0)
    return max(rises), max(changes)


@dataclass(slots=True)
class Cut:
    """One item's bytes (None when over the size limit) and what is wrong with it."""

    number: int
    offset: int
    body: bytes | None = None
    problem: str | None = None
    reason: str = "invalid_json"


def cut_items(handle: IO[bytes], prefix: str, skip: int, max_bytes: int) -> Iterator[Cut]:
    """Every item at `prefix` ('', 'item' or 'key.item', as ijson names them), numbered
    from 1; the first `skip` are counted, not cut. Stray bytes between items become an
    item of their own, to be refused; a document ending inside an item ends with it."""
    cutter = _Cutter(prefix, skip, max_bytes)
    while chunk := handle.read(1 << 20):
        yield from cutter.feed(chunk)
    yield from cutter.close()


class _Cutter:
    """The careful way's state: the containers leading to the items, and the item being
    cut (its depth, and its bytes so far, kept only up to `max_bytes`)."""

    def __init__(self, prefix: str, skip: int, max_bytes: int) -> None:
        names = prefix.split(".") if prefix else []
        self.key_path = names[:-1]  # [] for 'item', ['key'] for 'key.item'
        self.level = len(names)  # containers above an item
        self.skip, self.max_bytes = skip, max_bytes
        self.stack: list[bytes] = []
        self.key: str | None = None
        self.last_string: bytes | None = None
        self.partial = b""  # a string the chunk broke off, while short
        self.skipping = 0  # depth inside a value that is off the path to the items
        self.expect = "first"  # in the items' array: "first", "next" (after a comma), "none"
        self.count = 0
        self.item: Cut | None = None
        self.parts: list[bytes] | None = []
        self.size = self.depth = self.item_from = self.base = 0
        self.in_string = self.escaped = self.in_bare = False
        self.chunk = b""
        self.done: list[Cut] = []

    def feed(self, chunk: bytes) -> list[Cut]:
        self.chunk, self.item_from = chunk, 0
        pos = self._resume()
        while match := TOKEN.search(chunk, pos):
            start, pos = match.span()
            token = match.group()
            if token == b'"':
                pos = self._string(pos, start)
            elif pos == len(chunk) and token not in STRUCTURE:
                self.in_bare = True
            self._token(token, start, pos)
        if self.item is not None:
            self._keep(len(chunk))
        self.base += len(chunk)
        done, self.done = self.done, []
        return done

    def close(self) -> list[Cut]:
        self.in_string = self.in_bare = False
        if self.item is not None:
            self.item.problem = self.item.problem or "the document ends inside this item"
            self._finish(0)
        return self.done

    def _resume(self) -> int:
        """Finish a string or bare word the last chunk broke off."""
        if self.in_string:
            pos = self._string(1 if self.escaped else 0, None)
        elif self.in_bare:
            pos = BARE_REST.match(self.chunk).end()  # type: ignore[union-attr]
            self.in_bare = pos == len(self.chunk)
        else:
            return 0
        ended = not (self.in_string or self.in_bare)
        if ended and self.item is not None and not self.level and self.depth == 0:
            self._value_ended(pos)
        return pos

    def _string(self, pos: int, begin: int | None) -> int:
        """Pass a string from `pos` (begun at `begin`, or in an earlier chunk); keep its
        text if short, as it may be a key."""
        match = STRING_REST.match(self.chunk, pos)
        end = match.end() if match else len(self.chunk)
        text = self.partial + self.chunk[:end] if begin is None else self.chunk[begin:end]
        self.partial = text if len(text) <= MAX_KEY_BYTES else b""
        if match is not None:
            self.last_string = self.partial or None
            self.in_string = self.escaped = False
            return end
        rest = self.chunk[pos:]
        self.in_string = True
        self.escaped = (len(rest) - len(rest.rstrip(b"\\"))) % 2 == 1
        return len(self.chunk)

    def _token(self, token: bytes, start: int, end: int) -> None:
        if self.item is not None:
            self._in_item(token, start, end)
        elif self.skipping:
            self.skipping += _step(token)
        elif len(self.stack) == self.level:
            self._at_item_level(token, start, end)
        else:
            self._above_items(token, start, end)

    def _above_items(self, token: bytes, start: int, end: int) -> None:
        """Walk the containers that lead to the items; skip any other value whole."""
        depth = len(self.stack)
        if token == b"[" and self._opens_items(depth):
            self.stack.append(token)
            self.expect = "first"
        elif token == b"{" and depth == 0 and self.key_path:
            self.stack.append(token)
            self.key = None
        elif token in (b"[", b"{"):
            self.skipping = 1
        elif token in (b"]", b"}") and self.stack:
            self.stack.pop()
            self.key = None
        elif token == b":" and depth == 1 and self.last_string is not None:
            self.key = _text(self.last_string)
        elif token == b"," and depth == 1:
            self.key = None
        elif depth == 0:  # bytes outside any record container: refused, not ignored
            self._start(start)
            self.item.problem = "bytes outside the records"  # type: ignore[union-attr]
            self._value_ended(end)

    def _opens_items(self, depth: int) -> bool:
        if not self.key_path:
            return depth == 0
        return depth == 1 and self.key == self.key_path[0]

    def _at_item_level(self, token: bytes, start: int, end: int) -> None:
        if self.level and token in (b",", b"]"):
            if self.expect == "next" or (token == b"," and self.expect == "first"):
                self._start(start)
                self._finish(start)  # an empty item: a stray comma
            self.expect = "next"
            if token == b"]":
                self.stack.pop()
            return
        self._start(start)
        self.expect = "none"
        self._in_item(token, start, end)

    def _in_item(self, token: bytes, start: int, end: int) -> None:
        """Follow the item's depth; it ends at its level's separator, or (top-level
        values) where its value ends."""
        if self.level and self.depth == 0 and token in (b",", b"]"):
            self._finish(start)
            self.expect = "none"
            self._at_item_level(token, start, end)
            return
        self.depth = max(self.depth + _step(token), 0)
        if self.depth > MAX_DEPTH and self.item is not None and self.item.problem is None:
            self.item.problem = f"nested deeper than {MAX_DEPTH} levels"
        if not self.level and self.depth == 0 and not (self.in_string or self.in_bare):
            self._value_ended(end)

    def _value_ended(self, end: int) -> None:
        if not self.level or (self.item is not None and self.item.problem):
            self._finish(end)

    def _start(self, start: int) -> None:
        self.count += 1
        self.item = Cut(self.count, self.base + start)
        self.parts, self.size, self.depth, self.item_from = [], 0, 0, start

    def _keep(self, end: int) -> None:
        piece = self.chunk[self.item_from : end]
        self.item_from = end
        self.size += len(piece)
        if self.parts is not None and self.count > self.skip:
            if self.size > self.max_bytes:
                self.parts = None
            else:
                self.parts.append(piece)

    def _finish(self, end: int) -> None:
        self._keep(end)
        item, self.item = self.item, None
        if item is None or item.number <= self.skip:
            return
        if self.parts is None:
            item.reason = "record_too_large"
            item.problem = f"item is larger than {self.max_bytes} bytes"
        else:
            item.body = b"".join(self.parts).strip()
            if not item.body:
                item.problem = item.problem or "an empty item (a stray comma)"
        self.done.append(item)


MAX_KEY_BYTES = 4096
STRUCTURE = (b"[", b"]", b"{", b"}", b",", b":")


def _step(token: bytes) -> int:
    return 1 if token in (b"[", b"{") else -1 if token in (b"]", b"}") else 0


def _text(raw: bytes) -> str | None:
    import orjson

    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, str) else None
