"""Which phases a car draws on, learnt from the currents a wallbox
reports (DESIGN §7)."""

import pytest

from cfosproxy.site.phases import phases_in_use, site_phases


def test_nothing_is_known_until_a_phase_draws_four_amperes():
    """Readings below 4 A on every phase (a car that has not started, or
    ramps up) tell nothing: every wired phase keeps counting."""
    assert phases_in_use(None, [None, None, None]) is None
    assert phases_in_use(None, [3.9, 0.0, 0.0]) is None


@pytest.mark.parametrize(
    "currents, expected",
    [
        ([16.0, 0.0, 0.0], {"L1"}),
        ([16.0, 0.9, 0.2], {"L1"}),
        ([4.0, 1.0, 0.0], {"L1", "L2"}),
        ([10.0, 10.0, 10.0], {"L1", "L2", "L3"}),
        ([0.0, 6.0, 0.0], {"L2"}),
        # A phase the wallbox did not report counts: nothing says it is
        # unused.
        ([16.0, None, 0.0], {"L1", "L2"}),
    ],
)
def test_a_strong_reading_says_which_phases_are_used(currents, expected):
    """Once a phase draws 4 A or more, the phases below 1 A are unused."""
    assert phases_in_use(None, currents) == expected
    assert phases_in_use(frozenset({"L1", "L2", "L3"}), currents) == expected


def test_a_weak_reading_forgets_nothing_but_adds_what_draws_again():
    """A reading with no phase at 4 A keeps what was learnt, and a phase
    that draws 1 A or more again counts again at once."""
    known = frozenset({"L1"})
    assert phases_in_use(known, [0.0, 0.0, 0.0]) == known
    assert phases_in_use(known, [2.0, 0.5, None]) == known
    assert phases_in_use(known, [2.0, 1.2, 0.0]) == {"L1", "L2"}


@pytest.mark.parametrize(
    "wiring, used, expected",
    [
        ("L2L3L1", {"L1"}, {"L2"}),
        ("L3L1L2", {"L1", "L2"}, {"L3", "L1"}),
        ("L2", {"L1"}, {"L2"}),
        # A single-phase wallbox whose report names only phases it does not
        # have is still counted on its one phase.
        ("L3", {"L2"}, {"L3"}),
    ],
)
def test_the_wiring_maps_the_cars_phases_to_the_site(wiring, used, expected):
    """The wallbox's own phases in use become site phases through its
    wiring; a device is never counted on no phase."""
    assert site_phases(wiring, frozenset(used)) == expected
