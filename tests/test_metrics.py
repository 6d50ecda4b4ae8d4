"""GET /metrics shows the site's state in the Prometheus text format."""

from types import SimpleNamespace

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from twisted.web.test.requesthelper import DummyRequest

from cfosproxy.config import config_from_string
from cfosproxy.core.devices import DeviceRegistry
from cfosproxy.ocpp.profiles import MANAGER_STACK_LEVEL
from cfosproxy.ops.metrics import MessageCounter, SiteCollector, chain, metrics_resource
from cfosproxy.ocpp.frames import Call, CallError, CallResult
from tests.test_status import wired_site

SITE = """
[wallbox:garage]
type = ocpp
address = CB-1
[wallbox:carport]
type = modbus
address = pb.local
"""


class Clock:
    def seconds(self):
        return 1000.0


class FakeGateway:
    def __init__(self, link, queue_length, dead_letters):
        self._status = {"link": link, "queue_length": queue_length, "dead_letters": dead_letters}

    def status(self):
        return dict(self._status, url=None, booted=True, last_error=None)


def site():
    """A registry with a connected, charging OCPP wallbox behind a gateway
    and a Modbus wallbox with a gateway whose link is down."""
    registry = DeviceRegistry(config_from_string(SITE), Clock())
    garage, carport = registry.get("garage"), registry.get("carport")
    garage.connected = True
    garage.grant, garage.accepted_limit = 16.0, 16.0
    garage.power_w, garage.energy_wh = 11000.0, 1234.5
    garage.gateway = FakeGateway("connected", 0, 0)
    carport.grant = 6.0
    carport.gateway = FakeGateway("connecting", 3, 1)
    return registry


def scrape(collector):
    """Render /metrics; return the request and {sample name: {labels: value}}."""
    request = DummyRequest([b""])
    body = metrics_resource(collector).render(request)
    samples = {}
    for family in text_string_to_metric_families(body.decode("utf-8")):
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[key] = sample.value
    return request, samples


def labels(**kwargs):
    return tuple(sorted(kwargs.items()))


def test_site_state():
    """Connections, grants, limits, meter values and gateway state are read
    from the registry and the hub when scraped, in the Prometheus format."""
    hub = SimpleNamespace(sessions={"CB-1": object()})
    modbus = {"carport": SimpleNamespace(name="carport", online=True, last_error=None)}
    request, m = scrape(SiteCollector(site(), hub, modbus, MessageCounter()))

    assert request.responseHeaders.getRawHeaders(b"content-type") == [
        CONTENT_TYPE_LATEST.encode("ascii")
    ]
    assert m["cfosproxy_wallbox_connections"] == {(): 1}
    assert m["cfosproxy_device_connected"] == {
        labels(device="garage", type="ocpp"): 1,
        labels(device="carport", type="modbus"): 0,
    }
    assert m["cfosproxy_device_granted_amperes"] == {
        labels(device="garage"): 16.0,
        labels(device="carport"): 6.0,
    }
    assert m["cfosproxy_site_granted_amperes"] == {(): 22.0}
    # Only what is known: the Modbus wallbox reported no limit, power or energy.
    assert m["cfosproxy_device_accepted_limit_amperes"] == {labels(device="garage"): 16.0}
    assert m["cfosproxy_device_power_watts"] == {labels(device="garage"): 11000.0}
    assert m["cfosproxy_device_energy_wh_total"] == {labels(device="garage"): 1234.5}
    assert m["cfosproxy_gateway_link_up"] == {
        labels(device="garage"): 1,
        labels(device="carport"): 0,
    }
    assert m["cfosproxy_gateway_queue_length"] == {
        labels(device="garage"): 0,
        labels(device="carport"): 3,
    }
    assert m["cfosproxy_gateway_dead_letters"][labels(device="carport")] == 1
    assert m["cfosproxy_modbus_online"] == {labels(device="carport"): 1}
    assert m["cfosproxy_modbus_errors_total"] == {labels(device="carport"): 0}


def test_messages_by_action_and_outcome():
    """Each wallbox CALL is counted by action and by the frame that answered
    it; an action OCPP does not define counts as "other"."""
    counter = MessageCounter()
    counter.connected("CB-1", "tcp4:192.0.2.1:5000", None)
    for n in range(3):
        counter.exchange("CB-1", Call(str(n), "Heartbeat", {}), CallResult(str(n), {}))
    counter.exchange(
        "CB-1",
        Call("4", "StatusNotification", {}),
        CallError("4", "FormationViolation", "bad", {}),
    )
    counter.exchange("CB-1", Call("5", "Made-Up", {}), CallError("5", "NotImplemented", "", {}))
    counter.disconnected("CB-1")
    hub = SimpleNamespace(sessions={})
    _, m = scrape(SiteCollector(site(), hub, {}, counter))

    assert m["cfosproxy_messages_total"] == {
        labels(direction="from_wallbox", action="Heartbeat", outcome="result"): 3,
        labels(direction="from_wallbox", action="StatusNotification", outcome="error"): 1,
        labels(direction="from_wallbox", action="other", outcome="error"): 1,
    }
    assert m["cfosproxy_wallbox_connections"] == {(): 0}


def test_modbus_offline_transitions():
    """A Modbus wallbox's changes to offline are counted through its
    on_online callback, chained with the one it already has."""
    wallbox = SimpleNamespace(name="carport", online=True, last_error=None)
    counter, seen = MessageCounter(), []
    on_online = chain(counter.modbus_online, lambda wb, online: seen.append(online))
    on_online(wallbox, True)
    on_online(wallbox, False)
    on_online(wallbox, True)
    wallbox.online, wallbox.last_error = False, "reading 8092: timeout"
    on_online(wallbox, False)
    hub = SimpleNamespace(sessions={})
    _, m = scrape(SiteCollector(site(), hub, {"carport": wallbox}, counter))

    assert seen == [True, False, True, False]
    assert m["cfosproxy_modbus_online"] == {labels(device="carport"): 0}
    assert m["cfosproxy_modbus_errors_total"] == {labels(device="carport"): 2}


def test_how_limits_are_sent():
    """Per OCPP wallbox the manager controls, an info gauge of 1 whose
    labels say how its limits are sent and the strategy's state, and once
    it refused a limit, when; a Modbus wallbox has neither."""
    from tests.test_status import SET_AT, mixed_site

    mixed = mixed_site()
    hub = SimpleNamespace(sessions={})
    _, m = scrape(SiteCollector(mixed.registry, hub, {}, MessageCounter(), mixed.manager))
    assert m["cfosproxy_device_limit_strategy_info"] == {
        labels(device="garage", purpose="TxDefaultProfile", stack_level=str(MANAGER_STACK_LEVEL),
               rate_unit="A", state="ready"): 1,
    }
    assert "cfosproxy_device_limit_last_refusal_timestamp_seconds" not in m

    # The wallbox refuses every way there is to send a limit.
    strategy = mixed.device("garage").strategy
    for _ in range(20):
        if strategy.refused(strategy.way, "SetChargingProfile answered Rejected", SET_AT) is None:
            break
    _, m = scrape(SiteCollector(mixed.registry, hub, {}, MessageCounter(), mixed.manager))
    [(shown, value)] = m["cfosproxy_device_limit_strategy_info"].items()
    assert (dict(shown)["state"], value) == ("refused", 1)
    assert m["cfosproxy_device_limit_last_refusal_timestamp_seconds"] == {
        labels(device="garage"): SET_AT,
    }


# What LoadManager.site_state() answers: a site and one circuit below it.
SITE_STATE = {
    "phases": ["L1", "L2", "L3"],
    "max_imbalance": 20.0,
    "imbalance": 6.0,
    "sharing_failures": 0,
    "site": {
        "name": "site", "parent": None, "max_current": [32.0, 32.0, 32.0],
        "available": [30.0, 29.5, 28.0], "counted": [16.0, 16.0, 22.0],
        "granted": [16.0, 16.0, 21.0], "devices": ["garage"], "circuits": ["carport"],
    },
    "circuits": [
        {
            "name": "carport", "parent": "site", "max_current": [10.0, 10.0, 10.0],
            "available": [10.0, 10.0, 9.0], "counted": [0.0, 0.0, 6.0],
            "granted": [0.0, 0.0, 5.0], "devices": ["carport"], "circuits": [],
        }
    ],
}


def fixed_manager(sharing_failures=0):
    """A load manager that shows L{SITE_STATE}."""
    return SimpleNamespace(sharing_failures=sharing_failures, site_state=lambda: SITE_STATE)


def test_circuits_per_phase():
    """Per circuit ("site" for the whole site) and phase: the limit, what
    is available, counted and granted, from the manager's site state;
    and the site's unbalanced load."""
    hub = SimpleNamespace(sessions={})
    _, m = scrape(SiteCollector(site(), hub, {}, MessageCounter(), fixed_manager()))

    def per_phase(values, circuit):
        return {
            labels(circuit=circuit, phase=phase): value
            for phase, value in zip(("L1", "L2", "L3"), values)
        }

    assert m["cfosproxy_circuit_limit_amperes"] == {
        **per_phase([32.0, 32.0, 32.0], "site"), **per_phase([10.0, 10.0, 10.0], "carport")
    }
    assert m["cfosproxy_circuit_available_amperes"] == {
        **per_phase([30.0, 29.5, 28.0], "site"), **per_phase([10.0, 10.0, 9.0], "carport")
    }
    assert m["cfosproxy_circuit_counted_amperes"] == {
        **per_phase([16.0, 16.0, 22.0], "site"), **per_phase([0.0, 0.0, 6.0], "carport")
    }
    assert m["cfosproxy_circuit_granted_amperes"] == {
        **per_phase([16.0, 16.0, 21.0], "site"), **per_phase([0.0, 0.0, 5.0], "carport")
    }
    assert m["cfosproxy_site_imbalance_amperes"] == {(): 6.0}


def test_circuits_of_a_real_manager():
    """With a real load manager with nested circuits, every circuit and
    the site have their four gauges on each phase, equal to what the
    status API shows."""
    wired = wired_site()
    hub = SimpleNamespace(sessions={})
    _, m = scrape(SiteCollector(wired.registry, hub, {}, MessageCounter(), wired.manager))
    state = wired.manager.site_state()
    names = {
        "max_current": "cfosproxy_circuit_limit_amperes",
        "available": "cfosproxy_circuit_available_amperes",
        "counted": "cfosproxy_circuit_counted_amperes",
        "granted": "cfosproxy_circuit_granted_amperes",
    }
    for key, metric in names.items():
        assert m[metric] == {
            labels(circuit=node["name"], phase=phase): value
            for node in [state["site"]] + state["circuits"]
            for phase, value in zip(state["phases"], node[key])
        }, metric
    assert {dict(key)["circuit"] for key in m["cfosproxy_circuit_limit_amperes"]} == {
        "site", "carport", "bay",
    }
    assert m["cfosproxy_circuit_limit_amperes"][labels(circuit="bay", phase="L2")] == 8.0
    assert m["cfosproxy_circuit_counted_amperes"][labels(circuit="site", phase="L3")] == 16.0
    assert m["cfosproxy_site_imbalance_amperes"] == {(): 8.0}


def test_sharing_failures_are_a_metric():
    """A load manager whose sharing keeps failing shows it in /metrics:
    cfosproxy_sharing_failures counts the failed passes in a row."""
    hub = SimpleNamespace(sessions={})
    manager = fixed_manager(sharing_failures=3)
    _, m = scrape(SiteCollector(site(), hub, {}, MessageCounter(), manager))
    assert m["cfosproxy_sharing_failures"] == {(): 3}


def metered_state():
    """L{SITE_STATE} with meters: grid measures the site and has read,
    sub measures the carport and is silent, and a third, spare, has not
    read since the start."""
    site = dict(SITE_STATE["site"], meter="grid", other=[5.0, -1.5, 0.0], silent=False)
    carport = dict(SITE_STATE["circuits"][0], meter="sub", other=None, silent=True)
    return dict(
        SITE_STATE,
        reserve=2.0,
        failsafe_current=6.0,
        site=site,
        circuits=[carport],
        meters=[
            {"name": "grid", "type": "api", "currents": [21.0, 14.5, -6.0], "age": 1.5,
             "silent": False, "problem": None},
            {"name": "sub", "type": "sdm630", "currents": [4.0, 4.0, 4.0], "age": 31.0,
             "silent": True, "problem": "no answer"},
            {"name": "spare", "type": "sunspec", "currents": None, "age": None,
             "silent": True, "problem": None},
        ],
    )


def test_meters():
    """Per meter: its signed current per phase (none before its first
    reading, nor while it is silent: a stale reading would draw a flat
    line over the outage), the age of its last reading, and whether it
    is silent."""
    manager = SimpleNamespace(sharing_failures=0, site_state=metered_state)
    _, m = scrape(SiteCollector(site(), SimpleNamespace(sessions={}), {}, MessageCounter(), manager))
    assert m["cfosproxy_meter_current_amperes"] == {
        labels(meter="grid", phase="L1"): 21.0,
        labels(meter="grid", phase="L2"): 14.5,
        labels(meter="grid", phase="L3"): -6.0,
    }
    assert m["cfosproxy_meter_age_seconds"] == {labels(meter="grid"): 1.5, labels(meter="sub"): 31.0}
    assert m["cfosproxy_meter_silent"] == {
        labels(meter="grid"): 0, labels(meter="sub"): 1, labels(meter="spare"): 1,
    }


def test_other_load_per_metered_circuit():
    """Per metered circuit (and the site) and phase, the other load; none
    for a circuit whose meter is silent, nor for one without a meter. The
    circuits' other gauges stay."""
    manager = SimpleNamespace(sharing_failures=0, site_state=metered_state)
    _, m = scrape(SiteCollector(site(), SimpleNamespace(sessions={}), {}, MessageCounter(), manager))
    assert m["cfosproxy_circuit_other_load_amperes"] == {
        labels(circuit="site", phase="L1"): 5.0,
        labels(circuit="site", phase="L2"): -1.5,
        labels(circuit="site", phase="L3"): 0.0,
    }
    assert m["cfosproxy_circuit_limit_amperes"][labels(circuit="carport", phase="L1")] == 10.0
    # Without meters (the manager's state before them): no meter series.
    _, plain = scrape(SiteCollector(site(), SimpleNamespace(sessions={}), {}, MessageCounter(), fixed_manager()))
    assert "cfosproxy_meter_silent" not in plain
    assert "cfosproxy_circuit_other_load_amperes" not in plain


def test_meters_of_a_real_manager():
    """With a real load manager: a pushed reading shows as the meter's
    current and the site's other load, the meter of the carport that has
    not read is silent, and the carport has no other load."""
    from tests.test_status import metered_site

    wired = metered_site()
    wired.manager.meters.push("grid", [12.0, 3.0, -2.0])
    _, m = scrape(SiteCollector(wired.registry, SimpleNamespace(sessions={}), {}, MessageCounter(), wired.manager))
    assert m["cfosproxy_meter_current_amperes"][labels(meter="grid", phase="L3")] == -2.0
    assert m["cfosproxy_meter_silent"] == {labels(meter="grid"): 0, labels(meter="sub"): 1}
    assert m["cfosproxy_meter_age_seconds"] == {labels(meter="grid"): 0.0}
    assert m["cfosproxy_circuit_other_load_amperes"] == {
        labels(circuit="site", phase=phase): amps
        for phase, amps in zip(("L1", "L2", "L3"), (12.0, 3.0, -2.0))
    }
