"""The charging profiles that cfosproxy's load manager owns.

Every profile the manager sets uses a fixed id range and stack level, so
that it can be found, replaced and cleared again without touching anything
else in the wallbox:

- ``chargingProfileId`` = ``MANAGER_PROFILE_ID_BASE`` + connector id
  (1952000 … 1952099; OCPP 1.6 has at most 99 connectors worth naming here);
- ``stackLevel`` = ``MANAGER_STACK_LEVEL``;
- purpose ``TxDefaultProfile``, so it applies to the transactions that follow
  as well as to the one running, kind ``Absolute``, rate unit ``A``.
"""

from typing import Any

from cfosproxy.ocpp.times import ocpp_time

MANAGER_PROFILE_ID_BASE = 1952000
MANAGER_STACK_LEVEL = 1


def manager_profile_id(connector_id: int) -> int:
    """The chargingProfileId the manager uses on C{connector_id}."""
    return MANAGER_PROFILE_ID_BASE + connector_id


def manager_profile(
    connector_id: int,
    limit: float,
    start_seconds: float,
    schedule: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The SetChargingProfile payload that limits C{connector_id}.

    @param limit: amperes per phase; sent with one decimal.
    @param start_seconds: POSIX time the schedule starts (now).
    @param schedule: a whole chargingSchedule to send instead of the one
        period of C{limit} (a backend's schedule combined with the limit).
    """
    if schedule is None:
        schedule = {
            "startSchedule": ocpp_time(start_seconds),
            "chargingRateUnit": "A",
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": round(limit, 1)}],
        }
    return {
        "connectorId": connector_id,
        "csChargingProfiles": {
            "chargingProfileId": manager_profile_id(connector_id),
            "stackLevel": MANAGER_STACK_LEVEL,
            "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Absolute",
            "chargingSchedule": schedule,
        },
    }


def clear_manager_profile(connector_id: int) -> dict[str, int]:
    """The ClearChargingProfile payload that removes the manager's profile
    from C{connector_id}."""
    return {"id": manager_profile_id(connector_id)}
