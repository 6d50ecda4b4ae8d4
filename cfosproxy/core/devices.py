"""The site's devices and what their wallboxes last reported.

Sans-IO: the registry reads OCPP exchanges (a CALL from a wallbox together with
the answer it got, whoever gave that answer) and keeps per device the state
that the status API shows and the load manager decides on. It never sends
anything.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from twisted.logger import Logger
from zope.interface import implementer

from cfosproxy.core.interfaces import IHubObserver
from cfosproxy.ocpp.frames import CallResult

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from cfosproxy.core.interfaces import Payload
    from cfosproxy.ocpp.frames import Call, CallError

# Connectors a wallbox that is not configured may show (accept_unknown):
# real wallboxes have one or two.
MAX_OBSERVED_CONNECTORS = 8

# Names of wallboxes that are not configured start with this. A configured
# device name may not contain ':' (see cfosproxy.config), so no ChargeBox-ID
# an unknown wallbox chooses can ever take a configured device's name.
UNKNOWN_PREFIX = "unknown:"


def unknown_device_name(chargebox_id: str, connector_id: int) -> str:
    """The name of an unknown wallbox's device: C{unknown:<ChargeBox-ID>:<connector>}.

    The connector is always part of it, and is the text after the last
    ':', so two different wallboxes or connectors never share a name, whatever
    characters their ChargeBox-IDs hold."""
    return "{}{}:{}".format(UNKNOWN_PREFIX, chargebox_id, connector_id)


# StatusNotification states in which a connector draws, or may draw, current.
CHARGING_STATES = frozenset({"Charging", "SuspendedEV"})
# States in which it does not, whatever the transaction says.
IDLE_STATES = frozenset({"Available", "Finishing", "Faulted", "Unavailable"})


class StrategyStatus(Protocol):
    """What a device shows of how its limits are sent
    (L{cfosproxy.site.strategy.LimitStrategy}; a protocol for the same
    reason as L{GatewayStatus})."""

    def as_json(self) -> Mapping[str, object]:
        """The strategy as the status API shows it."""


class GatewayStatus(Protocol):
    """What a device shows of its gateway (L{cfosproxy.core.gateway.Gateway}).

    A protocol, not an import: the gateway's module stands above this one
    (through the backends' profiles, which work on devices), and the
    imports go one way."""

    def status(self) -> Mapping[str, object]:
        """The gateway as the status API shows it."""


@dataclass
class Device:
    """One configured wallbox (or, with C{accept_unknown}, one observed one).

    @ivar name: the configured C{[wallbox:NAME]}, or for an observed wallbox
        L{unknown_device_name}.
    @ivar config: the device's L{cfosproxy.config.WallboxConfig}, or None for
        a wallbox that is not configured and only observed.
    """

    name: str
    type: str
    address: str
    connector_id: int
    config: object = None
    connected: bool = False
    peer: str | None = None
    certificate_subject: str | None = None
    status: str | None = None
    error_code: str | None = None
    transaction_id: int | None = None
    id_tag: str | None = None
    energy_wh: float | None = None
    # The energy register when the running (or last) transaction started.
    meter_start: float | None = None
    power_w: float | None = None
    # The current on each of the wallbox's phases L1, L2, L3 as it last
    # reported them (MeterValues Current.Import per phase, Modbus
    # 8064/8066/8068); None where nothing was reported.
    currents: list[float | None] = field(default_factory=lambda: [None, None, None])
    # When a current was last reported (the clock's seconds); None before.
    currents_at: float | None = None
    boot: dict[str, Any] = field(default_factory=dict)
    last_seen: float | None = None
    # Load management (see cfosproxy.site.manager):
    enabled: bool = True
    charging_since: float | None = None
    grant: float = 0.0
    accepted_limit: float | None = None
    pending_limit: float | None = None
    profile_error: str | None = None
    # The site phases the load manager counts the device on (its wiring,
    # narrowed to what its car draws on: cfosproxy.site.phases).
    phases: tuple[str, ...] = ()
    # The device's L{cfosproxy.core.gateway.Gateway}, when it has a backend.
    gateway: GatewayStatus | None = None
    # How limits are sent to it (OCPP wallboxes the manager controls).
    strategy: StrategyStatus | None = None

    @property
    def configured(self) -> bool:
        return self.config is not None

    def as_json(self) -> dict[str, Any]:
        """The device as the status API shows it."""
        return {
            "name": self.name,
            "type": self.type,
            "address": self.address,
            "id": self.connector_id,
            "configured": self.configured,
            "enabled": self.enabled if self.config else False,
            "connected": self.connected,
            "peer": self.peer,
            "certificate_subject": self.certificate_subject,
            "status": self.status,
            "error_code": self.error_code,
            "transaction_id": self.transaction_id,
            "id_tag": mask_id_tag(self.id_tag),
            "energy_wh": self.energy_wh,
            "session_energy_wh": self.session_energy_wh,
            "power_w": self.power_w,
            "currents": list(self.currents),
            "vendor": self.boot.get("chargePointVendor"),
            "model": self.boot.get("chargePointModel"),
            "serial": boot_serial(self.boot),
            "firmware": self.boot.get("firmwareVersion"),
            "last_seen": self.last_seen,
            "charging": self.charging_since is not None,
            "granted_current": self.grant,
            "accepted_limit": self.accepted_limit,
            "pending_limit": self.pending_limit,
            "profile_error": self.profile_error,
            "circuit": getattr(self.config, "circuit", None) or None,
            "wiring": getattr(self.config, "wiring", None),
            "priority": getattr(self.config, "priority", None),
            "phases": list(self.phases),
            "limits": self.strategy.as_json() if self.strategy is not None else None,
            "gateway": self.gateway.status() if self.gateway is not None else None,
        }

    @property
    def session_energy_wh(self) -> float | None:
        """The energy of the running (or last) transaction so far, or None
        while it cannot be told."""
        if self.meter_start is None or self.energy_wh is None:
            return None
        return max(0.0, self.energy_wh - self.meter_start)

    def stopped_drawing(self) -> None:
        """The connector draws nothing now (its transaction stopped, or it
        shows a state without a car): power and currents read 0, not what
        the last MeterValues said."""
        self.power_w = 0.0
        self.currents = [0.0 if c is not None else None for c in self.currents]

    @property
    def wants_current(self) -> bool:
        """Whether the wallbox is charging or about to: a transaction that
        has not finished, or a status that says it draws current.

        SuspendedEVSE counts when a transaction runs: that is the state a
        wallbox shows while the manager's 0 A default profile holds it.

        A Modbus wallbox wants current from the moment a car is detected
        (state B, shown as Preparing): without current it cannot go on to
        C. With a gateway, only once its transaction runs."""
        if self.type == "modbus":
            if self.status not in ("Preparing", "Charging"):
                return False
            return self.gateway is None or self.transaction_id is not None
        if self.status in IDLE_STATES:
            return False
        return self.transaction_id is not None or self.status in CHARGING_STATES


def boot_serial(boot: Mapping[str, Any]) -> object:
    """The serial number from a BootNotification: the charge point's, or
    else the charge box's (OCPP 1.6 has both; wallboxes fill one)."""
    return boot.get("chargePointSerialNumber") or boot.get("chargeBoxSerialNumber")


def mask_id_tag(id_tag: str | None) -> str | None:
    """Show only the last four characters of an RFID: enough to tell cards
    apart on a status page, not enough to clone one."""
    if not id_tag:
        return id_tag
    return "*" * max(0, len(id_tag) - 4) + id_tag[-4:]


class DeviceSettings(Protocol):
    """What the registry reads of a configured device
    (L{cfosproxy.config.WallboxConfig})."""

    @property
    def name(self) -> str: ...

    @property
    def type(self) -> str: ...

    @property
    def address(self) -> str: ...

    @property
    def id(self) -> int: ...

    @property
    def enabled(self) -> bool: ...


class AdmissionSettings(Protocol):
    """What the registry reads of the C{[server]} section
    (L{cfosproxy.config.ServerConfig})."""

    @property
    def accept_unknown(self) -> bool: ...


class RegistryConfig(Protocol):
    """What the registry reads of the daemon's L{cfosproxy.config.Config}."""

    @property
    def server(self) -> AdmissionSettings: ...

    @property
    def wallboxes(self) -> Iterable[DeviceSettings]: ...


@implementer(IHubObserver)
class DeviceRegistry:
    """All devices of the site, found by name or by ChargeBox-ID + connector.

    @param config: the daemon's L{cfosproxy.config.Config}.
    @param clock: an L{IReactorTime}-like object; only C{seconds()} is used.
    @param gateways: C{{device name: Gateway}} of the configured devices
        that have a backend; each device is made with its gateway.
    """

    _log = Logger()

    def __init__(
        self,
        config: RegistryConfig,
        clock: IReactorTime,
        gateways: Mapping[str, GatewayStatus] | None = None,
    ) -> None:
        gateways = gateways or {}
        self._clock = clock
        self._accept_unknown = config.server.accept_unknown
        self._by_name: dict[str, Device] = {}
        self._by_address: dict[str, list[Device]] = {}
        for wallbox in config.wallboxes:
            self._add(
                Device(
                    name=wallbox.name,
                    type=wallbox.type,
                    address=wallbox.address,
                    connector_id=wallbox.id,
                    config=wallbox,
                    enabled=wallbox.enabled,
                    gateway=gateways.get(wallbox.name),
                )
            )

    def _add(self, device: Device) -> Device | None:
        """Put C{device} in; None if its name is taken (the device that has
        it stays: a name, once given, is never handed to another device)."""
        if device.name in self._by_name:
            self._log.error("device name {name!r} is taken: not observed", name=device.name)
            return None
        self._by_name[device.name] = device
        if device.type == "ocpp":
            self._by_address.setdefault(device.address, []).append(device)
        return device

    def __iter__(self) -> Iterator[Device]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def get(self, name: str) -> Device | None:
        """The device called C{name}, or None."""
        return self._by_name.get(name)

    def is_known(self, chargebox_id: str) -> bool:
        """Whether a wallbox with this ChargeBox-ID is configured."""
        return chargebox_id in self._by_address and any(
            d.configured for d in self._by_address[chargebox_id]
        )

    def may_connect(self, chargebox_id: str) -> bool:
        """Whether a wallbox with this ChargeBox-ID may connect at all."""
        return self._accept_unknown or self.is_known(chargebox_id)

    def devices_of(self, chargebox_id: str) -> list[Device]:
        """The devices behind one ChargeBox-ID (one per connector)."""
        return list(self._by_address.get(chargebox_id, ()))

    def _device_for(self, chargebox_id: str, connector_id: object) -> Device | None:
        """The device on this connector; an unknown wallbox gets an observed
        device (not configured) the first time one of its connectors shows."""
        device: Device | None
        devices = self._by_address.get(chargebox_id, [])
        for device in devices:
            if device.connector_id == connector_id:
                return device
        if devices and any(d.configured for d in devices):
            # A connector that the operator did not configure: not ours.
            return None
        if (
            type(connector_id) is not int
            or not 1 <= connector_id <= MAX_OBSERVED_CONNECTORS
            or len(devices) >= MAX_OBSERVED_CONNECTORS
        ):
            # An unknown wallbox names its connectors itself: it must not
            # make the registry (and the status page) grow without bound.
            return None
        device = self._add(
            Device(
                name=unknown_device_name(chargebox_id, connector_id),
                type="ocpp",
                address=chargebox_id,
                connector_id=connector_id,
            )
        )
        if device is not None:
            device.connected = True
        return device

    # -- events from wallbox sessions --------------------------------------

    def connected(self, chargebox_id: str, peer: str, certificate_subject: str | None) -> None:
        """A wallbox connected (or replaced its earlier connection)."""
        for device in self._devices_or_first(chargebox_id):
            device.connected = True
            device.peer = peer
            device.certificate_subject = certificate_subject
            device.last_seen = self._clock.seconds()

    def disconnected(self, chargebox_id: str) -> None:
        """A wallbox's connection is gone."""
        for device in self.devices_of(chargebox_id):
            device.connected = False

    def _devices_or_first(self, chargebox_id: str) -> list[Device]:
        devices = self.devices_of(chargebox_id)
        if not devices and self._accept_unknown:
            device = self._device_for(chargebox_id, 1)
            devices = [device] if device is not None else []
        return devices

    def exchange(self, chargebox_id: str, call: Call, answer: CallResult | CallError) -> None:
        """Read one CALL from a wallbox and the answer it got.

        @param call: the wallbox's L{Call}.
        @param answer: the L{CallResult} or L{CallError} sent back.
        """
        now = self._clock.seconds()
        # Every message of every wallbox passes here: no copy of the list.
        for device in self._by_address.get(chargebox_id, ()):
            device.last_seen = now
        if not isinstance(answer, CallResult):
            return
        payload = call.payload
        reader = getattr(self, "_read_" + call.action, None)
        if reader is not None:
            reader(chargebox_id, payload, answer.payload)

    def _read_BootNotification(self, chargebox_id: str, payload: Payload, result: Payload) -> None:
        self._log.info(
            "{cbid} booted: {vendor} {model}, serial {serial}, firmware "
            "{firmware}; {status}",
            cbid=chargebox_id,
            vendor=payload.get("chargePointVendor"),
            model=payload.get("chargePointModel"),
            serial=boot_serial(payload),
            firmware=payload.get("firmwareVersion"),
            status=result.get("status"),
        )
        for device in self._devices_or_first(chargebox_id):
            device.boot = dict(payload)

    def _read_StatusNotification(
        self, chargebox_id: str, payload: Payload, result: Payload
    ) -> None:
        device: Device | None
        connector_id = payload.get("connectorId")
        if connector_id == 0:
            # Connector 0 is the charge point as a whole: only a fault
            # there says anything about the devices behind it.
            if payload.get("status") == "Faulted":
                for device in self.devices_of(chargebox_id):
                    device.error_code = payload.get("errorCode")
            return
        device = self._device_for(chargebox_id, connector_id)
        if device is not None:
            device.status = payload.get("status")
            device.error_code = payload.get("errorCode")
            if device.status in IDLE_STATES:
                device.stopped_drawing()

    def _read_StartTransaction(self, chargebox_id: str, payload: Payload, result: Payload) -> None:
        device = self._device_for(chargebox_id, payload.get("connectorId"))
        self._log.info(
            "{cbid} connector {connector}: transaction {transaction} started "
            "for id tag {id_tag} at {meter} Wh",
            cbid=chargebox_id,
            connector=payload.get("connectorId"),
            transaction=result.get("transactionId"),
            id_tag=mask_id_tag(payload.get("idTag")),
            meter=payload.get("meterStart"),
        )
        if device is not None and "transactionId" in result:
            device.transaction_id = result["transactionId"]
            device.id_tag = payload.get("idTag")
            device.energy_wh = device.meter_start = payload.get("meterStart")
            # A new car: what the last one drew on each phase says nothing.
            device.currents = [None, None, None]

    def _read_StopTransaction(self, chargebox_id: str, payload: Payload, result: Payload) -> None:
        self._log.info(
            "{cbid}: transaction {transaction} stopped at {meter} Wh ({reason})",
            cbid=chargebox_id,
            transaction=payload.get("transactionId"),
            meter=payload.get("meterStop"),
            reason=payload.get("reason", "Local"),
        )
        for device in self.devices_of(chargebox_id):
            if device.transaction_id == payload.get("transactionId"):
                device.transaction_id = None
                device.id_tag = None
                device.energy_wh = payload.get("meterStop", device.energy_wh)
                device.stopped_drawing()

    def _read_MeterValues(self, chargebox_id: str, payload: Payload, result: Payload) -> None:
        device = self._device_for(chargebox_id, payload.get("connectorId"))
        if device is None:
            return
        for meter_value in payload.get("meterValue", ()):
            for sample in meter_value.get("sampledValue", ()):
                if _apply_sample(device, sample):
                    device.currents_at = self._clock.seconds()


# Sample units as the OCPP 1.6 UnitOfMeasure enumeration names them, with the
# factor to Wh or W.
_ENERGY_UNITS = {"Wh": 1.0, "kWh": 1000.0}
_POWER_UNITS = {"W": 1.0, "kW": 1000.0}

# The phases a per-phase current sample may name (OCPP 1.6 Phase), and the
# index of the wallbox phase each stands for.
_CURRENT_PHASES = {"L1": 0, "L2": 1, "L3": 2, "L1-N": 0, "L2-N": 1, "L3-N": 2}


def _apply_sample(device: Device, sample: Mapping[str, Any]) -> bool:
    """Take the energy register, the active power and the current per phase
    from one sampled value.

    Of the samples of a single phase only the currents count: energy and
    power are shown as totals.

    @return: whether it was a current of a phase.
    """
    if sample.get("format") == "SignedData":
        return False
    measurand = sample.get("measurand", "Energy.Active.Import.Register")
    phase = sample.get("phase")
    if phase and measurand != "Current.Import":
        return False
    try:
        value = float(sample["value"])
    except (KeyError, TypeError, ValueError):
        return False
    if not math.isfinite(value):
        # "NaN" and "inf" read as floats, but no meter shows them, and the
        # status API's JSON could not carry them.
        return False
    if measurand == "Current.Import":
        index = _CURRENT_PHASES.get(phase) if isinstance(phase, str) else None
        if index is not None and sample.get("unit", "A") == "A" and value >= 0:
            device.currents[index] = value
            return True
    elif measurand == "Energy.Active.Import.Register":
        factor = _ENERGY_UNITS.get(sample.get("unit", "Wh"))
        if factor is not None:
            device.energy_wh = value * factor
    elif measurand == "Power.Active.Import":
        factor = _POWER_UNITS.get(sample.get("unit", "W"))
        if factor is not None:
            device.power_w = value * factor
    return False
