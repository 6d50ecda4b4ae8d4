"""Load management: the site current, shared among the devices that charge.

Sans-IO. The manager reads what wallboxes report (as a session observer),
decides grants with L{cfosproxy.site.sharing.share}, and sets each device's limit
through an L{ILimitActuator} (OCPP charging profiles; Modbus registers).

The fuse is the point, so the manager keeps, per device, the most that the
wallbox may draw as far as anyone can know (its I{exposure}): the limit it
last accepted, or the one in flight if that is higher, or its C{max_current}
while nothing is known and it charges. A limit that lowers a device goes out
at once; one that raises a device goes out only when the sum of all
exposures stays within the site limit with it: a device gets its grant, or
what room the others leave it. So the wallboxes together never may draw more
than the site limit, also while changes are in flight: one wallbox is
lowered, and only its acceptance frees current for another.

A pass that raises (a bug, a device in a state nobody foresaw) does not stop
load management: it is logged, no limit goes up until a pass succeeds again,
limits the fuse needs lower still go out, and the pass is tried again at the
next event and on a timer.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeGuard, cast

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from cfosproxy.ocpp.frames import CallResult
from cfosproxy.core.errors import LimitRefused, PeerGone
from cfosproxy.core.interfaces import IHubObserver
from cfosproxy.site.sharing import Request, share, to_deciamps

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

    from cfosproxy.core.devices import Device, DeviceRegistry
    from cfosproxy.core.interfaces import ILimitActuator
    from cfosproxy.ocpp.frames import Call, CallError

# After connecting, a wallbox normally sends a BootNotification; the default
# profile goes out after it. A wallbox that reconnects without booting gets
# it after this many seconds.
BOOT_GRACE = 5.0

# A limit the wallbox refused or did not answer is tried again after this.
RETRY_DELAY = 60.0

# A pass of sharing that raised is tried again after this (and at the next
# event of a managed wallbox, whichever comes first).
RECALCULATION_RETRY = 10.0

# A failure is logged with its traceback the first time; the same kind of
# failure again is said in one line, at most this often (seconds).
FAILURE_REMINDER = 600.0


class ManagerSettings(Protocol):
    """What the manager reads of the C{[manager]} section
    (L{cfosproxy.config.ManagerConfig})."""

    @property
    def max_current(self) -> float: ...

    @property
    def mode(self) -> str: ...

    @property
    def on_deactivate(self) -> str: ...


class SiteConfig(Protocol):
    """What the manager reads of the daemon's L{cfosproxy.config.Config}."""

    @property
    def manager(self) -> ManagerSettings: ...


class DeviceLimits(Protocol):
    """What the manager reads of a managed device's configuration
    (L{cfosproxy.config.WallboxConfig})."""

    @property
    def enabled(self) -> bool: ...

    @property
    def min_current(self) -> float: ...

    @property
    def max_current(self) -> float: ...


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
        signature of L{cfosproxy.site.sharing.share} (replaceable in tests).
    """

    _log = Logger()

    def __init__(
        self,
        config: SiteConfig,
        registry: DeviceRegistry,
        clock: IReactorTime,
        save_enabled: Callable[[str, bool], object],
        sharing: Callable[[float, Sequence[Request]], Mapping[str, float]] = share,
    ) -> None:
        self._site_limit = config.manager.max_current
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

    # -- events from wallboxes -----------------------------------------------

    def connected(
        self, chargebox_id: str, peer: str, certificate_subject: str | None
    ) -> None:
        """A wallbox connected: its profile goes out after its boot."""
        for device in self._devices_of(chargebox_id):
            self._ready.discard(device.name)
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
        self._refresh_if_changed(chargebox_id)

    def exchange(self, chargebox_id: str, call: Call, answer: CallResult | CallError) -> None:
        """Read one message of a wallbox (after the registry did)."""
        if call.action == "BootNotification" and isinstance(answer, CallResult):
            if answer.payload.get("status") == "Accepted":
                self._install(chargebox_id)
                return
        self._refresh_if_changed(chargebox_id)

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

    def _install(self, chargebox_id: str) -> None:
        """Put the manager's profile (0 A until current is granted) into
        every device of this wallbox, whatever it held before."""
        self._cancel_boot_timer(chargebox_id)
        for device in self._devices_of(chargebox_id):
            self._ready.add(device.name)
            self._stale.add(device.name)
            self._failed.pop(device.name, None)
            self._lift_if_deactivated(device)
        self._refresh_soon()

    # -- deciding ------------------------------------------------------------

    def _update_arrivals(self) -> None:
        """Keep the order in which devices started to want current."""
        for device in self.managed():
            wants = self._wants(device)
            if wants and device.name not in self._arrival:
                self._arrival[device.name] = next(self._order)
                device.charging_since = self._clock.seconds()
            elif not wants and device.name in self._arrival:
                del self._arrival[device.name]
                device.charging_since = None

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

    def _recalculate(self) -> None:
        self._update_arrivals()
        devices = {d.name: d for d in self.managed()}
        # Only devices that are still managed: a name that left the list
        # must not stop the sharing for everybody else.
        waiting = sorted(
            (name for name in self._arrival if name in devices), key=self._arrival.__getitem__
        )
        grants = self._share(
            self._site_limit,
            [
                Request(
                    name,
                    _limits(devices[name]).min_current,
                    _limits(devices[name]).max_current,
                )
                for name in waiting
            ],
        )
        for device in devices.values():
            device.grant = grants.get(device.name, 0.0)
        if self._control:
            self._apply(list(devices.values()))

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

    def exposure(self, device: Device) -> float:
        """The most that C{device} may draw now, as far as can be known."""
        known = device.accepted_limit
        if not device.enabled and self._lift_on_deactivate and known is None:
            # Deactivated with lift_limit, and the manager's profiles are
            # cleared: the operator has taken the wallbox out of load
            # management (documented). Until they are (the wallbox is
            # offline, or refused), the limit it still holds counts.
            return 0.0
        if known is None:
            known = _limits(device).max_current if device.wants_current else 0.0
        return max(known, device.pending_limit or 0.0)

    def _total_exposure(self, devices: Iterable[Device]) -> int:
        """What all C{devices} together may draw now, in deci-amperes."""
        return sum(to_deciamps(self.exposure(d)) for d in devices)

    def _allowed(self, device: Device, total: int) -> float:
        """The limit C{device} may have now, given the devices'
        L{_total_exposure}: its grant, or less when the others may still
        draw more than the rest of the site (a lower limit in flight, a
        wallbox that is offline with its old limit). Less room than its
        C{min_current} means 0: a car does not charge below its minimum."""
        others = total - to_deciamps(self.exposure(device))
        room = to_deciamps(self._site_limit) - others
        if to_deciamps(device.grant) <= room:
            return device.grant
        if room > 0 and room >= to_deciamps(_limits(device).min_current):
            return room / 10
        return 0.0

    def _apply(self, devices: Sequence[Device], hold: bool = False) -> None:
        """Send each device the limit it may have now.

        @param hold: send only limits at or below what each device holds
            (a pass that could not share: see L{_hold})."""
        self._passes += 1
        candidates = [d for d in devices if self._may_send(d)]
        total = self._total_exposure(devices)
        # Lowering first, then raising in the order devices arrived; each
        # limit is worked out just before it goes, against what the others
        # may draw at that moment.
        candidates.sort(
            key=lambda d: (
                self._allowed(d, total) > self.exposure(d),
                self._arrival.get(d.name, float("inf")),
            )
        )
        for device in candidates:
            limit = self._allowed(device, total)
            if hold:
                limit = min(limit, device.accepted_limit or 0.0)
            if self._failed.get(device.name) == limit:
                continue
            if device.name in self._stale or device.accepted_limit != limit:
                before = to_deciamps(self.exposure(device))
                passes = self._passes
                self._send_limit(device, limit)
                if self._passes == passes:
                    # Sending changed what this device may draw, and nothing
                    # else: after a storm of boots that is thousands of
                    # sends, so no recount of the whole site for each.
                    total += to_deciamps(self.exposure(device)) - before
                else:
                    # An answer that came at once shared again in between
                    # and may have sent to others: count again.
                    total = self._total_exposure(devices)

    def _may_send(self, device: Device) -> bool:
        return (
            device.connected
            and device.enabled
            and device.name in self._ready
            and device.pending_limit is None
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
        device.pending_limit = amps
        self._sends[device.name] = self._sends.get(device.name, 0) + 1
        self._stale.discard(device.name)
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

    def _limit_accepted(self, _: object, device: Device, amps: float) -> None:
        device.pending_limit = None
        device.accepted_limit = amps
        device.profile_error = None
        self._failed.pop(device.name, None)
        self._log.info(
            "{name}: limit {amps:.1f} A accepted", name=device.name, amps=amps
        )
        self._settled(device, True)
        self._lift_if_deactivated(device)
        self._refresh_soon()

    def _limit_failed(self, failure: Failure, device: Device, amps: float) -> None:
        device.pending_limit = None
        self._settled(device, False)
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

    @staticmethod
    def _may_have_taken(device: Device, amps: float) -> None:
        """C{amps} went to the device and may or may not be in force: count
        the worst of both until the device answers a later limit.

        With a known limit that is the higher of the two. With none (no
        profile of the manager's, e.g. after a lift) the device draws its
        maximum once it charges, or holds C{amps} at any time: it counts
        for the higher of these. A limit that may not have arrived must
        never lower what a device is counted for."""
        known = device.accepted_limit
        if known is None:
            if amps > 0:
                device.accepted_limit = max(amps, _limits(device).max_current)
        elif amps > known:
            device.accepted_limit = amps

    def _retry(self, name: str, amps: float) -> None:
        del self._retry_timers[name]
        if self._failed.get(name) == amps:
            del self._failed[name]
            self._refresh_soon()

    def stop(self) -> None:
        """Cancel every timer (the daemon stops)."""
        timers = list(self._boot_timers.values()) + list(self._retry_timers.values())
        timers += [t for t in (self._refresh_call, self._recalculation_retry) if t is not None]
        self._refresh_call = self._recalculation_retry = None
        self._boot_timers.clear()
        self._retry_timers.clear()
        for timer in timers:
            if timer.active():
                timer.cancel()

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


def _failure_kind(failure: Failure) -> tuple[object, object]:
    """What tells one kind of failure from another: the exception's type and
    the line that raised it (not the message, which may hold a name or a
    number that differs each time)."""
    where = failure.frames[-1][1:3] if failure.frames else None
    return (failure.type, where)
