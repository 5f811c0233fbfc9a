"""Coercion of raw field values to the canonical types, one value at a time.

Logs disagree on types: token counts arrive as "12", timestamps as epoch seconds,
milliseconds, nanosecond strings or ISO text in any zone, booleans as "true". Each
converter accepts what real exporters write and raises BadValue for anything else, so
the record is quarantined with the column named instead of being silently mangled.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any

import pyarrow as pa

from distillguard.schema import ACCOUNTS, EXCHANGES

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TS_MIN = datetime(2000, 1, 1, tzinfo=UTC)
TS_MAX = datetime(2100, 1, 1, tzinfo=UTC)
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


class BadValue(ValueError):
    """A value that cannot be read as its column's type; `column` says which."""

    def __init__(self, column: str, message: str) -> None:
        super().__init__(f"{column}: {message}")
        self.column = column


EXACT_FLOAT = 2**53


def to_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value) or abs(value) >= EXACT_FLOAT:
            raise ValueError(f"the number {value!r} cannot be kept exactly as text")
        return str(value)
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("bytes that are not UTF-8 text") from None
    raise ValueError(f"expected text, got {type(value).__name__}")


def to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal):
        value = float(value)
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise ValueError(f"expected an integer, got {value!r}")
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"expected an integer, got {value[:40]!r}") from None
        if not number.is_integer():
            raise ValueError(f"expected an integer, got {value[:40]!r}")
        return int(number)
    raise ValueError(f"expected an integer, got {type(value).__name__}")


def to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    if isinstance(value, int | float | Decimal):
        number = float(value)
    elif isinstance(value, str):
        number = float(value.strip())
    else:
        raise ValueError(f"expected a number, got {type(value).__name__}")
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {value!r}")
    return number


_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


def to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ValueError(f"expected true or false, got {str(value)[:40]!r}")


def to_ts(value: Any) -> datetime:
    """A UTC datetime from epoch numbers (s, ms, µs or ns by magnitude) or text.

    Text may be ISO 8601 in any zone (a naive time is taken as UTC), RFC 2822, or
    ISO with a trailing ' UTC' as SQL engines print it.
    """
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day, tzinfo=UTC)
    elif isinstance(value, bool):
        raise ValueError("expected a timestamp, got a boolean")
    elif isinstance(value, int | float):
        moment = _from_epoch(value)
    elif isinstance(value, str):
        moment = _from_text(value.strip())
    else:
        raise ValueError(f"expected a timestamp, got {type(value).__name__}")
    if moment.tzinfo is None:  # never the machine's zone: naive text is UTC
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    if not TS_MIN <= moment < TS_MAX:
        raise ValueError(f"timestamp {moment.isoformat()} is outside 2000..2100")
    return moment


def _from_epoch(number: float) -> datetime:
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"expected an epoch time, got {number!r}")
    scale = 0 if number < 1e11 else 1 if number < 1e14 else 2 if number < 1e17 else 3
    if isinstance(number, int):  # exact integer arithmetic: ns strings keep every digit
        micros = (number * 10**6, number * 10**3, number, number // 10**3)[scale]
    else:
        micros = round(number * (1e6, 1e3, 1.0, 1e-3)[scale])
    return EPOCH + timedelta(microseconds=micros)


def _from_text(text: str) -> datetime:
    if not text:
        raise ValueError("empty timestamp")
    if text.isdigit() or (text.replace(".", "", 1).isdigit() and text.count(".") == 1):
        return _from_epoch(int(text) if text.isdigit() else float(text))
    candidate = text[:-4].rstrip() if text.upper().endswith(" UTC") else text
    try:
        return datetime.fromisoformat(candidate)
    except ValueError:
        pass
    if _mail_date(text):
        try:
            return parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            pass
    raise ValueError(f"unrecognised timestamp {text[:40]!r}")


# The e-mail date parser reads RFC 2822, HTTP's RFC 850 form, ctime, `date` and Go's
# UnixDate and RubyDate right, but guesses at any word it does not know: "10:00 PM" as
# 10:00, "CET", "GMT-0500" or "+01:00" as UTC. Such times would be stored hours off, so
# text goes to it only when every word is a day, a month, a number, one time with
# colons and at most one zone it knows.
_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_MONTHS = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)
DAYS = {*_DAYS, *(d[:3] for d in _DAYS)}
MONTHS = {*_MONTHS, *(m[:3] for m in _MONTHS)}
ZONES = {
    "ut",
    "utc",
    "gmt",
    "z",
    "ast",
    "adt",
    "est",
    "edt",
    "cst",
    "cdt",
    "mst",
    "mdt",
    "pst",
    "pdt",
}
COMMENT = re.compile(r"\([^()]*\)")
CLOCK = re.compile(r"\d{1,2}:\d{2}(?::\d{2})?")
OFFSET = re.compile(r"[+-]\d{4}")
NUMBER = re.compile(r"\d{1,4}")
DASHED = re.compile(r"\d{1,2}-([a-z]+)-\d{2,4}")  # RFC 850's 04-Mar-26


def _mail_date(text: str) -> bool:
    kinds = [_kind(w) for w in re.split(r"[\s,]+", COMMENT.sub(" ", text).strip().lower())]
    return None not in kinds and kinds.count("clock") == 1 and kinds.count("zone") <= 1


def _kind(word: str) -> str | None:
    """What a word of a mail date is: its clock, a zone, part of the date, or unknown."""
    if CLOCK.fullmatch(word):
        return "clock"
    if word in ZONES or OFFSET.fullmatch(word):
        return "zone"
    dashed = DASHED.fullmatch(word)
    if NUMBER.fullmatch(word) or word in DAYS or word in MONTHS:
        return "date"
    return "date" if dashed and dashed.group(1) in MONTHS else None


# Counts cannot be negative; a negative one is a logging bug, not a fact to store.
NON_NEGATIVE = {
    "input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "max_tokens",
    "tools_declared",
    "tool_calls",
    "turn_index",
}


def _converter(type_: pa.DataType, name: str = "") -> Callable[[Any], Any]:
    if name == "account_id":
        return to_account_id
    if pa.types.is_timestamp(type_):
        return to_ts
    if pa.types.is_boolean(type_):
        return to_bool
    if pa.types.is_floating(type_):
        return to_float
    if pa.types.is_integer(type_):
        limit = INT32_MAX if type_.bit_width == 32 else INT64_MAX

        def bounded(value: Any) -> int:
            number = to_int(value)
            if not (0 if name in NON_NEGATIVE else -limit) <= number <= limit:
                raise ValueError(f"{number} is out of range for {name or type_}")
            return number

        return bounded
    return to_str


CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1


def to_account_id(value: Any) -> str:
    """Text without control characters: an account id is a name, and detection keeps
    U+001F for naming an end user's traffic inside an account."""
    text = to_str(value)
    if CONTROL.search(text):
        raise ValueError("an account id cannot contain control characters")
    return text


CONVERTERS: dict[str, dict[str, Callable[[Any], Any]]] = {
    "exchanges": {f.name: _converter(f.type, f.name) for f in EXCHANGES},
    "accounts": {f.name: _converter(f.type, f.name) for f in ACCOUNTS},
}


def _ready_type(type_: pa.DataType, name: str) -> type | None:
    """Text and booleans that already have their canonical type skip conversion (but
    account ids, which are checked)."""
    if name == "account_id":
        return None
    if pa.types.is_string(type_):
        return str
    if pa.types.is_boolean(type_):
        return bool
    return None


READY: dict[str, dict[str, type | None]] = {
    "exchanges": {f.name: _ready_type(f.type, f.name) for f in EXCHANGES},
    "accounts": {f.name: _ready_type(f.type, f.name) for f in ACCOUNTS},
}


def coerce(raw: Mapping[str, Any], table: str = "exchanges") -> dict[str, Any]:
    """Convert a mapped record's values to canonical types; empty strings become null.

    Provenance and join keys (they start with '_') are kept; other unknown keys dropped.
    """
    converters = CONVERTERS[table]
    ready = READY[table]
    row: dict[str, Any] = {}
    for name, value in raw.items():
        convert = converters.get(name)
        if convert is None:
            if name == "_join_key" and value is not None:
                try:
                    value = to_str(value)
                except ValueError as exc:
                    raise BadValue("join key", str(exc)) from None
            if name.startswith("_"):
                row[name] = value
            continue
        kind = ready[name]
        if kind is str and type(value) is str and (name == "prompt_text" or value.strip()):
            row[name] = value  # already text (the common case): nothing to convert
            continue
        if kind is bool and type(value) is bool:
            row[name] = value
            continue
        if value is None or (
            isinstance(value, str) and not value.strip() and name != "prompt_text"
        ):
            row[name] = None
            continue
        try:
            row[name] = convert(value)
        except (ValueError, OverflowError) as exc:
            raise BadValue(name, str(exc)) from None
    return row
