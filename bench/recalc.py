"""The load manager's CPU per recalculation: 1,000 devices in 50 circuits.

    python bench/recalc.py [--runs 5] [--passes 40] [--seed 1] [--max-imbalance 20]
        [--json out.json]

The real L{cfosproxy.site.manager.LoadManager} is built from a
configuration, with the device registry and an actuator that holds every
limit until the script accepts it, wired as the daemon wires them, on a
C{twisted.internet.task.Clock}. Every device connects, boots, starts a
transaction and charges, and the site settles: every limit sent is
accepted and every timer of the manager has run, until a pass sends
nothing. Then one pass of the manager, C{manager.refresh()} (share the
site current, then send what changed), is timed in CPU seconds
(C{time.process_time}) in three cases:

  - nothing changed since the last pass;
  - one device's transaction started or stopped (in turn) since the last
    pass;
  - one device reported currents per phase that change the site phases it
    is counted on (its car draws on L1 only, then on all three, in turn).

Both devices are three-phase, of priority 0, in circuits where no device
waits: one that starts last gets current again there, so every start
changes the shares.

Between two timed passes the limits the pass sent are accepted and the
site settles again; the CPU that takes (the passes after the answers, the
answers themselves, the raises the manager holds back for 10 s) is
reported too, per event, as "until settled".

The site: 10 circuits under it, 4 circuits under each of them, 20 devices
in each of these 50 circuits; 6 A minimum, 10, 16 or 32 A maximum; wired
three-phase (some rotated) or single-phase on L1, L2 or L3; a few with a
higher priority; C{max_imbalance} as --max-imbalance. Every fuse lies
between what its devices need at their minimums and at their maximums (a
few circuits below that, so some of their devices wait): most devices get
current, not all of them their maximum. The baseline in the same run is the same
devices with no circuits, all three-phase and of one priority, on a site
that leaves them the same share of the way from minimum to maximum. The
ratio of the two shows what circuits and phases cost. The pure sharing
function (L{cfosproxy.site.circuits.share_circuits}) is timed alone on
both.

To measure older code, copy this script into a checkout of it and run it
there: it imports the cfosproxy of the tree it lies in, ahead of the one
the virtualenv has installed. A manager without circuits runs the
baseline only, and its sharing function (L{cfosproxy.site.sharing.share})
is timed alone instead.
"""

import argparse
import gc
import json
import os
import random
import statistics
import sys
import time
from datetime import datetime, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The tree this script lies in comes first: the virtualenv's editable
# install points at another checkout.
sys.path.insert(0, ROOT)

from twisted.internet import defer, task  # noqa: E402
from zope.interface import implementer  # noqa: E402

import cfosproxy  # noqa: E402
from cfosproxy.config import config_from_string  # noqa: E402
from cfosproxy.core.devices import DeviceRegistry  # noqa: E402
from cfosproxy.core.interfaces import ILimitActuator  # noqa: E402
from cfosproxy.ocpp.frames import Call, CallResult  # noqa: E402
from cfosproxy.site.manager import LoadManager  # noqa: E402

TOP_CIRCUITS = 10
SUB_CIRCUITS = 4
PER_CIRCUIT = 20
MIN_CURRENT = 6.0
# A device's maximum, drawn with these weights.
MAX_CURRENTS = ((10.0, 0.2), (16.0, 0.5), (32.0, 0.3))
# A device's wiring, drawn with these weights: a fifth single-phase.
# Single-phase devices take L1, L2, L3 in turn, as an installer spreads
# them: drawn at random, their minimums alone soon unbalance the site by
# more than max_imbalance, and then every later device of their priority
# on that phase waits (share_circuits lets none overtake).
WIRING_CHOICES = (("L1L2L3", 0.6), ("L2L3L1", 0.1), ("L3L1L2", 0.1), ("single", 0.2))
SINGLE_PHASES = ("L1", "L2", "L3")
# A device's priority: most 0, some 1, a few 2.
PRIORITIES = ((0, 0.9), (1, 0.08), (2, 0.02))
# Where each fuse lies between what the devices below it need on its
# busiest phase at their minimums (0) and at their maximums (1). Circuits
# with less than 0 leave some of their devices waiting.
SUB_CIRCUIT_SPAN = (-0.1, 0.6)
TOP_CIRCUIT_SPAN = 0.4
SITE_SPAN = 0.3
WIRED = {
    "L1L2L3": (0, 1, 2), "L2L3L1": (0, 1, 2), "L3L1L2": (0, 1, 2),
    "L1": (0,), "L2": (1,), "L3": (2,),
}
# A reading that says the car draws on L1 only, and one that says on all
# three: phases below 1 A count as unused once another draws 4 A.
ONE_PHASE = (10.0, 0.2, 0.2)
THREE_PHASES = (10.0, 10.0, 10.0)
# The site does not settle within this many steps: something loops.
MOST_SETTLE_STEPS = 500
EPOCH = 1_700_000_000.0
# Calls of the sharing function alone, per layout and run.
SHARE_CALLS = 20


def draw(rng, choices):
    """One value of C{choices} (C{(value, weight)} pairs)."""
    values, weights = zip(*choices)
    return rng.choices(values, weights)[0]


class Layout:
    """The devices and circuits of a site, and its configuration text.

    @ivar devices: C{[(name, circuit or None, wiring, max_current,
        priority)]}.
    @ivar circuits: C{[(name, parent or None, max_current)]}.
    @ivar site: the site's C{max_current}.

    @param seed: what the devices' wirings, maximums and priorities and
        the fuses are drawn from; the baseline draws the same maximums.
    @param circuits: False for the baseline: no circuits, every device
        L1L2L3 and of priority 0.
    @param max_imbalance: C{[manager] max_imbalance} (with circuits only).
    """

    def __init__(self, seed, circuits, max_imbalance):
        rng = random.Random(seed)
        self.max_imbalance = max_imbalance if circuits else 0.0
        self.with_circuits = circuits
        names = []
        for top in range(1, TOP_CIRCUITS + 1):
            names.append(("C{:02d}".format(top), None))
            for sub in range(1, SUB_CIRCUITS + 1):
                names.append(("C{:02d}-{}".format(top, sub), "C{:02d}".format(top)))
        self.devices = []
        singles = 0
        for number in range(len(names) * PER_CIRCUIT):
            circuit = names[number // PER_CIRCUIT][0]
            wiring = draw(rng, WIRING_CHOICES)
            if wiring == "single":
                wiring = SINGLE_PHASES[singles % 3]
                singles += 1
            max_current = draw(rng, MAX_CURRENTS)
            priority = draw(rng, PRIORITIES)
            if not circuits:
                circuit, wiring, priority = None, "L1L2L3", 0
            name = "D{:04d}".format(number + 1)
            self.devices.append((name, circuit, wiring, max_current, priority))
        self.circuits = []
        if circuits:
            for name, parent in names:
                span = TOP_CIRCUIT_SPAN if parent is None else rng.uniform(*SUB_CIRCUIT_SPAN)
                self.circuits.append((name, parent, self._fuse(name, span)))
        self.site = self._fuse(None, SITE_SPAN)

    def _fuse(self, circuit, span):
        """A fuse C{span} of the way from the minimums to the maximums of
        the devices below C{circuit} (None: the site), on their busiest
        phase; whole amperes."""
        low, high = [0.0] * 3, [0.0] * 3
        for _, below, wiring, max_current, _ in self.devices:
            # A sub-circuit's name starts with its parent's and a dash.
            if circuit is None or below == circuit or below.startswith(circuit + "-"):
                for phase in WIRED[wiring]:
                    low[phase] += MIN_CURRENT
                    high[phase] += max_current
        busiest = max(range(3), key=lambda p: high[p])
        return float(round(low[busiest] + span * (high[busiest] - low[busiest])))

    def config_text(self):
        """The configuration file of this site."""
        text = "[manager]\nmax_current = {:g}\n".format(self.site)
        if self.max_imbalance:
            text += "max_imbalance = {:g}\n".format(self.max_imbalance)
        for name, parent, max_current in self.circuits:
            text += "[circuit:{}]\nmax_current = {:g}\n".format(name, max_current)
            if parent:
                text += "parent = {}\n".format(parent)
        for name, circuit, wiring, max_current, priority in self.devices:
            text += (
                "[wallbox:{0}]\ntype = ocpp\naddress = CB-{0}\n"
                "min_current = {1:g}\nmax_current = {2:g}\n".format(name, MIN_CURRENT, max_current)
            )
            if self.with_circuits:
                text += "circuit = {}\nwiring = {}\npriority = {}\n".format(circuit, wiring, priority)
        return text


@implementer(ILimitActuator)
class HeldLimits:
    """The actuator: every limit waits until L{accept_all}."""

    def __init__(self):
        self.pending = []
        self.sent = 0

    def set_limit(self, device, amps):
        d = defer.Deferred()
        self.pending.append(d)
        self.sent += 1
        return d

    def lift(self, device):
        return defer.succeed({"status": "Accepted"})

    def accept_all(self):
        pending, self.pending = self.pending, []
        for d in pending:
            d.callback({"status": "Accepted"})
        return len(pending)


class Site:
    """The registry, the manager and the wallboxes, all connected and
    charging, settled."""

    def __init__(self, layout):
        self.layout = layout
        self.clock = task.Clock()
        self.clock.advance(EPOCH)
        self.config = config_from_string(layout.config_text())
        self.registry = DeviceRegistry(self.config, self.clock)
        self.manager = LoadManager(self.config, self.registry, self.clock, lambda name, enabled: None)
        self.actuator = HeldLimits()
        self.manager.connect_actuators({"ocpp": self.actuator})
        self._message_ids = 0
        self._transaction_ids = 0
        for name, *_ in layout.devices:
            for observer in (self.registry, self.manager):
                observer.connected("CB-" + name, "peer", None)
            self._deliver(name, "BootNotification",
                          {"chargePointVendor": "bench", "chargePointModel": "recalc"},
                          {"status": "Accepted", "currentTime": self._timestamp(), "interval": 300})
            self._status(name, "Available")
        self.settle()
        for name, *_ in layout.devices:
            self.start(name)
        self.settle()

    def device(self, name):
        return self.registry.get(name)

    def _timestamp(self):
        return datetime.fromtimestamp(self.clock.seconds(), timezone.utc).isoformat()

    def _deliver(self, name, action, payload, result):
        self._message_ids += 1
        call = Call(str(self._message_ids), action, payload)
        answer = CallResult(str(self._message_ids), result)
        for observer in (self.registry, self.manager):
            observer.exchange("CB-" + name, call, answer)

    def _status(self, name, status):
        self._deliver(name, "StatusNotification",
                      {"connectorId": 1, "errorCode": "NoError", "status": status,
                       "timestamp": self._timestamp()}, {})

    def start(self, name):
        self._transaction_ids += 1
        self._deliver(name, "StartTransaction",
                      {"connectorId": 1, "idTag": "TAG", "meterStart": 0,
                       "timestamp": self._timestamp()},
                      {"transactionId": self._transaction_ids, "idTagInfo": {"status": "Accepted"}})
        self._status(name, "Charging")

    def stop(self, name):
        self._deliver(name, "StopTransaction",
                      {"transactionId": self.device(name).transaction_id, "meterStop": 0,
                       "timestamp": self._timestamp(), "reason": "EVDisconnected"}, {})
        self._status(name, "Finishing")

    def currents(self, name, amps):
        samples = [{"measurand": "Current.Import", "phase": phase, "unit": "A",
                    "value": "{:.1f}".format(current)}
                   for phase, current in zip(("L1", "L2", "L3"), amps)]
        self._deliver(name, "MeterValues",
                      {"connectorId": 1, "transactionId": self.device(name).transaction_id,
                       "meterValue": [{"timestamp": self._timestamp(), "sampledValue": samples}]},
                      {})

    def settle(self):
        """Accept every limit and run every timer, until nothing is in
        flight and nothing is scheduled.

        @return: the steps it took."""
        for step in range(MOST_SETTLE_STEPS):
            self.actuator.accept_all()
            calls = [c for c in self.clock.getDelayedCalls() if c.active()]
            if not calls:
                if not self.actuator.pending:
                    return step
                continue
            self.clock.advance(max(0.0, min(c.getTime() for c in calls) - self.clock.seconds()))
        raise RuntimeError("the site did not settle in {} steps".format(MOST_SETTLE_STEPS))

    def grants(self):
        """How the devices fared: waiting, at their minimum, between, at
        their maximum."""
        counts = {"waiting": 0, "at_min": 0, "between": 0, "at_max": 0}
        for name, _, _, max_current, _ in self.layout.devices:
            grant = self.device(name).grant
            if grant <= 0:
                counts["waiting"] += 1
            elif grant <= MIN_CURRENT:
                counts["at_min"] += 1
            elif grant >= max_current:
                counts["at_max"] += 1
            else:
                counts["between"] += 1
        return counts


def timed_pass(site, change):
    """Apply C{change} (untimed), time one C{refresh()}, then settle.

    @return: C{(pass CPU s, limits the pass sent, CPU s until settled)}."""
    change()
    sent = site.actuator.sent
    began = time.process_time()
    site.manager.refresh()
    cpu = time.process_time() - began
    sent = site.actuator.sent - sent
    began = time.process_time()
    site.settle()
    return cpu, sent, time.process_time() - began


def toggler(site, name):
    """A change that stops C{name}'s transaction, then starts a new one;
    checks that the start before each stop got it current again (else the
    passes after it would change nothing)."""
    def change():
        device = site.device(name)
        if device.transaction_id is not None:
            if device.grant <= 0:
                raise RuntimeError("{} got no current after its start".format(name))
            site.stop(name)
        else:
            site.start(name)
    return change


def phase_changer(site, name, counts_phases):
    """A change that has C{name} report drawing on L1 only, then on all
    three; with C{counts_phases}, checks that each changed the phases the
    manager counts it on (the newer manager)."""
    readings = [ONE_PHASE, THREE_PHASES]

    def change():
        # An older Device has no phases.
        before = getattr(site.device(name), "phases", None)
        site.currents(name, readings[0])
        readings.reverse()
        if counts_phases and site.device(name).phases == before:
            raise RuntimeError("{} is still counted on {}".format(name, before))
    return change


def pick(site, but=()):
    """A three-phase device of priority 0 from the middle of the list on
    that charges with at least 6 A, in a circuit where no device waits (so
    that it gets current again when it starts last), and not one of
    C{but}."""
    devices = site.layout.devices
    waiting = {circuit for name, circuit, *_ in devices if site.device(name).grant <= 0}
    for name, circuit, wiring, _, priority in devices[len(devices) // 2:] + devices[:len(devices) // 2]:
        if (len(wiring) == 6 and priority == 0 and circuit not in waiting and name not in but
                and (site.device(name).accepted_limit or 0) >= MIN_CURRENT):
            return name
    raise RuntimeError("no device fits")


CASES = ("unchanged", "start_stop", "phases")


def measure_site(layout, passes, counts_phases):
    """Build the site and time C{passes} passes of each case.

    @return: C{{case: [(cpu, sent, settle cpu)]}}, and facts of the site."""
    began = time.process_time()
    site = Site(layout)
    build = time.process_time() - began
    gc.collect()
    grants = site.grants()
    toggled = pick(site)
    changed = pick(site, but=(toggled,))
    changes = {
        "unchanged": lambda: None,
        "start_stop": toggler(site, toggled),
        "phases": phase_changer(site, changed, counts_phases),
    }
    results = {case: [timed_pass(site, changes[case]) for _ in range(passes)] for case in CASES}
    return results, {
        "build_cpu_s": round(build, 2),
        "grants": grants,
        "grants_after": site.grants(),
        "toggled": toggled,
        "phases_changed": changed,
    }


def time_sharing(layout, calls):
    """CPU seconds per call of the sharing function alone, on every device
    of C{layout} wanting current in the order of its list."""
    if layout.with_circuits or has_circuits():
        from cfosproxy.site.circuits import Circuit, Demand, share_circuits, site_phases

        site = (layout.site,) * 3
        circuits = [Circuit(name, parent, (amps,) * 3) for name, parent, amps in layout.circuits]
        demands = [
            Demand(name, circuit, site_phases(wiring), MIN_CURRENT, max_current, priority, order)
            for order, (name, circuit, wiring, max_current, priority) in enumerate(layout.devices)
        ]

        def one():
            share_circuits(site, circuits, demands, layout.max_imbalance)
    else:
        from cfosproxy.site.sharing import Request, share

        requests = [Request(name, MIN_CURRENT, max_current)
                    for name, _, _, max_current, _ in layout.devices]

        def one():
            share(layout.site, requests)
    times = []
    for _ in range(calls):
        began = time.process_time()
        one()
        times.append(time.process_time() - began)
    return times


def has_circuits():
    """Whether this tree's manager shares over circuits (the configuration
    knows C{[circuit:*]})."""
    return hasattr(config_from_string("[manager]\nmax_current = 1\n"), "circuits")


def summary(values, scale=1000.0, digits=3):
    """Median, min and max of C{values} times C{scale}."""
    return {
        "median": round(statistics.median(values) * scale, digits),
        "min": round(min(values) * scale, digits),
        "max": round(max(values) * scale, digits),
    }


def shown(figure):
    return "{:.3f} ({:.3f} to {:.3f})".format(figure["median"], figure["min"], figure["max"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5,
                        help="sites built and measured, per layout (default: %(default)s)")
    parser.add_argument("--passes", type=int, default=40,
                        help="timed passes per case and run (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1,
                        help="the seed the layout is drawn from (default: %(default)s)")
    parser.add_argument("--max-imbalance", type=float, default=20.0,
                        help="[manager] max_imbalance of the site with circuits (default: %(default)s)")
    parser.add_argument("--json", help="write the figures to this file too")
    args = parser.parse_args()
    imported = os.path.dirname(os.path.dirname(os.path.abspath(cfosproxy.__file__)))
    if imported != ROOT:
        sys.exit("cfosproxy was imported from {}, not from {}".format(imported, ROOT))

    circuits = has_circuits()
    layouts = {"baseline": Layout(args.seed, False, 0.0)}
    if circuits:
        layouts["circuits"] = Layout(args.seed, True, args.max_imbalance)
    collected = {name: {case: [] for case in CASES} for name in layouts}
    sharing = {name: [] for name in layouts}
    facts = {name: [] for name in layouts}
    run_medians = {name: {case: [] for case in CASES} for name in layouts}
    for run in range(args.runs):
        # The two layouts in turn, so that what else the machine does
        # falls on both alike.
        for name, layout in layouts.items():
            results, fact = measure_site(layout, args.passes, circuits)
            facts[name].append(fact)
            for case, passes in results.items():
                collected[name][case].extend(passes)
                run_medians[name][case].append(round(statistics.median(p[0] for p in passes) * 1000, 3))
            sharing[name].extend(time_sharing(layout, SHARE_CALLS))
            gc.collect()

    result = {
        "cfosproxy": os.path.dirname(os.path.abspath(cfosproxy.__file__)),
        "circuits_supported": circuits,
        "devices": len(layouts["baseline"].devices),
        "runs": args.runs,
        "passes_per_case": args.passes,
        "seed": args.seed,
        "layouts": {},
    }
    for name, layout in layouts.items():
        entry = {
            "site_a": layout.site,
            "circuits": len(layout.circuits),
            "max_imbalance": layout.max_imbalance,
            "single_phase": sum(1 for d in layout.devices if len(d[2]) == 2),
            "grants": facts[name][0]["grants"],
            "grants_after": facts[name][0]["grants_after"],
            "toggled": facts[name][0]["toggled"],
            "phases_changed": facts[name][0]["phases_changed"],
            "build_cpu_s": summary([f["build_cpu_s"] for f in facts[name]], 1.0, 2),
            "share_alone_ms": summary(sharing[name]),
        }
        for case in CASES:
            passes = collected[name][case]
            entry[case] = {
                "pass_ms": summary([p[0] for p in passes]),
                "run_medians_ms": run_medians[name][case],
                "limits_sent_per_pass": round(statistics.mean(p[1] for p in passes), 1),
                "until_settled_ms": summary([p[2] for p in passes]),
            }
        result["layouts"][name] = entry
    if circuits:
        result["ratio_circuits_to_baseline"] = {
            case: round(result["layouts"]["circuits"][case]["pass_ms"]["median"]
                        / result["layouts"]["baseline"][case]["pass_ms"]["median"], 2)
            for case in CASES
        }
        result["ratio_circuits_to_baseline"]["share_alone"] = round(
            result["layouts"]["circuits"]["share_alone_ms"]["median"]
            / result["layouts"]["baseline"]["share_alone_ms"]["median"], 2)

    print("CPU per pass of the load manager, {} devices; {} runs x {} passes per case; "
          "cfosproxy from {}".format(result["devices"], args.runs, args.passes, result["cfosproxy"]))
    if not circuits:
        print("this manager knows no circuits: the baseline only")
    for name, entry in result["layouts"].items():
        print("\n{}: site {:g} A, {} circuits, {} single-phase, max_imbalance {:g}".format(
            name, entry["site_a"], entry["circuits"], entry["single_phase"], entry["max_imbalance"]))
        print("  grants at the start {}, at the end {}".format(entry["grants"], entry["grants_after"]))
        print("  starts and stops {}, changes its phases {}".format(
            entry["toggled"], entry["phases_changed"]))
        print("  {:<24} {:>30} {:>8} {:>30}".format(
            "ms CPU, median (min to max)", "one pass", "limits", "until settled"))
        for case in CASES:
            figures = entry[case]
            print("  {:<24} {:>30} {:>8} {:>30}".format(
                case, shown(figures["pass_ms"]), figures["limits_sent_per_pass"],
                shown(figures["until_settled_ms"])))
        print("  {:<24} {:>30}".format("sharing alone", shown(entry["share_alone_ms"])))
    if circuits:
        print("\ncircuits / baseline (medians):", result["ratio_circuits_to_baseline"])
    print(json.dumps(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
