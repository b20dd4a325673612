"""The event catalogue and its codec (eventwf/_events.py, specs/events.md E1-E6).

Strategies are derived from each Struct's msgspec type info rather than
``st.from_type``: that cannot resolve ``Any`` fields and draws ints outside msgpack's
64-bit range.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, get_args

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventwf.errors import CorruptLogError, PayloadTooLargeError
from eventwf.model.codec import (
    MAX_PAYLOAD_BYTES,
    decode_event,
    encode_event,
    encode_value,
    event_type,
    roundtrip_value,
)
from eventwf.model.events import (
    EVENT_TYPES,
    AnyEvent,
    ErrorInfo,
    Event,
    EventReceived,
    SleepCompleted,
    StepSucceeded,
    StreamClaimed,
    WorkflowPaused,
    WorkflowRunning,
    WorkflowStarted,
)
from eventwf.model.workflow_fold import TRANSITIONS

SPEC = Path(__file__).resolve().parents[1] / "specs" / "events.md"
INT64 = (-(2**63), 2**63 - 1)

# E2: field names, types and optionality per tag ("=": has a default). Changing a field's
# type or dropping one changes the log format; new fields must be added here with "=".
FIELDS = {
    "workflow.started": "workflow_name:str agent_class:str agent_name:str params:any= "
                        "metadata:dict[str,any]|None=",
    "workflow.running": "",
    "step.succeeded": "seq:int kind:str name:str|None= value:any= attempt:int="
                      " task:tuple[int,...]=",
    "step.attempt_failed": "seq:int name:str attempt:int error:ErrorInfo retry_at_us:int "
                           "delay_us:int task:tuple[int,...]= concurrent:bool= code:str=",
    "step.retrying": "seq:int name:str attempt:int",
    "step.failed": "seq:int kind:str name:str attempt:int error:ErrorInfo task:tuple[int,...]=",
    "sleep.started": "seq:int name:str wake_at_us:int duration_us:int until:bool="
                     " task:tuple[int,...]= concurrent:bool= code:str=",
    "sleep.completed": "seq:int",
    "wait.started": "seq:int name:str event_type:str timeout_at_us:int timeout_us:int"
                    " task:tuple[int,...]= concurrent:bool= code:str=",
    "event.received": "event_type:str payload:any=",
    "event.consumed": "seq:int name:str event_type:str received:int task:tuple[int,...]=",
    "wait.timed_out": "seq:int name:str event_type:str",
    "workflow.waiting": "seq:int code:str=",
    "workflow.completed": "output:any=",
    "workflow.errored": "error:ErrorInfo",
    "workflow.pause_requested": "",
    "workflow.paused": "",
    "workflow.resumed": "",
    "workflow.blocked": "seq:int error:ErrorInfo",
    "workflow.terminated": "",
    "workflow.restarted": "reset_tracking:bool=",
    "tracking.deleted": "",
    "binding.migrated": "old_name:str new_name:str",
    "agent.created": "agent_class:str name:str",
    "agent.state_set": "state:any= workflow_id:str|None=",
    "agent.state_merged": "partial:dict[str,any] workflow_id:str|None= initial:any=",
    "agent.state_patched": "patch:any= workflow_id:str|None= initial:any=",
    "agent.state_reset": "state:any= workflow_id:str|None=",
    "callback.scheduled": "kind:str workflow_name:str workflow_id:str value:any=",
    "callback.delivered": "through:int",
    "stream.claimed": "owner:str epoch:int",
}

# Values msgpack round-trips exactly (no NaN: NaN != NaN; no tuples: they come back as lists).
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=10) | st.binary(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=10,
)


def _fields(cls: type[Any]) -> tuple[mi.Field, ...]:
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    return info.fields


def _type_name(t: mi.Type) -> str:
    match t:
        case mi.UnionType(types=types):
            return "|".join(_type_name(x) for x in types)
        case mi.DictType(key_type=key, value_type=value):
            return f"dict[{_type_name(key)},{_type_name(value)}]"
        case mi.VarTupleType(item_type=item):
            return f"tuple[{_type_name(item)},...]"
        case mi.StructType(cls=cls):
            return cls.__name__
    return {mi.AnyType: "any", mi.StrType: "str", mi.IntType: "int", mi.BoolType: "bool",
            mi.NoneType: "None"}[type(t)]


def _strategy(t: mi.Type) -> st.SearchStrategy[Any]:
    match t:
        case mi.AnyType():
            return VALUES
        case mi.StrType():
            return st.text(max_size=12)
        case mi.IntType():
            return st.integers(*INT64)
        case mi.BoolType():
            return st.booleans()
        case mi.NoneType():
            return st.none()
        case mi.UnionType(types=types):
            return st.one_of(*(_strategy(x) for x in types))
        case mi.DictType(key_type=key, value_type=value):
            return st.dictionaries(_strategy(key), _strategy(value), max_size=3)
        case mi.ListType(item_type=item):
            return st.lists(_strategy(item), max_size=3)
        case mi.VarTupleType(item_type=item):
            return st.lists(_strategy(item), max_size=3).map(tuple)
        case mi.StructType(cls=cls, fields=fields):
            return st.builds(cls, **{f.name: _strategy(f.type) for f in fields})
    raise TypeError(f"no strategy for {t!r}")


STRATEGIES: dict[type[Event], st.SearchStrategy[Any]] = {
    cls: _strategy(mi.type_info(cls)) for cls in get_args(AnyEvent)
}
ANY_EVENT: st.SearchStrategy[Event] = st.one_of(*STRATEGIES.values())


def _spec_catalogue() -> list[tuple[str, str, str]]:
    text = SPEC.read_text().split("## Catalogue", 1)[1]
    return re.findall(r"^\| `([^`]+)` \| `([^`]+)` \| (\w+) \|", text, flags=re.MULTILINE)


def _decodes_or_corrupt(type_name: str, data: bytes, position: int = 42) -> None:
    """E5: decoding returns an Event of that type or raises CorruptLogError(position)."""
    try:
        event = decode_event(type_name, data, position=position)
    except CorruptLogError as exc:
        assert exc.position == position
        assert f"log position {position}" in str(exc)
    else:
        assert isinstance(event, Event) and event_type(event) == type_name


# -- E1/E2: the catalogue ----------------------------------------------------------------


def test_e1_strategies_cover_exactly_the_31_classes_of_the_catalogue() -> None:
    assert set(STRATEGIES) == set(EVENT_TYPES.values())
    assert len(EVENT_TYPES) == len(get_args(AnyEvent)) == 31


@pytest.mark.parametrize("cls", get_args(AnyEvent), ids=lambda c: c.__name__)
def test_e1_every_event_is_a_frozen_tagged_struct(cls: type[Event]) -> None:
    config = cls.__struct_config__
    assert issubclass(cls, Event) and config.frozen and config.tag_field == "t"
    assert isinstance(config.tag, str) and EVENT_TYPES[config.tag] is cls


def test_e2_tags_and_classes_are_exactly_the_spec_catalogue_table() -> None:
    rows = _spec_catalogue()
    assert len(rows) == 31
    assert {tag: name for tag, name, _ in rows} == {t: c.__name__ for t, c in EVENT_TYPES.items()}


def test_e2_spec_stream_column_matches_where_the_folds_accept_each_event() -> None:
    wf_classes = {c.__name__ for c in TRANSITIONS} | {WorkflowStarted.__name__}
    for _, name, stream in _spec_catalogue():
        if name == StreamClaimed.__name__:  # a fence on either kind of stream (PG13)
            assert stream == "any"
            continue
        assert stream == ("wf" if name in wf_classes else "agent"), name


def test_e2_field_names_types_and_defaults_are_unchanged() -> None:
    actual = {
        tag: " ".join(f"{f.name}:{_type_name(f.type)}{'' if f.required else '='}"
                      for f in _fields(cls))
        for tag, cls in EVENT_TYPES.items()
    }
    assert actual == FIELDS
    assert [(f.name, f.required) for f in _fields(ErrorInfo)] == [
        ("type", True), ("message", True), ("args", False), ("traceback", False),
        ("attrs", False)]


def test_e2_encoding_carries_the_tag_not_the_class_name() -> None:
    assert msgspec.msgpack.decode(encode_event(SleepCompleted(3))) == {
        "t": "sleep.completed", "seq": 3}
    assert msgspec.msgpack.decode(encode_event(WorkflowRunning())) == {"t": "workflow.running"}
    assert msgspec.msgpack.decode(encode_event(StepSucceeded(0, "now", value=5))) == {
        "t": "step.succeeded", "seq": 0, "kind": "now", "value": 5}


def test_e3_events_hold_no_time_except_integer_microsecond_fields() -> None:
    for cls in EVENT_TYPES.values():
        for f in _fields(cls):
            assert not isinstance(f.type, mi.FloatType | mi.DateTimeType), (cls, f.name)
            if f.name.endswith("_us"):
                assert isinstance(f.type, mi.IntType), (cls, f.name)
            assert f.name not in {"time", "time_us", "timestamp", "at"}, (cls, f.name)


# -- E4: round trip ------------------------------------------------------------------------


@pytest.mark.parametrize("cls", get_args(AnyEvent), ids=lambda c: c.__name__)
@given(data=st.data())
@settings(max_examples=15, suppress_health_check=[HealthCheck.too_slow])
def test_e4_every_event_round_trips_through_the_codec(cls: type[Event], data: st.DataObject
                                                     ) -> None:
    event = data.draw(STRATEGIES[cls])
    decoded = decode_event(event_type(event), encode_event(event), position=1)
    assert type(decoded) is cls
    assert decoded == event
    assert encode_event(decoded) == encode_event(event)


# -- E5: decoding errors --------------------------------------------------------------------


def test_e5_unknown_type_name_is_corrupt_log_error_naming_position() -> None:
    data = encode_event(WorkflowRunning())
    for name in ["workflow.exploded", "Workflow.Running", "", "WorkflowRunning"]:
        with pytest.raises(CorruptLogError, match="log position 9") as info:
            decode_event(name, data, position=9)
        assert info.value.position == 9 and repr(name) in str(info.value)


def test_e5_data_tag_different_from_type_column_is_corrupt() -> None:
    with pytest.raises(CorruptLogError) as info:
        decode_event("workflow.running", encode_event(WorkflowPaused()), position=3)
    assert info.value.position == 3
    assert "'workflow.running'" in str(info.value) and "'workflow.paused'" in str(info.value)


def test_e5_without_a_position_the_error_still_is_corrupt_log_error() -> None:
    with pytest.raises(CorruptLogError) as info:
        decode_event("sleep.completed", b"\xc1")
    assert info.value.position is None


@given(ANY_EVENT)
@settings(max_examples=40)
def test_e5_every_truncation_of_a_valid_encoding_is_corrupt(event: Event) -> None:
    data = encode_event(event)
    for cut in range(len(data)):
        with pytest.raises(CorruptLogError) as info:
            decode_event(event_type(event), data[:cut], position=5)
        assert info.value.position == 5


@given(ANY_EVENT, st.binary(min_size=1, max_size=4))
@settings(max_examples=40)
def test_e5_trailing_bytes_after_a_valid_encoding_are_corrupt(event: Event, extra: bytes
                                                              ) -> None:
    with pytest.raises(CorruptLogError) as info:
        decode_event(event_type(event), encode_event(event) + extra, position=6)
    assert info.value.position == 6


@given(st.sampled_from(sorted(EVENT_TYPES)), st.binary(max_size=64))
@settings(max_examples=150)
def test_e5_random_bytes_decode_or_raise_only_corrupt_log_error(type_name: str, data: bytes
                                                                ) -> None:
    _decodes_or_corrupt(type_name, data)


@given(ANY_EVENT, st.data())
@settings(max_examples=150)
def test_e5_bit_flips_of_valid_encodings_decode_or_raise_only_corrupt_log_error(
    event: Event, data: st.DataObject
) -> None:
    raw = bytearray(encode_event(event))
    index = data.draw(st.integers(0, len(raw) - 1))
    raw[index] ^= 1 << data.draw(st.integers(0, 7))
    _decodes_or_corrupt(event_type(event), bytes(raw))


@pytest.mark.parametrize("depth", [100, 2000, 100_000])
@pytest.mark.parametrize("opener", [b"\x91", b"\x81\xa1k"], ids=["arrays", "maps"])
def test_e5_deeply_nested_payload_is_decoded_or_corrupt_never_recursion_error(
    depth: int, opener: bytes
) -> None:
    head = b"\x83\xa1t\xaeevent.received\xaaevent_type\xa1x\xa7payload"
    _decodes_or_corrupt("event.received", head + opener * depth + b"\xc0")


@pytest.mark.parametrize(
    "payload",
    [
        {"t": "sleep.completed", "seq": "3"},  # wrong field type
        {"t": "sleep.completed"},  # missing required field
        {"t": "sleep.completed", "seq": 3.5},  # float for an int
        ["sleep.completed", 3],  # not a map
        {"seq": 3},  # no tag
    ],
)
def test_e5_schema_violations_are_corrupt(payload: Any) -> None:
    with pytest.raises(CorruptLogError) as info:
        decode_event("sleep.completed", msgspec.msgpack.encode(payload), position=8)
    assert info.value.position == 8


def test_e5_invalid_utf8_in_a_string_is_corrupt() -> None:
    data = b"\x82\xa1t\xaeevent.received\xaaevent_type\xa2\xff\xfe"
    with pytest.raises(CorruptLogError) as info:
        decode_event("event.received", data, position=4)
    assert info.value.position == 4


# -- E6: user values -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [object(), 1 + 2j, 2**64, -(2**63) - 1, {"k": object()}, [lambda: None]],
    ids=["object", "complex", "too-big-int", "too-small-int", "nested", "function"],
)
def test_e6_unencodable_value_is_value_error_naming_it(value: Any) -> None:
    with pytest.raises(ValueError, match="the result of step 'fetch' cannot be logged") as info:
        encode_value(value, "the result of step 'fetch'")
    assert not isinstance(info.value, PayloadTooLargeError)


def test_e6_deeply_nested_value_is_value_error_not_recursion_error() -> None:
    value: list[Any] = []
    for _ in range(100_000):
        value = [value]
    with pytest.raises(ValueError, match="params cannot be logged"):
        encode_value(value, "params")


def test_e6_values_over_one_mib_encoded_are_payload_too_large() -> None:
    # bytes of length n encode as bin32: 5 header bytes + n
    assert len(encode_value(b"x" * (MAX_PAYLOAD_BYTES - 5), "state")) == MAX_PAYLOAD_BYTES
    with pytest.raises(PayloadTooLargeError, match="agent state is 1,048,577 bytes encoded"):
        encode_value(b"x" * (MAX_PAYLOAD_BYTES - 4), "agent state")
    with pytest.raises(PayloadTooLargeError):
        encode_value(["y" * 1000] * 1100, "output")
    assert issubclass(PayloadTooLargeError, ValueError)


def test_e6_custom_limit_applies() -> None:
    assert encode_value("ab", "v", limit=3) == b"\xa2ab"
    with pytest.raises(PayloadTooLargeError):
        encode_value("abc", "v", limit=3)


@given(VALUES)
@settings(max_examples=60)
def test_e6_roundtrip_value_is_identity_for_msgpack_native_values(value: Any) -> None:
    assert roundtrip_value(value, "value") == value


def test_e6_roundtrip_value_shows_what_replay_sees() -> None:
    assert roundtrip_value((1, (2, 3)), "v") == [1, [2, 3]]
    assert roundtrip_value({"a": (1,)}, "v") == {"a": [1]}


def test_e6_event_with_user_payload_round_trips() -> None:
    event = EventReceived("approval", {"ok": True, "by": ["x", 1.5, None, b"\x00"]})
    assert decode_event("event.received", encode_event(event)) == event
