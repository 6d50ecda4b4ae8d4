"""OCPP-J 1.6 error codes and the exception that carries one."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cfosproxy.ocpp.frames import CallError


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


class OcppError(Exception):
    """A CALL that must be answered with a CALLERROR instead of a result."""

    def __init__(
        self, code: ErrorCode | str, description: str = "", details: dict | None = None
    ) -> None:
        super().__init__(code, description)
        self.code = code
        self.description = description
        self.details = {} if details is None else details

    def __str__(self) -> str:
        return f"{self.code}: {self.description}" if self.description else str(self.code)

    def to_call_error(self, unique_id: str) -> CallError:
        """The CALLERROR that answers the CALL with id ``unique_id``."""
        # Imported here because frames needs ErrorCode from this module.
        from cfosproxy.ocpp.frames import CallError

        return CallError(unique_id, str(self.code), self.description, dict(self.details))
