"""The sans-IO OCPP-J 1.6 core: frames, error codes, message ids, schemas.

Nothing here imports Twisted or Autobahn or does I/O (beyond reading the
schema files), so the gateway and the manager can be tested without a network.
"""

from cfosproxy.ocpp.errors import ErrorCode, OcppError
from cfosproxy.ocpp.frames import (
    MAX_UNIQUE_ID_LENGTH,
    Call,
    CallError,
    CallResult,
    FrameError,
    MessageType,
    parse_frame,
)
from cfosproxy.ocpp.ids import new_unique_id
from cfosproxy.ocpp.schemas import known_action, validate_call, validate_result

__all__ = [
    "MAX_UNIQUE_ID_LENGTH",
    "Call",
    "CallError",
    "CallResult",
    "ErrorCode",
    "FrameError",
    "MessageType",
    "OcppError",
    "known_action",
    "new_unique_id",
    "parse_frame",
    "validate_call",
    "validate_result",
]
