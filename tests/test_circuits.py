"""Sharing current over the site as it is wired: circuits, phases,
priorities, the imbalance limit. Examples and properties."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cfosproxy.site.circuits import (
    PHASES,
    WIRINGS,
    Circuit,
    Demand,
    share_circuits,
    site_phases,
)
from cfosproxy.site.sharing import Request, share, to_deciamps

ALL = frozenset(PHASES)


def three(amps):
    """The same amperes on L1, L2, L3."""
    return (amps, amps, amps)


# Examples -------------------------------------------------------------------


def test_priority_gets_what_is_left_after_the_minimums():
    """DESIGN's example: site 22 A, three 6-16 A devices, one of them
    priority 1: every device gets its 6 A, the 4 A left go to priority 1."""
    grants = share_circuits(
        three(22),
        [],
        [
            Demand("a", None, ALL, 6, 16, charging_order=0),
            Demand("b", None, ALL, 6, 16, priority=1, charging_order=1),
            Demand("c", None, ALL, 6, 16, charging_order=2),
        ],
    )
    assert grants == {"a": 6.0, "b": 10.0, "c": 6.0}


def test_single_phase_devices_on_different_phases_take_the_full_site():
    """Three single-phase 6-16 A devices on L1, L2 and L3 of a 16 A site
    charge at 16 A each: each counts on its own phase only."""
    demands = [Demand(phase, None, frozenset([phase]), 6, 16) for phase in PHASES]
    assert share_circuits(three(16), [], demands) == {"L1": 16.0, "L2": 16.0, "L3": 16.0}


def test_single_phase_devices_on_one_phase_share_it():
    """Two single-phase devices on the same site phase share that phase's
    16 A, while a device on another phase has its own."""
    demands = [
        Demand("a", None, frozenset(["L2"]), 6, 16),
        Demand("b", None, frozenset(["L2"]), 6, 16, charging_order=1),
        Demand("c", None, frozenset(["L3"]), 6, 16, charging_order=2),
    ]
    assert share_circuits(three(16), [], demands) == {"a": 8.0, "b": 8.0, "c": 16.0}


def test_a_circuit_never_passes_its_limit():
    """A 16 A circuit under a 32 A site: its two devices share 16 A, the
    device directly under the site takes the rest."""
    grants = share_circuits(
        three(32),
        [Circuit("carport", None, three(16))],
        [
            Demand("a", "carport", ALL, 6, 32),
            Demand("b", "carport", ALL, 6, 32, charging_order=1),
            Demand("c", None, ALL, 6, 32, charging_order=2),
        ],
    )
    assert grants == {"a": 8.0, "b": 8.0, "c": 16.0}


def test_nested_circuits_are_each_kept():
    """A 10 A circuit inside a 20 A circuit inside a 50 A site: the inner
    device gets 10 A, the other device in the outer circuit the 10 A the
    outer circuit has left, the device under the site the rest."""
    grants = share_circuits(
        three(50),
        [Circuit("outer", None, three(20)), Circuit("inner", "outer", three(10))],
        [
            Demand("deep", "inner", ALL, 6, 32),
            Demand("mid", "outer", ALL, 6, 32, charging_order=1),
            Demand("top", None, ALL, 6, 32, charging_order=2),
        ],
    )
    assert grants == {"deep": 10.0, "mid": 10.0, "top": 30.0}


def test_a_circuit_limits_each_phase_on_its_own():
    """A circuit with 10 A on L1 only holds back the device there; a
    single-phase device on L2 in the same circuit takes L2's 16 A."""
    grants = share_circuits(
        three(32),
        [Circuit("c", None, (10, 16, 16))],
        [
            Demand("on-l1", "c", frozenset(["L1"]), 6, 32),
            Demand("on-l2", "c", frozenset(["L2"]), 6, 32, charging_order=1),
        ],
    )
    assert grants == {"on-l1": 10.0, "on-l2": 16.0}


def test_a_later_device_does_not_overtake_a_waiting_one_in_its_circuit():
    """Within one priority, a later small device in the circuit where an
    earlier device's minimum does not fit waits too (as in
    L{cfosproxy.site.sharing.share})."""
    grants = share_circuits(
        three(60),
        [Circuit("c", None, three(20))],
        [
            Demand("a", "c", ALL, 6, 16),
            Demand("big", "c", ALL, 16, 16, charging_order=1),
            Demand("tiny", "c", ALL, 1, 4, charging_order=2),
        ],
    )
    assert grants == {"a": 16.0, "big": 0, "tiny": 0}


def test_a_later_device_elsewhere_is_admitted():
    """A device that waits in a full circuit does not hold back a later
    device of the same priority in another circuit with room."""
    grants = share_circuits(
        three(60),
        [Circuit("full", None, three(6)), Circuit("free", None, three(16))],
        [
            Demand("a", "full", ALL, 6, 16),
            Demand("waits", "full", ALL, 6, 16, charging_order=1),
            Demand("elsewhere", "free", ALL, 6, 16, charging_order=2),
        ],
    )
    assert grants == {"a": 6.0, "waits": 0, "elsewhere": 16.0}


def test_a_lower_priority_is_admitted_when_a_higher_one_does_not_fit():
    """A priority device whose minimum does not fit waits; a device of a
    lower priority whose minimum fits is still admitted."""
    grants = share_circuits(
        three(10),
        [],
        [Demand("big", None, ALL, 16, 32, priority=1), Demand("small", None, ALL, 6, 16)],
    )
    assert grants == {"big": 0, "small": 10.0}


def test_higher_priority_is_admitted_first_even_if_it_started_later():
    """Admission is by priority before charging order: the priority device
    that started last gets its minimum, the earlier one waits."""
    grants = share_circuits(
        three(10),
        [],
        [
            Demand("early", None, ALL, 6, 16, charging_order=0),
            Demand("late", None, ALL, 6, 16, priority=2, charging_order=5),
        ],
    )
    assert grants == {"early": 0, "late": 10.0}


def test_an_indivisible_deciampere_goes_to_the_earlier_device():
    """10 A for three devices: 3.4 + 3.3 + 3.3, the odd deci-ampere to the
    device that started first (by charging order, not by list order)."""
    grants = share_circuits(
        three(10),
        [],
        [
            Demand("second", None, ALL, 0, 16, charging_order=2),
            Demand("first", None, ALL, 0, 16, charging_order=1),
            Demand("third", None, ALL, 0, 16, charging_order=3),
        ],
    )
    assert grants == {"first": 3.4, "second": 3.3, "third": 3.3}


def test_the_imbalance_limit_holds_back_a_single_phase_device():
    """With max_imbalance 4 A, a single-phase device next to a three-phase
    one is given at most 4 A: L1 carries it on top of what every phase
    carries, although L1 would have room for more."""
    grants = share_circuits(
        three(16),
        [],
        [Demand("three", None, ALL, 6, 10), Demand("one", None, frozenset(["L1"]), 2, 16)],
        max_imbalance=4,
    )
    assert grants == {"three": 10.0, "one": 4.0}


def test_a_device_whose_minimum_would_unbalance_the_phases_waits():
    """With max_imbalance 4 A, a single-phase 6 A minimum next to a
    three-phase device at 6 A would put 6 A between the phases: it waits.
    A later device of its priority on the phase it waits for waits too; a
    later one on another phase is admitted."""
    grants = share_circuits(
        three(16),
        [],
        [
            Demand("three", None, ALL, 6, 16),
            Demand("one", None, frozenset(["L1"]), 6, 16, charging_order=1),
            Demand("also-l1", None, frozenset(["L1"]), 1, 16, charging_order=2),
            Demand("on-l2", None, frozenset(["L2"]), 2, 16, charging_order=3),
        ],
        max_imbalance=4,
    )
    assert grants == {"three": 12.0, "one": 0, "also-l1": 0, "on-l2": 4.0}


def test_a_lower_priority_on_another_phase_makes_room_for_a_higher_one():
    """With max_imbalance 2 A, a priority device on L1 and a plain device
    on L2: raising the L2 device brings the phases back into balance, so
    the priority device can go on rising; both end at 16 A."""
    grants = share_circuits(
        three(16),
        [],
        [
            Demand("first", None, frozenset(["L1"]), 1, 16, priority=1),
            Demand("second", None, frozenset(["L2"]), 1, 16),
            Demand("third", None, frozenset(["L3"]), 1, 16),
        ],
        max_imbalance=2,
    )
    assert grants == {"first": 16.0, "second": 16.0, "third": 16.0}


def test_without_an_imbalance_limit_single_phase_load_is_not_held_back():
    """max_imbalance 0 means no limit: a lone single-phase device takes
    its phase's full current."""
    grants = share_circuits(three(16), [], [Demand("one", None, frozenset(["L3"]), 6, 16)])
    assert grants == {"one": 16.0}


def test_results_are_whole_deciamperes_within_odd_limits():
    """Limits that are not whole deci-amperes are rounded down: no grant
    and no sum exceeds them."""
    grants = share_circuits(
        (10.07, 10.07, 10.07),
        [Circuit("c", None, (7.29, 7.29, 7.29))],
        [Demand("a", "c", ALL, 1, 6.66), Demand("b", None, ALL, 1, 20, charging_order=1)],
    )
    assert grants == {"a": 5.0, "b": 5.0}
    grants = share_circuits(
        (10.07, 10.07, 10.07),
        [Circuit("c", None, (3.29, 3.29, 3.29))],
        [Demand("a", "c", ALL, 1, 6.66), Demand("b", None, ALL, 1, 20, charging_order=1)],
    )
    assert grants == {"a": 3.2, "b": 6.8}


@pytest.mark.parametrize(
    "wiring, used, expected",
    [
        ("L1L2L3", None, {"L1", "L2", "L3"}),
        ("L2L3L1", None, {"L1", "L2", "L3"}),
        ("L1L2L3", {"L1"}, {"L1"}),
        ("L2L3L1", {"L1"}, {"L2"}),
        ("L3L1L2", {"L1"}, {"L3"}),
        ("L2L3L1", {"L1", "L3"}, {"L2", "L1"}),
        ("L3L1L2", {"L2", "L3"}, {"L1", "L2"}),
        ("L2", None, {"L2"}),
        ("L3", {"L1"}, {"L3"}),
        # Phases the wallbox does not have, or none at all: every wired
        # phase counts, never none.
        ("L2", {"L2", "L3"}, {"L2"}),
        ("L3L1L2", set(), {"L1", "L2", "L3"}),
    ],
)
def test_site_phases_follow_the_wiring(wiring, used, expected):
    """The wallbox's phases in use map to site phases through C{wiring}
    (a rotated box's L1 sits on another site phase)."""
    assert site_phases(wiring, used) == expected


def test_an_unknown_wiring_is_refused():
    """A wiring that is not one of the six is an error, not a guess."""
    with pytest.raises(ValueError, match="L1L3L2"):
        site_phases("L1L3L2")


@pytest.mark.parametrize(
    "circuits, demands",
    [
        ([Circuit("a", "nowhere", three(16))], []),
        ([Circuit("a", "b", three(16)), Circuit("b", "a", three(16))], []),
        ([Circuit("a", None, three(16)), Circuit("a", None, three(10))], []),
        ([], [Demand("x", "nowhere", ALL, 6, 16)]),
        ([], [Demand("x", None, ALL, 6, 16), Demand("x", None, ALL, 6, 16)]),
    ],
    ids=["unknown parent", "loop", "same circuit twice", "unknown circuit", "same name twice"],
)
def test_an_impossible_site_is_refused(circuits, demands):
    """A tree that is not one, or a device on a circuit that does not
    exist, is an error rather than current shared on a guess."""
    with pytest.raises(ValueError):
        share_circuits(three(32), circuits, demands)


def test_a_demand_needs_phases():
    """A device counted on no phase, or on something that is not a phase,
    is refused: it would escape every limit."""
    with pytest.raises(ValueError):
        Demand("x", None, frozenset(), 6, 16)
    with pytest.raises(ValueError):
        Demand("x", None, frozenset(["L4"]), 6, 16)  # type: ignore[list-item]


# Properties -----------------------------------------------------------------

amps = st.integers(min_value=0, max_value=400).map(lambda deciamps: deciamps / 10)
odd_amps = st.floats(min_value=-1, max_value=40, allow_nan=False)


@st.composite
def wired_sites(draw, max_imbalance=None):
    """A random site: per-phase limits, a tree of up to six circuits at
    most three deep, up to eight devices with random wirings, phases in
    use, priorities, charging orders and limits, and a max_imbalance."""
    site = tuple(draw(st.one_of(amps, odd_amps)) for _ in PHASES)
    circuits, depth = [], {}
    for index in range(draw(st.integers(min_value=0, max_value=6))):
        parent = draw(st.sampled_from([None, *(n for n, d in depth.items() if d < 3)]))
        name = f"c{index}"
        depth[name] = 1 if parent is None else depth[parent] + 1
        available = tuple(draw(st.one_of(amps, odd_amps)) for _ in PHASES)
        circuits.append(Circuit(name, parent, available))
    demands = []
    for index in range(draw(st.integers(min_value=0, max_value=8))):
        wiring = draw(st.sampled_from(sorted(WIRINGS)))
        used = draw(st.none() | st.sets(st.sampled_from(PHASES), max_size=3))
        demands.append(
            Demand(
                name=f"d{index}",
                circuit=draw(st.sampled_from([None, *depth])),
                phases=site_phases(wiring, used),
                min_current=draw(st.one_of(amps, odd_amps).map(lambda a: min(a, 16))),
                max_current=draw(st.one_of(amps, odd_amps)),
                priority=draw(st.integers(min_value=0, max_value=2)),
                charging_order=draw(st.integers(min_value=0, max_value=10)),
            )
        )
    if max_imbalance is None:
        max_imbalance = draw(st.sampled_from([0.0]) | st.floats(min_value=0.05, max_value=30))
    return site, circuits, demands, max_imbalance


class Tree:
    """What the tests read about a generated site, computed apart from the
    code under test: per limit (a phase of a circuit or of the site) what
    is available and which devices count on it."""

    def __init__(self, site, circuits, demands):
        parents = {circuit.name: circuit.parent for circuit in circuits}
        self.available = {(None, i): max(0, to_deciamps(a)) for i, a in enumerate(site)}
        for circuit in circuits:
            for i, a in enumerate(circuit.available):
                self.available[circuit.name, i] = max(0, to_deciamps(a))
        self.limits = {}
        for demand in demands:
            nodes, node = [None], demand.circuit
            while node is not None:
                nodes.append(node)
                node = parents[node]
            self.limits[demand.name] = {
                (n, PHASES.index(p)) for n in nodes for p in demand.phases
            }

    def room(self, grants):
        """Deci-amperes left per limit."""
        left = dict(self.available)
        for name, limits in self.limits.items():
            for limit in limits:
                left[limit] -= to_deciamps(grants[name])
        return left


def phase_sums(demands, grants):
    """The deci-amperes all devices are counted for on L1, L2, L3."""
    return [
        sum(to_deciamps(grants[d.name]) for d in demands if phase in d.phases)
        for phase in PHASES
    ]


def usable(demand):
    """Whether a device's own limits allow giving it anything."""
    return 0 < to_deciamps(demand.max_current) and max(
        0, to_deciamps(demand.min_current)
    ) <= to_deciamps(demand.max_current)


@settings(max_examples=400, deadline=None)
@given(wired_sites())
def test_no_limit_is_ever_exceeded(wired):
    """(1) On every phase of every circuit and of the site, the devices
    below it are given together at most what is available there, counted
    in whole deci-amperes (and so also in amperes)."""
    site, circuits, demands, max_imbalance = wired
    grants = share_circuits(site, circuits, demands, max_imbalance)
    tree = Tree(site, circuits, demands)
    assert set(grants) == {d.name for d in demands}
    assert all(left >= 0 for left in tree.room(grants).values()), tree.room(grants)


@settings(max_examples=400, deadline=None)
@given(wired_sites())
def test_every_grant_is_nothing_or_within_the_device_s_limits(wired):
    """(2) Every device gets 0 or a whole number of deci-amperes between
    its minimum and its maximum."""
    site, circuits, demands, max_imbalance = wired
    grants = share_circuits(site, circuits, demands, max_imbalance)
    for demand in demands:
        grant = grants[demand.name]
        assert grant * 10 == round(grant * 10)
        if grant:
            assert (
                max(0, to_deciamps(demand.min_current))
                <= to_deciamps(grant)
                <= to_deciamps(demand.max_current)
            )


@settings(max_examples=400, deadline=None)
@given(wired_sites())
def test_a_higher_priority_is_not_given_less_without_cause(wired):
    """(3) When a device A gets less than an admitted device B of lower
    priority, A has a cause that B's current does not explain away.

    Without an imbalance limit (or with only three-phase devices, which
    cannot unbalance the phases), a lower priority gets current above its
    minimum only once no device of a higher priority can be raised, and a
    full limit stays full; so one of these holds: A is at its maximum; B is
    at its minimum (it got nothing of what was left); A is counted on a
    limit that is full and on which B is not counted (B's current does not
    take from it). If A got nothing at all: its own limits give it
    nothing; or an earlier device of its priority waits (A does not
    overtake that one); or the room left on one of its limits is below its
    minimum.

    With an imbalance limit and devices on one or two phases, the limit
    that holds A back may change as others rise: A may wait for the phases
    to balance while B takes room on a limit both share. Then what is
    asserted is only that an admitted A cannot be raised by 0.1 A: it is
    at its maximum, a limit of it is full, or the phases would go out of
    balance, unless B is at its minimum."""
    site, circuits, demands, max_imbalance = wired
    grants = share_circuits(site, circuits, demands, max_imbalance)
    tree = Tree(site, circuits, demands)
    room = tree.room(grants)
    sums = phase_sums(demands, grants)
    most = to_deciamps(max_imbalance)
    simple = max_imbalance <= 0 or all(d.phases == ALL for d in demands)
    place = {d.name: (d.charging_order, i) for i, d in enumerate(demands)}
    for a in demands:
        got = to_deciamps(grants[a.name])
        for b in demands:
            if b.priority >= a.priority or got >= to_deciamps(grants[b.name]):
                continue
            if to_deciamps(grants[b.name]) == max(0, to_deciamps(b.min_current)):
                continue
            floor = max(0, to_deciamps(a.min_current))
            earlier_waits = any(
                d.priority == a.priority
                and place[d.name] < place[a.name]
                and not grants[d.name]
                and (max(0, to_deciamps(d.min_current)) > 0 or not usable(d))
                for d in demands
            )
            if got == 0 and (not usable(a) or earlier_waits):
                continue  # A may be waiting; a minimum of 0 does not tell.
            if got == 0 and floor > 0:
                if simple:
                    short = any(room[limit] < floor for limit in tree.limits[a.name])
                    assert short, (a, b, grants)
                continue
            if got == to_deciamps(a.max_current):
                continue
            full = {limit for limit in tree.limits[a.name] if room[limit] <= 0}
            if simple:
                assert full - tree.limits[b.name], (a, b, grants)
            else:
                raised = [s + 1 if p in a.phases else s for p, s in zip(PHASES, sums)]
                assert full or max(raised) - min(raised) > most, (a, b, grants)


@settings(max_examples=250, deadline=None)
@given(wired_sites().filter(lambda wired: wired[3] > 0))
def test_the_phases_stay_within_the_imbalance_limit(wired):
    """(4) With max_imbalance set, the devices' summed currents on L1, L2
    and L3 differ by at most max_imbalance (in whole deci-amperes)."""
    site, circuits, demands, max_imbalance = wired
    grants = share_circuits(site, circuits, demands, max_imbalance)
    sums = phase_sums(demands, grants)
    assert max(sums) - min(sums) <= to_deciamps(max_imbalance), (sums, grants)


old_requests = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=40, allow_nan=False),
        st.floats(min_value=0, max_value=80, allow_nan=False),
    ),
    max_size=12,
).map(lambda pairs: [Request(f"d{i}", lo, hi) for i, (lo, hi) in enumerate(pairs)])


@settings(max_examples=500, deadline=None)
@given(
    site=st.floats(min_value=0, max_value=500, allow_nan=False),
    requests=old_requests,
    priority=st.integers(min_value=-3, max_value=3),
    max_imbalance=st.sampled_from([0, 0.1, 20]),
)
def test_a_plain_site_shares_as_before(site, requests, priority, max_imbalance):
    """(5) A site without circuits, every device on all three phases, one
    priority: the result is exactly L{cfosproxy.site.sharing.share}'s (the
    imbalance limit cannot matter: every phase carries the same)."""
    demands = [
        Demand(r.name, None, ALL, r.min_current, r.max_current, priority, charging_order=i)
        for i, r in enumerate(requests)
    ]
    assert share_circuits(three(site), [], demands, max_imbalance) == share(site, requests)


@settings(max_examples=300, deadline=None)
@given(wired_sites(max_imbalance=0.0))
def test_nothing_is_left_that_a_device_could_take(wired):
    """Without an imbalance limit, a device given current but less than its
    maximum is counted on a full limit: current is not left unused where
    it could go. (A device given 0 may be one that waits.)"""
    site, circuits, demands, _ = wired
    grants = share_circuits(site, circuits, demands)
    tree = Tree(site, circuits, demands)
    room = tree.room(grants)
    for demand in demands:
        got = to_deciamps(grants[demand.name])
        if 0 < got < to_deciamps(demand.max_current):
            assert any(room[limit] <= 0 for limit in tree.limits[demand.name]), demand


def test_a_three_phase_device_is_not_held_back_by_the_balance():
    """A single-phase device waiting for the phases to balance does not
    hold back a later three-phase device of its priority, which does not
    change the balance; once a later device on another phase balances the
    phases, the waiting one is admitted."""
    grants = share_circuits(
        three(32),
        [],
        [
            Demand("one", None, frozenset(["L1"]), 6, 16),
            Demand("three", None, ALL, 6, 16, charging_order=1),
            Demand("on-l2", None, frozenset(["L2"]), 3, 16, charging_order=2),
            Demand("on-l3", None, frozenset(["L3"]), 3, 16, charging_order=3),
        ],
        max_imbalance=4,
    )
    assert grants["three"] >= 6
    assert all(grants[name] > 0 for name in ("one", "on-l2", "on-l3"))
    assert grants["one"] >= 6


def test_a_device_waiting_for_room_in_its_circuit_holds_back_no_one_elsewhere():
    """A single-phase device set aside for the balance whose circuit then
    fills up waits for room there; it does not hold back later devices on
    its phase in other circuits once the phases allow them."""
    grants = share_circuits(
        three(64),
        [Circuit("full", None, three(6))],
        [
            Demand("first", "full", frozenset(["L1"]), 6, 16),
            Demand("three", "full", ALL, 6, 16, charging_order=1),
            Demand("elsewhere", None, frozenset(["L1"]), 3, 16, charging_order=2),
        ],
        max_imbalance=4,
    )
    assert grants["first"] == 0 and grants["three"] == 6
    assert grants["elsewhere"] >= 3
