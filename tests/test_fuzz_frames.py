"""Fuzzing the OCPP-J frame codec: whatever a wallbox sends, parse_frame
gives a frame or a FrameError, and a CALL whose id can be read can always be
answered with a CALLERROR that carries that id."""

import dataclasses
import json
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cfosproxy.ocpp.errors import ErrorCode
from cfosproxy.ocpp.frames import (
    MAX_NESTING_DEPTH,
    MAX_UNIQUE_ID_LENGTH,
    Call,
    CallError,
    CallResult,
    FrameError,
    parse_frame,
)
from tests.fuzzing import json_values, near_json, texts, unique_ids

FUZZ = settings(max_examples=100, deadline=None)

ids = unique_ids | st.just("x" * 100_000)


def answer_text(error, unique_id):
    """The CALLERROR that answers a broken CALL, checked to be sendable: a
    WebSocket text frame must be UTF-8, and the wallbox must find its id."""
    assert error.unique_id == unique_id
    text = error.to_call_error().to_text()
    text.encode("utf-8")  # raises for a lone surrogate
    frame = json.loads(text)
    assert frame[:3] == [4, unique_id, error.code.value]
    return text


@FUZZ
@given(near_json() | st.binary().map(lambda b: b.decode("utf-8", "replace")))
def test_near_json_text_gives_frame_or_frame_error(text):
    """Text that is almost JSON makes parse_frame return a frame or raise
    FrameError, never any other exception."""
    try:
        frame = parse_frame(text)
    except FrameError as e:
        assert e.description
    else:
        assert frame.to_text() == text


@FUZZ
@given(ids, st.lists(json_values, max_size=4), st.booleans(), st.integers(min_value=0))
def test_call_with_readable_id_can_always_be_answered(unique_id, rest, cut, where):
    """A text that starts like a CALL, ``[2, "<id>", ...``, with anything after
    the id (wrong types, NaN, huge numbers, too many or too few elements, or
    the text cut off) is either a Call with that id or a FrameError carrying
    that id, whose CALLERROR can be sent."""
    text = json.dumps([2, unique_id, *rest])
    if cut:
        # Cut somewhere after the id: the id itself is still whole.
        head = len(json.dumps([2, unique_id]))
        text = text[: head - 1 + where % (len(text) - head + 2)]
    try:
        frame = parse_frame(text)
    except FrameError as e:
        assert e.message_type == 2
        answer_text(e, unique_id)
    else:
        assert isinstance(frame, Call)
        assert frame.unique_id == unique_id
        assert 1 <= len(unique_id) <= MAX_UNIQUE_ID_LENGTH


@FUZZ
@given(st.sampled_from([3, 4]), ids, st.lists(json_values, max_size=5))
def test_results_and_errors_keep_their_type(message_type, unique_id, rest):
    """A broken CALLRESULT or CALLERROR says so (message_type 3 or 4), so
    that the session does not answer it: a CALLERROR for it would be a second
    answer to the session's own CALL."""
    try:
        frame = parse_frame(json.dumps([message_type, unique_id, *rest]))
    except FrameError as e:
        assert e.message_type == message_type
        assert e.unique_id == unique_id
    else:
        assert isinstance(frame, (CallResult, CallError))
        assert frame.unique_id == unique_id


@FUZZ
@given(json_values.filter(lambda v: not isinstance(v, str)), st.booleans())
def test_id_of_another_type_cannot_be_answered(unique_id, as_call):
    """An id that is a number, null, a list or an object is not an id: the
    frame is a FormationViolation that cannot be answered, and parse_frame
    does not crash on it."""
    frame = [2, unique_id, "Heartbeat", {}] if as_call else [3, unique_id, {}]
    with pytest.raises(FrameError) as raised:
        parse_frame(json.dumps(frame))
    assert raised.value.code == ErrorCode.FormationViolation
    assert raised.value.unique_id is None
    with pytest.raises(ValueError):
        raised.value.to_call_error()


@pytest.mark.parametrize("length", [37, 1000, 60_000])
def test_overlong_id_is_a_protocol_error_answered_with_that_id(length):
    """OCPP-J limits unique ids to 36 characters. A longer one is a
    ProtocolError, but it is still answered with the id the wallbox sent:
    that is the only id its CALL can be matched by."""
    unique_id = "7" * length
    with pytest.raises(FrameError) as raised:
        parse_frame(json.dumps([2, unique_id, "Heartbeat", {}]))
    assert raised.value.code == ErrorCode.ProtocolError
    assert "36" in raised.value.description
    answer_text(raised.value, unique_id)
    assert parse_frame(json.dumps([2, "7" * 36, "Heartbeat", {}])).unique_id == "7" * 36


DEEP = 100_000


@pytest.mark.parametrize(
    "text, unique_id",
    [
        ("[" * DEEP, None),
        ("[" * DEEP + "]" * DEEP, None),
        ("{" * DEEP, None),
        ('{"a":' * DEEP + "1" + "}" * DEEP, None),
        ('[2,"deep-1","DataTransfer",' + "[" * DEEP, "deep-1"),
        ('[2,"deep-2","DataTransfer",{"data":' + '{"a":' * DEEP + "1" + "}" * DEEP + "}]", "deep-2"),
        # Deeper than the codec allows, yet shallow enough for json.loads.
        ('[2,"deep-3","DataTransfer",{"data":' + "[" * 200 + "]" * 200 + "}]", "deep-3"),
    ],
    ids=["open", "balanced", "objects", "object-chain", "call-cut", "call-deep", "call-200"],
)
def test_deep_nesting_is_a_frame_error(text, unique_id):
    """Deeply nested text gives a FormationViolation, not a RecursionError or
    MemoryError; a CALL whose id comes before the nesting is answerable."""
    with pytest.raises(FrameError) as raised:
        parse_frame(text)
    assert raised.value.code == ErrorCode.FormationViolation
    assert raised.value.unique_id == unique_id
    if unique_id is not None:
        answer_text(raised.value, unique_id)


def nested(depth):
    """A CALL frame that is C{depth} levels deep, the frame array included."""
    return '[2,"n","DataTransfer",' + '{"a":' * (depth - 1) + "1" + "}" * (depth - 1) + "]"


def test_nesting_limit_is_safe_to_serialise_deep_in_the_stack():
    """The deepest frame the codec accepts can be re-serialised even where
    the Python stack is already deep (a frame renumbered or rewritten
    inside a callback chain), and one level more is refused at once."""
    frame = parse_frame(nested(MAX_NESTING_DEPTH))
    room = sys.getrecursionlimit() - MAX_NESTING_DEPTH - 100

    def deep_in_the_stack(n):
        if n:
            return deep_in_the_stack(n - 1)
        return dataclasses.replace(frame, unique_id="m", raw=None).to_text()

    assert parse_frame(deep_in_the_stack(room)).unique_id == "m"
    with pytest.raises(FrameError) as raised:
        parse_frame(nested(MAX_NESTING_DEPTH + 1))
    assert raised.value.unique_id == "n"


@FUZZ
@given(
    st.builds(Call, texts(), texts(), st.dictionaries(texts(), json_values.filter(
        lambda v: "NaN" not in json.dumps(v) and "Infinity" not in json.dumps(v)
    ), max_size=3))
)
def test_serialised_frames_are_always_utf8(frame):
    """A frame built or renumbered by cfosproxy serialises to text that can be
    sent as UTF-8 and reads back as the same message, even when its strings
    hold lone surrogates (which a wallbox can send as "\\ud800")."""
    text = frame.to_text()
    text.encode("utf-8")
    assert json.loads(text) == json.loads(json.dumps([2, frame.unique_id, frame.action, frame.payload]))


def test_lone_surrogate_id_is_answered_in_utf8():
    """A CALL whose id is a lone surrogate, written as an escape, gets a
    CALLERROR that is valid UTF-8 and carries the very same id."""
    with pytest.raises(FrameError) as raised:
        parse_frame('[2,"\\ud800","Heartbeat",[]]')
    text = answer_text(raised.value, "\ud800")
    assert "\\ud800" in text
