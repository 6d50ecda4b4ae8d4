"""OCPP 1.6 charging profiles resolved to absolute time (Smart Charging, §3.13).

The gateway combines a backend's profiles with the local grant per period
(the minimum of both), and the virtual Power Brain limits its current by the
composite of the profiles it holds; both work on the lists of
:class:`Period` built here. Nothing here does I/O or reads a clock: times are
POSIX seconds passed in.

Conventions for a list of periods:

- sorted, non-overlapping, and merged where neighbours carry the same limit;
- a moment that no period covers has **no limit**, as does one covered by a
  period whose ``limit`` is ``None`` (results leave such periods out);
- limits are **amperes per phase**. A profile in watts is converted when it is
  parsed: A = W / (volts_per_phase × phases), with the period's numberPhases,
  or 3 when it has none.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal, overload

from cfosproxy.ocpp.times import ocpp_time

PURPOSES = ("ChargePointMaxProfile", "TxDefaultProfile", "TxProfile")
KINDS = ("Absolute", "Recurring", "Relative")
# Recurrences are counted in UTC seconds from startSchedule: a daily profile
# does not move with local daylight saving time.
_CYCLES = {"Daily": 24 * 3600, "Weekly": 7 * 24 * 3600}
DEFAULT_PHASES = 3

# re.ASCII: \d would otherwise also match digits of other scripts.
_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(\.\d+)?(?:[Zz]|([+-])(\d\d):(\d\d))",
    re.ASCII,
)


def parse_ocpp_time(text: object) -> float:
    """The POSIX time of an OCPP dateTime (RFC 3339, ``Z`` or an offset,
    fractional seconds optional); ``ValueError`` for anything else."""
    match = _RFC3339.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"not an RFC 3339 date-time: {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in match.group(1, 2, 3, 4, 5, 6))
    sign, off_hours, off_minutes = match.group(8, 9, 10)
    offset = 0 if not sign else int(off_hours) * 3600 + int(off_minutes) * 60
    # RFC 3339 allows a leap second (:60); POSIX time has none, so it is read
    # as the first moment of the next minute.
    leap = second == 60
    try:
        if offset and (int(off_hours) > 23 or int(off_minutes) > 59):
            raise ValueError("offset out of range")
        moment = datetime(year, month, day, hour, minute, second - leap, tzinfo=timezone.utc)
    except ValueError as error:
        raise ValueError(f"not an RFC 3339 date-time: {text!r} ({error})") from None
    if sign == "-":
        offset = -offset
    return moment.timestamp() + leap + float(match.group(7) or 0) - offset


@dataclass(frozen=True)
class Period:
    """A limit in force from ``start`` up to (not including) ``end``.

    ``end`` ``None`` means open-ended; ``limit`` ``None`` means no limit.
    Limits are amperes per phase; ``number_phases`` is the profile's
    numberPhases, if it gave one.
    """

    start: float
    end: float | None
    limit: float | None
    number_phases: int | None = None

    def covers(self, moment: float) -> bool:
        """Whether ``moment`` lies in this period."""
        return self.start <= moment and (self.end is None or moment < self.end)


def _field(data: object, key: str) -> Any:
    if not isinstance(data, dict) or key not in data:
        raise ValueError(f"charging profile lacks {key}")
    return data[key]


@overload
def _number(value: object, what: str, *, integer: Literal[True]) -> int: ...


@overload
def _number(value: object, what: str, *, integer: Literal[False] = False) -> float: ...


def _number(value: object, what: str, *, integer: bool = False) -> float:
    kinds = int if integer else (int, float)
    # (A huge JSON integer would overflow math.isfinite; only floats can be inf/nan.)
    if isinstance(value, bool) or not isinstance(value, kinds) or (
        isinstance(value, float) and not math.isfinite(value)
    ):
        raise ValueError(f"{what} must be a {'whole ' if integer else ''}number, not {value!r}")
    if value < 0:
        raise ValueError(f"{what} must not be negative, not {value!r}")
    if integer:
        return value
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{what} is out of range") from None


def _integer(value: object, what: str) -> int:
    # Ids may be any integer; OCPP sets no lower bound for them.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be a whole number, not {value!r}")
    return value


def _choice(value: object, allowed: Sequence[str], what: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"unknown {what} {value!r}")
    return value


def _time(value: object, what: str) -> float | None:
    if value is None:
        return None
    try:
        return parse_ocpp_time(value)
    except ValueError as error:
        raise ValueError(f"{what}: {error}") from None


@dataclass(frozen=True)
class ChargingProfile:
    """One parsed ``csChargingProfiles`` (the OCPP JSON object).

    Times are POSIX seconds (``None`` when the profile leaves them out);
    the periods are kept in amperes, whatever unit the profile was sent in.
    Build one with :meth:`from_json`.
    """

    id: int
    stack_level: int
    purpose: str
    kind: str
    recurrency: str | None
    valid_from: float | None
    valid_to: float | None
    transaction_id: int | None
    duration: int | None
    start_schedule: float | None
    # (startPeriod, amperes, numberPhases) per period, in the order received.
    _steps: tuple[tuple[int, float, int | None], ...] = field(default=(), repr=False)

    @classmethod
    def from_json(
        cls, data: dict[str, Any], *, volts_per_phase: float | None = 230.0
    ) -> ChargingProfile:
        """Parse a ``csChargingProfiles`` / ``chargingProfile`` object.

        A schedule in watts is converted to amperes with ``volts_per_phase``;
        pass ``None`` to refuse such profiles. Raises ``ValueError`` naming
        the problem for a profile that cannot be used: a missing or unknown
        field value, a Recurring profile without recurrencyKind or
        startSchedule, periods out of order.
        """
        schedule = _field(data, "chargingSchedule")
        if not isinstance(schedule, dict):
            raise ValueError("chargingSchedule must be an object")
        kind = _choice(_field(data, "chargingProfileKind"), KINDS, "chargingProfileKind")
        recurrency = data.get("recurrencyKind")
        start_schedule = _time(schedule.get("startSchedule"), "startSchedule")
        if kind == "Recurring":
            _choice(recurrency, tuple(_CYCLES), "recurrencyKind")
            if start_schedule is None:
                raise ValueError("a Recurring profile needs a startSchedule to repeat from")
        unit = _choice(_field(schedule, "chargingRateUnit"), ("A", "W"), "chargingRateUnit")
        if unit == "W" and volts_per_phase is None:
            raise ValueError("chargingRateUnit W needs a voltage to convert to amperes")
        duration = schedule.get("duration")
        if duration is not None and _number(duration, "duration", integer=True) == 0:
            raise ValueError("duration must be positive")
        raw = _field(schedule, "chargingSchedulePeriod")
        if not isinstance(raw, list) or not raw:
            raise ValueError("chargingSchedulePeriod must be a non-empty list")
        steps: list[tuple[int, float, int | None]] = []
        for period in raw:
            offset = _number(_field(period, "startPeriod"), "startPeriod", integer=True)
            if steps and offset <= steps[-1][0]:
                raise ValueError("startPeriod values must increase")
            limit = _number(_field(period, "limit"), "limit")
            phases = period.get("numberPhases")
            if phases is not None and _number(phases, "numberPhases", integer=True) == 0:
                raise ValueError("numberPhases must be positive")
            if unit == "W" and volts_per_phase is not None:  # (None refused above)
                limit = limit / (volts_per_phase * (phases or DEFAULT_PHASES))
            steps.append((offset, limit, phases))
        rate = schedule.get("minChargingRate")
        if rate is not None:
            # Checked though nothing limits by it: a profile OCPP calls
            # malformed is refused whole.
            _number(rate, "minChargingRate")
        tx = data.get("transactionId")
        return cls(
            id=_integer(_field(data, "chargingProfileId"), "chargingProfileId"),
            stack_level=_number(_field(data, "stackLevel"), "stackLevel", integer=True),
            purpose=_choice(
                _field(data, "chargingProfilePurpose"), PURPOSES, "chargingProfilePurpose"
            ),
            kind=kind,
            recurrency=recurrency,
            valid_from=_time(data.get("validFrom"), "validFrom"),
            valid_to=_time(data.get("validTo"), "validTo"),
            transaction_id=None if tx is None else _integer(tx, "transactionId"),
            duration=duration,
            start_schedule=start_schedule,
            _steps=tuple(steps),
        )

    def _runs(
        self, low: float, high: float, transaction_start: float | None
    ) -> Iterator[tuple[float, float]]:
        """(origin, stop) of every run of the schedule that may touch [low, high)."""
        if self.kind == "Recurring":
            # from_json refuses a Recurring profile without either.
            assert self.recurrency is not None and self.start_schedule is not None
            cycle = _CYCLES[self.recurrency]
            length = cycle if self.duration is None else min(self.duration, cycle)
            # The first run starts at startSchedule; before it the profile is
            # not in force (OCPP: "the schedule restarts periodically").
            count = max(0, math.floor((low - self.start_schedule) / cycle))
            origin = self.start_schedule + count * cycle
            while origin < high:
                yield origin, origin + length
                origin += cycle
            return
        # Relative profiles start with the transaction, and so does an
        # Absolute one without startSchedule: "If absent the schedule will be
        # relative to start of charging" (chargingSchedule.startSchedule).
        anchor = self.start_schedule if self.kind == "Absolute" else None
        if anchor is None:
            anchor = transaction_start
        if anchor is not None:
            yield anchor, math.inf if self.duration is None else anchor + self.duration

    def periods_between(
        self, start: float, end: float, *, transaction_start: float | None
    ) -> list[Period]:
        """This profile's limits in ``[start, end)`` (``end`` finite).

        Absolute schedules start at startSchedule, Recurring ones at
        startSchedule and then every day or week, Relative ones at
        ``transaction_start`` (without a transaction they are not in force).
        A schedule ends after ``duration`` (a recurring one also where the
        next run begins); its last period lasts until then. validFrom and
        validTo cut the result.
        """
        low = start if self.valid_from is None else max(start, self.valid_from)
        high = end if self.valid_to is None else min(end, self.valid_to)
        # Each period lasts until the next one starts, the last one until the run stops.
        nexts = [offset for offset, _, _ in self._steps[1:]] + [math.inf]
        found = []
        for origin, stop in self._runs(low, high, transaction_start):
            for (offset, amperes, phases), following in zip(self._steps, nexts):
                begin = max(origin + offset, low)
                finish = min(origin + following, stop, high)
                if begin < finish:
                    found.append(Period(begin, finish, amperes, phases))
        return _merged(found)


def _merged(periods: Iterable[Period]) -> list[Period]:
    # Input is sorted and non-overlapping; periods without a limit are left
    # out, since "not covered" already means "no limit".
    out: list[Period] = []
    for period in periods:
        if period.limit is None:
            continue
        last = out[-1] if out else None
        if (
            last is not None
            and last.end == period.start
            and (last.limit, last.number_phases) == (period.limit, period.number_phases)
        ):
            out[-1] = Period(last.start, period.end, last.limit, last.number_phases)
        else:
            out.append(period)
    return out


def _covering(periods: Iterable[Period], moment: float) -> Period | None:
    return next((p for p in periods if p.covers(moment) and p.limit is not None), None)


def _sweep(
    lists: Sequence[Sequence[Period]],
    choose: Callable[[list[Period | None]], Period | None],
) -> list[Period]:
    """Split time at every boundary of every list; ``choose`` gets the period
    of each list that covers a piece (or None) and returns the one to keep."""
    every = [p for ps in lists for p in ps]
    cuts = sorted({p.start for p in every} | {p.end for p in every if p.end is not None})
    # Each cut up to the next; the last one on for ever if a period never ends.
    ends: list[float | None] = [*cuts[1:]]
    if any(p.end is None for p in every):
        ends.append(None)
    pieces = []
    for begin, finish in zip(cuts, ends):
        chosen = choose([_covering(ps, begin) for ps in lists])
        if chosen is not None:
            pieces.append(Period(begin, finish, chosen.limit, chosen.number_phases))
    return _merged(pieces)


def _first(candidates: Iterable[Period | None]) -> Period | None:
    return next((p for p in candidates if p is not None), None)


def _lowest(candidates: Iterable[Period | None]) -> Period | None:
    # On equal limits, fewer phases is the smaller power.
    present = [p for p in candidates if p is not None]
    return min(present, key=lambda p: (p.limit, p.number_phases or DEFAULT_PHASES), default=None)


def limit_at(periods: list[Period], moment: float) -> float | None:
    """The limit at ``moment``, or ``None`` when there is none."""
    period = _covering(periods, moment)
    return None if period is None else period.limit


def minimum(a: list[Period], b: list[Period]) -> list[Period]:
    """Per moment the lower limit of ``a`` and ``b`` (no limit counts as
    infinite), split at every boundary of either and merged where equal."""
    return _sweep([a, b], _lowest)


def stack(
    profiles: Sequence[ChargingProfile],
    start: float,
    end: float,
    *,
    transaction_start: float | None = None,
) -> list[Period]:
    """Stack profiles of one purpose (OCPP 1.6 §3.13.2) over ``[start, end)``.

    At each moment the profile with the highest stackLevel that is in force
    (valid, with a period covering the moment) wins, so a lower one shows
    through wherever the higher one has ended or not yet begun. OCPP forbids
    two profiles of one purpose on one stackLevel; should it happen, the one
    later in ``profiles`` wins, as a newer profile replaces an older one.
    """
    ordered = sorted(reversed(profiles), key=lambda p: -p.stack_level)
    lists = [p.periods_between(start, end, transaction_start=transaction_start) for p in ordered]
    return _sweep(lists, _first)


def composite(
    profiles: Sequence[ChargingProfile] | Mapping[Any, Sequence[ChargingProfile]],
    start: float,
    end: float,
    *,
    transaction_id: int | None = None,
    transaction_start: float | None = None,
) -> list[Period]:
    """The composite schedule over ``[start, end)`` (OCPP 1.6 §3.13.4).

    ``profiles`` is a list of :class:`ChargingProfile` or a dict of such lists
    (each profile's own purpose counts, not the key). TxProfiles apply only
    while a transaction runs (``transaction_id`` given) and only to it when
    they name a transactionId; where one is in force it overrides the
    TxDefaultProfiles. The ChargePointMaxProfiles cap the result: this is the
    composite of a charge point with one connector, a caller with several
    shares the ChargePointMaxProfile out among them.
    """
    if isinstance(profiles, Mapping):
        every = [p for group in profiles.values() for p in group]
    else:
        every = list(profiles)

    def stacked(
        purpose: str, keep: Callable[[ChargingProfile], bool] = lambda p: True
    ) -> list[Period]:
        chosen = [p for p in every if p.purpose == purpose and keep(p)]
        return stack(chosen, start, end, transaction_start=transaction_start)

    tx = stacked(
        "TxProfile",
        lambda p: transaction_id is not None and p.transaction_id in (None, transaction_id),
    )
    charging = _sweep([tx, stacked("TxDefaultProfile")], _first)
    return minimum(charging, stacked("ChargePointMaxProfile"))


def _one_decimal(value: float) -> float:
    # Round down: the limit sent must never exceed the one computed. The
    # small margin keeps e.g. 21.4 (21.39999… in binary) at 21.4.
    return math.floor(value * 10 + 1e-6) / 10


def to_charging_schedule(
    periods: list[Period],
    start: float,
    rate_unit: str = "A",
    *,
    unlimited: float | None = None,
    volts_per_phase: float = 230.0,
) -> dict[str, Any]:
    """An OCPP chargingSchedule for ``periods`` from ``start`` on, for
    SetChargingProfile and GetCompositeSchedule answers.

    startPeriod values are whole seconds from startSchedule; limits are
    rounded down to one decimal; ``duration`` ends the schedule where the last
    period ends, so that afterwards no limit applies. In watts (``rate_unit``
    ``"W"``) a limit is A × ``volts_per_phase`` × phases (numberPhases or 3).

    A stretch without a limit cannot be written in OCPP. Before the first
    limit the schedule simply starts later; between limits it gets
    ``unlimited`` (amperes, e.g. the wallbox's maximum), and without that
    value such a gap is a ``ValueError``. When ``unlimited`` is given, a stretch
    before the first limit gets it too, so that startSchedule is ``start``.
    An empty list (no limit at all) is a ``ValueError``: clear the profile.
    """
    _choice(rate_unit, ("A", "W"), "chargingRateUnit")
    ahead = [
        Period(max(p.start, start), p.end, p.limit, p.number_phases)
        for p in _merged(sorted(periods, key=lambda p: p.start))
        if p.end is None or p.end > start
    ]
    if unlimited is not None:
        filled: list[Period] = []
        cursor: float | None = start
        for period in ahead:
            # (Sorted and apart: only the last period may be open-ended.)
            if cursor is not None and period.start > cursor:
                filled.append(Period(cursor, period.start, unlimited))
            filled.append(period)
            cursor = period.end
        ahead = filled
    if not ahead:
        raise ValueError("no limit to put into a charging schedule")
    origin = ahead[0].start
    entries: list[dict[str, float]] = []
    for before, period in zip([None, *ahead], ahead):
        if before is not None and before.end != period.start:
            raise ValueError("a stretch without a limit between limits needs unlimited=")
        limit = period.limit
        assert limit is not None  # _merged leaves out periods without one
        if rate_unit == "W":
            limit *= volts_per_phase * (period.number_phases or DEFAULT_PHASES)
        entry: dict[str, float] = {
            "startPeriod": round(period.start - origin),
            "limit": _one_decimal(limit),
        }
        if period.number_phases is not None:
            entry["numberPhases"] = period.number_phases
        if entries and entries[-1]["startPeriod"] == entry["startPeriod"]:
            entries.pop()  # shorter than OCPP's one-second resolution
        if entries and {**entries[-1], "startPeriod": 0} == {**entry, "startPeriod": 0}:
            continue  # equal to its neighbour once rounded
        entries.append(entry)
    schedule: dict[str, Any] = {
        "startSchedule": ocpp_time(origin),
        "chargingRateUnit": rate_unit,
        "chargingSchedulePeriod": entries,
    }
    if ahead[-1].end is not None:
        schedule["duration"] = round(ahead[-1].end - origin)
    return schedule
