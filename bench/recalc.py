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

The metered variant is the site with circuits plus a meter (C{type =
api}) at each of the 10 top-level circuits; each of these fuses is raised
by the reserve and the other load behind it, so that what the meters leave
the devices is the fuse of the site with circuits and the devices are
shared as there. Every reading is what the devices below the meter hold on
the phases they are counted on plus the other load (3 A per phase). The
site has no meter: its devices draw about 8.8 kA per phase, and a reading
beyond L{cfosproxy.site.meters.PLAUSIBLE_AMPS} (6 kA) is not believed.
The meters never fall silent here: readings come only where the script
says. It runs the three cases above, and the CPU per reading (the push
and the refresh it triggers, C{clock.advance(0)}) in five more:

  - each meter's first reading with 0.1 A more other load on every phase:
    what is available goes down by 0.1 A, at once;
  - a reading of one meter in turn, the other load with noise of up to
    0.1 A either way on each phase: what is available moves by at most
    0.1 A down (already taken) or up (below the 0.5 A step), so nothing;
  - the other load behind the metered circuit with the least room on L1
    rises by 5 A on L1: what is available there goes down at once and
    lowerings go out; the answers come 0.5 s later ("until settled");
    each rise from a site where that circuit is full (the raise below
    leaves it 5 A short, so a new site is built for each but the first);
  - 1 s later the other load is back where it was: the raise is held back
    for 10 s, the reading alone;
  - the held raise goes, 10 s after the rise (the timer that raises what is
    available, and the pass it triggers); then the site settles.

C{LoadManager._managed_currents}, which every reading calls, is timed
alone. Each figure is also given as a ratio to a pass with nothing changed
on the site with circuits in the same run.

To measure older code, copy this script into a checkout of it and run it
there: it imports the cfosproxy of the tree it lies in, ahead of the one
the virtualenv has installed. A manager without circuits runs the
baseline only, and its sharing function (L{cfosproxy.site.sharing.share})
is timed alone instead; one without meters, no metered variant.
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
PHASE_INDEX = {"L1": 0, "L2": 1, "L3": 2}
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
# The metered variant: per phase, the load other than the managed devices
# behind each metered top-level circuit.
CIRCUIT_OTHER_LOAD = 3.0
# [manager] reserve: what a metered fuse keeps free.
METER_RESERVE = 2.0
# Seconds: no meter falls silent during a run.
METER_TIMEOUT = 86400.0
# Each meter reads once per second, one after the other.
POLL_INTERVAL = 1.0
# The noise on the other load (A, either way), and the rise of case "rise".
NOISE = 0.1
RISE = 5.0
# Seconds after a reading that lowered limits until the answers come.
ANSWER_DELAY = 0.5
METER_CASES = ("noise_first", "noise", "rise", "fall_held", "raise_goes")


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
    @ivar meters: C{{place: meter name}} of the metered places, the
        top-level circuits (the site, None, has none: see the module's
        docstring); empty unless C{meters}.
    @ivar other: C{{place: amperes}}, the other load behind each metered
        place on every phase.

    @param seed: what the devices' wirings, maximums and priorities and
        the fuses are drawn from; the baseline draws the same maximums.
    @param circuits: False for the baseline: no circuits, every device
        L1L2L3 and of priority 0.
    @param max_imbalance: C{[manager] max_imbalance} (with circuits only).
    @param meters: True for the metered variant of the site with circuits:
        the same devices and what is available on every fuse, from meters.
    """

    def __init__(self, seed, circuits, max_imbalance, meters=False):
        self.seed = seed
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
        self.meters, self.other = {}, {}
        if meters:
            for name, parent, _ in self.circuits:
                if parent is None:
                    self.meters[name] = "meter-" + name
                    self.other[name] = CIRCUIT_OTHER_LOAD

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

    def configured(self, place, fuse):
        """The C{max_current} of C{place} (None: the site) whose fuse, as
        shared, is C{fuse}: a metered place's is higher by the reserve and
        its other load, which the meter takes off again."""
        if place in self.meters:
            return fuse + METER_RESERVE + self.other[place]
        return fuse

    def config_text(self):
        """The configuration file of this site."""
        text = "[manager]\nmax_current = {:g}\n".format(self.configured(None, self.site))
        if self.max_imbalance:
            text += "max_imbalance = {:g}\n".format(self.max_imbalance)
        if self.meters:
            text += "reserve = {:g}\n".format(METER_RESERVE)
            if None in self.meters:
                text += "meter = {}\n".format(self.meters[None])
        for name, parent, max_current in self.circuits:
            text += "[circuit:{}]\nmax_current = {:g}\n".format(
                name, self.configured(name, max_current))
            if parent:
                text += "parent = {}\n".format(parent)
            if name in self.meters:
                text += "meter = {}\n".format(self.meters[name])
        for meter in self.meters.values():
            text += "[meter:{}]\ntype = api\ntimeout = {:g}\n".format(meter, METER_TIMEOUT)
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
        self.before_devices()
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

    def before_devices(self):
        """What happens once the manager is there, before any device
        connects: nothing here."""

    def pending_calls(self):
        """The timers that settling waits for: every active one here."""
        return [c for c in self.clock.getDelayedCalls() if c.active()]

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
            calls = self.pending_calls()
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


class MeteredSite(Site):
    """The site of a metered layout: its meters read before any device
    connects, and again once everything settled, what the devices hold
    plus the other load; what they leave to the devices is then checked to
    be the layout's fuses."""

    def __init__(self, layout):
        super().__init__(layout)
        self.read_all()
        self.settle()
        available = self.manager.available()
        fuses = {None: layout.site, **{name: amps for name, _, amps in layout.circuits}}
        for place in layout.meters:
            for phase in range(3):
                if available[place, phase] != round(fuses[place] * 10):
                    raise RuntimeError("the meter of {} leaves {} dA on L{}, not its fuse {:g} A".format(
                        place or "the site", available[place, phase], phase + 1, fuses[place]))

    def before_devices(self):
        # Silent meters would leave the devices failsafe_current (0 A).
        self.read_all()

    def pending_calls(self):
        """Every active timer but the meters' watches (they never fire:
        C{METER_TIMEOUT})."""
        from cfosproxy.site.meters import MeterBoard

        return [c for c in self.clock.getDelayedCalls()
                if c.active() and getattr(c.func, "__func__", None) is not MeterBoard._fell_silent]

    def drawn(self):
        """Per metered place, what the devices below it draw on L1, L2, L3:
        each device the limit it holds, on every phase it is counted on."""
        sums = {place: [0.0, 0.0, 0.0] for place in self.layout.meters}
        for name, circuit, *_ in self.layout.devices:
            device = self.device(name)
            if device.pending_limit is not None:
                raise RuntimeError("{} has a limit in flight: what it draws is not known".format(name))
            if any(amps is not None for amps in device.currents):
                raise RuntimeError("{} reported currents: it may draw less than its limit".format(name))
            amps = device.accepted_limit or 0.0
            if not amps:
                continue
            # A sub-circuit's name starts with its parent's and a dash.
            for place in (None, circuit.split("-")[0]):
                if place in sums:
                    for phase in device.phases:
                        sums[place][PHASE_INDEX[phase]] += amps
        return sums

    def reading(self, place, other):
        """What the meter of C{place} reads when the other load behind it
        is C{other} (L1, L2, L3)."""
        return [load + drawn for load, drawn in zip(other, self.drawn()[place])]

    def read_all(self):
        """Every meter reads its other load and what the devices hold."""
        for place, meter in self.layout.meters.items():
            self.manager.meters.push(meter, self.reading(place, (self.layout.other[place],) * 3))

    def quiet(self):
        """Accept every limit at once and run what is due now, until
        nothing is in flight or due (the clock stays)."""
        while True:
            self.actuator.accept_all()
            now = self.clock.seconds()
            if not any(c.getTime() <= now for c in self.pending_calls()):
                return
            self.clock.advance(0)

    def run_before(self, until):
        """Run every timer due before C{until} (the clock's seconds), each
        limit accepted at once."""
        while True:
            self.quiet()
            times = [c.getTime() for c in self.pending_calls() if c.getTime() < until]
            if not times:
                return
            self.clock.advance(min(times) - self.clock.seconds())

    def wait(self, seconds):
        """Let C{seconds} pass, each limit accepted at once."""
        until = self.clock.seconds() + seconds
        self.run_before(until)
        self.clock.advance(until - self.clock.seconds())
        self.quiet()

    def answered(self):
        """The answers to the limits in flight come L{ANSWER_DELAY} later,
        accepting them; then what they trigger, with no more time."""
        self.clock.advance(ANSWER_DELAY)
        self.quiet()

    def held_raise_at(self):
        """When what the meters make available is raised next (the clock's
        seconds), or None when no raise is held back."""
        from cfosproxy.site.available import SiteLimits

        for call in self.pending_calls():
            if getattr(call.func, "__func__", None) is SiteLimits._raise_due:
                return call.getTime()
        return None

    def room(self, place, phase):
        """Deci-amperes available on C{place}'s C{phase} (an index) less
        what its devices may draw there."""
        return self.manager.available()[place, phase] - self.manager.exposure_sums()[place, phase]

    def fullest_circuit(self):
        """The metered circuit with the least room on L1."""
        circuits = [place for place in self.layout.meters if place is not None]
        return min(circuits, key=lambda c: (self.room(c, 0), c))


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


def timed_reading(site, place, other, then):
    """A reading of C{place}'s meter with C{other} load behind it: time its
    push and the refresh it triggers (C{clock.advance(0)}), then C{then()}.

    @return: C{(reading CPU s, limits sent, CPU s of C{then()}, sharing
        passes run)}."""
    currents = site.reading(place, other)
    sent, passes = site.actuator.sent, site.manager._passes
    began = time.process_time()
    site.manager.meters.push(site.layout.meters[place], currents)
    site.clock.advance(0)
    cpu = time.process_time() - began
    sent, passes = site.actuator.sent - sent, site.manager._passes - passes
    began = time.process_time()
    then()
    return cpu, sent, time.process_time() - began, passes


def timed_raise(site):
    """The raise that the meters held back goes: run the timers before it,
    then time the timer and the refresh it triggers; then settle.

    @return: as L{timed_reading}."""
    due = site.held_raise_at()
    if due is None:
        raise RuntimeError("the meter's raise was not held back")
    site.run_before(due)
    sent, passes = site.actuator.sent, site.manager._passes
    began = time.process_time()
    site.clock.advance(due - site.clock.seconds())
    site.clock.advance(0)
    cpu = time.process_time() - began
    sent, passes = site.actuator.sent - sent, site.manager._passes - passes
    began = time.process_time()
    site.settle()
    return cpu, sent, time.process_time() - began, passes


def measure_meter_cases(site, readings):
    """Time the readings of L{METER_CASES} on a settled L{MeteredSite}:
    C{readings} of each but the first (one per meter).

    @return: C{{case: [(reading CPU s, sent, settle CPU s, passes)]}},
        and under C{"circuit"} the metered circuit whose load rose."""
    layout = site.layout
    rng = random.Random(layout.seed)
    places = list(layout.meters)
    between = POLL_INTERVAL / len(places)
    results = {case: [] for case in METER_CASES}
    for place in places:
        site.wait(between)
        results["noise_first"].append(
            timed_reading(site, place, (layout.other[place] + NOISE,) * 3, site.settle))
    for number in range(readings):
        place = places[number % len(places)]
        site.wait(between)
        other = [layout.other[place] + round(rng.uniform(-NOISE, NOISE), 2) for _ in range(3)]
        results["noise"].append(timed_reading(site, place, other, site.settle))
    circuit = site.fullest_circuit()
    results["circuit"] = circuit
    steady = (layout.other[circuit],) * 3
    risen = (steady[0] + RISE,) + steady[1:]
    for _ in range(readings):
        if site.room(circuit, 0) >= round(RISE * 10):
            # The raise back leaves the room the rise took (each device
            # lowered for it would get less than MIN_STEP back): the next
            # rise would lower nobody. It starts from a new site.
            site = MeteredSite(layout)
            gc.collect()
        rise = timed_reading(site, circuit, risen, site.answered)
        if not rise[1]:
            raise RuntimeError("{} A more on L1 of {} lowered no limit".format(RISE, circuit))
        results["rise"].append(rise)
        site.wait(POLL_INTERVAL - ANSWER_DELAY)
        results["fall_held"].append(timed_reading(site, circuit, steady, lambda: None))
        results["raise_goes"].append(timed_raise(site))
    return results


def time_calls(function, calls):
    """CPU seconds per call of C{function()}."""
    times = []
    for _ in range(calls):
        began = time.process_time()
        function()
        times.append(time.process_time() - began)
    return times


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
    site = (MeteredSite if layout.meters else Site)(layout)
    build = time.process_time() - began
    gc.collect()
    grants = site.grants()
    extra = {}
    if layout.meters:
        # Before the cases below: a device that reported its currents may
        # draw less than its limit, which the meters' readings do not know.
        results = measure_meter_cases(site, passes)
        managed = time_calls(site.manager._managed_currents, SHARE_CALLS)
        extra = {"meter_cases": results, "managed_alone": managed}
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
        **extra,
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


def has_meters():
    """Whether this tree's manager reads meters (the configuration knows
    C{[meter:*]})."""
    return hasattr(config_from_string("[manager]\nmax_current = 1\n"), "meters")


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
    if circuits and has_meters():
        layouts["meters"] = Layout(args.seed, True, args.max_imbalance, meters=True)
    collected = {name: {case: [] for case in CASES} for name in layouts}
    meter_readings = {case: [] for case in METER_CASES}
    meter_run_medians = {case: [] for case in METER_CASES}
    managed_alone = []
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
            if layout.meters:
                for case in METER_CASES:
                    readings = fact["meter_cases"][case]
                    meter_readings[case].extend(readings)
                    meter_run_medians[case].append(
                        round(statistics.median(r[0] for r in readings) * 1000, 3))
                managed_alone.extend(fact["managed_alone"])
            else:
                # The metered site shares the same demands on the same fuses.
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
        }
        if sharing[name]:
            entry["share_alone_ms"] = summary(sharing[name])
        if layout.meters:
            entry["meters"] = len(layout.meters)
            entry["other_load_a"] = {place or "site": amps for place, amps in layout.other.items()}
            entry["load_rises_in"] = facts[name][0]["meter_cases"]["circuit"]
            entry["managed_currents_alone_ms"] = summary(managed_alone)
            entry["readings"] = {
                case: {
                    "reading_ms": summary([r[0] for r in meter_readings[case]]),
                    "run_medians_ms": meter_run_medians[case],
                    "limits_sent_per_reading": round(statistics.mean(r[1] for r in meter_readings[case]), 1),
                    "passes_per_reading": round(statistics.mean(r[3] for r in meter_readings[case]), 2),
                    "until_settled_ms": summary([r[2] for r in meter_readings[case]]),
                }
                for case in METER_CASES
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
    if "meters" in layouts:
        # Against a whole pass with nothing changed, without meters.
        unit = result["layouts"]["circuits"]["unchanged"]["pass_ms"]["median"]
        metered = result["layouts"]["meters"]
        ratios = {case: round(metered[case]["pass_ms"]["median"] / unit, 2) for case in CASES}
        for case in METER_CASES:
            ratios[case] = round(metered["readings"][case]["reading_ms"]["median"] / unit, 3)
        ratios["managed_currents_alone"] = round(metered["managed_currents_alone_ms"]["median"] / unit, 3)
        result["ratio_meters_to_circuits_unchanged_pass"] = ratios

    print("CPU per pass of the load manager, {} devices; {} runs x {} passes per case; "
          "cfosproxy from {}".format(result["devices"], args.runs, args.passes, result["cfosproxy"]))
    if not circuits:
        print("this manager knows no circuits: the baseline only")
    for name, entry in result["layouts"].items():
        print("\n{}: site {:g} A, {} circuits, {} single-phase, max_imbalance {:g}".format(
            name, entry["site_a"], entry["circuits"], entry["single_phase"], entry["max_imbalance"]))
        if "meters" in entry:
            print("  {} meters (type api); other load per phase {}; reserve {:g} A".format(
                entry["meters"], entry["other_load_a"], METER_RESERVE))
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
        if "share_alone_ms" in entry:
            print("  {:<24} {:>30}".format("sharing alone", shown(entry["share_alone_ms"])))
        if "readings" in entry:
            print("  {:<24} {:>30} {:>8} {:>30} {:>7}".format(
                "ms CPU, median (min to max)", "one reading", "limits", "until settled", "passes"))
            for case, figures in entry["readings"].items():
                print("  {:<24} {:>30} {:>8} {:>30} {:>7}".format(
                    case, shown(figures["reading_ms"]), figures["limits_sent_per_reading"],
                    shown(figures["until_settled_ms"]), figures["passes_per_reading"]))
            print("  {:<24} {:>30}".format("_managed_currents alone", shown(entry["managed_currents_alone_ms"])))
            print("  the load rises in {}".format(entry["load_rises_in"]))
    if circuits:
        print("\ncircuits / baseline (medians):", result["ratio_circuits_to_baseline"])
    if "meters" in layouts:
        print("meters / a pass with nothing changed on circuits (medians):",
              result["ratio_meters_to_circuits_unchanged_pass"])
    print(json.dumps(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
