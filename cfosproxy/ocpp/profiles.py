"""The charging profiles that cfosproxy's load manager owns.

Every profile the manager sets uses a fixed id range and stack level, so
that it can be found, replaced and cleared again without touching anything
else in the wallbox:

- ``chargingProfileId`` = ``MANAGER_PROFILE_ID_BASE`` + connector id for a
  ``TxDefaultProfile`` (1952000 … 1952099; OCPP 1.6 has at most 99
  connectors worth naming here), ``MANAGER_TX_PROFILE_ID_BASE`` + connector
  id for a ``TxProfile`` (1952100 … 1952199);
- ``stackLevel`` = ``MANAGER_STACK_LEVEL``, or lower for a wallbox that
  takes no more (L{cfosproxy.site.strategy});
- purpose ``TxDefaultProfile``, so it applies to the transactions that follow
  as well as to the one running; or, for a wallbox that rejects those, a
  ``TxProfile`` for the running transaction; kind ``Absolute``; rate unit
  ``A``, or ``W`` for a wallbox that takes only Power.
"""

import math
from typing import Any

from cfosproxy.ocpp.times import ocpp_time

MANAGER_PROFILE_ID_BASE = 1952000
MANAGER_TX_PROFILE_ID_BASE = 1952100
MANAGER_STACK_LEVEL = 1
PURPOSE_ID_BASES = {
    "TxDefaultProfile": MANAGER_PROFILE_ID_BASE,
    "TxProfile": MANAGER_TX_PROFILE_ID_BASE,
}


def manager_profile_id(connector_id: int, purpose: str = "TxDefaultProfile") -> int:
    """The chargingProfileId the manager uses on C{connector_id} for
    profiles of C{purpose}."""
    return PURPOSE_ID_BASES[purpose] + connector_id


def manager_profile(
    connector_id: int,
    limit: float,
    start_seconds: float,
    schedule: dict[str, Any] | None = None,
    *,
    purpose: str = "TxDefaultProfile",
    stack_level: int = MANAGER_STACK_LEVEL,
    transaction_id: int | None = None,
) -> dict[str, Any]:
    """The SetChargingProfile payload that limits C{connector_id}.

    @param limit: amperes per phase; sent with one decimal.
    @param start_seconds: POSIX time the schedule starts (now).
    @param schedule: a whole chargingSchedule to send instead of the one
        period of C{limit} in A (a limit in W, a backend's schedule
        combined with the limit).
    @param transaction_id: the running transaction's id, for a TxProfile.
    """
    if schedule is None:
        schedule = {
            "startSchedule": ocpp_time(start_seconds),
            "chargingRateUnit": "A",
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": round(limit, 1)}],
        }
    profile: dict[str, Any] = {
        "chargingProfileId": manager_profile_id(connector_id, purpose),
        "stackLevel": stack_level,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Absolute",
        "chargingSchedule": schedule,
    }
    if purpose == "TxProfile":
        if transaction_id is None:
            raise ValueError("a TxProfile needs the running transaction's id")
        profile["transactionId"] = transaction_id
    return {"connectorId": connector_id, "csChargingProfiles": profile}


def in_watts(schedule: dict[str, Any], watts_per_ampere: float) -> dict[str, Any]:
    """A chargingSchedule in A written in W: each limit times
    C{watts_per_ampere} (volts per phase × phases), rounded down to one
    decimal so that it never allows more than the amperes did."""
    periods = [
        {**period, "limit": math.floor(period["limit"] * watts_per_ampere * 10 + 1e-6) / 10}
        for period in schedule["chargingSchedulePeriod"]
    ]
    return {**schedule, "chargingRateUnit": "W", "chargingSchedulePeriod": periods}


def fit_periods(schedule: dict[str, Any], max_periods: int) -> dict[str, Any]:
    """A chargingSchedule in at most C{max_periods} periods (some wallboxes
    take few): the last period kept holds the least of the limits from its
    start on, so that the schedule never allows more than the one given."""
    periods = schedule["chargingSchedulePeriod"]
    if len(periods) <= max_periods:
        return schedule
    kept = [dict(p) for p in periods[: max(1, max_periods)]]
    kept[-1]["limit"] = min(p["limit"] for p in periods[len(kept) - 1 :])
    return {**schedule, "chargingSchedulePeriod": kept}


def clear_manager_profile(connector_id: int, purpose: str = "TxDefaultProfile") -> dict[str, int]:
    """The ClearChargingProfile payload that removes the manager's profile
    of C{purpose} from C{connector_id}."""
    return {"id": manager_profile_id(connector_id, purpose)}
