"""How current is shared over the site as it is wired: a pure function, no
state, no I/O.

The site and every circuit below it have, on each of the three site phases
L1, L2, L3, a current available to what hangs below them. A device counts
the current it is given on each site phase it uses, in its circuit, in every
circuit above that and at the site (DESIGN §7). L{share_circuits} splits the
current so that none of these sums ever exceeds what is available, and so
that the managed devices' phase sums stay within C{max_imbalance} of each
other when that is set.

Currents are handled in whole deci-amperes, as in L{cfosproxy.site.sharing},
so that no rounding can push a sum over a limit. With a single site, no
circuits, every device on all three phases and one priority, the result is
exactly that of L{cfosproxy.site.sharing.share}.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cfosproxy.site.phases import PHASES, WIRINGS, Phase, site_phases
from cfosproxy.site.sharing import to_deciamps

__all__ = [
    "PHASES",
    "WIRINGS",
    "Circuit",
    "Demand",
    "Limit",
    "Phase",
    "PerPhase",
    "available_per_limit",
    "circuit_paths",
    "share_circuits",
    "site_phases",
]

PerPhase = tuple[float, float, float]

# A limit is a phase (0, 1, 2 for L1, L2, L3) of a circuit, or of the site
# (circuit None).
Limit = tuple[str | None, int]


@dataclass(frozen=True)
class Circuit:
    """A sub-feeder with its own fuses.

    @ivar name: the circuit's name (C{[circuit:<name>]}).
    @ivar parent: the circuit it hangs on; L{None} for directly under the
        site.
    @ivar available: amperes available to everything below it on L1, L2, L3.
    """

    name: str
    parent: str | None
    available: PerPhase


@dataclass(frozen=True)
class Demand:
    """A device that wants current.

    @ivar name: the device's name.
    @ivar circuit: the circuit it hangs on; L{None} for directly under the
        site.
    @ivar phases: the site phases it is counted on (L{site_phases}); not
        empty.
    @ivar min_current: amperes below which it is better given nothing.
    @ivar max_current: amperes it takes at most.
    @ivar priority: higher is served first.
    @ivar charging_order: its place in the order in which devices started
        charging, lower for earlier; devices with the same place keep the
        order they are given in.
    """

    name: str
    circuit: str | None
    phases: frozenset[Phase]
    min_current: float
    max_current: float
    priority: int = 0
    charging_order: int = 0

    def __post_init__(self) -> None:
        if not self.phases or not self.phases <= frozenset(PHASES):
            raise ValueError(f"{self.name}: phases must be some of L1, L2, L3, got {self.phases}")


@dataclass(frozen=True)
class _Device:
    """A L{Demand} in deci-amperes, with the limits it is counted on."""

    name: str
    priority: int
    floor: int
    ceiling: int
    phases: tuple[int, ...]
    limits: tuple[Limit, ...]

    @property
    def usable(self) -> bool:
        """Whether its own limits allow giving it anything at all."""
        return 0 < self.ceiling and self.floor <= self.ceiling


def share_circuits(
    site: PerPhase,
    circuits: Sequence[Circuit],
    demands: Sequence[Demand],
    max_imbalance: float = 0,
) -> dict[str, float]:
    """Split the current available at the site and in its circuits among
    C{demands}.

    B{Admission.} Devices are taken by C{priority}, higher first, then by
    C{charging_order}. A device is admitted when its C{min_current} still
    fits on each of its phases in its circuit, in every circuit above it and
    at the site, next to the minimums of those admitted before it, and (with
    C{max_imbalance}) keeps the phase sums within C{max_imbalance} of each
    other. The balance is checked at each step, against the minimums
    admitted so far: a single-phase device whose minimum is above
    C{max_imbalance} is admitted only once other devices of its priority or
    a higher one load the other phases. A device that does not fit waits with 0, and so does a device
    whose own limits give it nothing (C{max_current} below 0.1 A or below
    C{min_current}). Within one priority, a later device does not overtake
    an earlier waiting one: it waits too when it would be counted on a limit
    that the earlier one waits for (a phase of a circuit or of the site
    where its minimum does not fit; for a device whose own limits give it
    nothing, every limit it is counted on). A later device that shares no
    such limit, and any device of a lower priority, may still be admitted.
    A device that fits but would unbalance the phases holds back only later
    ones that would load none but its phases (a later device on another
    phase may be just what balances them, and one on all three phases does
    not change the balance); once the devices of its priority have been
    admitted, the waiting ones are admitted in the order they came for as
    long as the phases allow.

    B{Filling.} What is left goes to the highest priority first: among the
    admitted devices of the highest priority that can still be raised, the
    current is shared evenly on top of their minimums ("water filling"),
    each up to its C{max_current}, for as long as every limit they are
    counted on has room; a deci-ampere that cannot be split evenly goes to
    the earlier device. Only when no device of a priority can be raised
    further does the next priority get what is left. With C{max_imbalance},
    raising a device on one or two phases can make room for a higher
    priority device on the other phases again; that device is then served
    first again.

    @param site: amperes available at the site on L1, L2, L3.
    @param circuits: every circuit; each parent must be among them.
    @param demands: the devices that want current; names must be unique.
    @param max_imbalance: the largest allowed difference between the
        devices' summed currents on the three site phases, in amperes; 0
        (or less) for no limit.
    @return: C{{name: amperes}} for every demand, each a multiple of 0.1, 0
        or between the device's minimum and maximum. On every phase of every
        circuit and of the site, the grants of the devices below it add up
        to at most what is available there.
    @raise ValueError: a circuit's parent, or a demand's circuit, is not
        among C{circuits}, the circuits form a loop, or two circuits or two
        demands share a name.
    """
    room = available_per_limit(site, circuits)
    paths = circuit_paths(circuits)
    devices = _devices(demands, paths)
    imbalance = to_deciamps(max_imbalance) if max_imbalance > 0 else None
    given = _admit(devices, room, imbalance)
    _fill(devices, given, room, imbalance)
    grants: dict[str, float] = {demand.name: 0 for demand in demands}
    for name, deciamps in given.items():
        grants[name] = deciamps / 10
    return grants


def available_per_limit(site: PerPhase, circuits: Sequence[Circuit]) -> dict[Limit, int]:
    """Deci-amperes available per limit, never below 0."""
    room: dict[Limit, int] = {}
    for name, available in [(None, site), *((c.name, c.available) for c in circuits)]:
        for phase, amps in enumerate(available):
            room[name, phase] = max(0, to_deciamps(amps))
    return room


def circuit_paths(circuits: Sequence[Circuit]) -> dict[str | None, tuple[str | None, ...]]:
    """Per circuit (and L{None}, the site): itself and everything above it,
    up to the site."""
    parents = {circuit.name: circuit.parent for circuit in circuits}
    if len(parents) != len(circuits):
        raise ValueError("two circuits share a name")
    paths: dict[str | None, tuple[str | None, ...]] = {None: (None,)}
    for name in parents:
        path = [name]
        while (above := parents[path[-1]]) is not None:
            if above not in parents:
                raise ValueError(f"circuit {path[-1]}: unknown parent {above!r}")
            if above in path:
                raise ValueError(f"circuits form a loop: {' > '.join(path)} > {above}")
            path.append(above)
        paths[name] = (*path, None)
    return paths


def _devices(
    demands: Sequence[Demand], paths: Mapping[str | None, tuple[str | None, ...]]
) -> list[_Device]:
    """The demands in deci-amperes, in the order they are admitted and
    served in: higher priority first, then earlier in the charging order."""
    if len({demand.name for demand in demands}) != len(demands):
        raise ValueError("two demands share a name")
    devices = []
    for demand in sorted(demands, key=lambda d: (-d.priority, d.charging_order)):
        if demand.circuit not in paths:
            raise ValueError(f"{demand.name}: unknown circuit {demand.circuit!r}")
        phases = tuple(sorted(PHASES.index(phase) for phase in demand.phases))
        devices.append(
            _Device(
                name=demand.name,
                priority=demand.priority,
                floor=max(0, to_deciamps(demand.min_current)),
                ceiling=to_deciamps(demand.max_current),
                phases=phases,
                limits=tuple((node, phase) for node in paths[demand.circuit] for phase in phases),
            )
        )
    return devices


def _admit(
    devices: Sequence[_Device], room: dict[Limit, int], imbalance: int | None
) -> dict[str, int]:
    """Admit devices at their minimums, taking these from C{room}.

    @return: C{{name: deci-amperes}} for the admitted devices.
    """
    given: dict[str, int] = {}
    sums = [0, 0, 0]

    def take(device: _Device) -> None:
        given[device.name] = device.floor
        for limit in device.limits:
            room[limit] -= device.floor
        for phase in device.phases:
            sums[phase] += device.floor

    def fits(device: _Device) -> bool:
        return all(room[limit] >= device.floor for limit in device.limits)

    def balanced(device: _Device) -> bool:
        return imbalance is None or _balanced(sums, device.phases, device.floor, imbalance)

    for _, same_priority in itertools.groupby(devices, key=lambda d: d.priority):
        # The limits earlier waiting devices of this priority wait for.
        awaited: set[Limit] = set()
        # Devices that fit but would unbalance the phases: they wait for
        # devices on the other phases, which may come after them.
        unbalancing: list[_Device] = []
        waiting_phases: set[frozenset[int]] = set()
        for device in same_priority:
            if not device.usable:
                awaited.update(device.limits)
                continue
            short = {limit for limit in device.limits if room[limit] < device.floor}
            if short or awaited.intersection(device.limits):
                awaited.update(short)
                continue
            # A device that would load only phases an earlier one waits to
            # load does not overtake it.
            behind = any(frozenset(device.phases) <= phases for phases in waiting_phases)
            if behind or not balanced(device):
                waiting_phases.add(frozenset(device.phases))
                unbalancing.append(device)
                continue
            take(device)
        # Each admission may balance the phases for one that waits, in the
        # order they came.
        while unbalancing:
            still: list[_Device] = []
            waiting: set[frozenset[int]] = set()
            for device in unbalancing:
                phases = frozenset(device.phases)
                if not fits(device):
                    # Its circuit filled up meanwhile: it waits for room
                    # there, which holds back nobody on other circuits.
                    still.append(device)
                elif any(phases <= other for other in waiting) or not balanced(device):
                    still.append(device)
                    waiting.add(phases)
                else:
                    take(device)
            if len(still) == len(unbalancing):
                break
            unbalancing = still
    return given


def _phase_sums(devices: Sequence[_Device], given: Mapping[str, int]) -> list[int]:
    """The deci-amperes the devices are counted for on L1, L2, L3."""
    sums = [0, 0, 0]
    for device in devices:
        for phase in device.phases:
            sums[phase] += given.get(device.name, 0)
    return sums


def _balanced(sums: Sequence[int], phases: Sequence[int], more: int, most: int) -> bool:
    """Whether the phase sums C{sums} stay within C{most} of each other
    when C{more} deci-amperes are added on C{phases}."""
    after = [total + more if phase in phases else total for phase, total in enumerate(sums)]
    return max(after) - min(after) <= most


def _fill(
    devices: Sequence[_Device],
    given: dict[str, int],
    room: dict[Limit, int],
    imbalance: int | None,
) -> None:
    """Share what is left in C{room} among the admitted devices, highest
    priority first, raising C{given} in place."""
    admitted = [device for device in devices if device.name in given]
    sums = _phase_sums(admitted, given)
    # The devices that may still be raised, in the order they are served.
    # Room only ever shrinks, so a device at its maximum or on a full limit
    # is out for good; only the balance of the phases comes and goes.
    active = {
        device.name: device
        for device in admitted
        if given[device.name] < device.ceiling and all(room[limit] > 0 for limit in device.limits)
    }
    on_limit: dict[Limit, list[_Device]] = {}
    for device in active.values():
        for limit in device.limits:
            on_limit.setdefault(limit, []).append(device)

    def give(device: _Device, deciamps: int) -> None:
        given[device.name] += deciamps
        if given[device.name] >= device.ceiling:
            active.pop(device.name, None)
        for limit in device.limits:
            room[limit] -= deciamps
            if room[limit] <= 0:
                for other in on_limit.pop(limit, ()):
                    active.pop(other.name, None)
        for phase in device.phases:
            sums[phase] += deciamps

    def candidates() -> list[_Device]:
        if imbalance is None:
            return list(active.values())
        # Whether one more deci-ampere keeps the balance depends only on
        # the phases a device is counted on: worked out once per set.
        balanced: dict[tuple[int, ...], bool] = {}
        chosen = []
        for device in active.values():
            ok = balanced.get(device.phases)
            if ok is None:
                ok = balanced[device.phases] = _balanced(sums, device.phases, 1, imbalance)
            if ok:
                chosen.append(device)
        return chosen

    while raisable := candidates():
        top = raisable[0].priority
        group = [device for device in raisable if device.priority == top]
        each = _even_step(group, room, imbalance, sums, given)
        if each > 0:
            for device in group:
                give(device, min(each, device.ceiling - given[device.name]))
        else:
            # Too little to split evenly: one deci-ampere each, earlier
            # devices first, while their limits have room and the phases
            # stay balanced.
            for device in group:
                if device.name in active and (
                    imbalance is None or _balanced(sums, device.phases, 1, imbalance)
                ):
                    give(device, 1)


def _even_step(
    group: Sequence[_Device],
    room: Mapping[Limit, int],
    imbalance: int | None,
    sums: Sequence[int],
    given: Mapping[str, int],
) -> int:
    """The most deci-amperes that every device of C{group} can be given at
    once without any limit overflowing, whatever each of them takes up to
    that.

    With an imbalance limit, the step is also no larger than any device of
    the group can take (so that each takes all of it, and the phase sums
    grow by the step times the number of devices on each phase), and keeps
    every pair of phases within the limit.

    @param sums: the admitted devices' phase sums, deci-amperes.
    @param given: deci-amperes given so far, per device.
    """
    sharing: dict[Limit, int] = {}
    for device in group:
        for limit in device.limits:
            sharing[limit] = sharing.get(limit, 0) + 1
    steps = [room[limit] // count for limit, count in sharing.items()]
    if imbalance is not None:
        steps.append(min(device.ceiling - given[device.name] for device in group))
        counts = [0, 0, 0]
        for device in group:
            for phase in device.phases:
                counts[phase] += 1
        for high, low in itertools.permutations(range(3), 2):
            if counts[high] > counts[low]:
                slack = imbalance - (sums[high] - sums[low])
                steps.append(slack // (counts[high] - counts[low]))
    return max(0, min(steps))
