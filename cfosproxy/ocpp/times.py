"""OCPP dateTime values."""

from datetime import datetime, timezone


def ocpp_time(seconds: float) -> str:
    """An OCPP dateTime (RFC 3339, UTC, milliseconds) for a POSIX time."""
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
