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

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from twisted.internet import defer
from twisted.logger import Logger

from cfosproxy.ocpp.errors import ErrorCode, OcppError
from cfosproxy.ocpp.profileset import ProfileSet
from cfosproxy.ocpp.schedules import ChargingProfile, limit_at
from cfosproxy.ocpp.schemas import validate_call

if TYPE_CHECKING:
    from cfosproxy.core.devices import Device, DeviceRegistry
    from cfosproxy.core.interfaces import Answer, Payload
    from cfosproxy.ocpp.frames import Call, CallError, CallResult
    from cfosproxy.ocpp.schedules import Period

# The combined schedule covers this much time ahead; beyond it the local
# grant alone applies until the next profile is sent.
HORIZON = 24 * 3600.0


class CallingGateway(Protocol):
    """What the profiles need of the gateway a backend's call came through
    (L{cfosproxy.core.gateway.Gateway}).

    A protocol, not an import: the gateway hands its calls here, so its
    module stands above this one, and the imports go one way."""

    @property
    def chargebox_id(self) -> str: ...

    def pass_to_wallbox(self, call: Call) -> defer.Deferred[CallResult | CallError]:
        """Send C{call} to the wallbox as it is."""


class Steering(Protocol):
    """What the backends' profiles need of the load manager
    (L{cfosproxy.site.manager.LoadManager})."""

    def controls(self, device: Device) -> bool:
        """Whether the manager sets C{device}'s limits now."""

    def reapply(self, name: str) -> defer.Deferred[bool]:
        """Send the device's limit again; True once it accepted one."""


class BackendProfiles:
    """The backends' profiles per device, and their answers.

    Made before the site it acts on: the gateways that hand it the
    backends' calls need it, and the site's devices are made with those
    gateways. L{serve} gives it the site, once, before the daemon runs.
    """

    ACTIONS = frozenset({"SetChargingProfile", "ClearChargingProfile"})
    _log = Logger()

    def __init__(self) -> None:
        self._registry: DeviceRegistry | None = None
        self._manager: Steering | None = None
        self._profiles: dict[str, ProfileSet] = {}

    def serve(self, registry: DeviceRegistry, manager: Steering) -> None:
        """Act for the site: a backend's call is for devices of C{registry},
        and kept or passed on as C{manager} steers them.

        @param registry: the L{cfosproxy.core.devices.DeviceRegistry}.
        @param manager: the L{cfosproxy.site.manager.LoadManager}.
        """
        self._registry = registry
        self._manager = manager

    def periods(self, device: Device, start: float) -> list[Period] | None:
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

    def limit_now(self, device: Device, now: float) -> float | None:
        """The backend's limit for C{device} at C{now}, or None (no limit)."""
        periods = self.periods(device, now)
        return None if periods is None else limit_at(periods, now)

    def handle(self, gateway: CallingGateway, call: Call) -> Answer:
        """Answer a backend's SetChargingProfile or ClearChargingProfile."""
        validate_call(call)
        targets = self._targets(gateway.chargebox_id, call)
        # serve() gave the site before the daemon ran.
        assert self._manager is not None
        if not all(self._manager.controls(device) for device in targets) or not targets:
            return gateway.pass_to_wallbox(call)
        if call.action == "SetChargingProfile":
            return self._set(targets, call.payload["csChargingProfiles"])
        return self._clear(targets, call.payload)

    def _targets(self, chargebox_id: str, call: Call) -> list[Device]:
        connector_id = call.payload.get("connectorId")
        # serve() gave the site before the daemon ran.
        assert self._registry is not None
        devices = [d for d in self._registry.devices_of(chargebox_id) if d.configured]
        if not devices:
            # A Modbus device's gateway goes by the device's name.
            device = self._registry.get(chargebox_id)
            return [device] if device is not None and device.configured else []
        if connector_id in (None, 0):
            # Connector 0 is the whole charge point: every device of it.
            return devices
        return [d for d in devices if d.connector_id == connector_id]

    def _set(self, devices: list[Device], data: Payload) -> defer.Deferred[Payload]:
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

    def _clear(self, devices: list[Device], criteria: Mapping[str, object]) -> Answer:
        removed = [
            self._profiles.setdefault(device.name, ProfileSet()).clear(criteria)
            for device in devices
        ]
        if not any(removed):
            return {"status": "Unknown"}
        return self._reapply(devices)

    def _reapply(self, devices: list[Device]) -> defer.Deferred[Payload]:
        # serve() gave the site before the daemon ran.
        assert self._manager is not None
        d = defer.gatherResults([self._manager.reapply(device.name) for device in devices])
        return d.addCallback(
            lambda accepted: {"status": "Accepted" if all(accepted) else "Rejected"}
        )
