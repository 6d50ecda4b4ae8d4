"""A backend's charging profiles, combined with the local limit.

Sans-IO. A backend's SetChargingProfile is not passed to the wallbox: it is
kept here as the backend's limit, and the wallbox gets the manager's own
profile with, per period, the minimum of the backend's composite schedule
and the local grant (see L{cfosproxy.site.ocpplimits}). The backend gets the
wallbox's answer to that profile. ClearChargingProfile removes the backend's
part, and the local limit alone applies again. So the wallbox never holds a
profile the manager does not know about.

Where the manager does not steer the device (observe mode, a deactivated
device, a connector that is not configured) the backend's profile calls pass
through to the wallbox unchanged.
"""

from twisted.internet import defer
from twisted.logger import Logger

from cfosproxy.ocpp.errors import ErrorCode, OcppError
from cfosproxy.ocpp.profileset import ProfileSet
from cfosproxy.ocpp.schedules import ChargingProfile, limit_at
from cfosproxy.ocpp.schemas import validate_call

# The combined schedule covers this much time ahead; beyond it the local
# grant alone applies until the next profile is sent.
HORIZON = 24 * 3600.0


class BackendProfiles:
    """The backends' profiles per device, and their answers.

    @param registry: the L{cfosproxy.core.devices.DeviceRegistry}.
    @param manager: the L{cfosproxy.site.manager.LoadManager}.
    @param clock: L{IReactorTime}.
    """

    ACTIONS = frozenset({"SetChargingProfile", "ClearChargingProfile"})
    _log = Logger()

    def __init__(self, registry, manager, clock):
        self._registry = registry
        self._manager = manager
        self._clock = clock
        self._profiles = {}

    def periods(self, device, start):
        """The backend's composite schedule for C{device} from C{start}, or
        None when the backend set no profile for it."""
        profiles = self._profiles.get(device.name)
        if profiles is None:
            return None
        return profiles.composite(
            start,
            start + HORIZON,
            transaction_id=device.transaction_id,
            transaction_start=device.charging_since,
        )

    def limit_now(self, device, now):
        """The backend's limit for C{device} at C{now}, or None (no limit)."""
        periods = self.periods(device, now)
        return None if periods is None else limit_at(periods, now)

    def handle(self, gateway, call):
        """Answer a backend's SetChargingProfile or ClearChargingProfile."""
        validate_call(call)
        targets = self._targets(gateway.chargebox_id, call)
        if not all(self._manager.controls(device) for device in targets) or not targets:
            return self._pass_through(gateway, call)
        if call.action == "SetChargingProfile":
            return self._set(targets, call.payload["csChargingProfiles"])
        return self._clear(targets, call.payload)

    def _targets(self, chargebox_id, call):
        connector_id = call.payload.get("connectorId")
        devices = [d for d in self._registry.devices_of(chargebox_id) if d.configured]
        if not devices:
            # A Modbus device's gateway goes by the device's name.
            device = self._registry.get(chargebox_id)
            return [device] if device is not None and device.configured else []
        if connector_id in (None, 0):
            # Connector 0 is the whole charge point: every device of it.
            return devices
        return [d for d in devices if d.connector_id == connector_id]

    def _pass_through(self, gateway, call):
        if gateway.wallbox is None or gateway.wallbox.closed:
            raise OcppError(ErrorCode.GenericError, "the charge point is not connected")
        return gateway.wallbox.send_call(call)

    def _set(self, devices, data):
        try:
            profile = ChargingProfile.from_json(data)
        except ValueError as e:
            raise OcppError(ErrorCode.PropertyConstraintViolation, str(e)) from e
        for device in devices:
            self._profiles.setdefault(device.name, ProfileSet()).set(profile)
            self._log.info(
                "{name}: backend profile {id} ({purpose}, stack level {stack_level}) "
                "kept; the wallbox gets it combined with the local limit",
                name=device.name,
                id=profile.id,
                purpose=profile.purpose,
                stack_level=profile.stack_level,
            )
        return self._reapply(devices)

    def _clear(self, devices, criteria):
        removed = [
            self._profiles.setdefault(device.name, ProfileSet()).clear(criteria)
            for device in devices
        ]
        if not any(removed):
            return {"status": "Unknown"}
        return self._reapply(devices)

    def _reapply(self, devices):
        d = defer.gatherResults([self._manager.reapply(device.name) for device in devices])
        d.addCallback(lambda accepted: {"status": "Accepted" if all(accepted) else "Rejected"})
        return d
