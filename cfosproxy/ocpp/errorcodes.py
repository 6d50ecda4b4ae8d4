"""The CALLERROR codes of OCPP-J 1.6.

A module of their own: the frames refuse broken text with one of them, and
L{cfosproxy.ocpp.errors.OcppError} carries one and is turned into a
CALLERROR frame, so both import this and errors imports frames, never the
other way round.
"""

from enum import StrEnum


class ErrorCode(StrEnum):
    """The CALLERROR codes of OCPP-J 1.6 §4.2.3, spelled as 1.6 spells them."""

    NotImplemented = "NotImplemented"
    NotSupported = "NotSupported"
    InternalError = "InternalError"
    ProtocolError = "ProtocolError"
    SecurityError = "SecurityError"
    FormationViolation = "FormationViolation"
    PropertyConstraintViolation = "PropertyConstraintViolation"
    OccurenceConstraintViolation = "OccurenceConstraintViolation"
    TypeConstraintViolation = "TypeConstraintViolation"
    GenericError = "GenericError"
