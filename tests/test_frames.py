"""Parsing and serialising OCPP-J frames (cfosproxy.ocpp.frames)."""

import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cfosproxy.ocpp.errors import ErrorCode, OcppError
from cfosproxy.ocpp.frames import (
    Call,
    CallError,
    CallResult,
    FrameError,
    parse_frame,
)
from cfosproxy.ocpp.ids import new_unique_id

BOOT = {"chargePointVendor": "cFos", "chargePointModel": "Power Brain"}

# A MeterValues CALL with OCMF signed data, as an encoder that escapes "/"
# writes it: compact re-serialisation would turn every "\/" into "/" and
# break the signature check at the backend.
OCMF_FRAME = (
    '[2, "mv-1", "MeterValues", {"connectorId": 1, "transactionId": 17, '
    '"meterValue": [{"timestamp": "2024-05-01T12:00:00Z", "sampledValue": [{'
    '"value": "OCMF|{\\"FV\\":\\"1.0\\",\\"GI\\":\\"cFos\\/PB\\",'
    '\\"PG\\":\\"T1\\",\\"RD\\":[{\\"TM\\":\\"2024-05-01T12:00:00,000+0000 S\\",'
    '\\"RV\\":12.345,\\"RU\\":\\"kWh\\"}]}|{\\"SA\\":\\"ECDSA-secp256r1-SHA256\\",'
    '\\"SD\\":\\"3045022100' + "AB" * 32 + '\\/022039' + "CD" * 30 + '\\"}", '
    '"format": "SignedData", "context": "Transaction.End", '
    '"measurand": "Energy.Active.Import.Register"}]}]}]'
)


@pytest.mark.parametrize(
    "frame",
    [
        Call("c1", "BootNotification", BOOT),
        CallResult("r1", {"status": "Accepted", "interval": 300}),
        CallError("e1", "NotImplemented", "no such action", {"action": "Foo"}),
        CallError("e2", "GenericError"),
    ],
)
def test_round_trip(frame):
    """Each kind of frame, serialised and parsed again, is the same message."""
    parsed = parse_frame(frame.to_text())
    assert parsed == frame
    assert type(parsed) is type(frame)


def test_to_text_without_raw_is_compact_json():
    """A frame built in code is sent as compact JSON with unicode left as it is."""
    call = Call("u1", "DataTransfer", {"vendorId": "cFos", "data": "Grüße ⚡"})
    assert call.to_text() == (
        '[2,"u1","DataTransfer",{"vendorId":"cFos","data":"Grüße ⚡"}]'
    )
    assert CallResult("u1", {}).to_text() == '[3,"u1",{}]'
    assert CallError("u1", "InternalError").to_text() == '[4,"u1","InternalError","",{}]'


@pytest.mark.parametrize(
    "text",
    [
        '[ 2 ,"x1",  "Heartbeat" ,{ } ]',
        '[3,"x2",{"currentTime":"2024-01-01T00:00:00Z","note":"Grüße ⚡ \\u00e9"}]\n',
        '[4, "x3", "GenericError", "kaputt: \\/dev", {"a" : [1.50, 2e3]}]',
        OCMF_FRAME,
    ],
    ids=["spacing", "unicode", "escapes-and-numbers", "ocmf"],
)
def test_raw_text_is_kept_byte_for_byte(text):
    """A received frame is relayed as exactly the text that arrived."""
    frame = parse_frame(text)
    assert frame.raw == text
    assert frame.to_text() == text
    compact = json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)
    assert frame.to_text() != compact


def test_ocmf_signed_data_survives_parsing():
    """The parsed payload holds the signed data; the relayed text keeps its escapes."""
    frame = parse_frame(OCMF_FRAME)
    sampled = frame.payload["meterValue"][0]["sampledValue"][0]
    assert sampled["format"] == "SignedData"
    assert sampled["value"].startswith("OCMF|")
    assert "\\/" in frame.to_text()


def test_frame_without_its_text_is_serialised_anew():
    """A received frame copied under a new id and without its received text
    is written as compact JSON under that id; the rest is unchanged."""
    frame = parse_frame('[2, "backend-7", "Reset", {"type": "Soft"}]')
    renumbered = dataclasses.replace(frame, unique_id="local-1", raw=None)
    assert renumbered.to_text() == '[2,"local-1","Reset",{"type":"Soft"}]'
    error = dataclasses.replace(parse_frame('[4,"a","X","d",{}]'), unique_id="b", raw=None)
    assert error == CallError("b", "X", "d")
    assert error.to_text() == '[4,"b","X","d",{}]'


def test_new_unique_ids_are_36_characters_and_distinct():
    """Ids that cfosproxy originates fit OCPP's 36 characters and do not repeat."""
    ids = {new_unique_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 36 for i in ids)
    parse_frame(Call(next(iter(ids)), "Heartbeat", {}).to_text())


ID37 = "x" * 37

MALFORMED = [
    ("not json", "[2, 'a'", ErrorCode.FormationViolation, None),
    ("object", '{"a": 1}', ErrorCode.FormationViolation, None),
    ("empty array", "[]", ErrorCode.FormationViolation, None),
    ("string type id", '["2", "a", "Heartbeat", {}]', ErrorCode.FormationViolation, None),
    ("bool type id", '[true, "a", "Heartbeat", {}]', ErrorCode.FormationViolation, None),
    ("unknown type with id", '[7, "a7", {}]', ErrorCode.ProtocolError, "a7"),
    ("call too short", '[2, "a", "Heartbeat"]', ErrorCode.FormationViolation, "a"),
    ("call too long", '[2, "a", "Heartbeat", {}, {}]', ErrorCode.FormationViolation, "a"),
    ("result too long", '[3, "r", {}, {}]', ErrorCode.FormationViolation, "r"),
    ("error too short", '[4, "e", "GenericError", ""]', ErrorCode.FormationViolation, "e"),
    ("type id only", "[2]", ErrorCode.FormationViolation, None),
    ("id 37 chars", f'[2, "{ID37}", "Heartbeat", {{}}]', ErrorCode.ProtocolError, ID37),
    ("empty id", '[2, "", "Heartbeat", {}]', ErrorCode.ProtocolError, ""),
    ("id int", '[2, 17, "Heartbeat", {}]', ErrorCode.FormationViolation, None),
    ("action int", '[2, "a", 5, {}]', ErrorCode.FormationViolation, "a"),
    ("action empty", '[2, "a", "", {}]', ErrorCode.FormationViolation, "a"),
    ("payload list", '[2, "a", "Heartbeat", []]', ErrorCode.FormationViolation, "a"),
    ("result payload null", '[3, "a", null]', ErrorCode.FormationViolation, "a"),
    ("error code int", '[4, "a", 1, "", {}]', ErrorCode.FormationViolation, "a"),
    ("error description null", '[4, "a", "X", null, {}]', ErrorCode.FormationViolation, "a"),
    ("error details list", '[4, "a", "GenericError", "", []]', ErrorCode.FormationViolation, "a"),
    # Not JSON as a whole, but the id at the start is readable.
    ("NaN", '[2, "a", "MeterValues", {"v": NaN}]', ErrorCode.FormationViolation, "a"),
    ("Infinity", '[3, "a", {"v": -Infinity}]', ErrorCode.FormationViolation, "a"),
    ("overflowing number", '[3, "a", {"v": 1e400}]', ErrorCode.FormationViolation, "a"),
    ("deep nesting", "[" * 100000 + "]" * 100000, ErrorCode.FormationViolation, None),
]


@pytest.mark.parametrize(
    "text, code, unique_id", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_frames(text, code, unique_id):
    """A broken frame raises FrameError with the OCPP code and the id when it is readable."""
    with pytest.raises(FrameError) as info:
        parse_frame(text)
    assert info.value.code == code
    assert info.value.unique_id == unique_id
    assert info.value.description


def test_frame_error_answers_with_call_error():
    """A broken frame with a readable id can be answered with a CALLERROR carrying that id."""
    with pytest.raises(FrameError) as info:
        parse_frame('[2, "q1", "Heartbeat", []]')
    answer = info.value.to_call_error()
    assert answer.unique_id == "q1"
    assert answer.error_code == "FormationViolation"
    assert parse_frame(answer.to_text()) == answer


def test_frame_error_without_id_cannot_be_answered():
    """Without a readable id there is nothing to correlate an answer with."""
    with pytest.raises(FrameError) as info:
        parse_frame("hello")
    assert info.value.unique_id is None
    with pytest.raises(ValueError):
        info.value.to_call_error()


def test_ocpp_error_to_call_error():
    """An OcppError becomes the CALLERROR that answers the CALL's id."""
    err = OcppError(ErrorCode.NotSupported, "no reservations", {"action": "ReserveNow"})
    assert err.to_call_error("r9").to_text() == (
        '[4,"r9","NotSupported","no reservations",{"action":"ReserveNow"}]'
    )
    assert OcppError(ErrorCode.GenericError).details == {}


# --- property tests --------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=20,
)
# Arrays that look like frames, so the checks past the first element get exercised.
frame_like = st.tuples(
    st.sampled_from([2, 3, 4, 0, 7, -1]) | json_scalars,
    st.lists(json_values, max_size=5),
).map(lambda t: [t[0], *t[1]])


def _parse_or_frame_error(text):
    try:
        parse_frame(text)
    except FrameError:
        pass


@given(st.text())
def test_arbitrary_text_raises_only_frame_error(text):
    """No text message, however broken, makes parse_frame raise anything but FrameError."""
    _parse_or_frame_error(text)


@given(json_values | frame_like)
def test_arbitrary_json_raises_only_frame_error(value):
    """No JSON value, however shaped, makes parse_frame raise anything but FrameError."""
    _parse_or_frame_error(json.dumps(value))
    _parse_or_frame_error(json.dumps(value, indent=1, ensure_ascii=False))


unique_ids = st.text(min_size=1, max_size=36)
payloads = st.dictionaries(st.text(), json_values, max_size=5)
valid_frames = (
    st.builds(Call, unique_ids, st.text(min_size=1), payloads)
    | st.builds(CallResult, unique_ids, payloads)
    | st.builds(CallError, unique_ids, st.text(), st.text(), payloads)
)


@given(valid_frames, st.sampled_from([None, 0, 2]))
def test_serialised_frames_parse_back_equal(frame, indent):
    """A valid frame, written out in any JSON layout and re-serialised, parses back equal."""
    text = json.dumps(json.loads(frame.to_text()), indent=indent)
    parsed = parse_frame(text)
    assert parsed == frame
    assert parsed.to_text() == text
    assert parse_frame(dataclasses.replace(parsed, raw=None).to_text()) == frame
