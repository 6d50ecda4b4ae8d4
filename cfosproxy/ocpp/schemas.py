"""Payload validation against the official OCPP 1.6 JSON schemas.

The schemas are the ones shipped with the ``ocpp`` package; its
``get_validator`` reads and caches them.
"""

from __future__ import annotations

import decimal
import json
from pathlib import Path

import ocpp.messages
from jsonschema.exceptions import best_match

from cfosproxy.ocpp.errors import ErrorCode, OcppError
from cfosproxy.ocpp.frames import Call, CallResult, MessageType

_SCHEMA_DIR = Path(ocpp.messages.__file__).parent / "v16" / "schemas"

# An action is known when both its request and its response schema exist.
# Checking this first also keeps odd action names ("../x") away from file paths.
_ACTIONS = frozenset(
    p.stem
    for p in _SCHEMA_DIR.glob("*.json")
    if not p.stem.endswith("Response") and (_SCHEMA_DIR / f"{p.stem}Response.json").exists()
)

# These schemas say "multipleOf": 0.1 for a float; as a binary float 21.4 is
# not a multiple of 0.1, so the schema and the payload are both read as
# Decimal. The set is the one the ocpp package uses itself: get_validator
# caches per schema, not per parse_float, so we must ask for each schema the
# same way it does.
_DECIMAL_SCHEMAS = {
    (MessageType.CALL, "SetChargingProfile"),
    (MessageType.CALL, "RemoteStartTransaction"),
    (MessageType.CALLRESULT, "GetCompositeSchedule"),
}

# jsonschema keyword -> OCPP-J 1.6 error code. A missing required field is a
# ProtocolError ("payload for action is incomplete"), as in the ocpp package;
# OccurenceConstraintViolation would fit too, but peers that also use the
# ocpp package expect ProtocolError.
_CODES = {
    "type": ErrorCode.TypeConstraintViolation,
    "maxLength": ErrorCode.TypeConstraintViolation,
    "required": ErrorCode.ProtocolError,
    "additionalProperties": ErrorCode.FormationViolation,
    "enum": ErrorCode.PropertyConstraintViolation,
}

_MAX_DESCRIPTION = 200


def _short(text: str) -> str:
    return text if len(text) <= _MAX_DESCRIPTION else text[: _MAX_DESCRIPTION - 1] + "…"


def known_action(action: str) -> bool:
    """Whether OCPP 1.6 (with its security extension) defines ``action``."""
    return action in _ACTIONS


def _validate(message_type: MessageType, action: str, payload: object) -> None:
    if not known_action(action):
        raise OcppError(ErrorCode.NotImplemented, _short(f"unknown action {action!r}"))
    if (message_type, action) in _DECIMAL_SCHEMAS:
        validator = ocpp.messages.get_validator(
            message_type, action, "1.6", parse_float=decimal.Decimal
        )
        payload = json.loads(json.dumps(payload), parse_float=decimal.Decimal)
    else:
        validator = ocpp.messages.get_validator(message_type, action, "1.6")
    try:
        error = best_match(validator.iter_errors(payload))
    except decimal.DecimalException:
        # multipleOf on a huge number (1e400 % 0.1) cannot be computed.
        raise OcppError(ErrorCode.PropertyConstraintViolation, "number out of range") from None
    if error is None:
        return
    path = "/".join(str(part) for part in error.absolute_path)
    raise OcppError(
        _CODES.get(error.validator, ErrorCode.FormationViolation),
        _short(error.message),
        {"path": path} if path else None,
    )


def validate_call(call: Call) -> None:
    """Check a CALL's payload against its request schema; raises :class:`OcppError`.

    The error's code follows OCPP-J 1.6 §4.2.3; its description is the schema
    validator's message and its details name the offending field's path.
    """
    _validate(MessageType.CALL, call.action, call.payload)


def validate_result(action: str, result: CallResult) -> None:
    """Check the answer to a CALL of ``action`` against the response schema.

    Raises :class:`OcppError` like :func:`validate_call`.
    """
    _validate(MessageType.CALLRESULT, action, result.payload)
