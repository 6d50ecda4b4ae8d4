"""Limits for OCPP wallboxes: the manager's charging profiles.

Implements L{cfosproxy.core.interfaces.ILimitActuator} by sending SetChargingProfile
and ClearChargingProfile through the wallbox's one call queue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface import implementer

from cfosproxy.core.errors import LimitRefused, PeerGone
from cfosproxy.core.interfaces import ILimitActuator
from cfosproxy.ocpp.errors import OcppError
from cfosproxy.ocpp.profiles import clear_manager_profile, manager_profile
from cfosproxy.ocpp.schedules import Period, minimum, to_charging_schedule

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from cfosproxy.core.backendprofiles import BackendProfiles
    from cfosproxy.core.devices import Device
    from cfosproxy.core.hub import ChargePointHub

# A payload of OCPP JSON, as sent and as answered.
Payload = dict[str, Any]


@implementer(ILimitActuator)
class ChargingProfileActuator:
    """Limits a device on its connector with the manager's TxDefaultProfile.

    @param hub: the L{cfosproxy.core.hub.ChargePointHub} holding the sessions.
    @param clock: L{IReactorTime}, for the schedule's start time.
    @param backend_profiles: the L{BackendProfiles} of gateway wallboxes, or
        None: a backend's schedule is combined with the local limit.
    """

    def __init__(
        self,
        hub: ChargePointHub,
        clock: IReactorTime,
        backend_profiles: BackendProfiles | None = None,
    ) -> None:
        self._hub = hub
        self._clock = clock
        self._backend_profiles = backend_profiles

    def _call(self, device: Device, action: str, payload: Payload) -> defer.Deferred[Payload]:
        session = self._hub.sessions.get(device.address)
        if session is None:
            return defer.fail(PeerGone(device.address))
        d: defer.Deferred[Payload] = session.call(action, payload)
        d.addErrback(_refused_by_callerror, action)
        return d

    def set_limit(self, device: Device, amps: float) -> defer.Deferred[Payload]:
        now = self._clock.seconds()
        d = self._call(
            device,
            "SetChargingProfile",
            manager_profile(
                device.connector_id, amps, now, self._schedule(device, amps, now)
            ),
        )
        d.addCallback(_require_accepted, "SetChargingProfile")
        return d

    def _schedule(self, device: Device, amps: float, now: float) -> Payload | None:
        """Per period the lower of the backend's limit and C{amps}; None
        when no backend limits the device."""
        if self._backend_profiles is None:
            return None
        backend: list[Period] | None = self._backend_profiles.periods(device, now)
        if backend is None:
            return None
        local = [Period(now, None, amps)]
        return to_charging_schedule(minimum(backend, local), now, unlimited=amps)

    def lift(self, device: Device) -> defer.Deferred[Payload]:
        # "Unknown" means there was nothing to clear: also done.
        return self._call(
            device, "ClearChargingProfile", clear_manager_profile(device.connector_id)
        )


def _require_accepted(result: Payload, action: str) -> Payload:
    status = result.get("status")
    if status != "Accepted":
        raise LimitRefused("{} answered {}".format(action, status))
    return result


def _refused_by_callerror(failure: Failure, action: str) -> NoReturn:
    # A CALLERROR is an answer: the wallbox did not take the profile (many
    # say NotSupported when smart charging is switched off).
    failure.trap(OcppError)
    raise LimitRefused("{} answered {}".format(action, failure.value))
