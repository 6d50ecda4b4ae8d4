"""The exception that makes a CALL be answered with a CALLERROR.

L{ErrorCode} lives in L{cfosproxy.ocpp.errorcodes} and is importable from
here too, next to the exception that carries one.
"""

from __future__ import annotations

from typing import Any

from cfosproxy.ocpp.errorcodes import ErrorCode
from cfosproxy.ocpp.frames import CallError

__all__ = ["ErrorCode", "OcppError"]


class OcppError(Exception):
    """A CALL that must be answered with a CALLERROR instead of a result."""

    def __init__(
        self,
        code: ErrorCode | str,
        description: str = "",
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(code, description)
        self.code = code
        self.description = description
        self.details = {} if details is None else details

    def __str__(self) -> str:
        return f"{self.code}: {self.description}" if self.description else str(self.code)

    def to_call_error(self, unique_id: str) -> CallError:
        """The CALLERROR that answers the CALL with id ``unique_id``."""
        return CallError(unique_id, str(self.code), self.description, dict(self.details))
