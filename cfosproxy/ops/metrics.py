"""Prometheus metrics: ``GET /metrics`` on the status listener.

Almost everything is read at scrape time by L{SiteCollector} from the objects
that already hold it (the device registry, the hub's sessions, the gateways,
the Modbus wallboxes), so nothing in the hot path changes. Only what is not
kept anywhere else is counted as it happens, in one L{MessageCounter}: OCPP
messages by action and outcome, and the times a Modbus wallbox went offline.

The metrics live in their own L{CollectorRegistry}, not in prometheus_client's
global one, so that several daemons (or tests) in one process do not clash.
"""

from collections import Counter

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from twisted.web import resource
from zope.interface import implementer

from cfosproxy.core.interfaces import IHubObserver
from cfosproxy.ocpp.frames import CallError
from cfosproxy.ocpp.schemas import known_action

FROM_WALLBOX = "from_wallbox"
# An action OCPP 1.6 does not define is counted under this name: a wallbox
# must not be able to create one time series per made-up action.
OTHER_ACTION = "other"


def _action_label(action):
    return action if known_action(action) else OTHER_ACTION


@implementer(IHubObserver)
class MessageCounter:
    """Counts what is not kept anywhere else, as it happens.

    It is an observer of the hub (and so of every wallbox session): each
    CALL from a wallbox is counted by action and outcome (C{"result"} or
    C{"error"}, whichever frame answered it). C{connected} and
    C{disconnected} do nothing; they let it sit in the hub's observer list.

    It also counts, per Modbus wallbox, the changes from online to offline:
    pass L{modbus_online} as (or L{chain} it into) the wallbox's
    C{on_online} callback. A scrape only sees the state of the moment and
    would miss a wallbox that was offline between two scrapes; the callback
    sees every change.

    @ivar messages: a L{Counter} of C{(direction, action, outcome)}.
    @ivar modbus_offline: a L{Counter} of Modbus wallbox name.
    """

    def __init__(self):
        self.messages = Counter()
        self.modbus_offline = Counter()

    def connected(self, chargebox_id, peer, certificate_subject):
        """A wallbox connected: nothing to count."""

    def disconnected(self, chargebox_id):
        """A wallbox disconnected: nothing to count."""

    def exchange(self, chargebox_id, call, answer):
        """A CALL from a wallbox and the frame that answered it."""
        outcome = "error" if isinstance(answer, CallError) else "result"
        self.messages[(FROM_WALLBOX, _action_label(call.action), outcome)] += 1

    def count_backend(self, action, direction, outcome=""):
        """A message on a backend link, e.g. C{direction="to_backend"}.

        @param outcome: C{"result"} or C{"error"} when known; the empty
            string (the label left out) otherwise.
        """
        self.messages[(direction, _action_label(action), outcome)] += 1

    def modbus_online(self, wallbox, online):
        """A L{cfosproxy.modbus.wallbox.ModbusWallbox} went online or offline (the
        signature of its C{on_online} callback); counts the offlines."""
        if not online:
            self.modbus_offline[wallbox.name] += 1


def chain(*callbacks):
    """One callback that calls each of C{callbacks} in turn with the same
    arguments, e.g. C{on_online=chain(counter.modbus_online, joint.on_online)}."""

    def call_each(*args, **kwargs):
        for callback in callbacks:
            callback(*args, **kwargs)

    return call_each


def _gauge(name, documentation, labels=()):
    return GaugeMetricFamily(name, documentation, labels=list(labels))


class SiteCollector:
    """A prometheus_client collector that reads the site's state when scraped.

    @param registry: the L{cfosproxy.core.devices.DeviceRegistry}.
    @param hub: the L{cfosproxy.core.hub.ChargePointHub} (only C{sessions} is read).
    @param modbus_wallboxes: a mapping of device name to
        L{cfosproxy.modbus.wallbox.ModbusWallbox}.
    @param counter: the L{MessageCounter} the hub tells of every exchange.
    @param manager: the L{cfosproxy.site.manager.LoadManager}, or None.
    """

    def __init__(self, registry, hub, modbus_wallboxes, counter, manager=None):
        self._registry = registry
        self._hub = hub
        self._modbus = modbus_wallboxes
        self._counter = counter
        self._manager = manager

    def collect(self):
        """Yield the metric families (see the module docstring)."""
        yield GaugeMetricFamily(
            "cfosproxy_wallbox_connections",
            "Open wallbox WebSocket connections.",
            value=len(self._hub.sessions),
        )
        if self._manager is not None:
            yield GaugeMetricFamily(
                "cfosproxy_sharing_failures",
                "Passes of the load manager's sharing in a row that failed; "
                "while above 0, no limit is raised.",
                value=self._manager.sharing_failures,
            )
            state = self._manager.site_state()
            yield from self._circuits(state)
            yield from self._meters(state)
        yield from self._devices()
        yield from self._modbus_wallboxes()
        messages = CounterMetricFamily(
            "cfosproxy_messages_total",
            "OCPP CALLs by direction, action and outcome of the answer.",
            labels=["direction", "action", "outcome"],
        )
        for labels, count in sorted(self._counter.messages.items()):
            messages.add_metric(list(labels), count)
        yield messages

    def _circuits(self, state):
        """Per circuit (C{"site"} for the whole site) and phase, the
        limit, what is available, counted and granted; and the site's
        unbalanced load, from the manager's C{site_state()}."""
        labels = ["circuit", "phase"]
        families = {
            "max_current": _gauge(
                "cfosproxy_circuit_limit_amperes",
                "The circuit's fuse limit per phase (max_current).",
                labels,
            ),
            "available": _gauge(
                "cfosproxy_circuit_available_amperes",
                "Current available to the devices below the circuit per phase.",
                labels,
            ),
            "counted": _gauge(
                "cfosproxy_circuit_counted_amperes",
                "Current the devices below the circuit may draw per phase, "
                "limits in flight included.",
                labels,
            ),
            "granted": _gauge(
                "cfosproxy_circuit_granted_amperes",
                "Sum of the grants of the devices below the circuit per phase.",
                labels,
            ),
        }
        other = _gauge(
            "cfosproxy_circuit_other_load_amperes",
            "What the circuit's meter measures beyond the managed devices below "
            "it, per phase (negative: fed in); absent while the meter is silent.",
            labels,
        )
        for node in [state["site"]] + list(state["circuits"]):
            for key, family in families.items():
                for phase, value in zip(state["phases"], node[key]):
                    family.add_metric([node["name"], phase], value)
            if node.get("other") is not None:
                for phase, value in zip(state["phases"], node["other"]):
                    other.add_metric([node["name"], phase], value)
        yield from families.values()
        yield other
        yield GaugeMetricFamily(
            "cfosproxy_site_imbalance_amperes",
            "Largest difference between the site phases' granted EV currents.",
            value=state["imbalance"],
        )

    def _meters(self, state):
        """Per meter, its reading per phase (while it is not silent), the
        age of its last reading and whether it is silent, from the
        manager's C{site_state()}."""
        current = _gauge(
            "cfosproxy_meter_current_amperes",
            "The meter's last reading per phase, signed (negative: fed into the "
            "grid); absent while the meter is silent (a graph shows the gap).",
            ["meter", "phase"],
        )
        age = _gauge(
            "cfosproxy_meter_age_seconds",
            "Seconds since the meter's last reading; absent before the first.",
            ["meter"],
        )
        silent = _gauge(
            "cfosproxy_meter_silent",
            "Whether the meter is silent (no reading for its timeout): the "
            "devices below it share failsafe_current.",
            ["meter"],
        )
        for meter in state.get("meters", ()):
            name = meter["name"]
            if meter["currents"] is not None and not meter["silent"]:
                for phase, value in zip(state["phases"], meter["currents"]):
                    current.add_metric([name, phase], value)
            if meter["age"] is not None:
                age.add_metric([name], meter["age"])
            silent.add_metric([name], 1 if meter["silent"] else 0)
        yield from (current, age, silent)

    def _devices(self):
        connected = _gauge(
            "cfosproxy_device_connected", "Whether the device's wallbox is connected.",
            ["device", "type"],
        )
        granted = _gauge(
            "cfosproxy_device_granted_amperes", "Current the load manager grants.", ["device"]
        )
        accepted = _gauge(
            "cfosproxy_device_accepted_limit_amperes",
            "Limit the wallbox last accepted, when known.",
            ["device"],
        )
        power = _gauge("cfosproxy_device_power_watts", "Last reported power.", ["device"])
        energy = CounterMetricFamily(
            "cfosproxy_device_energy_wh_total", "Last reported meter reading.",
            labels=["device"],
        )
        link_up = _gauge(
            "cfosproxy_gateway_link_up", "Whether the backend link is connected.", ["device"]
        )
        queue = _gauge(
            "cfosproxy_gateway_queue_length", "Messages waiting for the backend.", ["device"]
        )
        dead = _gauge(
            "cfosproxy_gateway_dead_letters", "Messages the backend refused for good.",
            ["device"],
        )
        strategy = _gauge(
            "cfosproxy_device_limit_strategy_info",
            "How limits are sent to the OCPP wallbox; always 1. state: probing, ready, "
            "or refused (it took no way of sending a limit: counted at its max_current).",
            ["device", "purpose", "stack_level", "rate_unit", "state"],
        )
        refused_at = _gauge(
            "cfosproxy_device_limit_last_refusal_timestamp_seconds",
            "When the wallbox last refused a limit (POSIX time); absent before the first.",
            ["device"],
        )
        site_granted = 0.0
        for device in self._registry:
            name = device.name
            connected.add_metric([name, device.type], 1 if device.connected else 0)
            granted.add_metric([name], device.grant)
            site_granted += device.grant
            if device.accepted_limit is not None:
                accepted.add_metric([name], device.accepted_limit)
            if device.power_w is not None:
                power.add_metric([name], device.power_w)
            if device.energy_wh is not None:
                energy.add_metric([name], device.energy_wh)
            limits = device.strategy.as_json() if device.strategy is not None else None
            if limits is not None:
                strategy.add_metric(
                    [name, limits["purpose"], str(limits["stack_level"]), limits["rate_unit"],
                     limits["state"]],
                    1,
                )
                if limits["last_refusal"] is not None:
                    refused_at.add_metric([name], limits["last_refusal"]["at"])
            if device.gateway is not None:
                status = device.gateway.status()
                link_up.add_metric([name], 1 if status["link"] == "connected" else 0)
                queue.add_metric([name], status["queue_length"])
                dead.add_metric([name], status["dead_letters"])
        yield from (connected, granted, accepted, power, energy, strategy, refused_at)
        yield GaugeMetricFamily(
            "cfosproxy_site_granted_amperes", "Sum of the granted currents.",
            value=site_granted,
        )
        yield from (link_up, queue, dead)

    def _modbus_wallboxes(self):
        online = _gauge(
            "cfosproxy_modbus_online", "Whether the last Modbus poll succeeded.", ["device"]
        )
        errors = CounterMetricFamily(
            "cfosproxy_modbus_errors_total",
            "Times the Modbus wallbox went from online to offline.",
            labels=["device"],
        )
        for name, wallbox in sorted(self._modbus.items()):
            online.add_metric([name], 1 if wallbox.online else 0)
            errors.add_metric([name], self._counter.modbus_offline[name])
        yield online
        yield errors


class MetricsResource(resource.Resource):
    """C{GET /metrics}: the Prometheus text format.

    @param registry: the L{CollectorRegistry} to expose.
    """

    isLeaf = True

    def __init__(self, registry):
        super().__init__()
        self._registry = registry

    def render_GET(self, request):
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        return generate_latest(self._registry)


def metrics_resource(collector):
    """The C{/metrics} resource for C{collector}, in a registry of its own."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return MetricsResource(registry)
