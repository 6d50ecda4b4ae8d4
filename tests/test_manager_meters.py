"""The load manager with meters: limits that follow the building's load,
with a reserve and a fail-safe (DESIGN §7 "Meters and dynamic limits"),
on a clock with fake wallboxes."""

from cfosproxy.site.volume import RAISE_INTERVAL
from tests.test_manager import Site
from tests.test_site_machine import meter_values

GRID = """
[manager]
max_current = 32
meter = grid
reserve = 2
failsafe_current = {failsafe}
[meter:grid]
type = api
[wallbox:A]
type = ocpp
address = CB-A
max_current = 32
"""


def metered(text, *names):
    """A site from C{text}, the meters read once with nothing drawing,
    every wallbox booted and C{names} charging, every limit accepted."""
    site = Site(text, check_raises=True)
    for meter in site.config.meters:
        site.manager.meters.push(meter.name, [0.0, 0.0, 0.0])
    devices = sorted({w.name for w in site.config.wallboxes})
    for name in devices:
        site.connect(name)
    site.settle()
    for name in names:
        site.start(name)
        site.settle()
    return site


def read(site, meter, currents):
    """The meter reads C{currents}; the reactor's turn ends."""
    site.manager.meters.push(meter, currents)
    site.clock.advance(0)


def report(site, name, amps):
    """The wallbox reports its car draws what it holds, at most C{amps},
    on three phases."""
    drawn = min(site.device(name).accepted_limit or 0.0, amps)
    site.deliver(name, "MeterValues", meter_values([drawn] * 3), {})
    return drawn


def test_other_load_leaves_the_rest_less_the_reserve():
    """With 10 A of other load on a 32 A site and a 2 A reserve, a wallbox
    that may take 32 A is given 20 A: the meter sees its car as well, and
    that is not other load."""
    site = metered(GRID.format(failsafe=0), "A")
    drawn = report(site, "A", 32)
    read(site, "grid", [10.0 + drawn] * 3)
    site.settle()
    assert site.device("A").accepted_limit == 20.0
    drawn = report(site, "A", 32)
    site.clock.advance(1)
    read(site, "grid", [10.0 + drawn] * 3)
    site.settle()
    assert site.device("A").accepted_limit == 20.0
    assert site.manager.site_state()["site"]["other"] == [10.0, 10.0, 10.0]


def test_rising_other_load_lowers_with_the_reading_that_shows_it():
    """The other load rises by 8 A on L2: the reading that shows it sends
    the lower limit at once; when it falls again, the raise waits for the
    raise interval."""
    site = metered(GRID.format(failsafe=0), "A")
    drawn = report(site, "A", 32)
    read(site, "grid", [10.0 + drawn] * 3)
    site.settle()
    drawn = report(site, "A", 32)
    site.clock.advance(1)
    sent = len(site.wallboxes.sent)
    read(site, "grid", [10.0 + drawn, 18.0 + drawn, 10.0 + drawn])
    site.clock.advance(0)
    assert site.wallboxes.sent[sent:] == [("A", 12.0)]
    site.settle()
    drawn = report(site, "A", 32)
    site.clock.advance(1)
    read(site, "grid", [10.0 + drawn] * 3)
    site.settle()
    assert site.device("A").accepted_limit == 12.0
    for _ in range(int(RAISE_INTERVAL)):
        site.clock.advance(1)
        read(site, "grid", [10.0 + drawn] * 3)
        site.settle()
    assert site.device("A").accepted_limit == 20.0


def test_a_silent_meter_brings_the_site_to_the_failsafe_and_back():
    """A meter silent for its timeout leaves every device below it
    C{failsafe_current} together; its next readings bring the site back."""
    text = GRID.format(failsafe=6) + "[wallbox:B]\ntype = ocpp\naddress = CB-B\nmax_current = 32\n"
    site = metered(text, "A", "B")
    assert [site.device(n).accepted_limit for n in "AB"] == [15.0, 15.0]
    site.clock.advance(10)
    site.settle()
    assert sum(site.device(n).accepted_limit for n in "AB") <= 6
    assert site.manager.site_state()["site"]["silent"] is True
    for _ in range(int(RAISE_INTERVAL) + 1):
        # The cars draw what they hold, and nothing else does.
        read(site, "grid", [sum(site.device(n).accepted_limit for n in "AB")] * 3)
        site.clock.advance(1)
        site.settle()
    assert [site.device(n).accepted_limit for n in "AB"] == [15.0, 15.0]


def test_export_never_lifts_a_device_above_its_maximum_or_the_site():
    """Feeding 40 A into the grid makes no fuse stronger: a 16 A wallbox
    stays at 16 A, and two 32 A wallboxes share the 32 A site."""
    text = GRID.format(failsafe=0).replace("max_current = 32\n", "max_current = 16\n", 2)
    text = text.replace("[manager]\nmax_current = 16", "[manager]\nmax_current = 32")
    site = metered(text, "A")
    read(site, "grid", [-40.0, -40.0, -40.0])
    site.settle()
    assert site.device("A").accepted_limit == 16.0
    two = metered(GRID.format(failsafe=0) + "[wallbox:B]\ntype = ocpp\naddress = CB-B\nmax_current = 32\n", "A", "B")
    read(two, "grid", [-40.0, -40.0, -40.0])
    two.settle()
    assert sum(two.device(n).accepted_limit for n in "AB") <= 32


def test_a_meter_on_a_sub_circuit():
    """A metered 16 A carport circuit under a static 40 A site: the
    carport's other load lowers only its wallbox; the site's other wallbox
    keeps its share."""
    text = """
[manager]
max_current = 40
reserve = 1
[meter:carport]
type = api
[circuit:carport]
max_current = 16
meter = carport
[wallbox:C]
type = ocpp
address = CB-C
circuit = carport
[wallbox:H]
type = ocpp
address = CB-H
"""
    site = metered(text, "C", "H")
    assert [site.device(n).accepted_limit for n in "CH"] == [15.0, 16.0]
    site.clock.advance(1)
    read(site, "carport", [6.0 + report(site, "C", 16)] * 3)
    site.settle()
    assert [site.device(n).accepted_limit for n in "CH"] == [9.0, 16.0]
    state = site.manager.site_state()
    carport = next(c for c in state["circuits"] if c["name"] == "carport")
    assert (carport["meter"], carport["other"], carport["available"]) == (
        "carport", [6.0, 6.0, 6.0], [9.0, 9.0, 9.0])
    assert state["meters"][0]["name"] == "carport" and not state["meters"][0]["silent"]


def test_a_device_that_reports_nothing_counts_at_its_limit():
    """A wallbox that sends no currents is taken to draw what it may: the
    meter's reading less that is the other load."""
    site = metered(GRID.format(failsafe=0), "A")
    assert site.device("A").accepted_limit == 30.0
    site.clock.advance(1)
    read(site, "grid", [35.0, 35.0, 35.0])
    site.settle()
    # Other load 35 − 30 = 5 A: 32 − 2 − 5 = 25 A.
    assert site.device("A").accepted_limit == 25.0


def test_the_site_limit_set_at_run_time():
    """A lower site limit goes out at once; a higher one raises the
    wallboxes again."""
    site = metered("[manager]\nmax_current = 32\n[wallbox:A]\ntype = ocpp\naddress = CB-A\nmax_current = 32\n", "A")
    assert site.device("A").accepted_limit == 32.0
    site.manager.set_site_limit(20)
    site.clock.advance(0)
    site.settle()
    assert site.device("A").accepted_limit == 20.0 and site.manager.site_limit == 20
    site.site_limit = 25
    site.manager.set_site_limit(25)
    site.clock.advance(0)
    site.clock.advance(RAISE_INTERVAL)
    site.settle()
    assert site.device("A").accepted_limit == 25.0


def test_a_car_taking_its_raise_is_not_other_load():
    """The meter sees a car take its raise before the wallbox reports it:
    that is the car, not the rest of the building, and the raise stays
    (counted at its old report, the car would be lowered again at once,
    and raised again 10 s later, for ever). A real rise of the other load
    while the car ramps still lowers it at once, by what the car's whole
    limit cannot explain."""
    site = metered(GRID.format(failsafe=0), "A")
    drawn = report(site, "A", 32)
    read(site, "grid", [20.0 + drawn] * 3)
    site.settle()
    assert site.device("A").accepted_limit == 10.0
    drawn = report(site, "A", 32)
    for _ in range(int(RAISE_INTERVAL)):
        site.clock.advance(1)
        read(site, "grid", [10.0 + drawn] * 3)
        site.settle()
    assert site.device("A").accepted_limit == 20.0
    # The car takes the 20 A; the wallbox has not said so yet.
    for _ in range(3):
        site.clock.advance(1)
        read(site, "grid", [10.0 + 20.0] * 3)
        site.settle()
    assert site.device("A").accepted_limit == 20.0
    # A kettle on L1: 4 A more than the car's limit can explain.
    site.clock.advance(1)
    read(site, "grid", [14.0 + 20.0, 30.0, 30.0])
    site.settle()
    assert site.device("A").accepted_limit == 16.0
    # The wallbox reports; from then on its report counts.
    site.clock.advance(10)
    report(site, "A", 32)
    read(site, "grid", [14.0 + 16.0, 26.0, 26.0])
    site.settle()
    assert site.manager.site_state()["site"]["other"] == [14.0, 10.0, 10.0]
