"""OCPP-J 1.6 frames: parse a text message, turn a message back into text.

Each parsed message keeps the text it came from (``raw``), so that a gateway
can relay it byte for byte: signed meter data (OCMF and the like) is checked
against its exact bytes, and re-serialising would change e.g. ``\\/`` to
``/`` or the spacing.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from cfosproxy.ocpp.errorcodes import ErrorCode

MAX_UNIQUE_ID_LENGTH = 36

# No OCPP 1.6 message nests deeper than about 7 levels (the frame array
# counting as one). A deeper frame is refused when it is read: nested close
# to Python's recursion limit, it would parse here and then fail with
# RecursionError wherever it is serialised again or walked.
MAX_NESTING_DEPTH = 64


class MessageType(IntEnum):
    """The message type id, the first element of every frame."""

    CALL = 2
    CALLRESULT = 3
    CALLERROR = 4


def _dumps(value: list[Any]) -> str:
    # allow_nan=False: never emit NaN/Infinity, they are not JSON.
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate, read from an escape such as "\ud800", cannot
            # be sent as UTF-8; escaped again it is the same JSON string.
            text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    return text


class _Frame:
    # raw is the received text; it only matters while nothing was changed.
    raw: str | None

    def _elements(self) -> list[Any]:
        raise NotImplementedError

    def to_text(self) -> str:
        """The frame as text: the received text if there is one, else compact JSON."""
        return self.raw if self.raw is not None else _dumps(self._elements())


@dataclass(frozen=True)
class Call(_Frame):
    """``[2, uniqueId, action, payload]``: a request."""

    unique_id: str
    action: str
    payload: dict[str, Any]
    # Not part of equality: two frames with the same content are the same
    # message however they were spelled.
    raw: str | None = field(default=None, compare=False, repr=False)

    def _elements(self) -> list[Any]:
        return [MessageType.CALL, self.unique_id, self.action, self.payload]


@dataclass(frozen=True)
class CallResult(_Frame):
    """``[3, uniqueId, payload]``: the answer to a CALL."""

    unique_id: str
    payload: dict[str, Any]
    raw: str | None = field(default=None, compare=False, repr=False)

    def _elements(self) -> list[Any]:
        return [MessageType.CALLRESULT, self.unique_id, self.payload]


@dataclass(frozen=True)
class CallError(_Frame):
    """``[4, uniqueId, errorCode, errorDescription, errorDetails]``: a failed CALL.

    ``error_code`` is a plain string: a peer may send codes that are not in
    :class:`ErrorCode`, and they are relayed as they are.
    """

    unique_id: str
    error_code: str
    error_description: str = ""
    error_details: dict[str, Any] = field(default_factory=dict)
    raw: str | None = field(default=None, compare=False, repr=False)

    def _elements(self) -> list[Any]:
        return [
            MessageType.CALLERROR,
            self.unique_id,
            self.error_code,
            self.error_description,
            self.error_details,
        ]


class FrameError(Exception):
    """A text message that is not a valid OCPP-J frame.

    ``unique_id`` is set when the frame's id could be read (it was a string),
    so that the receiver can answer with :meth:`to_call_error`; otherwise the
    frame can only be dropped. ``message_type`` is the message type id as
    read (any integer), or None when there was none.
    """

    def __init__(
        self,
        code: ErrorCode,
        description: str,
        unique_id: str | None = None,
        message_type: int | None = None,
    ) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.unique_id = unique_id
        self.message_type = message_type

    def to_call_error(self) -> CallError:
        """The CALLERROR that answers the frame; only when ``unique_id`` is set."""
        if self.unique_id is None:
            raise ValueError("frame has no readable unique id to answer")
        return CallError(self.unique_id, self.code.value, self.description)


_LENGTHS: dict[int, int] = {
    MessageType.CALL: 4,
    MessageType.CALLRESULT: 3,
    MessageType.CALLERROR: 5,
}


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


# The start of a frame: "[", the message type id, ",", the unique id as a
# JSON string. Read from text that is not JSON as a whole (cut off, NaN in
# the payload, nested too deep), so that a CALL there can still be answered.
_FRAME_START = re.compile(
    r'[ \t\n\r]*\[[ \t\n\r]*(-?(?:0|[1-9][0-9]{0,8}))[ \t\n\r]*,[ \t\n\r]*'
    r'("(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*")'
)


def _readable_start(text: str) -> tuple[int | None, str | None]:
    """The message type id and unique id at the start of C{text}, if any."""
    match = _FRAME_START.match(text)
    if match is None:
        return None, None
    return int(match.group(1)), json.loads(match.group(2))


def _nested_deeper_than(value: object, limit: int) -> bool:
    # Level by level, without recursion: the point is to refuse values too
    # deep to recurse into.
    containers: list[Any] = [value]
    depth = 1
    while containers:
        if depth > limit:
            return True
        children: list[Any] = []
        for container in containers:
            for item in container.values() if type(container) is dict else container:
                if type(item) is dict or type(item) is list:
                    children.append(item)
        containers = children
        depth += 1
    return False


def _finite_float(text: str) -> float:
    # 1e400 is valid JSON but becomes inf, which could not be sent on again.
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number out of range: {text[:20]}")
    return value


# One decoder for every frame: json.loads() with options builds a new one
# per call, a measurable part of parsing a small frame.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


# Error codes for broken frames, after OCPP-J 1.6 §4.2.3:
# - FormationViolation ("syntactically incorrect or not conform the PDU
#   structure") for everything about the frame's shape: not JSON, not an
#   array, no integer message type, wrong number of elements, an element of
#   the wrong JSON type (id, action, payload, error fields). A payload that is
#   not an object is a shape error, not a TypeConstraintViolation, which 1.6
#   reserves for fields inside a syntactically correct payload.
# - ProtocolError for a well-formed frame that breaks a rule of the protocol:
#   an unknown message type, an empty unique id or one over 36 characters.
#   Such an id is still carried in the FrameError: the sender can match the
#   CALLERROR to its CALL only by the id it used.
def parse_frame(text: str) -> Call | CallResult | CallError:
    """Parse one OCPP-J text message; raises :class:`FrameError` if it is not one."""
    try:
        msg = _DECODER.decode(text)
    except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        start_type, start_id = _readable_start(text)
        raise FrameError(
            ErrorCode.FormationViolation,
            f"not valid JSON: {e}"[:200],
            unique_id=start_id,
            message_type=start_type,
        ) from None
    if not isinstance(msg, list) or not msg:
        raise FrameError(ErrorCode.FormationViolation, "frame is not a non-empty JSON array")
    mtype = msg[0]
    if type(mtype) is not int:  # bool is an int subclass, and not a type id
        raise FrameError(ErrorCode.FormationViolation, "message type id is not an integer")
    uid = msg[1] if len(msg) > 1 and isinstance(msg[1], str) else None

    def fail(code: ErrorCode, description: str) -> FrameError:
        return FrameError(code, description, unique_id=uid, message_type=mtype)

    # Counting brackets is cheap; only a frame with that many is walked.
    if text.count("[") + text.count("{") > MAX_NESTING_DEPTH and _nested_deeper_than(
        msg, MAX_NESTING_DEPTH
    ):
        raise fail(
            ErrorCode.FormationViolation,
            f"frame is nested deeper than {MAX_NESTING_DEPTH} levels",
        )
    if mtype not in _LENGTHS:
        raise fail(ErrorCode.ProtocolError, f"unknown message type id {mtype}"[:200])
    if uid is None:
        raise fail(ErrorCode.FormationViolation, "unique id is missing or not a string")
    if len(msg) != _LENGTHS[mtype]:
        raise fail(
            ErrorCode.FormationViolation,
            f"message type {mtype} needs {_LENGTHS[mtype]} elements, got {len(msg)}",
        )
    if not uid or len(uid) > MAX_UNIQUE_ID_LENGTH:
        raise fail(
            ErrorCode.ProtocolError,
            f"unique id must be 1 to {MAX_UNIQUE_ID_LENGTH} characters long",
        )

    if mtype == MessageType.CALL:
        _, _, action, payload = msg
        if not isinstance(action, str) or not action:
            raise fail(ErrorCode.FormationViolation, "action is not a non-empty string")
        if not isinstance(payload, dict):
            raise fail(ErrorCode.FormationViolation, "payload is not a JSON object")
        return Call(uid, action, payload, raw=text)
    if mtype == MessageType.CALLRESULT:
        payload = msg[2]
        if not isinstance(payload, dict):
            raise fail(ErrorCode.FormationViolation, "payload is not a JSON object")
        return CallResult(uid, payload, raw=text)
    _, _, code, description, details = msg
    if not isinstance(code, str):
        raise fail(ErrorCode.FormationViolation, "errorCode is not a string")
    if not isinstance(description, str):
        raise fail(ErrorCode.FormationViolation, "errorDescription is not a string")
    if not isinstance(details, dict):
        raise fail(ErrorCode.FormationViolation, "errorDetails is not a JSON object")
    return CallError(uid, code, description, details, raw=text)
