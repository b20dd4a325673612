"""Input checks (eventwf/_validation.py): durations, instants, names, ids, metadata (S10)."""

from __future__ import annotations

import math
import re
import secrets
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventwf.model import values as v
from eventwf.model.values import (
    check_metadata,
    check_step_name,
    check_workflow_id,
    metadata_key_path,
    new_workflow_id,
    parse_duration,
    parse_instant,
)

UNITS = {
    "millisecond": 0.001,
    "second": 1.0,
    "minute": 60.0,
    "hour": 3600.0,
    "day": 86400.0,
    "week": 604800.0,
}
WORKFLOW_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,99}")
ASCII_CONTROLS = [chr(c) for c in [*range(0x20), 0x7F]]


def _message(fn: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(ValueError) as info:
        fn(*args, **kwargs)
    return str(info.value)


# -- parse_duration -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(0, 0.0), (5, 5.0), (1.5, 1.5), (0.001, 0.001), (86400 * 365, 31536000.0),
     (timedelta(minutes=2), 120.0), (timedelta(milliseconds=5), 0.005), (timedelta(0), 0.0)],
)
def test_parse_duration_accepts_numbers_and_timedeltas(value: Any, seconds: float) -> None:
    result = parse_duration(value)
    assert result == seconds
    assert isinstance(result, float)


@pytest.mark.parametrize("unit", sorted(UNITS))
@pytest.mark.parametrize("plural", [False, True])
def test_parse_duration_accepts_every_unit_singular_and_plural(unit: str, plural: bool) -> None:
    count = 2 if plural else 1
    text = f"{count} {unit}{'s' if plural else ''}"
    assert parse_duration(text) == pytest.approx(count * UNITS[unit])
    assert parse_duration(text.upper()) == pytest.approx(count * UNITS[unit])


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1.5 hours", 5400.0), ("0.5 second", 0.5), ("  10   minutes  ", 600.0),
     ("250 milliseconds", 0.25), ("3 Weeks", 1814400.0), ("0 seconds", 0.0)],
)
def test_parse_duration_accepts_decimals_case_and_spacing(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@given(st.integers(0, 10**6), st.sampled_from(sorted(UNITS)), st.booleans())
@settings(max_examples=60)
def test_parse_duration_string_is_count_times_unit(count: int, unit: str, plural: bool) -> None:
    text = f"{count} {unit}" + ("s" if plural else "")
    assert parse_duration(text) == pytest.approx(count * UNITS[unit])


@given(st.floats(min_value=0, allow_nan=False, allow_infinity=False))
@settings(max_examples=60)
def test_parse_duration_returns_any_finite_non_negative_float_unchanged(x: float) -> None:
    assert parse_duration(x) == x


@pytest.mark.parametrize(
    "value",
    ["", "5", "seconds", "five seconds", "5 fortnights", "5 s", "5 secs", "5seconds",
     "-5 seconds", "+5 seconds", "1e3 seconds", ".5 seconds", "5. seconds", "5 seconds ago",
     "5 secondss", "5 hours 3 minutes", None, [5], b"5 seconds", Decimal("5"), object()],
)
def test_parse_duration_rejects_malformed_values_naming_them(value: Any) -> None:
    message = _message(parse_duration, value, what="duration of sleep 'nap'")
    assert repr(value) in message
    assert "duration of sleep 'nap'" in message


@pytest.mark.parametrize("value", [True, False])
def test_parse_duration_rejects_bools_although_they_are_ints(value: bool) -> None:
    assert repr(value) in _message(parse_duration, value)


@pytest.mark.parametrize(
    "value", [-1, -0.5, -1e-9, timedelta(seconds=-1), math.nan, math.inf, -math.inf]
)
def test_parse_duration_rejects_negative_and_non_finite_values(value: Any) -> None:
    assert repr(value) in _message(parse_duration, value)


@pytest.mark.parametrize("value", [0, 0.0, -0.0, "0 seconds", "0.0 hours", timedelta(0)])
def test_parse_duration_allow_zero_false_rejects_zero(value: Any) -> None:
    assert parse_duration(value) == 0.0
    message = _message(parse_duration, value, what="timeout", allow_zero=False)
    assert repr(value) in message and "timeout" in message


def test_parse_duration_allow_zero_false_still_accepts_positive_values() -> None:
    assert parse_duration("1 millisecond", allow_zero=False) == 0.001
    assert parse_duration(1e-9, allow_zero=False) == 1e-9


@pytest.mark.parametrize("parse", [parse_duration, parse_instant])
def test_huge_integers_are_rejected_with_value_error(parse: Any) -> None:
    with pytest.raises(ValueError):
        parse(10**400)


# -- parse_instant ------------------------------------------------------------------------


class _NoOffset(tzinfo):
    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None

    def tzname(self, dt: datetime | None) -> str | None:
        return None


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(datetime(2030, 1, 1, tzinfo=UTC), 1893456000.0),
     (datetime(2030, 1, 1, 2, tzinfo=timezone(timedelta(hours=2))), 1893456000.0),
     (0, 0.0), (1.5, 1.5), (-86400, -86400.0)],
)
def test_parse_instant_accepts_aware_datetimes_and_epoch_seconds(value: Any, seconds: float
                                                                 ) -> None:
    assert parse_instant(value) == seconds


@pytest.mark.parametrize(
    "value",
    [datetime(2030, 1, 1), datetime(2030, 1, 1, tzinfo=_NoOffset()), True, False, math.nan,
     math.inf, -math.inf, "2030-01-01T00:00:00Z", "1893456000", None, timedelta(1)],
)
def test_parse_instant_rejects_naive_non_finite_and_other_values(value: Any) -> None:
    assert repr(value) in _message(parse_instant, value)


# -- check_step_name ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "x" * 256, "fetch user #1", "étape ✓", "🚀", " "])
def test_check_step_name_accepts_1_to_256_characters(name: str) -> None:
    assert check_step_name(name) == name


@pytest.mark.parametrize("name", ["", "x" * 257, None, 5, b"name", ["a"]])
def test_check_step_name_rejects_wrong_length_and_non_strings(name: Any) -> None:
    assert repr(name)[:50] in _message(check_step_name, name)


@pytest.mark.parametrize("char", ASCII_CONTROLS, ids=[f"{ord(c):#04x}" for c in ASCII_CONTROLS])
def test_check_step_name_rejects_every_ascii_control_character(char: str) -> None:
    message = _message(check_step_name, f"step{char}name")
    assert "control characters" in message and repr(f"step{char}name") in message


@given(st.text(st.characters(blacklist_categories=["Cc", "Cs"]), min_size=1, max_size=256))
@settings(max_examples=60)
def test_check_step_name_accepts_any_text_without_control_characters(name: str) -> None:
    assert check_step_name(name) == name


def test_check_step_name_rejects_c1_control_characters() -> None:
    with pytest.raises(ValueError):
        check_step_name("step\x85name")


# -- workflow ids -------------------------------------------------------------------------


@pytest.mark.parametrize("wid", ["a", "_", "0", "A-b_c", "wf_123", "x" * 100, "a--", "9-9"])
def test_check_workflow_id_accepts_ids_matching_the_pattern(wid: str) -> None:
    assert check_workflow_id(wid) == wid


@pytest.mark.parametrize(
    "wid", ["", "-a", "x" * 101, "a b", "a.b", "a/b", "a:b", "abc\n", "\nabc", "é", "a\x00",
            None, 5, b"abc"],
)
def test_check_workflow_id_rejects_anything_else_naming_it(wid: Any) -> None:
    assert repr(wid) in _message(check_workflow_id, wid)


@given(st.text(st.characters(max_codepoint=0x17F), max_size=102))
@settings(max_examples=100)
def test_check_workflow_id_accepts_exactly_the_full_regex_matches(wid: str) -> None:
    if WORKFLOW_ID.fullmatch(wid):
        assert check_workflow_id(wid) == wid
    else:
        with pytest.raises(ValueError):
            check_workflow_id(wid)


@given(st.from_regex(WORKFLOW_ID, fullmatch=True))
@settings(max_examples=60)
def test_check_workflow_id_accepts_generated_valid_ids(wid: str) -> None:
    assert check_workflow_id(wid) == wid


def test_new_workflow_id_is_wf_prefix_and_21_id_characters() -> None:
    ids = {new_workflow_id() for _ in range(300)}
    assert len(ids) == 300
    for wid in ids:
        assert wid.startswith("wf_") and len(wid) == 24
        assert re.fullmatch(r"wf_[0-9A-Za-z_-]{21}", wid)
        assert check_workflow_id(wid) == wid
        assert not wid.startswith("-")


def test_new_workflow_id_never_starts_with_a_dash_even_when_every_draw_is_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Force the worst draw whichever secrets API the implementation uses ('-' is index 63).
    monkeypatch.setattr(secrets, "choice", lambda alphabet: "-")
    monkeypatch.setattr(secrets, "token_bytes", lambda n=32: bytes([63]) * n)
    wid = new_workflow_id()
    assert wid.startswith("wf_") and len(wid) == 24
    assert check_workflow_id(wid) == wid


# -- metadata -----------------------------------------------------------------------------


def test_check_metadata_accepts_none_and_nested_json_objects() -> None:
    assert check_metadata(None) is None
    meta = {"user": {"id": 7, "tags": ["a", {"deep-key_1": None}]}, "ok": True, "x": 1.5}
    assert check_metadata(meta) is meta
    assert check_metadata({}) == {}


@pytest.mark.parametrize(
    ("meta", "where"),
    [({"a b": 1}, ""), ({"-a": 1}, ""), ({"": 1}, ""), ({"a.b": 1}, ""), ({"k" * 65: 1}, ""),
     ({"user": {"x') OR 1=1 --": 1}}, "under user"), ({"a": {"b": {'c"d': 1}}}, "under a.b"),
     ({"tags": [{"ok": 1}, {"bad key": 2}]}, "under tags[1]"), ({1: "x"}, "")],
)
def test_check_metadata_rejects_bad_keys_at_every_depth_naming_where(meta: Any, where: str
                                                                     ) -> None:
    message = _message(check_metadata, meta)
    assert "invalid metadata key" in message and where in message


@pytest.mark.parametrize(
    "value", [(1, 2), {1, 2}, b"bytes", object(), datetime(2030, 1, 1, tzinfo=UTC), math.nan,
              math.inf, Decimal("1")],
)
def test_check_metadata_rejects_non_json_values(value: Any) -> None:
    message = _message(check_metadata, {"outer": {"inner": [value]}})
    assert "outer.inner[0]" in message


@pytest.mark.parametrize("meta", [[], "x", 5, ("a", 1)])
def test_check_metadata_rejects_non_dicts(meta: Any) -> None:
    assert repr(meta) in _message(check_metadata, meta)


def test_check_metadata_limits_the_number_of_top_level_keys() -> None:
    assert check_metadata({f"k{i}": i for i in range(64)}) is not None
    assert "65 keys" in _message(check_metadata, {f"k{i}": i for i in range(65)})


_KEY = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,10}", fullmatch=True)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEY, inner, max_size=3),
    max_leaves=8,
)


@given(st.dictionaries(_KEY, _JSON, max_size=5))
@settings(max_examples=50)
def test_check_metadata_accepts_any_json_object_with_identifier_keys(meta: dict[str, Any]
                                                                    ) -> None:
    assert check_metadata(meta) == meta


def test_check_metadata_rejects_deeply_nested_metadata_with_value_error() -> None:
    meta: dict[str, Any] = {}
    cursor = meta
    for _ in range(2000):
        cursor["a"] = {}
        cursor = cursor["a"]
    with pytest.raises(ValueError):
        check_metadata(meta)


@pytest.mark.parametrize(
    "key",
    ["x') OR 1=1 --", 'a"b', "user\x00evil", "arr[0]", "", "a..b", ".a", "a.", "$.a", "a b",
     "a\n", "-a", "k" * 65, "a.k" + "k" * 64, "é", "a.*", None, 5, ["a"]],
)
def test_metadata_key_path_returns_none_for_keys_that_cannot_name_stored_data(key: Any) -> None:
    assert metadata_key_path(key) is None


@pytest.mark.parametrize(
    ("key", "path"),
    [("a", '$."a"'), ("a.b", '$."a"."b"'), ("user.id-2._x", '$."user"."id-2"."_x"'),
     ("0.1", '$."0"."1"')],
)
def test_metadata_key_path_quotes_each_segment(key: str, path: str) -> None:
    assert metadata_key_path(key) == path


@given(st.text(max_size=30))
@settings(max_examples=100)
def test_metadata_key_path_is_none_or_built_only_from_valid_segments(key: str) -> None:
    path = metadata_key_path(key)
    if path is None:
        return
    segments = key.split(".")
    assert path == "$" + "".join(f'."{segment}"' for segment in segments)
    assert all(v._META_SEGMENT_RE.match(segment) for segment in segments)
    assert re.fullmatch(r'\$(\."[A-Za-z0-9_-]+")+', path)


@pytest.mark.parametrize("ttl", [0, -1, 0.05, math.nan, math.inf, 100_000, True, "15", None])
async def test_a_bad_lease_ttl_is_refused_naming_it(tmp_path: Any, ttl: Any) -> None:
    """API.md Backends: ``lease_ttl=`` is seconds; a bad one fails at open, naming it,
    before anything is opened."""
    import eventwf

    path = tmp_path / "eventwf.db"
    with pytest.raises(ValueError, match=re.escape(f"invalid lease_ttl {ttl!r}")):
        async with eventwf.open_engine(str(path), lease_ttl=ttl):
            pass
    assert not path.exists()


async def test_a_lease_ttl_in_range_opens(tmp_path: Any) -> None:
    import eventwf

    async with eventwf.open_engine(str(tmp_path / "eventwf.db"), lease_ttl=0.1):
        pass
