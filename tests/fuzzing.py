"""Hypothesis strategies for what a broken or hostile wallbox sends.

Not a test module: the session and server fuzz tests share these. Each
strategy yields a L{Fuzzed} frame: the text to send and what the server owes
for it, so that a test can check that every CALL with a readable id gets
exactly one answer.
"""

import json
from typing import NamedTuple

from hypothesis import strategies as st

from cfosproxy.core.localcs import CHARGE_POINT_ACTIONS

# The ChargeBox-ID the fuzz tests connect as.
CHARGEBOX_ID = "CB-FUZZ"
CONFIG = """
[server]
{server}
[wallbox:fuzz]
type = ocpp
address = CB-FUZZ
"""

# Each frame text stays well under the default max_message_size (65536
# bytes): frames over it close the connection, which is tested elsewhere.
MAX_TEXT = 40_000


class Fuzzed(NamedTuple):
    """One text frame and what the server owes for it.

    C{kind} is C{"call"}: a CALL whose id C{unique_id} can be read, owed
    exactly one CALLRESULT or CALLERROR with that id; C{"answer"}: a
    CALLRESULT or CALLERROR (or a broken one) with a readable id, owed
    nothing, since nothing waits for it; C{"garbage"}: anything else, owed
    at most one answer.
    """

    text: str
    kind: str
    unique_id: str | None = None


def texts(max_size=30):
    """Strings as JSON can carry them. A "\ud800" escape is valid JSON and
    gives a lone surrogate, which hypothesis's text never contains (not even
    with surrogates in its alphabet), so some are put in by hand."""
    return st.text(max_size=max_size) | st.builds(
        lambda before, surrogate, after: before + surrogate + after,
        st.text(max_size=5),
        st.sampled_from(["\ud800", "\udbff", "\udfff"]),
        st.text(max_size=5),
    )


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**30, max_value=10**50)
    # NaN and Infinity too: json.dumps writes them, JSON does not allow them.
    | st.floats()
    | texts()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts(10), inner, max_size=4),
    max_leaves=12,
)
# Ids as wallboxes use them, and as they should not: empty, over 36
# characters, huge, unicode, lone surrogates (sent as "\ud800" escapes).
unique_ids = (
    st.text(min_size=1, max_size=36)
    | texts(60)
    | st.sampled_from(["", "x" * 37, "y" * 5000, "1", " "])
)


def _maybe(valid):
    """Mostly a value of the right kind, sometimes any JSON value."""
    return valid | valid | json_values


_timestamps = st.sampled_from(
    ["2026-11-23T10:00:00Z", "2026-11-23T10:00:00.123+01:00", "yesterday", ""]
)
_connectors = st.integers(min_value=-1, max_value=3) | st.integers()
_id_tags = st.text(max_size=25)
_samples = st.fixed_dictionaries(
    {
        "value": st.sampled_from(["1.5", "0", "-3", "nan", "inf", "1e999", "abc", ""])
        | st.text(max_size=8)
    },
    optional={
        "measurand": st.sampled_from(
            ["Energy.Active.Import.Register", "Power.Active.Import", "Current.Import", "Bogus"]
        ),
        "unit": st.sampled_from(["Wh", "kWh", "W", "kW", "A", "furlong"]),
        "phase": st.sampled_from(["L1", "L2-N"]),
        "format": st.sampled_from(["Raw", "SignedData"]),
        "context": st.sampled_from(["Sample.Periodic", "Transaction.End"]),
    },
)
# Payloads shaped like the real messages, with wrong types now and then: a
# wallbox's payload passes the schema check or gets a CALLERROR, and what
# passes reaches the device registry, which reads it.
PAYLOADS = {
    "BootNotification": st.fixed_dictionaries(
        {"chargePointVendor": _maybe(st.text(max_size=25)), "chargePointModel": _maybe(st.text(max_size=25))},
        optional={"chargePointSerialNumber": st.text(max_size=30), "firmwareVersion": st.text(max_size=60)},
    ),
    "Heartbeat": st.just({}) | st.dictionaries(st.text(max_size=5), json_values, max_size=2),
    "Authorize": st.fixed_dictionaries({"idTag": _maybe(_id_tags)}),
    "StatusNotification": st.fixed_dictionaries(
        {
            "connectorId": _maybe(_connectors),
            "errorCode": _maybe(st.sampled_from(["NoError", "OtherError", "GroundFailure"])),
            "status": _maybe(
                st.sampled_from(["Available", "Preparing", "Charging", "SuspendedEV", "Faulted"])
            ),
        }
    ),
    "StartTransaction": st.fixed_dictionaries(
        {
            "connectorId": _maybe(_connectors),
            "idTag": _maybe(_id_tags),
            "meterStart": _maybe(st.integers()),
            "timestamp": _maybe(_timestamps),
        }
    ),
    "StopTransaction": st.fixed_dictionaries(
        {"transactionId": _maybe(st.integers()), "meterStop": _maybe(st.integers()), "timestamp": _timestamps},
        optional={"idTag": _id_tags, "reason": st.sampled_from(["Local", "EVDisconnected", "Nope"])},
    ),
    "MeterValues": st.fixed_dictionaries(
        {
            "connectorId": _maybe(_connectors),
            "meterValue": _maybe(
                st.lists(
                    st.fixed_dictionaries(
                        {"timestamp": _timestamps, "sampledValue": st.lists(_samples, max_size=3)}
                    ),
                    max_size=2,
                )
            ),
        },
        optional={"transactionId": st.integers()},
    ),
    "DataTransfer": st.fixed_dictionaries(
        {"vendorId": _maybe(st.text(max_size=20))},
        optional={"messageId": st.text(max_size=20), "data": json_values},
    ),
}
_other_actions = (
    st.sampled_from(sorted(CHARGE_POINT_ACTIONS - set(PAYLOADS)))
    | st.sampled_from(["SetChargingProfile", "Reset", "RemoteStartTransaction", "__class__", "../x"])
    | st.text(max_size=12)
)


def _dumps(value):
    # ensure_ascii: lone surrogates in ids go out as escapes, the way a
    # wallbox would have to send them, and the text is valid UTF-8.
    return json.dumps(value)


@st.composite
def messages(draw):
    """A realistic CALL: a known or odd action with a payload of its shape."""
    unique_id = draw(unique_ids)
    if draw(st.booleans()):
        action = draw(st.sampled_from(sorted(PAYLOADS)))
        payload = draw(PAYLOADS[action])
    else:
        action = draw(_other_actions)
        payload = draw(st.dictionaries(st.text(max_size=10), json_values, max_size=3))
    return Fuzzed(_dumps([2, unique_id, action, payload]), "call", unique_id)


@st.composite
def call_shaped(draw):
    """``[2, "<id>", ...]`` with anything after the id, and sometimes cut
    off after the id: still a CALL whose id can be read."""
    unique_id = draw(unique_ids)
    rest = draw(st.lists(json_values, max_size=4))
    text = _dumps([2, unique_id, *rest])
    if draw(st.booleans()):
        head = len(_dumps([2, unique_id])) - 1
        text = text[: draw(st.integers(min_value=head, max_value=len(text)))]
    return Fuzzed(text, "call", unique_id)


@st.composite
def answer_shaped(draw):
    """A CALLRESULT or CALLERROR, well-formed or not, nobody waits for."""
    message_type = draw(st.sampled_from([3, 4]))
    unique_id = draw(unique_ids)
    rest = draw(st.lists(json_values, max_size=4))
    return Fuzzed(_dumps([message_type, unique_id, *rest]), "answer", unique_id)


def near_json():
    """Text built from the characters JSON is made of, so that the fuzzer
    gets past the first character more often than with any text."""
    return st.text(st.sampled_from('[]{}",:\\ 0123456789.-eEtrufalsnNI'), max_size=200)


garbage = st.one_of(
    st.text(max_size=200),
    near_json(),
    st.binary(max_size=200).map(lambda b: b.decode("utf-8", "replace")),
    # Another message type id, or none that is an integer.
    st.lists(json_values, max_size=5).map(_dumps),
    st.tuples(
        st.integers() | st.booleans() | st.text(max_size=3) | st.floats(allow_nan=False),
        st.lists(json_values, max_size=4),
    ).map(lambda t: _dumps([t[0], *t[1]])),
    # Nested past every limit.
    st.integers(min_value=1, max_value=20_000).map(lambda n: "[" * n),
).map(lambda text: Fuzzed(text, "garbage"))

# A CALL whose payload is nested too deep, closed or cut off.
deep_calls = st.tuples(st.integers(min_value=60, max_value=5000), st.booleans()).map(
    lambda t: Fuzzed(
        '[2,"deep","DataTransfer",{"data":' + "[" * t[0] + ("]" * t[0] + "}]" if t[1] else ""),
        "call",
        "deep",
    )
)

frames = st.one_of(messages(), call_shaped(), answer_shaped(), garbage, deep_calls).filter(
    lambda fuzzed: len(fuzzed.text) <= MAX_TEXT
)


def check_answers(fuzzed, answers):
    """Check what the server sent back for one fuzzed frame.

    @param fuzzed: the L{Fuzzed} frame.
    @param answers: the frames sent in answer to it, as text.
    """
    for text in answers:
        text.encode("utf-8")  # a text frame must be UTF-8
        frame = json.loads(text)
        assert isinstance(frame, list) and frame[0] in (3, 4), text[:200]
        assert isinstance(frame[1], str), text[:200]
    if fuzzed.kind == "call":
        assert len(answers) == 1, (fuzzed, answers)
        assert json.loads(answers[0])[1] == fuzzed.unique_id, (fuzzed, answers)
    elif fuzzed.kind == "answer":
        assert answers == [], (fuzzed, answers)
    else:
        assert len(answers) <= 1, (fuzzed, answers)
