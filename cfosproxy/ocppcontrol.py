"""Limits for OCPP wallboxes: the manager's charging profiles.

Implements L{cfosproxy.manager.ILimitActuator} by sending SetChargingProfile
and ClearChargingProfile through the wallbox's one call queue.
"""

from twisted.internet import defer
from zope.interface import implementer

from cfosproxy.manager import ILimitActuator, LimitRefused
from cfosproxy.ocpp.errors import OcppError
from cfosproxy.ocpp.profiles import clear_manager_profile, manager_profile
from cfosproxy.session import SessionClosed


@implementer(ILimitActuator)
class ChargingProfileActuator:
    """Limits a device on its connector with the manager's TxDefaultProfile.

    @param hub: the L{cfosproxy.hub.ChargePointHub} holding the sessions.
    @param clock: L{IReactorTime}, for the schedule's start time.
    """

    def __init__(self, hub, clock):
        self._hub = hub
        self._clock = clock

    def _call(self, device, action, payload):
        session = self._hub.sessions.get(device.address)
        if session is None:
            return defer.fail(SessionClosed(device.address))
        d = session.call(action, payload)
        d.addErrback(_refused_by_callerror, action)
        return d

    def set_limit(self, device, amps):
        d = self._call(
            device,
            "SetChargingProfile",
            manager_profile(device.connector_id, amps, self._clock.seconds()),
        )
        d.addCallback(_require_accepted, "SetChargingProfile")
        return d

    def lift(self, device):
        # "Unknown" means there was nothing to clear: also done.
        return self._call(
            device, "ClearChargingProfile", clear_manager_profile(device.connector_id)
        )


def _require_accepted(result, action):
    status = result.get("status")
    if status != "Accepted":
        raise LimitRefused("{} answered {}".format(action, status))
    return result


def _refused_by_callerror(failure, action):
    # A CALLERROR is an answer: the wallbox did not take the profile (many
    # say NotSupported when smart charging is switched off).
    failure.trap(OcppError)
    raise LimitRefused("{} answered {}".format(action, failure.value))
