"""The meters as the manager believes them, and what they leave to the
devices (DESIGN §7 "Meters and dynamic limits"): pure logic on a clock."""

import math

import pytest
from twisted.internet import task
from twisted.logger import LogLevel

from cfosproxy.config import config_from_string
from cfosproxy.site.available import (
    AvailableCurrent,
    SiteLimits,
    device_currents,
    metered_available,
    other_load,
    other_load_while_ramping,
)
from cfosproxy.site.meters import (
    PLAUSIBLE_AMPS,
    MeterBoard,
    MeterSettings,
    NotPushed,
    UnknownMeter,
    implausible,
)
from cfosproxy.site.volume import RAISE_INTERVAL
from tests.test_manager import CapturedLog


def board(*meters, timeout=10.0):
    """A board of C{meters} (C{(name, type)}) on a fresh clock, and the
    list its change callback appends to."""
    clock = task.Clock()
    changes = []
    settings = [MeterSettings(name, kind, timeout) for name, kind in meters]
    return MeterBoard(settings, clock, lambda name: changes.append(clock.seconds())), clock, changes


# -- believing a meter ------------------------------------------------------------


@pytest.mark.parametrize(
    "currents, words",
    [
        ([1.0, 2.0], "2 phase currents instead of 3"),
        ([math.nan, 0.0, 0.0], "L1 is nan"),
        ([0.0, math.inf, 0.0], "L2 is inf"),
        ([0.0, 0.0, 10_000.0], "L3 is 10000 A, beyond any real meter"),
        ([0.0, -10_000.0, 0.0], "L2 is -10000 A"),
        ([0.0, True, 0.0], "L2 is not a number"),
        ([0.0, "5", 0.0], "L2 is not a number"),
    ],
)
def test_implausible_readings_say_why(currents, words):
    """NaN, infinity, 10,000 A, a missing phase or a non-number cannot be a
    reading, and the reason names the phase."""
    assert words in implausible(currents)


def test_plausible_readings_pass():
    """Export (negative), 0 and a large but real current are believed."""
    assert implausible([-20.0, 0, PLAUSIBLE_AMPS]) is None


def test_a_reading_is_kept_with_its_age():
    """A reading is kept signed, with when it came; the meter is heard
    until C{timeout} seconds without another, then silent."""
    meters, clock, changes = board(("grid", "sdm630"))
    assert meters.state("grid").silent
    clock.advance(3)
    meters.reading("grid", [10.0, -2.5, 0.0])
    state = meters.state("grid")
    assert (state.currents, state.read_at, state.silent) == ((10.0, -2.5, 0.0), 3, False)
    assert changes == [3]
    clock.advance(4)
    assert state.as_json(clock.seconds()) == {
        "name": "grid", "type": "sdm630", "currents": [10.0, -2.5, 0.0], "age": 4.0,
        "silent": False, "problem": None,
    }
    clock.advance(6)
    assert state.silent and changes == [3, 13]


def test_nonsense_is_no_reading_and_is_said_once():
    """A reading that cannot be true is not believed: the last good one
    stays, the meter falls silent on time, and the log says it once (at
    warning), then once that the meter reads again, and when it was
    silent, that it is back."""
    meters, clock, changes = board(("grid", "sdm630"))
    meters.reading("grid", [5.0, 5.0, 5.0])
    with CapturedLog() as log:
        for _ in range(5):
            clock.advance(1)
            meters.reading("grid", [math.nan, 5.0, 5.0])
        assert meters.state("grid").currents == (5.0, 5.0, 5.0)
        assert meters.state("grid").problem == "not believed: L1 is nan"
        warnings = [line for line, _ in log.lines(LogLevel.warn)]
        assert len(warnings) == 1 and "not believed: L1 is nan" in warnings[0]
        clock.advance(5)
        assert meters.state("grid").silent
        meters.reading("grid", [6.0, 6.0, 6.0])
        lines = [line for line, _ in log.lines(LogLevel.info)]
    assert any("silent: no reading for 10 s (not believed: L1 is nan)" in line for line in lines)
    assert any("readings again" in line for line in lines)
    assert any("meter grid is back after 10 s of silence" in line for line in lines)
    assert not meters.state("grid").silent


def test_failures_are_said_once_per_outage():
    """A meter that stops answering is said once at warning, not at every
    poll; after a good reading, the next outage is said again."""
    meters, clock, _ = board(("grid", "sunspec"))
    with CapturedLog() as log:
        for _ in range(3):
            meters.failure("grid", "reading 40002: no answer within 2 s")
        meters.reading("grid", [1.0, 1.0, 1.0])
        meters.failure("grid", "connecting to 10.0.0.5:502: refused")
        warnings = [line for line, _ in log.lines(LogLevel.warn)]
    assert len(warnings) == 2
    assert "no answer within 2 s" in warnings[0] and "refused" in warnings[1]


def test_a_meter_never_heard_is_silent_and_said_after_its_timeout():
    """From the start, a meter counts as silent until its first reading;
    the log says so once its timeout has passed."""
    meters, clock, changes = board(("grid", "sdm630"), timeout=5)
    with CapturedLog() as log:
        clock.advance(5)
        warnings = [line for line, _ in log.lines(LogLevel.warn)]
    assert meters.state("grid").silent and changes == [5]
    assert len(warnings) == 1 and "no reading since the start 5 s ago" in warnings[0]


def test_pushing_readings():
    """Only C{type = api} meters take pushed readings; an unknown meter, a
    polled one and an implausible reading are refused with the reason."""
    meters, clock, changes = board(("house", "api"), ("grid", "sdm630"))
    meters.push("house", [3.0, -1.0, 0.5])
    assert meters.state("house").currents == (3.0, -1.0, 0.5)
    with pytest.raises(UnknownMeter):
        meters.push("garage", [0, 0, 0])
    with pytest.raises(NotPushed, match="type sdm630: cfosproxy polls it"):
        meters.push("grid", [0, 0, 0])
    with pytest.raises(ValueError, match="L1 is 20000 A"):
        meters.push("house", [20_000, 0, 0])
    assert meters.state("house").currents == (3.0, -1.0, 0.5)


# -- what a meter leaves ----------------------------------------------------------


def test_metered_available_is_the_fuse_less_reserve_and_other_load():
    """available = max − reserve − (metered − managed) per phase, within
    0 and max_current; export never lifts it above max_current."""
    assert other_load((25, 12, 40), (15, 0, 0)) == (10, 12, 40)
    assert metered_available((32, 32, 32), 2, (10, 12, 40), 0) == (20, 18, 0)
    assert metered_available((32, 32, 32), 2, (-30, -30, 0), 0) == (32, 32, 30)
    assert metered_available((16, 25, 32), 0, (0, 0, 0), 0) == (16, 25, 32)


def test_a_ramp_is_not_taken_for_other_load():
    """While a device ramps from a raise (it reported 10 A, its limit is
    now 20 A), a rise the ramp can explain leaves the other load as it
    was; a rise beyond what the devices' whole limits explain counts at
    once; a fall counts at once; with nothing before, the reports count."""
    reported, limits = (10, 10, 10), (20, 20, 20)
    assert other_load_while_ramping((30, 30, 30), reported, limits, (10, 10, 10)) == (10, 10, 10)
    assert other_load_while_ramping((36, 30, 25), reported, limits, (10, 10, 10)) == (16, 10, 10)
    assert other_load_while_ramping((15, 30, 30), reported, limits, (10, 10, 10)) == (5, 10, 10)
    assert other_load_while_ramping((30, 30, 30), reported, limits, None) == (20, 20, 20)


def test_a_silent_meter_leaves_the_failsafe_current():
    """While the meter is silent, the place has C{failsafe_current}, never
    more than its fuse."""
    assert metered_available((32, 32, 32), 2, None, 6) == (6, 6, 6)
    assert metered_available((4, 32, 32), 2, None, 6) == (4, 6, 6)


def test_device_currents_follow_the_wiring_and_never_exceed_the_limit():
    """A device's reported currents land on the site phases of its wiring,
    capped at what it may draw; an unreported phase counts its limit where
    it is counted, 0 where it is not."""
    assert device_currents("L2L3L1", [10.0, 9.0, 8.0], ("L1", "L2", "L3"), 16) == (8.0, 10.0, 9.0)
    assert device_currents("L1L2L3", [16.0, 16.0, 16.0], ("L1", "L2", "L3"), 6) == (6, 6, 6)
    assert device_currents("L3", [12.0, None, None], ("L3",), 16) == (0, 0, 12.0)
    assert device_currents("L1L2L3", [None, None, None], ("L1",), 10) == (10, 0, 0)
    assert device_currents("L1L2L3", [-1.0, 3.0, None], ("L1", "L2"), 10) == (0, 3.0, 0)


def test_available_current_lowers_at_once_and_raises_with_care():
    """Lower at once; higher only by 0.5 A or more and 10 s after the last
    change; the first value is taken as it comes."""
    dynamic = AvailableCurrent()
    limit = (None, 0)
    assert dynamic.settle({limit: 100}, 0) == {limit: 100}
    assert dynamic.settle({limit: 200}, 1) == {limit: 200}, "the start is no change"
    assert dynamic.settle({limit: 150}, 2) == {limit: 150}
    assert dynamic.settle({limit: 250}, 5) == {limit: 150}
    assert dynamic.raise_due({limit: 250}) == 2 + RAISE_INTERVAL
    assert dynamic.settle({limit: 250}, 12) == {limit: 250}
    assert dynamic.settle({limit: 254}, 30) == {limit: 250}, "0.4 A is not worth a profile"
    assert dynamic.raise_due({limit: 254}) is None
    assert dynamic.settle({limit: 249}, 31) == {limit: 249}


def test_a_raise_goes_to_the_least_of_the_scatter():
    """Readings that scatter while a raise is held back: the raise goes to
    the least of them, so that the next readings do not take it back a
    tenth at a time. A reading not worth a raise ends the run: only the
    readings after it count."""
    dynamic = AvailableCurrent()
    limit = (None, 0)
    dynamic.settle({limit: 300}, 0)
    dynamic.settle({limit: 150}, 1)
    for now, deciamps in ((2, 251), (4, 249), (6, 252), (8, 250)):
        assert dynamic.settle({limit: deciamps}, now) == {limit: 150}
    assert dynamic.settle({limit: 253}, 11) == {limit: 249}
    assert dynamic.settle({limit: 248}, 12) == {limit: 248}
    for now, deciamps in ((14, 254), (16, 250), (18, 258)):
        assert dynamic.settle({limit: deciamps}, now) == {limit: 248}
    assert dynamic.settle({limit: 260}, 22) == {limit: 258}, "254 came before 250 ended its run"


# -- the site's limits -----------------------------------------------------------


def pair(amps):
    """Managed currents as L{SiteLimits} takes them: as reported, and with
    ramping devices at their limits; C{amps} is either one list (no device
    ramps) or the pair."""
    return amps if isinstance(amps, tuple) else (amps, amps)


def limits(text, managed=None):
    """L{SiteLimits} of the configuration C{text} on a clock, with the
    managed currents C{managed} (a dict the test changes; see L{pair})."""
    config = config_from_string(text)
    clock = task.Clock()
    managed = {} if managed is None else managed
    changes = []
    site = SiteLimits(
        config.manager, config.circuits,
        [MeterSettings(m.name, m.type, m.timeout) for m in config.meters],
        clock, lambda: {node: pair(amps) for node, amps in managed.items()},
        lambda: changes.append(clock.seconds()),
    )
    return site, clock, changes


METERED = (
    "[manager]\nmax_current = 32\nmeter = grid\nreserve = 2\nfailsafe_current = 6\n"
    "[meter:grid]\ntype = api\n"
    "[meter:port]\ntype = api\n"
    "[circuit:carport]\nmax_current = 25\nmeter = port\n"
    "[circuit:bay]\nmax_current = 10\nparent = carport\n"
)


def test_without_meters_the_fuses_are_available():
    """No meter: each place has its max_current on every phase."""
    site, _, _ = limits("[manager]\nmax_current = 20\n[circuit:c]\nmax_current = 10\n")
    assert site.site == (20, 20, 20)
    assert [(c.name, c.available) for c in site.circuits] == [("c", (10, 10, 10))]
    assert site.board.states() == [] and site.place_state(None)["meter"] is None


def test_metered_places_follow_their_meters():
    """The site and a circuit with meters: fail-safe until each reads, then
    their fuse less reserve and other load; a circuit without a meter keeps
    its fuse; a meter that falls silent brings its place to the fail-safe
    at once, and its return raises it only after the raise interval."""
    managed = {None: [8.0, 8.0, 8.0], "carport": [8.0, 8.0, 8.0]}
    site, clock, changes = limits(METERED, managed)
    assert site.site == (6, 6, 6)
    assert [c.available for c in site.circuits] == [(6, 6, 6), (10, 10, 10)]
    site.board.push("grid", [18.0, 8.0, -4.0])
    assert site.site == (20, 30, 32)
    site.board.push("port", [8.0, 8.0, 8.0])
    assert site.circuits[0].available == (23, 23, 23)
    assert site.place_state(None) == {
        "max_current": [32.0, 32.0, 32.0], "meter": "grid", "other": [10.0, 0.0, -12.0],
        "silent": False,
    }
    assert site.place_state("bay") == {"max_current": [10.0, 10.0, 10.0], "meter": None}
    clock.advance(10)
    assert site.site == (6, 6, 6) and changes[-1] == 10
    site.board.push("grid", [8.0, 8.0, 8.0])
    site.board.push("port", [8.0, 8.0, 8.0])
    assert site.site == (6, 6, 6)
    clock.advance(RAISE_INTERVAL - 1)
    site.board.push("grid", [8.0, 8.0, 8.0])
    site.board.push("port", [8.0, 8.0, 8.0])
    assert site.site == (6, 6, 6)
    clock.advance(1)
    assert site.site == (30, 30, 30), "the held raise goes on its timer"


def test_other_load_rising_lowers_at_once():
    """When the rest of the building draws more, what is available falls
    with the reading that shows it."""
    managed = {None: [16.0, 16.0, 16.0]}
    site, clock, changes = limits(
        "[manager]\nmax_current = 32\nmeter = grid\n[meter:grid]\ntype = api\n", managed
    )
    site.board.push("grid", [26.0, 26.0, 26.0])
    assert site.site == (20, 20, 20)
    clock.advance(1)
    site.board.push("grid", [36.0, 26.0, 26.0])
    assert site.site == (10, 20, 20) and changes[-1] == 1


def test_the_other_load_moves_only_with_a_reading():
    """Between readings, what the managed devices draw may change (a device
    is given more); the other load stays what the last reading said, and a
    held raise that goes on its timer uses it: taking the new limit off an
    old reading would hide other load."""
    managed = {None: [10.0, 10.0, 10.0]}
    site, clock, _ = limits(
        "[manager]\nmax_current = 32\nmeter = grid\nreserve = 0\n[meter:grid]\ntype = api\ntimeout = 30\n", managed
    )
    site.board.push("grid", [30.0, 30.0, 30.0])
    assert site.site == (12, 12, 12)
    clock.advance(1)
    site.board.push("grid", [20.0, 20.0, 20.0])
    assert site.site == (12, 12, 12), "the raise waits"
    managed[None] = [16.0, 16.0, 16.0]
    clock.advance(RAISE_INTERVAL)
    assert site.site == (22, 22, 22)


def test_a_reading_moves_only_its_own_place():
    """A reading of the carport's meter takes the carport's other load
    anew; the site's stays what the site meter's last reading said, though
    the devices below the site draw more now."""
    managed = {None: [0.0, 0.0, 0.0], "carport": [0.0, 0.0, 0.0]}
    site, clock, _ = limits(METERED, managed)
    site.board.push("grid", [10.0, 10.0, 10.0])
    site.board.push("port", [5.0, 5.0, 5.0])
    assert (site.site, site.circuits[0].available) == ((20, 20, 20), (18, 18, 18))
    managed[None] = [16.0, 16.0, 16.0]
    site.board.push("port", [5.0, 5.0, 5.0])
    assert site.place_state(None)["other"] == [10.0, 10.0, 10.0]
    assert site.site == (20, 20, 20)


def test_the_site_limit_changes_at_run_time():
    """A new site limit takes effect at once without a meter; with one,
    a lower limit at once and a higher one with the raise rules."""
    site, clock, _ = limits("[manager]\nmax_current = 32\n")
    site.set_max_current(20)
    assert site.site == (20, 20, 20) and site.max_current == 20
    site.set_max_current(40)
    assert site.site == (40, 40, 40)
