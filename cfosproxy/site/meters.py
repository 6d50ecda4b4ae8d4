"""The meters' readings as the manager believes them: sans-IO, with a clock.

A meter measures everything behind the place it sits (the grid connection,
or a circuit), the managed devices included (DESIGN §7); what that leaves
to the devices is L{cfosproxy.site.available}'s business.

L{MeterBoard} keeps each meter's last believed reading and its age, and
says when a meter is I{silent}: no believed reading for C{timeout} seconds
(or none yet since the start). Everything below a silent meter gets at most
C{failsafe_current} per phase. A reading that cannot be true (not a number,
beyond L{PLAUSIBLE_AMPS}) is not believed: it is taken as no reading at
all, and said once in the log until the meter answers sensibly again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from cfosproxy.site.circuits import PerPhase
from cfosproxy.site.phases import PHASES

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

# A phase current beyond this is no reading: current transformers for
# meters go up to 5000 A primary, and a building whose connection carries
# more has a substation, not a wallbox manager. A wrong register, a wrong
# byte order or a broken scale factor gives numbers far beyond it.
PLAUSIBLE_AMPS = 6000.0


class UnknownMeter(KeyError):
    """No meter of that name is configured."""


class NotPushed(ValueError):
    """The meter is polled, so its readings cannot be pushed."""


def implausible(currents: Sequence[float]) -> str | None:
    """Why C{currents} (L1, L2, L3 in ampere) cannot be a real reading, or
    L{None} when they can."""
    if len(currents) != 3:
        return f"{len(currents)} phase currents instead of 3"
    for phase, amps in zip(PHASES, currents):
        if not isinstance(amps, (int, float)) or isinstance(amps, bool):
            return f"{phase} is not a number ({amps!r})"
        if not math.isfinite(amps):
            return f"{phase} is {amps}"
        if abs(amps) > PLAUSIBLE_AMPS:
            return f"{phase} is {amps:g} A, beyond any real meter ({PLAUSIBLE_AMPS:g} A)"
    return None


@dataclass(frozen=True)
class MeterSettings:
    """What L{MeterBoard} needs of a C{[meter:*]} section
    (L{cfosproxy.config.MeterConfig})."""

    name: str
    type: str
    timeout: float


@dataclass
class MeterState:
    """One meter as the board knows it.

    @ivar currents: the last believed reading, signed amperes on L1, L2,
        L3 (negative: fed into the grid); L{None} before the first.
    @ivar read_at: when it arrived (the clock's seconds).
    @ivar silent: no believed reading for C{timeout} seconds, or none yet.
    @ivar problem: why the last poll gave no believed reading; L{None}
        after a good one.
    @ivar silent_since: when the meter last fell silent (L{None} while
        heard, and before the first timeout after the start).
    """

    settings: MeterSettings
    currents: PerPhase | None = None
    read_at: float | None = None
    silent: bool = True
    problem: str | None = None
    problem_said: bool = False
    silent_since: float | None = None

    def as_json(self, now: float) -> dict[str, Any]:
        """The meter as the status API shows it."""
        return {
            "name": self.settings.name,
            "type": self.settings.type,
            "currents": None if self.currents is None else list(self.currents),
            "age": None if self.read_at is None else round(now - self.read_at, 1),
            "silent": self.silent,
            "problem": self.problem,
        }


class MeterBoard:
    """The meters' last readings, their age and whether they are silent.

    @param meters: the configured meters.
    @param clock: L{IReactorTime}: each meter falls silent C{timeout}
        seconds after its last believed reading (or after the start).
    @param changed: C{changed(name)} after a believed reading of the meter
        called C{name}, and when it falls silent: what is available below
        it may have moved.
    """

    _log = Logger()

    def __init__(
        self,
        meters: Iterable[MeterSettings],
        clock: IReactorTime,
        changed: Callable[[str], object],
    ) -> None:
        self._clock = clock
        self._changed = changed
        self._meters = {m.name: MeterState(m) for m in meters}
        self._timers: dict[str, IDelayedCall] = {}
        self._started_at = clock.seconds()
        for name, state in self._meters.items():
            self._watch(name, state.settings.timeout)

    def __contains__(self, name: object) -> bool:
        return name in self._meters

    def state(self, name: str) -> MeterState:
        """The meter called C{name}.

        @raise UnknownMeter: there is none."""
        try:
            return self._meters[name]
        except KeyError:
            raise UnknownMeter(name) from None

    def states(self) -> list[MeterState]:
        """Every meter, in the order of the configuration."""
        return list(self._meters.values())

    def push(self, name: str, currents: Sequence[float]) -> None:
        """A reading pushed over the API (C{type = api}).

        @raise UnknownMeter: no meter is called C{name}.
        @raise NotPushed: the meter is polled over Modbus.
        @raise ValueError: the reading cannot be true (L{implausible}).
        """
        state = self.state(name)
        if state.settings.type != "api":
            raise NotPushed(
                f"meter {name} is of type {state.settings.type}: cfosproxy polls it; "
                "only type = api meters take readings"
            )
        problem = implausible(currents)
        if problem is not None:
            raise ValueError(problem)
        self.reading(name, currents)

    def reading(self, name: str, currents: Sequence[float]) -> None:
        """A poll of the meter gave C{currents} (signed L1, L2, L3)."""
        state = self.state(name)
        problem = implausible(currents)
        if problem is not None:
            self.failure(name, f"not believed: {problem}")
            return
        now = self._clock.seconds()
        if state.problem_said:
            self._log.info("meter {name}: readings again", name=name)
        if state.silent and state.silent_since is not None:
            self._log.info(
                "meter {name} is back after {seconds:.0f} s of silence; "
                "the devices below it are shared its current again",
                name=name,
                seconds=now - state.silent_since,
            )
        state.currents = (float(currents[0]), float(currents[1]), float(currents[2]))
        state.read_at = now
        state.silent = False
        state.silent_since = None
        state.problem = None
        state.problem_said = False
        self._watch(name, state.settings.timeout)
        self._changed(name)

    def failure(self, name: str, reason: str) -> None:
        """A poll of the meter gave no reading to believe (no answer, a
        Modbus exception, nonsense): said once until it answers again."""
        state = self.state(name)
        state.problem = reason
        if not state.problem_said:
            state.problem_said = True
            self._log.warn(
                "meter {name}: no reading: {reason}; it is silent once it has none for "
                "{timeout:g} s",
                name=name,
                reason=reason,
                timeout=state.settings.timeout,
            )

    def stop(self) -> None:
        """Cancel the timers."""
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()
        self._timers.clear()

    def _watch(self, name: str, delay: float) -> None:
        timer = self._timers.get(name)
        if timer is not None and timer.active():
            timer.reset(delay)
        else:
            self._timers[name] = self._clock.callLater(delay, self._fell_silent, name)

    def _fell_silent(self, name: str) -> None:
        state = self._meters[name]
        self._timers.pop(name, None)
        now = self._clock.seconds()
        state.silent = True
        state.silent_since = now if state.read_at is None else state.read_at
        if state.read_at is None:
            self._log.warn(
                "meter {name} has given no reading since the start {seconds:.0f} s ago "
                "({problem}); the devices below it share failsafe_current until it does",
                name=name,
                seconds=now - self._started_at,
                problem=state.problem or "no answer yet",
            )
        else:
            self._log.warn(
                "meter {name} is silent: no reading for {seconds:.0f} s ({problem}); "
                "the devices below it share failsafe_current until it is back",
                name=name,
                seconds=now - state.read_at,
                problem=state.problem or "no answer",
            )
        self._changed(name)
