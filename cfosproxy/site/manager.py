"""Load management: the site current, shared among the devices that charge.

Sans-IO. The manager reads what wallboxes report (as a session observer),
decides grants over the site as it is wired (circuits, phases, priorities:
L{cfosproxy.site.circuits.share_circuits}), and sets each device's limit
through an L{ILimitActuator} (OCPP charging profiles; Modbus registers).

The fuse is the point, so the manager keeps, per device, the most that the
wallbox may draw as far as anyone can know (its I{exposure}): the limit it
last accepted, or the one in flight if that is higher, or its C{max_current}
while nothing is known and it charges. A device's exposure counts on each
site phase it is counted on (L{cfosproxy.site.phases}), in its circuit,
every circuit above it and the site: each of these is a I{limit}, a phase
of a fuse. A limit that lowers a device goes out at once; one that raises a
device goes out only when, on every limit the device is counted on, the sum
of all exposures stays within what is available with it: a device gets its
grant, or what room the others leave it. So the wallboxes together never may
draw more than a fuse allows, also while changes are in flight: one wallbox
is lowered, and only its acceptance frees current for another.

Wallboxes write limits to flash, so small changes are not sent
(L{cfosproxy.site.volume}): a raise or re-share below 0.5 A stays out, and a
wallbox is raised at most once in 10 s, except for the first grant of a
transaction.

A pass that raises (a bug, a device in a state nobody foresaw) does not stop
load management: it is logged, no limit goes up until a pass succeeds again,
limits the fuse needs lower still go out, and the pass is tried again at the
next event and on a timer.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeGuard, cast

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from cfosproxy.ocpp.frames import CallResult
from cfosproxy.core.errors import LimitRefused, PeerGone, UnitChanged
from cfosproxy.core.interfaces import NO_LIMIT_HELD, IHubObserver
from cfosproxy.site.available import RAMP_TIME, CircuitSettings, SiteLimits, device_currents
from cfosproxy.site.available import ManagerSettings as LimitSettings
from cfosproxy.site.circuits import (
    Circuit,
    Demand,
    Limit,
    PerPhase,
    share_circuits,
)
from cfosproxy.site.meters import MeterBoard, MeterSettings
from cfosproxy.site.phases import PHASES, Phase, phases_in_use, site_phases
from cfosproxy.site.restart import KeptState, kept_state, restore_device
from cfosproxy.site.sharing import to_deciamps
from cfosproxy.site.strategy import LimitStrategy, strategy_of
from cfosproxy.site.volume import MIN_STEP, RAISE_INTERVAL, steady_targets
from cfosproxy.site.watts import IN_AMPERES, SentAs, counted_current, limit_within

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

    from cfosproxy.core.devices import Device, DeviceRegistry
    from cfosproxy.core.interfaces import ILimitActuator
    from cfosproxy.ocpp.frames import Call, CallError

# The wallbox messages that may change what a restart needs to know of it.
_KEPT_ACTIONS = frozenset({"StartTransaction", "StopTransaction", "StatusNotification"})

# After connecting, a wallbox normally sends a BootNotification; the default
# profile goes out after it. A wallbox that reconnects without booting gets
# it after this many seconds.
BOOT_GRACE = 5.0

# After it connected or booted, a wallbox is asked how it takes limits and
# for its connectors' state (TriggerMessage StatusNotification); its first
# limit waits for that state this long at most (a wallbox that cannot be
# triggered sends its state when it changes).
STATE_WAIT = 2.0

# A limit the wallbox refused or did not answer is tried again after this.
RETRY_DELAY = 60.0

# A pass of sharing that raised is tried again after this (and at the next
# event of a managed wallbox, whichever comes first).
RECALCULATION_RETRY = 10.0

# A failure is logged with its traceback the first time; the same kind of
# failure again is said in one line, at most this often (seconds).
FAILURE_REMINDER = 600.0


class ManagerSettings(LimitSettings, Protocol):
    """What the manager reads of the C{[manager]} section
    (L{cfosproxy.config.ManagerConfig}): what L{SiteLimits} reads, and
    more."""

    @property
    def mode(self) -> str: ...

    @property
    def on_deactivate(self) -> str: ...

    @property
    def max_imbalance(self) -> float: ...


class MeterConfig(Protocol):
    """What the manager reads of a C{[meter:*]} section
    (L{cfosproxy.config.MeterConfig})."""

    @property
    def name(self) -> str: ...

    @property
    def type(self) -> str: ...

    @property
    def timeout(self) -> float: ...


class SiteConfig(Protocol):
    """What the manager reads of the daemon's L{cfosproxy.config.Config}."""

    @property
    def manager(self) -> ManagerSettings: ...

    @property
    def circuits(self) -> Sequence[CircuitSettings]: ...

    def used_meters(self) -> Sequence[MeterConfig]: ...


class DeviceLimits(Protocol):
    """What the manager reads of a managed device's configuration
    (L{cfosproxy.config.WallboxConfig})."""

    @property
    def enabled(self) -> bool: ...

    @property
    def min_current(self) -> float: ...

    @property
    def max_current(self) -> float: ...

    @property
    def circuit(self) -> str: ...

    @property
    def wiring(self) -> str: ...

    @property
    def priority(self) -> int: ...


Sharing = Callable[[PerPhase, Sequence[Circuit], Sequence[Demand], float], Mapping[str, float]]


def _limits(device: Device) -> DeviceLimits:
    # Only configured devices are managed, so config is never None here.
    return cast(DeviceLimits, device.config)


@implementer(IHubObserver)
class LoadManager:
    """Grants current to devices and keeps the site under its limit.

    @param config: the daemon's L{cfosproxy.config.Config}.
    @param registry: the L{cfosproxy.core.devices.DeviceRegistry}.
    @param clock: L{IReactorTime}.
    @param save_enabled: C{callable(name, enabled)} that keeps the flag on
        disk.
    @param sharing: the function that splits the site current, with the
        signature of L{cfosproxy.site.circuits.share_circuits} (replaceable
        in tests).
    @param save_state: C{callable(name, state)} that keeps a device's
        L{KeptState} on disk (the limit it may hold, its transaction), so
        that a restart counts it right and does not stop its car; None:
        nothing is kept.
    """

    _log = Logger()

    def __init__(
        self,
        config: SiteConfig,
        registry: DeviceRegistry,
        clock: IReactorTime,
        save_enabled: Callable[[str, bool], object],
        sharing: Sharing = share_circuits,
        save_state: Callable[[str, KeptState], object] | None = None,
    ) -> None:
        self._max_imbalance = config.manager.max_imbalance
        self._control = config.manager.mode == "control"
        self._lift_on_deactivate = config.manager.on_deactivate == "lift_limit"
        self._registry = registry
        # Until connect_actuators: none, so no device is managed.
        self._actuators: Mapping[str, ILimitActuator] = {}
        self._clock = clock
        self._save_enabled = save_enabled
        self._share = sharing
        self._order = itertools.count()
        self._arrival: dict[str, int] = {}
        self._ready: set[str] = set()
        self._stale: set[str] = set()
        self._failed: dict[str, float] = {}
        self._boot_timers: dict[str, IDelayedCall] = {}
        self._retry_timers: dict[str, IDelayedCall] = {}
        self._sends: dict[str, int] = {}
        self._reapply_waiters: dict[str, list[tuple[int, defer.Deferred[bool]]]] = {}
        self._managed: list[Device] = []
        self._managed_size: int | None = None
        self._refresh_call: IDelayedCall | None = None
        # Counts the passes of _apply(), to notice one inside another.
        self._passes = 0
        # Passes of refresh() that raised since the last one that did not,
        # whether one of them was logged, the timer that tries again, and
        # when each kind of failure was last logged (a failure that stays
        # would otherwise log at every event).
        self._failed_passes = 0
        self._failure_said = False
        self._recalculation_retry: IDelayedCall | None = None
        self._failures_logged_at: dict[tuple[object, object], float] = {}
        # The limit each device is to have (its grant, or what it holds when
        # the grant moved less than MIN_STEP: see cfosproxy.site.volume).
        self._targets: dict[str, float] = {}
        # The phases of its own each device's car draws on, as learnt in
        # this transaction (None: nothing known, every wired phase counts).
        self._in_use: dict[str, frozenset[Phase] | None] = {}
        # When each device was last raised; devices whose next grant above
        # 0 is the first of their transaction (not held to RAISE_INTERVAL);
        # the timer that shares again when a held-back raise may go.
        self._raised_at: dict[str, float] = {}
        self._first_grant: set[str] = set()
        self._raise_timer: IDelayedCall | None = None
        # Devices whose accepted_limit is the worst case of what they may
        # hold (a limit went unanswered), not a limit they answered.
        self._uncertain: set[str] = set()
        # How the limit in flight to each device and the one it holds were
        # sent (amperes, or watts for so many phases: cfosproxy.site.watts).
        self._sent_as: dict[str, SentAs] = {}
        self._held_as: dict[str, SentAs] = {}
        # The transaction each device's limit in flight was sent in, and
        # the one its held limit is for when that is a TxProfile.
        self._sent_for: dict[str, int | None] = {}
        self._held_for: dict[str, int] = {}
        # Devices being asked how they take limits and what state they are
        # in (one token per connection), those whose state came meanwhile,
        # and the timers that stop waiting for it.
        self._preparing: dict[str, object] = {}
        self._state_seen: set[str] = set()
        self._state_timers: dict[str, IDelayedCall] = {}
        # What was last kept on disk of each device.
        self._save_state = save_state
        self._kept: dict[str, KeptState] = {}
        # The fuses, the meters, and what is available on each limit now.
        self._limits = SiteLimits(
            config.manager,
            config.circuits,
            [MeterSettings(m.name, m.type, m.timeout) for m in config.used_meters()],
            clock,
            self._managed_currents,
            self._limits_changed,
        )
        # Per circuit (None: the site), itself and every circuit above it.
        self._paths = self._limits.paths
        self._site: PerPhase
        self._circuits: list[Circuit]
        # Deci-amperes available on each limit (a phase of a circuit or of
        # the site).
        self._available: dict[Limit, int]
        self._take_limits()

    # -- what is available ----------------------------------------------------

    @property
    def meters(self) -> MeterBoard:
        """The meters: their readings, age and silence (status API); the
        Modbus meters' pollers report to it."""
        return self._limits.board

    @property
    def site_limit(self) -> float:
        """The site's limit per phase: configured, or set at run time."""
        return self._limits.max_current

    def set_site_limit(self, amps: float) -> None:
        """Change the site's limit per phase at run time; shares again at
        once (lowering goes out at once, as for any overload)."""
        if not (math.isfinite(amps) and amps >= 0):
            raise ValueError(f"a site limit must be 0 A or more, got {amps!r}")
        self._limits.set_max_current(amps)
        self._take_limits()
        self._refresh_soon()

    def available(self) -> Mapping[Limit, int]:
        """Deci-amperes available on each limit (a phase of a circuit or of
        the site) now: the fuses, less what the meters say the rest of the
        building draws."""
        return self._available

    def _take_limits(self) -> None:
        self._site = self._limits.site
        self._circuits = self._limits.circuits
        self._available = self._limits.available

    def _limits_changed(self) -> None:
        """A meter moved what is available: share again (a lower limit
        goes out at once; see L{SiteLimits} for how raises are held)."""
        self._take_limits()
        self._refresh_soon()

    def _managed_currents(self) -> dict[str | None, tuple[list[float], list[float]]]:
        """Per place (circuit, None for the site), what the managed devices
        below it draw on L1, L2, L3 (L{device_currents}): as they report
        it, and with every device that ramps from a raise at its limit."""
        sums: dict[str | None, tuple[list[float], list[float]]] = {}
        unreported: list[float | None] = [None, None, None]
        for device in self.managed():
            limits = _limits(device)
            exposure = self.exposure(device)
            reported = device_currents(limits.wiring, device.currents, device.phases, exposure)
            most = reported
            if self._ramps(device):
                most = device_currents(limits.wiring, unreported, device.phases, exposure)
            for node in self._paths[limits.circuit or None]:
                by_report, by_limit = sums.setdefault(node, ([0.0] * 3, [0.0] * 3))
                for phase in range(3):
                    by_report[phase] += reported[phase]
                    by_limit[phase] += most[phase]
        return sums

    def _ramps(self, device: Device) -> bool:
        """Whether the device's car may still be taking its last raise: it
        has not reported since L{RAMP_TIME} after it."""
        raised = self._raised_at.get(device.name)
        if raised is None:
            return False
        reported = device.currents_at
        return reported is None or reported < raised + RAMP_TIME

    def connect_actuators(self, actuators: Mapping[str, ILimitActuator]) -> None:
        """Take the actuators that set the devices' limits, once, before
        the manager hears of any wallbox.

        Not a constructor argument: the actuators reach the wallboxes
        through the hub and the Modbus clients, which report to this
        manager, so they are made after it.

        @param actuators: C{{device type: ILimitActuator}}; devices of other
            types are shown but not managed.
        """
        self._actuators = actuators
        # Which devices are managed depends on the actuators.
        self._managed_size = None

    # -- which devices ---------------------------------------------------------

    def managed(self) -> list[Device]:
        """The devices the manager shares current among."""
        # Only configured devices are managed, and those are all in the
        # registry from the start; wallboxes the site does not know join it
        # later, unmanaged. So the list changes only when the registry grows,
        # and is kept: refresh() runs on every change of any wallbox, and a
        # pass over thousands of devices each time would add up.
        size = len(self._registry)
        if self._managed_size != size:
            self._managed = [d for d in self._registry if self._is_managed(d)]
            self._managed_size = size
            for device in self._managed:
                if not device.phases:
                    device.phases = self._counted_phases(device)
                if device.type == "ocpp":
                    strategy_of(device)
        return self._managed

    def _is_managed(self, device: Device | None) -> TypeGuard[Device]:
        return device is not None and device.configured and device.type in self._actuators

    def _devices_of(self, chargebox_id: str) -> list[Device]:
        return [d for d in self._registry.devices_of(chargebox_id) if self._is_managed(d)]

    def restore_enabled(self, flags: Mapping[str, bool]) -> None:
        """Take the enabled flags kept on disk (C{{name: bool}}); they win
        over the configuration's C{enabled}, being the later decision."""
        for device in self.managed():
            if device.name in flags and flags[device.name] != device.enabled:
                device.enabled = flags[device.name]
                self._log.info(
                    "{name} is {state} (set at run time; the configuration "
                    "says enabled = {configured})",
                    name=device.name,
                    state="enabled" if device.enabled else "deactivated",
                    configured="yes" if _limits(device).enabled else "no",
                )

    def restore_state(self, states: Mapping[str, KeptState]) -> None:
        """Take what was kept on disk of each device before a restart
        (C{{name: KeptState}}): the limit it may hold counts until it is
        known better, and a transaction that ran goes on, so that a car
        that charged keeps charging once its wallbox is back."""
        for device in self.managed():
            state = states.get(device.name)
            if state is None:
                continue
            held_as, pending, held_for = restore_device(device, state)
            if held_for is not None:
                self._held_for[device.name] = held_for
            if device.accepted_limit is not None:
                self._held_as[device.name] = held_as
            if state.get("uncertain"):
                self._uncertain.add(device.name)
            if pending is not None:
                self._sent_as[device.name] = held_as
                self._may_have_taken(device, pending)
            self._kept[device.name] = kept_state(device, self._held_as.get(device.name), self._uncertain, self._held_for.get(device.name))
            self._log.info(
                "{name}: kept from before the restart: limit {limit}, transaction {transaction}, "
                "status {status}",
                name=device.name,
                limit="none" if device.accepted_limit is None else f"{device.accepted_limit:.1f} A",
                transaction=device.transaction_id,
                status=device.status,
            )

    def _keep(self, device: Device) -> None:
        """Keep on disk what a restart needs of C{device}, if it changed."""
        if self._save_state is None:
            return
        state = kept_state(device, self._held_as.get(device.name), self._uncertain, self._held_for.get(device.name))
        if self._kept.get(device.name) == state:
            return
        try:
            self._save_state(device.name, state)
        except Exception:
            self._log_failure(Failure(), "{name}: keeping its state failed", name=device.name)
            return
        self._kept[device.name] = state

    # -- events from wallboxes -----------------------------------------------

    def connected(
        self, chargebox_id: str, peer: str, certificate_subject: str | None
    ) -> None:
        """A wallbox connected: its profile goes out after its boot."""
        for device in self._devices_of(chargebox_id):
            self._ready.discard(device.name)
            self._stop_preparing(device.name)
        self._cancel_boot_timer(chargebox_id)
        self._boot_timers[chargebox_id] = self._clock.callLater(
            BOOT_GRACE, self._install, chargebox_id
        )
        self._refresh_if_changed(chargebox_id)

    def device_online(self, name: str) -> None:
        """A device without OCPP (Modbus) answers again: its limit is
        written at once (no boot to wait for), whatever it held."""
        self._ready.add(name)
        self._stale.add(name)
        self._failed.pop(name, None)
        self._refresh_soon()

    def device_offline(self, name: str) -> None:
        """A device without OCPP stopped answering; it keeps its limit."""
        self._ready.discard(name)
        self._refresh_soon()

    def disconnected(self, chargebox_id: str) -> None:
        """A wallbox's connection is gone. It keeps the profile it holds and
        may go on charging with it, so its exposure stays."""
        self._cancel_boot_timer(chargebox_id)
        for device in self._devices_of(chargebox_id):
            self._ready.discard(device.name)
            self._stop_preparing(device.name)
        self._refresh_if_changed(chargebox_id)

    def exchange(self, chargebox_id: str, call: Call, answer: CallResult | CallError) -> None:
        """Read one message of a wallbox (after the registry did)."""
        action = call.action
        if action in _KEPT_ACTIONS:
            for device in self._devices_of(chargebox_id):
                self._transaction_changed(device)
                self._keep(device)
        if action == "BootNotification" and isinstance(answer, CallResult):
            if answer.payload.get("status") == "Accepted":
                self._install(chargebox_id)
                return
        if action == "StatusNotification":
            connector = call.payload.get("connectorId")
            for device in self._devices_of(chargebox_id):
                if device.connector_id == connector and device.name in self._preparing:
                    self._state_reported(device.name)
        if action == "StartTransaction":
            # A new car: what the last one drew on each phase says nothing.
            connector = call.payload.get("connectorId")
            for device in self._devices_of(chargebox_id):
                if device.connector_id == connector:
                    self._forget_phases(device)
            self._refresh_soon()
            return
        if call.action == "MeterValues":
            # A list, not a generator: every connector's device learns.
            if any([self._learn_phases(d) for d in self._devices_of(chargebox_id)]):
                self._refresh_soon()
                return
        self._refresh_if_changed(chargebox_id)

    def reading(self, name: str) -> None:
        """The device reported its currents anew (MeterValues, a Modbus
        poll): learn which phases its car draws on, and share again if
        that changes what it is counted on."""
        device = self._registry.get(name)
        if self._is_managed(device) and self._learn_phases(device):
            self._refresh_soon()

    def _forget_phases(self, device: Device) -> None:
        """Count the device on every wired phase again, until a reading
        of its new car says otherwise."""
        self._in_use.pop(device.name, None)
        device.phases = self._counted_phases(device)

    def _learn_phases(self, device: Device) -> bool:
        """Learn from the device's last reading which phases its car draws
        on (L{phases_in_use}), and count it on those.

        @return: whether the phases it is counted on changed."""
        in_use = phases_in_use(self._in_use.get(device.name), device.currents)
        self._in_use[device.name] = in_use
        phases = self._counted_phases(device)
        if phases == device.phases:
            return False
        self._log.info(
            "{name}: counted on {phases} from now on (currents {currents})",
            name=device.name,
            phases="+".join(phases),
            currents=" / ".join("-" if a is None else f"{a:.1f}" for a in device.currents),
        )
        device.phases = phases
        return True

    def _counted_phases(self, device: Device) -> tuple[Phase, ...]:
        """The site phases the device is counted on now."""
        used = site_phases(_limits(device).wiring, self._in_use.get(device.name))
        return tuple(phase for phase in PHASES if phase in used)

    def _limits_of(self, device: Device) -> list[Limit]:
        """The limits (circuit or site, phase) the device is counted on."""
        path = self._paths[_limits(device).circuit or None]
        return [(node, PHASES.index(phase)) for node in path for phase in device.phases]

    def _refresh_if_changed(self, chargebox_id: str) -> None:
        """Share again if one of this wallbox's devices started or stopped
        wanting current: nothing else that a wallbox says or does changes
        the shares (Heartbeats and MeterValues, most of the traffic, don't).
        After a pass that failed, any event of a managed wallbox tries again."""
        if self._failed_passes and self._devices_of(chargebox_id):
            self._refresh_soon()
            return
        for device in self._devices_of(chargebox_id):
            if self._wants(device) != (device.name in self._arrival):
                self._refresh_soon()
                return

    def _cancel_boot_timer(self, chargebox_id: str) -> None:
        timer = self._boot_timers.pop(chargebox_id, None)
        if timer is not None and timer.active():
            timer.cancel()

    def _transaction_changed(self, device: Device) -> None:
        """A TxProfile holds only for its transaction: once the device's
        transaction is another (or none), the wallbox holds its default
        (0 A) or, without one, no limit of the manager's."""
        held_for = self._held_for.get(device.name)
        if held_for is None or device.transaction_id == held_for:
            return
        del self._held_for[device.name]
        strategy = device.strategy
        has_default = isinstance(strategy, LimitStrategy) and strategy.default_limit
        if not has_default:
            device.accepted_limit = None
            self._held_as.pop(device.name, None)
            self._uncertain.discard(device.name)
        elif device.name not in self._uncertain:
            device.accepted_limit = 0.0
        self._stale.add(device.name)

    def _install(self, chargebox_id: str) -> None:
        """Learn how each device of this wallbox takes its limits and what
        state it is in (L{ILimitActuator.prepare}), then put the manager's
        limit into it (0 A until current is granted), whatever it held."""
        self._cancel_boot_timer(chargebox_id)
        for device in self._devices_of(chargebox_id):
            self._ready.discard(device.name)
            self._failed.pop(device.name, None)
            self._lift_if_deactivated(device)
            if self._control:
                self._prepare(device)
            else:
                # Observing: nothing is sent to the wallbox, not even a
                # question.
                self._ready.add(device.name)
        self._refresh_soon()

    def _prepare(self, device: Device) -> None:
        self._stop_preparing(device.name)
        token = self._preparing[device.name] = object()
        d = self._call_actuator("prepare", device)
        d.addCallbacks(
            self._prepared,
            self._prepare_failed,
            callbackArgs=(device.name, token),
            errbackArgs=(device.name, token),
        )

    def _prepared(self, status_coming: object, name: str, token: object) -> None:
        """The device told what it could: wait for its state (if it is on
        its way and did not come already), then send its limit."""
        if self._preparing.get(name) is not token:
            return
        if status_coming is not True or name in self._state_seen:
            self._become_ready(name)
            return
        self._state_timers[name] = self._clock.callLater(STATE_WAIT, self._become_ready, name)

    def _prepare_failed(self, failure: Failure, name: str, token: object) -> None:
        if self._preparing.get(name) is not token:
            return
        if failure.check(PeerGone):
            # Gone again: it is prepared when it is back.
            self._stop_preparing(name)
            return
        self._log_failure(failure, "{name}: preparing its limits failed", name=name)
        self._become_ready(name)

    def _state_reported(self, name: str) -> None:
        """The device reported its state while it is being prepared: once
        it told how it takes limits, they need not wait any longer."""
        self._state_seen.add(name)
        if name in self._state_timers:
            self._become_ready(name)

    def _become_ready(self, name: str) -> None:
        """The device's state is known (or was waited for long enough): its
        limit may go out."""
        self._stop_preparing(name)
        self._ready.add(name)
        self._stale.add(name)
        self._refresh_soon()

    def _stop_preparing(self, name: str) -> None:
        self._preparing.pop(name, None)
        self._state_seen.discard(name)
        timer = self._state_timers.pop(name, None)
        if timer is not None and timer.active():
            timer.cancel()

    # -- deciding ------------------------------------------------------------

    def _update_arrivals(self) -> None:
        """Keep the order in which devices started to want current.

        A device that starts to want current has a new car, or the same car
        after a pause: which phases it draws on is learnt again, and its
        first grant goes at once."""
        for device in self.managed():
            wants = self._wants(device)
            if wants and device.name not in self._arrival:
                self._arrival[device.name] = next(self._order)
                device.charging_since = self._clock.seconds()
                self._first_grant.add(device.name)
                self._forget_phases(device)
            elif not wants and device.name in self._arrival:
                del self._arrival[device.name]
                device.charging_since = None
                self._first_grant.discard(device.name)

    @staticmethod
    def _wants(device: Device) -> bool:
        return device.connected and device.enabled and device.wants_current

    def _refresh_soon(self) -> None:
        """Share again once the reactor is done with what is at hand: a
        storm of wallboxes connecting, booting and accepting their profiles
        then costs one pass over the site per turn, not one per event."""
        if self._refresh_call is None:
            self._refresh_call = self._clock.callLater(0, self.refresh)

    def refresh(self) -> None:
        """Share the site current again and send what changed.

        Never raises: a pass that fails is logged, and the grants and limits
        are held (see L{_hold}) until a pass succeeds."""
        if self._refresh_call is not None:
            if self._refresh_call.active():
                self._refresh_call.cancel()
            self._refresh_call = None
        granted = None
        try:
            granted = {d.name: d.grant for d in self.managed()}
            self._recalculate()
        except Exception:
            self._recalculation_failed(Failure(), granted)
        else:
            self._recalculation_succeeded()

    @property
    def sharing_failures(self) -> int:
        """Passes of sharing in a row that raised (0 while sharing works):
        while it is not 0, no limit goes up (status API, /metrics)."""
        return self._failed_passes

    def site_state(self) -> dict[str, Any]:
        """The site and its circuits as the status API shows them
        (C{GET /api/site}): per circuit and for the site, on L1, L2, L3,
        the limit, what is available to the devices below it, what they
        are counted for (limits in flight included) and what they are
        granted; which devices and circuits hang directly below it."""
        devices = self.managed()
        counted = self.exposure_sums(devices)
        granted = dict.fromkeys(self._available, 0)
        for device in devices:
            for limit in self._limits_of(device):
                granted[limit] += to_deciamps(device.grant)

        def node(name: str | None, parent: str | None) -> dict[str, Any]:
            return {
                "name": name if name is not None else "site",
                "parent": None if name is None else (parent or "site"),
                **self._limits.place_state(name),
                "available": [self._available[name, phase] / 10 for phase in range(3)],
                "counted": [counted[name, phase] / 10 for phase in range(3)],
                "granted": [granted[name, phase] / 10 for phase in range(3)],
                "devices": [
                    d.name for d in devices if (_limits(d).circuit or None) == name
                ],
                "circuits": [c.name for c in self._circuits if c.parent == name],
            }

        site = node(None, None)
        site_granted = [granted[None, phase] for phase in range(3)]
        now = self._clock.seconds()
        return {
            "phases": list(PHASES),
            "max_imbalance": self._max_imbalance,
            "imbalance": (max(site_granted) - min(site_granted)) / 10,
            "sharing_failures": self._failed_passes,
            "reserve": self._limits.reserve,
            "failsafe_current": self._limits.failsafe,
            "site": site,
            "circuits": [node(c.name, c.parent) for c in self._circuits],
            "meters": [meter.as_json(now) for meter in self._limits.board.states()],
        }

    def _recalculate(self) -> None:
        self._update_arrivals()
        devices = {d.name: d for d in self.managed()}
        # Only devices that are still managed: a name that left the list
        # must not stop the sharing for everybody else.
        waiting = [name for name in self._arrival if name in devices]
        grants = self._share(
            self._site,
            self._circuits,
            [self._demand(devices[name]) for name in waiting],
            self._max_imbalance,
        )
        for device in devices.values():
            device.grant = self._limit_of_share(device, grants.get(device.name, 0.0))
        self._targets = steady_targets(
            {name: device.grant for name, device in devices.items()},
            {
                name: d.accepted_limit if d.pending_limit is None else d.pending_limit
                for name, d in devices.items()
            },
            {name: (_limits(d).min_current, _limits(d).max_current) for name, d in devices.items()},
            {name: self._limits_of(d) for name, d in devices.items()},
            self._available,
            self._max_imbalance,
        )
        if self._control:
            self._apply(list(devices.values()))

    def _watt_phases(self, device: Device) -> int:
        """For a device limited in W whose car's phases are not known yet:
        the phases its limit is multiplied by (each counts for that many
        times its limit, up to max_current: L{counted_current}); else 0."""
        if self._sends_as(device).unit != "W" or self._in_use.get(device.name) is not None:
            return 0
        return max(1, len(device.phases))

    def _limit_of_share(self, device: Device, share: float) -> float:
        """The limit that makes a device count for its C{share} on each of
        its phases: the share itself, or for a device limited in W whose
        phases are not known, the share over its phases (its whole
        max_current once the share is that)."""
        phases = self._watt_phases(device)
        most = _limits(device).max_current
        if phases <= 1 or share <= 0 or share >= most:
            return share
        return int(share * 10 / phases + 1e-6) / 10

    def _demand(self, device: Device) -> Demand:
        limits = _limits(device)
        # A device limited in W whose phases are not known is shared by
        # what it counts for: its minimum, sent in W, counts on each phase
        # for that many times (a single-phase car could draw it all on
        # one); see _limit_of_share.
        phases = self._watt_phases(device)
        least = limits.min_current
        if phases > 1:
            least = min(least * phases, limits.max_current)
        return Demand(
            name=device.name,
            circuit=limits.circuit or None,
            # Set by this manager from Phase values only (_counted_phases).
            phases=frozenset(cast("tuple[Phase, ...]", device.phases)),
            min_current=least,
            max_current=limits.max_current,
            priority=limits.priority,
            charging_order=self._arrival[device.name],
        )

    def _recalculation_failed(self, failure: Failure, granted: Mapping[str, float] | None) -> None:
        """A pass raised: log it (see L{_log_failure}), hold the grants and
        limits, and try again on a timer.

        @param granted: C{{name: grant}} from before the pass, or None."""
        self._failed_passes += 1
        if self._log_failure(
            failure,
            "Sharing the site current failed; no limit is raised until it works "
            "again, and it is tried again in {delay:.0f}s and at the next event",
            delay=RECALCULATION_RETRY,
        ):
            self._failure_said = True
        if self._recalculation_retry is None or not self._recalculation_retry.active():
            self._recalculation_retry = self._clock.callLater(
                RECALCULATION_RETRY, self._retry_recalculation
            )
        try:
            self._hold(granted)
        except Exception:
            # Nothing can be worked out: every wallbox keeps what it has.
            self._log_failure(Failure(), "Holding the limits failed; nothing is sent")

    def _log_failure(self, failure: Failure, text: str, **fields: Any) -> bool:
        """Log C{failure} with its traceback the first time its kind occurs,
        and after that in one line at most every L{FAILURE_REMINDER} seconds.

        @return: whether it was logged now."""
        kind = _failure_kind(failure)
        now = self._clock.seconds()
        last = self._failures_logged_at.get(kind)
        if last is None:
            self._log.failure(text, failure, **fields)
        elif now - last >= FAILURE_REMINDER:
            self._log.warn(
                text + " ({error!r} again; its traceback was logged before)",
                error=failure.getErrorMessage(),
                **fields,
            )
        else:
            return False
        self._failures_logged_at[kind] = now
        return True

    def _retry_recalculation(self) -> None:
        self._recalculation_retry = None
        self.refresh()

    def _recalculation_succeeded(self) -> None:
        if self._recalculation_retry is not None:
            if self._recalculation_retry.active():
                self._recalculation_retry.cancel()
            self._recalculation_retry = None
        if self._failure_said:
            # Only after a failure that was logged: one that comes and goes
            # must not log a line each time it goes either.
            self._log.info(
                "Sharing the site current works again ({count} passes had failed)",
                count=self._failed_passes,
            )
        self._failed_passes = 0
        self._failure_said = False

    def _hold(self, granted: Mapping[str, float] | None) -> None:
        """After a failed pass: every grant is as it was before it, and no
        limit goes up; but a device that the others' limits leave less room
        than it holds is lowered, and a device without a limit of the
        manager's (just booted) gets its 0 A default. The fuse holds with
        what is known, without a share.

        @param granted: C{{name: grant}} from before the failed pass (which
            may have changed some before it failed), or None when it failed
            before it could change any."""
        devices = list(self.managed())
        if granted is not None:
            for device in devices:
                device.grant = granted.get(device.name, 0.0)
        if self._control:
            self._apply(devices, hold=True)

    def _counted(self, device: Device, amps: float, sent: SentAs) -> float:
        """What a limit of C{amps} sent as C{sent} lets the device draw on
        each phase it is counted on (L{counted_current})."""
        if sent.unit == "A":
            return amps
        return counted_current(
            amps,
            sent,
            len(device.phases),
            self._in_use.get(device.name) is not None,
            _limits(device).max_current,
        )

    def _sends_as(self, device: Device) -> SentAs:
        """How a limit sent to C{device} now goes: in A, or in W for the
        phases it is counted on."""
        strategy = device.strategy
        if isinstance(strategy, LimitStrategy) and strategy.in_watts:
            return SentAs("W", max(1, len(device.phases)))
        return IN_AMPERES

    def _pending_current(self, device: Device) -> float:
        """What the limit in flight to C{device} lets it draw per phase (0
        while none is)."""
        if device.pending_limit is None:
            return 0.0
        return self._counted(
            device, device.pending_limit, self._sent_as.get(device.name, IN_AMPERES)
        )

    def exposure(self, device: Device) -> float:
        """The most that C{device} may draw now, as far as can be known."""
        known = device.accepted_limit
        if known is not None:
            known = self._counted(device, known, self._held_as.get(device.name, IN_AMPERES))
        if not device.enabled and self._lift_on_deactivate and known is None:
            # Deactivated with lift_limit, and the manager's profiles are
            # cleared: the operator has taken the wallbox out of load
            # management (documented). Until they are (the wallbox is
            # offline, or refused), the limit it still holds counts.
            return 0.0
        if known is None:
            known = _limits(device).max_current if device.wants_current else 0.0
        return max(known, self._pending_current(device))

    def exposure_sums(self, devices: Iterable[Device] | None = None) -> dict[Limit, int]:
        """What C{devices} (default: every managed device) together may draw
        now on each limit, in deci-amperes: C{{(circuit or None for the
        site, phase index): deci-amperes}}, every limit present."""
        return self._sums(self.managed() if devices is None else devices, self.exposure)

    def _planned(self, device: Device) -> float:
        """What C{device} may draw once the limit in flight to it, if any,
        is taken (its L{exposure} while none is)."""
        if device.pending_limit is None:
            return self.exposure(device)
        return min(self.exposure(device), self._pending_current(device))

    def _sums(self, devices: Iterable[Device], amps: Callable[[Device], float]) -> dict[Limit, int]:
        """C{amps(device)} of C{devices}, summed per limit in deci-amperes."""
        sums = dict.fromkeys(self._available, 0)
        for device in devices:
            deciamps = to_deciamps(amps(device))
            if deciamps:
                for limit in self._limits_of(device):
                    sums[limit] += deciamps
        return sums

    def _room(self, device: Device, sums: Mapping[Limit, int], own: int | None = None) -> int:
        """The most C{device} may be given now, in deci-amperes: on each
        limit it is counted on, what is available less what the others may
        draw there (the exposure C{sums}, its own included: C{own}, by
        default its L{exposure})."""
        if own is None:
            own = to_deciamps(self.exposure(device))
        return min(
            self._available[limit] - (sums[limit] - own) for limit in self._limits_of(device)
        )

    def _allowed(self, device: Device, sums: Mapping[Limit, int], own: int | None = None) -> float:
        """The limit C{device} may have now, given the devices'
        L{exposure_sums} (C{own}: see L{_room}): its target, or less when
        the others may still draw more than the rest of a fuse (a lower
        limit in flight, a wallbox that is offline with its old limit).
        Less room than its C{min_current} means 0: a car does not charge
        below its minimum."""
        target = self._targets.get(device.name, device.grant)
        room = self._room(device, sums, own)
        sent = self._sends_as(device)
        if to_deciamps(self._counted(device, target, sent)) <= room:
            return target
        limit = limit_within(
            room / 10,
            sent.unit,
            len(device.phases),
            self._in_use.get(device.name) is not None,
            _limits(device).max_current,
        )
        if limit > 0 and limit >= _limits(device).min_current:
            return min(limit, target)
        return 0.0

    def _held_back(self, device: Device, limit: float, sums: Mapping[Limit, int]) -> float:
        """The limit to send instead of C{limit} so that the wallbox is not
        raised more often than it must be: what it holds, when C{limit}
        raises it by less than L{MIN_STEP}, or when it was raised less than
        L{RAISE_INTERVAL} ago (then the manager shares again once it may).
        The first grant of a transaction goes at once, and so does a raise
        that brings the site's phases closer together while they are
        further apart than C{max_imbalance} (another device's first grant
        may just have pulled them apart).

        @param sums: the devices' L{exposure_sums}."""
        held = device.accepted_limit
        if held is None or limit <= held:
            return limit
        if held <= 0 and device.name in self._first_grant:
            return limit
        if to_deciamps(limit) - to_deciamps(held) < to_deciamps(MIN_STEP):
            return held
        if self._rebalances(device, to_deciamps(limit) - to_deciamps(held), sums):
            return limit
        due = self._raised_at.get(device.name, -RAISE_INTERVAL) + RAISE_INTERVAL
        if self._clock.seconds() < due:
            self._refresh_at(due)
            return held
        return limit

    def _rebalances(self, device: Device, more: int, sums: Mapping[Limit, int]) -> bool:
        """Whether raising C{device} by C{more} deci-amperes lifts lagging
        site phases, without lifting the highest, while the phases are
        further apart than C{max_imbalance}."""
        if self._max_imbalance <= 0:
            return False
        before = [sums[None, phase] for phase in range(3)]
        if max(before) - min(before) <= to_deciamps(self._max_imbalance):
            return False
        after = list(before)
        for phase in device.phases:
            after[PHASES.index(cast(Phase, phase))] += more
        return max(after) <= max(before)

    def _refresh_at(self, when: float) -> None:
        """Share again at C{when} (seconds, the clock's), or earlier."""
        timer = self._raise_timer
        if timer is not None and timer.active():
            if timer.getTime() <= when:
                return
            timer.cancel()
        self._raise_timer = self._clock.callLater(
            max(0.0, when - self._clock.seconds()), self._raise_due
        )

    def _raise_due(self) -> None:
        self._raise_timer = None
        self.refresh()

    def _apply(self, devices: Sequence[Device], hold: bool = False) -> None:
        """Send each device the limit it may have now.

        @param hold: send only limits at or below what each device holds
            (a pass that could not share: see L{_hold})."""
        self._passes += 1
        candidates = [d for d in devices if self._may_send(d)]
        sums = self.exposure_sums(devices)
        # What the devices will draw once the limits in flight are taken
        # and those this pass lowers to their targets: a device is lowered
        # only as far as that leaves the fuses short. Counting only what
        # the others may draw now, every device on an overloaded phase
        # would be lowered by the whole overload at once.
        lowering = {d.name for d in candidates if d.name not in self._failed}

        def foreseen(device: Device) -> float:
            taken = self._planned(device)
            if device.name in lowering:
                target = self._targets.get(device.name, device.grant)
                return min(taken, self._counted(device, target, self._sends_as(device)))
            return taken

        credit = {d.name: to_deciamps(foreseen(d)) for d in devices}
        planned = self._sums(devices, foreseen)

        def order(device: Device) -> tuple[int, float, float]:
            arrival = self._arrival.get(device.name, float("inf"))
            allowed = self._counted(device, self._allowed(device, sums), self._sends_as(device))
            if allowed > self.exposure(device):
                # Raising in the order of sharing: priority, then arrival.
                return (1, -_limits(device).priority, arrival)
            # Lowering first, the lowest priority and the latest first: if
            # they free enough, the others are lowered less.
            return (0, _limits(device).priority, -arrival)

        candidates.sort(key=order)
        # Each limit is worked out just before it goes, against what the
        # others may draw at that moment.
        for device in candidates:
            limit = self._allowed(device, sums)
            held = device.accepted_limit
            if held is not None and limit < held and device.name not in self._uncertain:
                # Below a limit the wallbox surely holds, this is a lowering
                # whatever the others do; below one it may hold (an
                # unanswered limit), it could be a raise, so it gets what
                # the others' exposure leaves it.
                relaxed = self._allowed(device, planned, credit[device.name])
                limit = max(limit, min(relaxed, held))
            if hold:
                limit = min(limit, held or 0.0)
            else:
                limit = self._held_back(device, limit, sums)
            if self._failed.get(device.name) == limit:
                continue
            if device.name in self._stale or held != limit:
                before = to_deciamps(self.exposure(device))
                passes = self._passes
                self._send_limit(device, limit)
                if self._passes == passes:
                    # Sending changed what this device may draw, and nothing
                    # else: after a storm of boots that is thousands of
                    # sends, so no recount of the whole site for each.
                    change = to_deciamps(self.exposure(device)) - before
                    now = to_deciamps(self._planned(device))
                    planned_change, credit[device.name] = now - credit[device.name], now
                    for limit_of in self._limits_of(device):
                        sums[limit_of] += change
                        planned[limit_of] += planned_change
                else:
                    # An answer that came at once shared again in between
                    # and may have sent to others: count again.
                    sums = self.exposure_sums(devices)
                    credit = {d.name: to_deciamps(self._planned(d)) for d in devices}
                    planned = self._sums(devices, self._planned)

    def _may_send(self, device: Device) -> bool:
        return (
            device.connected
            and device.enabled
            and device.name in self._ready
            and device.pending_limit is None
            and not self._nothing_to_send(device)
        )

    @staticmethod
    def _nothing_to_send(device: Device) -> bool:
        """Whether no limit can go to C{device} now: it takes limits only as
        TxProfiles, no transaction runs, and it takes no default."""
        strategy = device.strategy
        return (
            isinstance(strategy, LimitStrategy)
            and strategy.way_for(device.transaction_id is not None) is None
        )

    # -- sending -------------------------------------------------------------

    def controls(self, device: Device | None) -> TypeGuard[Device]:
        """Whether the manager sets this device's limits now."""
        return self._control and self._is_managed(device) and device.enabled

    def reapply(self, name: str) -> defer.Deferred[bool]:
        """Send the device's limit again (its profile's make-up changed, e.g.
        a backend's schedule), even when the amperes are the same.

        @return: a Deferred firing with True once the device accepted a limit
            sent after this call, False when it did not or cannot be reached.
        """
        device = self._registry.get(name)
        if not (self.controls(device) and device.connected):
            return defer.succeed(False)
        d: defer.Deferred[bool] = defer.Deferred()
        self._reapply_waiters.setdefault(name, []).append(
            (self._sends.get(name, 0) + 1, d)
        )
        self._stale.add(name)
        self.refresh()
        return d

    def _settled(self, device: Device, accepted: bool) -> None:
        """A limit sent to the device got its answer: tell those waiting for
        a send at least this recent."""
        done = self._sends.get(device.name, 0)
        waiting = self._reapply_waiters.get(device.name, [])
        ready = [d for number, d in waiting if number <= done]
        self._reapply_waiters[device.name] = [(n, d) for n, d in waiting if n > done]
        for d in ready:
            d.callback(accepted)

    def _send_limit(self, device: Device, amps: float) -> None:
        held = device.accepted_limit
        if held is not None and amps > held:
            self._raised_at[device.name] = self._clock.seconds()
        if amps > 0:
            self._first_grant.discard(device.name)
        device.pending_limit = amps
        self._sent_as[device.name] = self._sends_as(device)
        self._sent_for[device.name] = device.transaction_id
        self._sends[device.name] = self._sends.get(device.name, 0) + 1
        self._stale.discard(device.name)
        # On disk before it goes: a restart must count what may be in force.
        self._keep(device)
        d = self._call_actuator("set_limit", device, amps)
        d.addCallbacks(
            self._limit_accepted,
            self._limit_failed,
            callbackArgs=(device, amps),
            errbackArgs=(device, amps),
        )
        d.addErrback(
            lambda f: self._log.failure("{name}: after a limit", f, name=device.name)
        )

    def _call_actuator(self, method: str, device: Device, *args: object) -> defer.Deferred[Any]:
        """Call the device's actuator; one that raises instead of returning
        a Deferred fails that one send, not the pass over the whole site.
        It may have sent something before it raised: the send then counts
        as unanswered (the worst case), see L{_limit_failed}."""
        try:
            sent: defer.Deferred[Any] = getattr(self._actuators[device.type], method)(
                device, *args
            )
            return sent
        except Exception:
            failure = Failure()
            self._log_failure(failure, "{name}: {method} raised", name=device.name, method=method)
            return defer.fail(failure)

    def _limit_accepted(self, result: object, device: Device, amps: float) -> None:
        device.pending_limit = None
        self._uncertain.discard(device.name)
        device.profile_error = None
        self._failed.pop(device.name, None)
        if result == NO_LIMIT_HELD:
            # No transaction runs, and the wallbox takes no default limit:
            # it holds none of the manager's (counted so: its maximum once
            # a car charges, until its transaction's limit is taken).
            device.accepted_limit = None
            self._held_as.pop(device.name, None)
            self._held_for.pop(device.name, None)
            self._log.info("{name}: no limit held until a transaction runs", name=device.name)
        else:
            device.accepted_limit = amps
            sent = self._held_as[device.name] = self._sent_as.get(device.name, IN_AMPERES)
            self._hold_for_transaction(device)
            self._log.info(
                "{name}: limit {amps:.1f} A accepted{watts}",
                name=device.name,
                amps=amps,
                watts=""
                if sent.unit == "A"
                else " (as {:.0f} W)".format(amps * sent.phases * _voltage(device)),
            )
        self._keep(device)
        self._settled(device, True)
        self._lift_if_deactivated(device)
        self._refresh_soon()

    def _limit_failed(self, failure: Failure, device: Device, amps: float) -> None:
        device.pending_limit = None
        self._settled(device, False)
        if failure.check(UnitChanged):
            # Refused one way, with another way left to try in another
            # unit: at once, not after the retry delay.
            device.profile_error = "limit {:.1f} A: {}".format(amps, failure.getErrorMessage())
            self._stale.add(device.name)
            self._keep(device)
            self._refresh_soon()
            return
        if failure.check(PeerGone):
            # The connection is gone: nothing more goes out until the wallbox
            # reconnects and its profile is installed again. Until then the
            # limit counts as if the wallbox took it.
            self._ready.discard(device.name)
            self._may_have_taken(device, amps)
            self._refresh_soon()
            return
        if not failure.check(LimitRefused):
            # No answer: the wallbox may have taken the higher limit. Count
            # the worst case until it answers a later profile.
            self._may_have_taken(device, amps)
            self._lift_if_deactivated(device)
        device.profile_error = "limit {:.1f} A: {}".format(
            amps, failure.getErrorMessage()
        )
        self._log.warn(
            "{name}: limit {amps:.1f} A not accepted ({error}); retrying in "
            "{delay:.0f}s",
            name=device.name,
            amps=amps,
            error=failure.getErrorMessage(),
            delay=RETRY_DELAY,
        )
        self._failed[device.name] = amps
        old = self._retry_timers.pop(device.name, None)
        if old is not None and old.active():
            old.cancel()
        self._retry_timers[device.name] = self._clock.callLater(
            RETRY_DELAY, self._retry, device.name, amps
        )
        self._refresh_soon()

    def _may_have_taken(self, device: Device, amps: float) -> None:
        """C{amps} went to the device and may or may not be in force: count
        the worst of both until the device answers a later limit. Until
        then what it holds is uncertain: a limit below what it is counted
        for may still raise it.

        With a known limit that is the higher of the two. With none (no
        profile of the manager's, e.g. after a lift) the device draws its
        maximum once it charges, or holds C{amps} at any time: it counts
        for the higher of these. A limit that may not have arrived must
        never lower what a device is counted for."""
        self._uncertain.add(device.name)
        sent = self._sent_as.get(device.name, IN_AMPERES)
        known = device.accepted_limit
        if known is None:
            if amps > 0:
                device.accepted_limit = max(amps, _limits(device).max_current)
                self._held_as[device.name] = sent
                self._hold_for_transaction(device)
        elif self._counted(device, amps, sent) > self.exposure(device):
            device.accepted_limit = amps
            self._held_as[device.name] = sent
            self._hold_for_transaction(device)
        self._keep(device)

    def _hold_for_transaction(self, device: Device) -> None:
        """Note the transaction the limit just held (or maybe held) is for,
        when it went as a TxProfile (see L{_transaction_changed})."""
        strategy = device.strategy
        sent_for = self._sent_for.get(device.name)
        if isinstance(strategy, LimitStrategy) and strategy.needs_transaction and sent_for is not None:
            self._held_for[device.name] = sent_for
        else:
            self._held_for.pop(device.name, None)

    def _retry(self, name: str, amps: float) -> None:
        del self._retry_timers[name]
        if self._failed.get(name) == amps:
            del self._failed[name]
            if name in self._uncertain:
                # Unanswered: it counts at the worst case, which may be the
                # limit it is to have; sent again all the same, or a car
                # whose wallbox never took it would wait for ever.
                self._stale.add(name)
            self._refresh_soon()

    def stop(self) -> None:
        """Cancel every timer (the daemon stops)."""
        timers = list(self._boot_timers.values()) + list(self._retry_timers.values())
        timers += list(self._state_timers.values())
        self._state_timers.clear()
        timers += [
            t
            for t in (self._refresh_call, self._recalculation_retry, self._raise_timer)
            if t is not None
        ]
        self._refresh_call = self._recalculation_retry = self._raise_timer = None
        self._boot_timers.clear()
        self._retry_timers.clear()
        for timer in timers:
            if timer.active():
                timer.cancel()
        self._limits.stop()

    # -- activation ----------------------------------------------------------

    def set_enabled(self, name: str, enabled: bool) -> defer.Deferred[Device]:
        """Activate or deactivate a device at run time (kept on disk).

        Deactivating with C{on_deactivate = lift_limit} clears every profile
        the manager set in the wallbox, so that it runs without the manager;
        with C{keep_limit} the wallbox keeps what it has.

        @return: a Deferred that fires with the device once done.
        @raise KeyError: no managed device has that name.
        """
        device = self._registry.get(name)
        if not self._is_managed(device):
            raise KeyError(name)
        self._save_enabled(name, enabled)
        if device.enabled == enabled:
            return defer.succeed(device)
        device.enabled = enabled
        self._log.info(
            "{name} {state}", name=name, state="enabled" if enabled else "deactivated"
        )
        if enabled:
            self._stale.add(name)
            self.refresh()
            return defer.succeed(device)
        self.refresh()
        d = self._lift_if_deactivated(device)
        if d is None:
            return defer.succeed(device)
        return d.addCallback(lambda _: device)

    def _lift_if_deactivated(self, device: Device) -> defer.Deferred[None] | None:
        """Clear the manager's profiles in a connected device deactivated
        with C{on_deactivate = lift_limit}: when it is deactivated, when it
        boots, and when a limit that was in flight at the lift was (or may
        have been) taken after it; the wallbox then runs without the
        manager, as the operator chose.

        @return: the lift's Deferred, or None when there is nothing to do.
        """
        if device.enabled or not (self._control and self._lift_on_deactivate):
            return None
        if not device.connected:
            return None
        return self._lift(device)

    def _lift(self, device: Device) -> defer.Deferred[None]:
        d = self._call_actuator("lift", device)

        def lifted(_: object) -> None:
            device.accepted_limit = None
            self._held_as.pop(device.name, None)
            self._uncertain.discard(device.name)
            self._keep(device)
            device.profile_error = None
            self._log.info("{name}: manager's limits cleared", name=device.name)
            # What it held counted until now: the others may have it.
            self._refresh_soon()

        def failed(failure: Failure) -> None:
            device.profile_error = "clearing limits: {}".format(
                failure.getErrorMessage()
            )
            self._log.warn(
                "{name}: could not clear the manager's limits: {error}",
                name=device.name,
                error=failure.getErrorMessage(),
            )

        d.addCallbacks(lifted, failed)
        return d


def _voltage(device: Device) -> float:
    return cast(float, getattr(device.config, "voltage", 230.0))


def _failure_kind(failure: Failure) -> tuple[object, object]:
    """What tells one kind of failure from another: the exception's type and
    the line that raised it (not the message, which may hold a name or a
    number that differs each time)."""
    where = failure.frames[-1][1:3] if failure.frames else None
    return (failure.type, where)
