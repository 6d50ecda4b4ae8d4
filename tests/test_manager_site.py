"""The load manager over the site as it is wired: circuits, wirings, the
phases a car draws on, priorities, max_imbalance, and fewer limits."""

from cfosproxy.site.volume import RAISE_INTERVAL
from tests.test_manager import Site
from tests.test_site_machine import meter_values, site_config


def charging(text, names):
    """A site from C{text} with every wallbox booted and C{names} started,
    in that order, with every limit accepted."""
    site = Site(text, check_raises=True)
    for name in sorted({line.split(":")[1].rstrip("]") for line in text.splitlines() if line.startswith("[wallbox:")}):
        site.connect(name)
    site.settle()
    for name in names:
        site.start(name)
        site.settle()
    return site


def accepted(site, *names):
    return [site.device(name).accepted_limit for name in names]


def test_single_phase_wallboxes_on_three_phases_each_get_the_site():
    """Three single-phase wallboxes on L1, L2 and L3 of a 16 A site each
    charge at 16 A: each is counted on its own phase only."""
    text = site_config(16, [], [(n, "", w, 0, 16) for n, w in (("A", "L1"), ("B", "L2"), ("C", "L3"))], 0)
    site = charging(text, "ABC")
    assert accepted(site, "A", "B", "C") == [16.0, 16.0, 16.0]
    assert [site.device(n).phases for n in "ABC"] == [("L1",), ("L2",), ("L3",)]


def test_a_circuit_holds_its_devices_to_its_fuse():
    """Two wallboxes in a 16 A circuit under a 32 A site share 16 A; one
    outside the circuit has the rest of the site. A circuit nested in it
    holds its wallbox to its own 6 A."""
    text = site_config(
        32,
        [("carport", "", 16), ("bay", "carport", 6)],
        [("A", "carport", "L1L2L3", 0, 16), ("B", "bay", "L1L2L3", 0, 16), ("C", "", "L1L2L3", 0, 32)],
        0,
    )
    site = charging(text, "ABC")
    assert accepted(site, "A", "B", "C") == [10.0, 6.0, 16.0]
    site.stop("B")
    site.settle()
    site.clock.advance(RAISE_INTERVAL)
    site.settle()
    assert accepted(site, "A", "B", "C") == [16.0, 0.0, 16.0]


def test_the_manager_learns_the_phases_a_car_draws_on():
    """Rotated three-phase wallboxes count on every phase until their cars
    report; once each reports single-phase current they are counted on one
    site phase each and charge at 16 A. A new transaction counts a wallbox
    on every wired phase again."""
    wirings = (("A", "L1L2L3"), ("B", "L2L3L1"), ("C", "L3L1L2"))
    site = charging(site_config(16, [], [(n, "", w, 0, 16) for n, w in wirings], 0), "ABC")
    assert accepted(site, "A", "B", "C") == [8.0, 8.0, 0.0]
    for name in "AB":
        site.deliver(name, "MeterValues", meter_values([8.0, 0.0, 0.0]), {})
    site.settle()
    # C had no current to show which phases its car uses: it is counted on
    # all three, and takes what A and B leave on each.
    assert [site.device(n).phases for n in "AB"] == [("L1",), ("L2",)]
    assert site.device("C").phases == ("L1", "L2", "L3")
    site.clock.advance(RAISE_INTERVAL)
    site.settle()
    site.deliver("C", "MeterValues", meter_values([site.device("C").accepted_limit, 0.0, 0.0]), {})
    site.settle()
    site.clock.advance(RAISE_INTERVAL)
    site.settle()
    assert site.device("C").phases == ("L3",)
    assert accepted(site, "A", "B", "C") == [16.0, 16.0, 16.0]
    site.stop("A")
    site.start("A")
    assert site.device("A").phases == ("L1", "L2", "L3")
    site.settle()
    site.clock.advance(RAISE_INTERVAL)
    site.settle()
    assert accepted(site, "A", "B", "C") == [8.0, 8.0, 8.0]


def test_a_phase_the_car_draws_on_again_counts_at_once():
    """A weak reading (the car draws little) forgets nothing, but a phase
    with 1 A or more counts again at once."""
    site = charging(site_config(32, [], [("A", "", "L1L2L3", 0, 16)], 0), "A")
    site.deliver("A", "MeterValues", meter_values([16.0, 0.0, 0.0]), {})
    assert site.device("A").phases == ("L1",)
    site.deliver("A", "MeterValues", meter_values([2.0, 0.2, 0.0]), {})
    assert site.device("A").phases == ("L1",)
    site.deliver("A", "MeterValues", meter_values([2.0, 1.5, 0.0]), {})
    assert site.device("A").phases == ("L1", "L2")


def test_priorities_as_in_the_design():
    """Site 22 A, three wallboxes 6-16 A, one with priority 1: it gets
    10 A and the others 6 A each, whether it started first or last."""
    for order in ("PXY", "XYP"):
        text = site_config(22, [], [("P", "", "L1L2L3", 1, 16), ("X", "", "L1L2L3", 0, 16), ("Y", "", "L1L2L3", 0, 16)], 0)
        site = charging(text, order)
        site.clock.advance(RAISE_INTERVAL)
        site.settle()
        assert accepted(site, "P", "X", "Y") == [10.0, 6.0, 6.0], order


def test_a_raise_waits_for_the_raise_interval_but_a_first_grant_does_not():
    """A wallbox is raised at most once per RAISE_INTERVAL: B, lowered for
    C and raised again when C stops, waits; C's first grant went at once
    although the interval of B's raise had not passed. Lowerings go at
    once."""
    site = charging(site_config(32, [], [(n, "", "L1L2L3", 0, 16) for n in "ABC"], 0), "AB")
    assert accepted(site, "A", "B") == [16.0, 16.0]
    site.start("C")
    site.settle()
    assert accepted(site, "A", "B", "C") == [10.7, 10.7, 10.6]
    site.stop("C")
    site.settle()
    assert accepted(site, "A", "B", "C") == [10.7, 10.7, 0.0]
    site.clock.advance(RAISE_INTERVAL - 1)
    site.settle()
    assert accepted(site, "A", "B") == [10.7, 10.7]
    site.clock.advance(1)
    site.settle()
    assert accepted(site, "A", "B") == [16.0, 16.0]


def test_a_raise_below_half_an_ampere_is_not_sent():
    """When a small device leaves and the others' shares grow by less than
    0.5 A, nothing is sent: the wallboxes keep what they hold."""
    text = site_config(20, [], [("A", "", "L1L2L3", 0, 16), ("B", "", "L1L2L3", 0, 16)], 0)
    text += "[wallbox:S]\ntype = ocpp\naddress = CB-S\nmin_current = 0.6\nmax_current = 0.6\n"
    site = charging(text, "ABS")
    site.clock.advance(RAISE_INTERVAL)
    site.settle()
    assert accepted(site, "A", "B", "S") == [9.7, 9.7, 0.6]
    sent = len(site.wallboxes.sent)
    site.stop("S")
    site.settle()
    site.clock.advance(RAISE_INTERVAL)
    site.settle()
    assert [site.device(n).grant for n in "AB"] == [10.0, 10.0]
    assert site.wallboxes.sent[sent:] == [("S", 0.0)]
    assert accepted(site, "A", "B") == [9.7, 9.7]


def test_a_raise_that_rebalances_the_phases_goes_at_once():
    """With max_imbalance, a single-phase wallbox's first grant may pull the
    site's phases apart while the others still hold less; their raises,
    which bring the phases together again, go at once, not after
    RAISE_INTERVAL."""
    text = site_config(32, [], [("A", "", "L1", 0, 16), ("B", "", "L2", 0, 16), ("C", "", "L3", 0, 16)], 6)
    site = charging(text, "AB")
    assert accepted(site, "A", "B") == [6.0, 6.0]
    site.start("C")
    site.settle()
    assert accepted(site, "A", "B", "C") == [16.0, 16.0, 16.0]


def test_site_state_shows_each_circuit_per_phase():
    """site_state shows the site and every circuit: limit, available,
    counted and granted per phase, and what hangs below each."""
    text = site_config(32, [("carport", "", 16)], [("A", "carport", "L2", 0, 16), ("B", "", "L1L2L3", 0, 10)], 0)
    site = charging(text, "AB")
    state = site.manager.site_state()
    assert state["site"]["counted"] == [10.0, 26.0, 10.0]
    assert state["site"]["circuits"] == ["carport"]
    (carport,) = state["circuits"]
    assert carport["name"] == "carport" and carport["parent"] == "site"
    assert carport["max_current"] == [16.0, 16.0, 16.0]
    assert carport["counted"] == carport["granted"] == [0.0, 16.0, 0.0]
    assert carport["devices"] == ["A"]
    assert state["imbalance"] == 16.0


def test_a_modbus_reading_teaches_the_phases_too():
    """A Modbus wallbox's currents (registers 8064/8066/8068, as the poll
    puts them on the device) teach the manager its car's phases like
    MeterValues do, mapped to the site by the wallbox's wiring."""
    from twisted.internet import task

    from cfosproxy.config import config_from_string
    from cfosproxy.core.devices import DeviceRegistry
    from cfosproxy.modbus.device import ModbusDevice
    from cfosproxy.modbus.powerbrain import Reading
    from cfosproxy.site.manager import LoadManager
    from tests.test_manager import FakeWallboxes

    clock = task.Clock()
    config = config_from_string(
        "[manager]\nmax_current = 32\n"
        "[wallbox:pb]\ntype = modbus\naddress = 10.0.0.9:4701\nwiring = L3L1L2\n"
    )
    registry = DeviceRegistry(config, clock)
    manager = LoadManager(config, registry, clock, lambda name, enabled: None)
    manager.connect_actuators({"modbus": FakeWallboxes()})
    joint = ModbusDevice(registry.get("pb"), manager, clock)

    class Wallbox:
        serial = "PB-1"

    joint.on_online(Wallbox(), True)
    clock.advance(0)
    # A car is plugged in (state B): the device wants current, on every
    # wired phase while nothing is known; then it charges.
    joint.on_reading(Wallbox(), Reading(state="B", enabled=True, energy_wh=1, power_w=0, currents=(0.0, 0.0, 0.0)))
    clock.advance(0)
    assert registry.get("pb").phases == ("L1", "L2", "L3")
    joint.on_reading(Wallbox(), Reading(state="C", enabled=True, energy_wh=1, power_w=2300, currents=(0.0, 10.0, 0.2)))
    clock.advance(0)
    assert registry.get("pb").phases == ("L1",)


def test_an_overload_lowers_each_device_only_to_its_share():
    """A car that starts drawing on another phase overloads it until the
    limits in flight are taken. Each wallbox there is lowered to its new
    share, not by the whole overload: counting only what the others may
    draw until they answer, every one of them would have gone to 0 A."""
    devices = [("W", "", "L1L2L3", 0, 16)] + [(n, "", "L3", 0, 16) for n in "PQRS"]
    site = charging(site_config(32, [], devices, 0), "WPQRS")
    site.deliver("W", "MeterValues", meter_values([16.0, 0.0, 0.0]), {})
    site.settle()
    site.clock.advance(RAISE_INTERVAL)
    site.settle()
    assert accepted(site, "W", "P", "Q", "R", "S") == [16.0, 8.0, 8.0, 8.0, 8.0]
    sent = len(site.wallboxes.sent)
    # W's car now draws on its L3 too.
    site.deliver("W", "MeterValues", meter_values([16.0, 0.0, 16.0]), {})
    assert sorted(site.wallboxes.sent[sent:]) == [(n, 6.4) for n in "PQRSW"]
    site.settle()
    assert accepted(site, "W", "P", "Q", "R", "S") == [6.4] * 5
