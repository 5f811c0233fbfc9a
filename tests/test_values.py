"""Value coercion: timestamps in every format real exporters write, numbers, booleans."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from distillguard.ingest.values import BadValue, coerce, to_bool, to_int, to_ts

MOMENTS = st.datetimes(
    min_value=datetime(2001, 1, 1), max_value=datetime(2099, 1, 1), timezones=st.just(UTC)
)
OFFSETS = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda m: timezone(timedelta(minutes=m))
)


@given(MOMENTS)
def test_epoch_numbers_of_every_unit_give_the_same_instant(moment: datetime) -> None:
    micros = int((moment - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))
    whole = moment.replace(microsecond=0)
    assert to_ts(micros // 10**6) == whole
    assert to_ts(micros // 10**3) == moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    assert to_ts(micros) == moment
    assert to_ts(micros * 1000) == moment
    assert to_ts(str(micros * 1000)) == moment  # OTLP writes nanoseconds as text


@given(MOMENTS, OFFSETS)
def test_iso_text_in_any_zone_is_normalised_to_utc(moment: datetime, zone: timezone) -> None:
    local = moment.astimezone(zone)
    assert to_ts(local.isoformat()) == moment
    assert to_ts(local.isoformat().replace("+00:00", "Z")) == moment
    assert to_ts(moment.strftime("%Y-%m-%d %H:%M:%S.%f") + " UTC") == moment


@given(MOMENTS)
def test_rfc2822_and_naive_text(moment: datetime) -> None:
    whole = moment.replace(microsecond=0)
    assert to_ts(format_datetime(whole)) == whole
    assert to_ts(whole.strftime("%Y-%m-%d %H:%M:%S")) == whole  # naive is taken as UTC


@given(MOMENTS, OFFSETS)
def test_mail_and_go_dates_in_any_offset_give_the_instant(moment: datetime, zone: timezone) -> None:
    """RFC 2822 and Go's RubyDate (ctime with an offset before the year) in every
    offset of whole minutes read as the instant they name."""
    local = moment.replace(microsecond=0).astimezone(zone)
    whole = moment.replace(microsecond=0)
    assert to_ts(local.strftime("%a, %d %b %Y %H:%M:%S %z")) == whole
    assert to_ts(local.strftime("%a %b %d %H:%M:%S %z %Y")) == whole


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("Wed, 04 Mar 26 10:00:00 +0000", "2026-03-04T10:00:00"),  # a two-digit year
        ("Wed, 04 Mar 2026 10:00:00 +0100 (CET)", "2026-03-04T09:00:00"),  # a zone comment
        ("Wed Mar  4 10:00:00 2026", "2026-03-04T10:00:00"),  # ctime
        ("Wednesday, 04-Mar-26 10:00:00 GMT", "2026-03-04T10:00:00"),  # an HTTP date
        ("Tue 04 Mar 2026 10:00:00 -0000", "2026-03-04T10:00:00"),
        ("4 Mar 2026 22:00 EST", "2026-03-05T03:00:00"),
        ("Wed Mar  4 10:00:00 UTC 2026", "2026-03-04T10:00:00"),  # `date` in UTC
        ("Wed, 04 Mar 2026 10:00:00 AST", "2026-03-04T14:00:00"),
        ("Mon Jan 05 15:04:05 EST 2026", "2026-01-05T20:04:05"),  # Java, Go's UnixDate
        ("Mon Jan 05 15:04:05 -0500 2026", "2026-01-05T20:04:05"),  # Go's RubyDate
        ("Mon,05  Jan 2026 15:04:05 GMT", "2026-01-05T15:04:05"),
        ("Jan 05 2026 15:04:05", "2026-01-05T15:04:05"),
    ],
)
def test_the_dates_mail_and_http_write_are_read(text: str, utc: str) -> None:
    assert to_ts(text) == datetime.fromisoformat(utc).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    [
        "yesterday",
        "",
        "2026-13-01T00:00:00Z",
        "1899-01-01T00:00:00Z",
        "NaN",
        "-5",
        "Mar 4, 2026 10:00 PM",  # the e-mail parser would drop the PM: 12 hours off
        "4 Mar 2026 22:00:00 CET",  # and take a zone it does not know for UTC
        "4 Mar 2026 10:00 PM",
        # zones and offsets the e-mail parser would drop, reading the time as UTC
        "Wed Mar 04 2026 22:00:00 GMT-0500 (Eastern Standard Time)",  # JavaScript
        "Wed Mar 04 10:00:00 GMT+01:00 2026",  # Java
        "Wed, 04 Mar 2026 10:00:00 +01:00",
        "Wed, 04 Mar 2026 10:00:00 UTC+0100",
        "04 Mar 2026 10.00 PM",
        "Wed Mar  4 10:00:00 CET 2026",  # `date` in Paris
        "Wed Mar 4 10:00:00 2026 CET",
        "Wed, 04 Mar 2026 10:00:00 GMT +0100",  # two zones
    ],
)
def test_bad_timestamps_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        to_ts(text)


def test_nanosecond_epoch_keeps_microsecond_precision() -> None:
    assert to_ts("1776849330123456789") == datetime(2026, 4, 22, 9, 15, 30, 123456, tzinfo=UTC)


def test_numbers_and_booleans() -> None:
    assert to_int("12") == 12 and to_int(12.0) == 12 and to_int("3e2") == 300
    assert to_bool("True") is True and to_bool(0) is False
    for bad in ("many", 1.5, True, [1]):
        with pytest.raises(ValueError):
            to_int(bad)
    with pytest.raises(ValueError):
        to_bool("maybe")


def test_coerce_names_the_column_and_drops_empty_strings() -> None:
    row = coerce({"request_id": "r", "input_tokens": "7", "ip": " ", "_line": 3})
    assert row == {"request_id": "r", "input_tokens": 7, "ip": None, "_line": 3}
    with pytest.raises(BadValue) as caught:
        coerce({"output_tokens": "lots"})
    assert caught.value.column == "output_tokens"
    with pytest.raises(BadValue):
        coerce({"turn_index": 2**40})  # int32 column


@given(
    st.text(min_size=1, max_size=20) | st.sampled_from(["\t", " \n", "a\x1fb", "a\x7f", "a\x85b"])
)
def test_an_account_id_is_kept_exactly_unless_it_holds_a_control_character(text: str) -> None:
    """Blank is absent (the record is then quarantined as missing it)."""
    control = any(ord(c) < 32 or 127 <= ord(c) < 160 for c in text)
    try:
        row = coerce({"account_id": text})
    except BadValue as bad:
        assert control and text.strip() and bad.column == "account_id"
    else:
        assert row["account_id"] == (None if not text.strip() else text)
        assert not control or not text.strip()
