"""What each fuse of the site leaves to the managed devices: sans-IO.

Without a meter, a circuit (or the site) makes its C{max_current}
available on each phase. With one (DESIGN §7), on each phase,

    available = max_current − reserve − (metered − managed)

never above C{max_current}, never below 0, where C{managed} is what the
managed devices below it draw as they report it (L{device_currents}), and
C{metered − managed} is the rest of the building, the I{other load}. A
silent meter leaves C{failsafe_current} (L{metered_available}).

What a device reports lags what the meter sees: right after a raise, the
meter shows the car taking it before the wallbox says so. Counted at its
old report, the car's ramp would look like other load and take the raise
back at once, every time. So a device I{ramps} from a raise until it
reports again (L{RAMP_TIME} or more after it): while one does, the other
load is taken to be what it was, as long as the ramp can explain the rise;
it rises at once by whatever the devices' whole limits cannot explain
(L{other_load_while_ramping}). A device that reports nothing counts at its
limit throughout.

Wallboxes write limits to flash, so what a meter makes available moves
with care (L{AvailableCurrent}): less is taken at once, more only by
L{MIN_STEP} or more and no sooner than L{RAISE_INTERVAL} after the last
change.

L{SiteLimits} puts it together for the manager: the fuses, the meters
(L{cfosproxy.site.meters.MeterBoard}) and what is available now on every
limit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from cfosproxy.site.circuits import Circuit, Limit, PerPhase, available_per_limit, circuit_paths
from cfosproxy.site.meters import MeterBoard, MeterSettings
from cfosproxy.site.phases import PHASES, WIRINGS
from cfosproxy.site.sharing import to_deciamps
from cfosproxy.site.volume import MIN_STEP, RAISE_INTERVAL

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime


# Seconds a car may take to follow a raise: a report from sooner after it
# may not show it yet (IEC 61851-1 gives a car 5 s to follow the pilot
# signal; many take longer to ramp up).
RAMP_TIME = 10.0


def other_load(metered: Sequence[float], managed: Sequence[float]) -> PerPhase:
    """What the rest of the building draws on L1, L2, L3: the meter's
    reading (signed: export is negative) less what the managed devices
    below it draw (L{device_currents}, summed)."""
    return _per_phase(amps - own for amps, own in zip(metered, managed))


def other_load_while_ramping(
    metered: Sequence[float],
    reported: Sequence[float],
    limits: Sequence[float],
    before: Sequence[float] | None,
) -> PerPhase:
    """The other load at a reading while devices ramp, per phase.

    @param reported: what the devices below draw as they report it
        (L{device_currents}); with ramping devices, maybe less than now.
    @param limits: the same with every ramping device at its limit: the
        most they can draw now.
    @param before: the other load at the last reading; L{None} after a
        silence, or at the first.
    @return: what it was, unless the reading with the devices at their
        limits shows more (then that: real other load, whatever the cars
        do), or the reading with the devices as reported shows less (the
        rest of the building draws less).
    """
    if before is None:
        return other_load(metered, reported)
    return _per_phase(
        max(amps - most, min(amps - own, last))
        for amps, own, most, last in zip(metered, reported, limits, before)
    )


def metered_available(
    max_current: PerPhase,
    reserve: float,
    other: PerPhase | None,
    failsafe: float,
) -> PerPhase:
    """What a metered place leaves to its managed devices on L1, L2, L3.

    @param other: the L{other_load} at the last reading, or L{None} while
        the meter is silent: then C{failsafe}.
    @return: never above C{max_current}, never below 0: feeding into the
        grid does not make a fuse any stronger.
    """
    if other is None:
        return _per_phase(max(0.0, min(top, failsafe)) for top in max_current)
    return _per_phase(
        max(0.0, min(top, top - reserve - amps)) for top, amps in zip(max_current, other)
    )


def device_currents(
    wiring: str,
    reported: Sequence[float | None],
    counted: Iterable[str],
    exposure: float,
) -> PerPhase:
    """What a managed device draws on the site's L1, L2, L3, as far as the
    other load's reckoning goes.

    What it reported, but never more than it may draw now: a report from
    before a lower limit would otherwise hide the other load by the
    difference. Where it reported nothing, what it is counted for.

    @param wiring: its C{wiring} (L{WIRINGS}).
    @param reported: its own L1, L2, L3 as last reported, None where not.
    @param counted: the site phases it is counted on.
    @param exposure: the most it may draw now, in amperes.
    """
    counted = frozenset(counted)
    site = [0.0, 0.0, 0.0]
    for own, phase in enumerate(WIRINGS[wiring]):
        amps = reported[own] if own < len(reported) else None
        if amps is None:
            site[PHASES.index(phase)] = exposure if phase in counted else 0.0
        else:
            site[PHASES.index(phase)] = max(0.0, min(amps, exposure))
    return _per_phase(site)


def _per_phase(values: Iterable[float]) -> PerPhase:
    l1, l2, l3 = values
    return (l1, l2, l3)


class AvailableCurrent:
    """What each metered limit (a phase of a metered place) makes available,
    moved with care: lower at once; higher only by L{MIN_STEP} or more, and
    no sooner than L{RAISE_INTERVAL} after its last change, so that a heat
    pump that starts and stops does not make the wallboxes write a profile
    each time. The first value of a limit is taken as it comes.

    A raise goes to the least that the readings wanted since they began to
    want a raise, not to the last reading: a meter's readings scatter by a
    tenth of an ampere or so, and a raise to the top of that scatter would
    be taken back, a tenth at a time, by the next readings."""

    def __init__(self) -> None:
        self._held: dict[Limit, int] = {}
        self._changed_at: dict[Limit, float] = {}
        # The least wanted on each limit in the run of readings, since its
        # last change, that each would raise it (none: absent).
        self._least: dict[Limit, int] = {}

    def settle(self, wanted: Mapping[Limit, int], now: float) -> dict[Limit, int]:
        """Move toward C{wanted} (deci-amperes per limit) as far as the
        rules allow.

        @return: what is available now on each limit of C{wanted}."""
        for limit, deciamps in wanted.items():
            held = self._held.get(limit)
            if held is None:
                self._held[limit] = deciamps
                self._changed_at[limit] = -math.inf
                continue
            if deciamps < held:
                self._change(limit, deciamps, now)
            elif deciamps - held < to_deciamps(MIN_STEP):
                # Not worth a raise: the run of readings that would raise
                # (if one began) has ended.
                self._least.pop(limit, None)
            else:
                least = self._least[limit] = min(self._least.get(limit, deciamps), deciamps)
                if now - self._changed_at[limit] >= RAISE_INTERVAL:
                    self._change(limit, least, now)
        return {limit: self._held[limit] for limit in wanted}

    def _change(self, limit: Limit, deciamps: int, now: float) -> None:
        self._held[limit] = deciamps
        self._least.pop(limit, None)
        self._changed_at[limit] = now

    def raise_due(self, wanted: Mapping[Limit, int]) -> float | None:
        """When the earliest raise toward C{wanted} that is held back may
        go, or L{None} when none is held back."""
        due = [
            self._changed_at[limit] + RAISE_INTERVAL
            for limit in wanted
            if limit in self._least
            and self._least[limit] - self._held[limit] >= to_deciamps(MIN_STEP)
        ]
        return min(due) if due else None



class ManagerSettings(Protocol):
    """What L{SiteLimits} reads of the C{[manager]} section."""

    @property
    def max_current(self) -> float: ...

    @property
    def meter(self) -> str: ...

    @property
    def reserve(self) -> float: ...

    @property
    def failsafe_current(self) -> float: ...


class CircuitSettings(Protocol):
    """What L{SiteLimits} reads of a C{[circuit:*]} section."""

    @property
    def name(self) -> str: ...

    @property
    def max_current(self) -> float: ...

    @property
    def parent(self) -> str: ...

    @property
    def meter(self) -> str: ...


@dataclass(frozen=True)
class _Place:
    """The site (C{node} L{None}) or a circuit, with its fuses."""

    node: str | None
    parent: str | None
    max_current: PerPhase
    meter: str


def _name(place: _Place) -> str:
    """The name of a circuit's place (only the site's has none)."""
    assert place.node is not None, "the site is no circuit"
    return place.node


class SiteLimits:
    """The fuses of the site and its circuits, the meters that measure
    them, and what is available on each limit now.

    @param manager: the C{[manager]} settings.
    @param circuits: the C{[circuit:*]} settings.
    @param meters: the C{[meter:*]} settings.
    @param clock: L{IReactorTime}.
    @param managed: C{managed()}: per place (circuit name, L{None} for the
        site), what the managed devices below it draw on L1, L2, L3
        (L{device_currents} summed), as a pair: as they report it, and
        with every ramping device at its limit; asked when a meter reads,
        to tell the other load in that reading. Only a reading moves the
        other load: between readings, a device given more would otherwise
        be taken off a reading that never saw it draw that much.
    @param changed: C{changed()} when what is available has moved.
    """

    def __init__(
        self,
        manager: ManagerSettings,
        circuits: Sequence[CircuitSettings],
        meters: Iterable[MeterSettings],
        clock: IReactorTime,
        managed: Callable[[], Mapping[str | None, tuple[Sequence[float], Sequence[float]]]],
        changed: Callable[[], object],
    ) -> None:
        self._clock = clock
        self._managed = managed
        self._changed = changed
        self.reserve = manager.reserve
        self.failsafe = manager.failsafe_current
        self._places = [
            _Place(None, None, (manager.max_current,) * 3, manager.meter),
            *(
                _Place(c.name, c.parent or None, (c.max_current,) * 3, c.meter)
                for c in circuits
            ),
        ]
        # Per place, itself and every circuit above it up to the site.
        self.paths = circuit_paths(self._fuses())
        self._dynamic = AvailableCurrent()
        self._raise_timer: IDelayedCall | None = None
        self.board = MeterBoard(meters, clock, self._meters_moved)
        self.available: dict[Limit, int] = {}
        # Per metered place, the other load at its meter's last reading;
        # absent while the meter is silent.
        self._other: dict[str | None, PerPhase] = {}
        self._compute()

    # -- what the manager reads ------------------------------------------------

    @property
    def max_current(self) -> float:
        """The site's limit per phase (configured, or set at run time)."""
        return self._places[0].max_current[0]

    @property
    def site(self) -> PerPhase:
        """Amperes available to the whole site on L1, L2, L3."""
        return self._amps(None)

    @property
    def circuits(self) -> list[Circuit]:
        """Every circuit with what is available to it now."""
        return [Circuit(_name(p), p.parent, self._amps(p.node)) for p in self._places[1:]]

    def place_state(self, node: str | None) -> dict[str, Any]:
        """A place's fuses and meter as the status API shows them:
        C{max_current}, C{meter} (its name or None) and, with a meter,
        C{other} (the other load per phase, None while silent) and
        C{silent}."""
        place = self._place(node)
        state: dict[str, Any] = {"max_current": list(place.max_current), "meter": place.meter or None}
        if place.meter:
            other = self._other.get(node)
            state["other"] = None if other is None else [round(a, 1) for a in other]
            state["silent"] = self.board.state(place.meter).silent
        return state

    # -- changes ---------------------------------------------------------------

    def set_max_current(self, amps: float) -> None:
        """Change the site's limit at run time (the status API)."""
        site = self._places[0]
        self._places[0] = _Place(None, None, (amps,) * 3, site.meter)
        self.update()

    def _meters_moved(self, meter: str) -> None:
        """The meter C{meter} read, or fell silent: the other load of the
        place it measures is what this reading says. The other places keep
        theirs: their readings did not see what the devices draw now."""
        managed = self._managed()
        for place in self._places:
            if place.meter != meter:
                continue
            state = self.board.state(place.meter)
            if state.silent or state.currents is None:
                self._other.pop(place.node, None)
            else:
                reported, limits = managed.get(place.node, ((0.0,) * 3, (0.0,) * 3))
                self._other[place.node] = other_load_while_ramping(
                    state.currents, reported, limits, self._other.get(place.node)
                )
        self.update()

    def update(self) -> None:
        """Work out again what is available (after a meter reading, a
        silence, a held raise's time, a new site limit); C{changed()} if
        it moved."""
        before = self.available
        self._compute()
        if self.available != before:
            self._changed()

    def stop(self) -> None:
        """Cancel the timers."""
        self.board.stop()
        if self._raise_timer is not None and self._raise_timer.active():
            self._raise_timer.cancel()
        self._raise_timer = None

    # -- inside ----------------------------------------------------------------

    def _fuses(self) -> list[Circuit]:
        return [Circuit(_name(p), p.parent, p.max_current) for p in self._places[1:]]

    def _place(self, node: str | None) -> _Place:
        for place in self._places:
            if place.node == node:
                return place
        raise KeyError(node)

    def _amps(self, node: str | None) -> PerPhase:
        return _per_phase(self.available[node, phase] / 10 for phase in range(3))

    def _compute(self) -> None:
        static = available_per_limit(self._places[0].max_current, self._fuses())
        metered = [p for p in self._places if p.meter]
        if not metered:
            self.available = static
            return
        wanted: dict[Limit, int] = {}
        for place in metered:
            other = self._other.get(place.node)
            amps = metered_available(place.max_current, self.reserve, other, self.failsafe)
            for phase in range(3):
                wanted[place.node, phase] = to_deciamps(amps[phase])
        now = self._clock.seconds()
        static.update(self._dynamic.settle(wanted, now))
        self.available = static
        self._schedule_raise(self._dynamic.raise_due(wanted))

    def _schedule_raise(self, due: float | None) -> None:
        if self._raise_timer is not None and self._raise_timer.active():
            self._raise_timer.cancel()
        self._raise_timer = None
        if due is not None:
            delay = max(0.0, due - self._clock.seconds())
            self._raise_timer = self._clock.callLater(delay, self._raise_due)

    def _raise_due(self) -> None:
        self._raise_timer = None
        self.update()
