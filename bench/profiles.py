"""Limits per transaction: how many SetChargingProfiles (or Modbus writes)
the load manager sends in a fixed, seeded scenario.

    python bench/profiles.py [--seed 1] [--site 63] [--hours 2] [--json out.json]
        [--transaction-minutes 5-60] [--idle-minutes 1-20]

The real L{cfosproxy.site.manager.LoadManager} runs in this process on a
C{twisted.internet.task.Clock}, fed as the daemon feeds it: the device
registry first, then the manager, each message of each wallbox with its
answer. Nothing goes over a network, so only the manager's decisions are
measured, and simulated hours take seconds.

The scenario: 20 OCPP wallboxes (6 to 16 A) on a site of --site A. They
connect and boot in the first 10 s; then each alternates idle (1 to 20
minutes) and a transaction (5 to 60 minutes), as a simulator with
automatic transactions does: StartTransaction, StatusNotification
Charging, MeterValues every 60 s with Current.Import per phase,
StopTransaction, StatusNotification Finishing and Available 5 s later.
--idle-minutes and --transaction-minutes change the two ranges: such a
simulator often runs short transactions with short pauses (e.g.
--transaction-minutes 1-5 --idle-minutes 0.5-3), where starts and stops
come fast.
Each transaction's car may draw 16, 11 or 32 A, on three phases or (some
cars) on L1 only; it draws the smaller of that and the limit its wallbox
holds, and nothing below 6 A. The plan is drawn from --seed before the run,
so it is the same whatever the manager sends. Each limit is answered
(accepted) after 0.2 to 3 s of clock time, one after the other per
wallbox, as OCPP sends one CALL at a time; these delays come from a second
generator seeded from --seed. The clock moves in steps of 0.1 s, so the
manager's timers run as they would.

Reported: transactions started, limits sent (in total, before the first
transaction, and per transaction), how they changed the limit last sent to
the wallbox (raises, lowerings, the same again), the steps below 0.5 A,
the most limits one wallbox got within 10 s, and the wall-clock seconds
the run took. After every step, and at every send and answer, the sum of
what the wallboxes may draw on each phase (per wallbox the higher of the
limit it holds and any in flight, its maximum while it charges without
one, on the phases its car draws on: see L{Site.check}) is checked
against the site limit: the highest sum is reported, and a sum above the
site fails the run (exit status 1).

To measure older code, copy this script into a checkout of it and run it
there: it imports the cfosproxy of the tree it lies in, ahead of the one
the virtualenv has installed.
"""

import argparse
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field
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

WALLBOXES = 20
MIN_CURRENT = 6.0
MAX_CURRENT = 16.0
# Seconds.
BOOT_SPREAD = (0.0, 10.0)
# Minutes, unless --idle-minutes and --transaction-minutes say otherwise.
IDLE_MINUTES = (1.0, 20.0)
CHARGING_MINUTES = (5.0, 60.0)
AVAILABLE_AFTER_STOP = 5.0
METER_INTERVAL = 60.0
ANSWER_DELAY = (0.2, 3.0)
STEP = 0.1
# What a transaction's car may draw, and how often it charges on L1 only.
CAR_CURRENTS = (16.0, 11.0, 32.0)
SINGLE_PHASE_SHARE = 0.3
# A car does not charge below this.
CAR_MIN_CURRENT = 6.0
VOLTS = 230.0
# The window of "the most limits one wallbox got".
BURST_WINDOW = 10.0
# A change of limit smaller than this is a "small step".
SMALL_STEP = 0.5
# Where the clock starts, as in the tests: a plausible Unix time.
EPOCH = 1_700_000_000.0


@dataclass(frozen=True)
class Session:
    """One planned transaction, in seconds from the start of the run."""

    start: float
    stop: float
    car_current: float
    phases: int


@dataclass
class Wallbox:
    """One simulated wallbox: its plan and what it holds.

    @ivar held: the limit it last accepted (None: none yet).
    @ivar in_flight: limits sent to it and not yet answered, in order.
    @ivar answered_until: when its last answer is due; the next waits for it.
    @ivar phases: the phases (0, 1, 2 for L1, L2, L3) its car draws on, or
        its last car drew on while it is idle; all three before the first.
    """

    name: str
    address: str
    boot_at: float
    sessions: list[Session]
    held: float | None = None
    in_flight: list[float] = field(default_factory=list)
    answered_until: float = 0.0
    session: Session | None = None
    transaction_id: int | None = None
    energy_wh: float = 0.0
    phases: tuple[int, ...] = (0, 1, 2)

    def may_draw(self) -> float:
        """The most it may draw now: the higher of the limit it holds and
        any in flight; without a limit, its maximum while it charges."""
        held = self.held
        if held is None:
            held = MAX_CURRENT if self.session is not None else 0.0
        return max([held] + self.in_flight)

    def draws(self) -> float:
        """What its car draws per phase now."""
        if self.session is None:
            return 0.0
        limit = MAX_CURRENT if self.held is None else self.held
        amps = min(limit, self.session.car_current)
        return amps if amps >= CAR_MIN_CURRENT else 0.0


def plan(
    rng: random.Random,
    seconds: float,
    idle: tuple[float, float] = IDLE_MINUTES,
    charging: tuple[float, float] = CHARGING_MINUTES,
) -> list[Wallbox]:
    """Every wallbox's boot and transactions for a run of C{seconds}.

    @param idle: the shortest and longest idle time before a transaction,
        in minutes.
    @param charging: the shortest and longest transaction, in minutes.

    A transaction still running at the end is cut off there (no stop)."""
    wallboxes = []
    for number in range(1, WALLBOXES + 1):
        name = "W{:02d}".format(number)
        boot_at = rng.uniform(*BOOT_SPREAD)
        sessions = []
        at = boot_at
        while True:
            start = at + 60 * rng.uniform(*idle)
            if start >= seconds:
                break
            stop = start + 60 * rng.uniform(*charging)
            car_current = rng.choice(CAR_CURRENTS)
            phases = 1 if rng.random() < SINGLE_PHASE_SHARE else 3
            sessions.append(Session(start, stop, car_current, phases))
            at = stop
        wallboxes.append(Wallbox(name, "CB-" + name, boot_at, sessions))
    return wallboxes


def config_text(site: float, wallboxes: list[Wallbox]) -> str:
    text = "[manager]\nmax_current = {}\n".format(site)
    for wallbox in wallboxes:
        text += (
            "[wallbox:{}]\ntype = ocpp\naddress = {}\nmin_current = {}\nmax_current = {}\n".format(
                wallbox.name, wallbox.address, MIN_CURRENT, MAX_CURRENT
            )
        )
    return text


@dataclass(frozen=True)
class Send:
    """One limit the manager sent."""

    at: float
    name: str
    amps: float
    previous: float | None


@implementer(ILimitActuator)
class SimulatedWallboxes:
    """The actuator: records each limit and accepts it after a random delay
    of clock time, one after the other per wallbox.

    @param check: called after every send and every answer (the fuse check).
    """

    def __init__(self, clock, rng, wallboxes, check):
        self._clock = clock
        self._rng = rng
        self._wallboxes = {w.name: w for w in wallboxes}
        self._check = check
        self._last_sent: dict[str, float] = {}
        self.sends: list[Send] = []
        self.lifts = 0

    def set_limit(self, device, amps):
        wallbox = self._wallboxes[device.name]
        now = self._clock.seconds()
        self.sends.append(Send(now - EPOCH, device.name, amps, self._last_sent.get(device.name)))
        self._last_sent[device.name] = amps
        wallbox.in_flight.append(amps)
        answer_at = max(now, wallbox.answered_until) + self._rng.uniform(*ANSWER_DELAY)
        wallbox.answered_until = answer_at
        d = defer.Deferred()
        self._clock.callLater(answer_at - now, self._answer, wallbox, d)
        self._check()
        return d

    def _answer(self, wallbox, d):
        wallbox.held = wallbox.in_flight.pop(0)
        self._check()
        d.callback({"status": "Accepted"})

    def lift(self, device):
        self.lifts += 1
        self._wallboxes[device.name].held = None
        return defer.succeed({"status": "Accepted"})


class Site:
    """The registry and the manager, and the wallboxes that talk to them."""

    def __init__(self, site_limit, wallboxes, answers_rng):
        self.clock = task.Clock()
        self.clock.advance(EPOCH)
        self.site_limit = site_limit
        self.wallboxes = wallboxes
        config = config_from_string(config_text(site_limit, wallboxes))
        self.registry = DeviceRegistry(config, self.clock)
        self.manager = LoadManager(config, self.registry, self.clock, lambda name, enabled: None)
        self.actuator = SimulatedWallboxes(self.clock, answers_rng, wallboxes, self.check)
        self.manager.connect_actuators({"ocpp": self.actuator})
        self.max_drawable = 0.0
        self.max_drawable_per_phase = [0.0, 0.0, 0.0]
        self.over_site = 0
        self.first_start: float | None = None
        self.starts = 0
        self.stops = 0
        self._message_ids = 0
        self._transaction_ids = 0

    # -- the fuse ---------------------------------------------------------------

    def check(self):
        """Note, on each phase, the sum of what the wallboxes may draw
        there, and whether it is above the site limit (compared in
        deci-amperes, as the manager counts).

        A wallbox counts on the phases its car draws on: a car on L1 only
        draws nothing on L2 and L3, and a manager that knows the phases
        (DESIGN §7) gives that room to others. An idle wallbox counts on
        the phases of its last car, as the manager counts it until the
        next transaction. A manager that knows no phases counts every
        wallbox on every phase, and so does this check on L1, where every
        car draws: there it is the sum over all wallboxes, as before."""
        sums = [0.0, 0.0, 0.0]
        for wallbox in self.wallboxes:
            amps = wallbox.may_draw()
            for phase in wallbox.phases:
                sums[phase] += amps
        for phase, total in enumerate(sums):
            self.max_drawable_per_phase[phase] = max(self.max_drawable_per_phase[phase], total)
        total = max(sums)
        self.max_drawable = max(self.max_drawable, total)
        if round(total * 10) > round(self.site_limit * 10):
            self.over_site += 1

    # -- what the wallboxes say -----------------------------------------------

    def _timestamp(self):
        return datetime.fromtimestamp(self.clock.seconds(), timezone.utc).isoformat()

    def _deliver(self, wallbox, action, payload, result):
        self._message_ids += 1
        call = Call(str(self._message_ids), action, payload)
        answer = CallResult(str(self._message_ids), result)
        for observer in (self.registry, self.manager):
            observer.exchange(wallbox.address, call, answer)

    def _status(self, wallbox, status):
        self._deliver(wallbox, "StatusNotification",
                      {"connectorId": 1, "errorCode": "NoError", "status": status,
                       "timestamp": self._timestamp()}, {})

    def _boot(self, wallbox):
        for observer in (self.registry, self.manager):
            observer.connected(wallbox.address, "peer", None)
        self._deliver(wallbox, "BootNotification",
                      {"chargePointVendor": "bench", "chargePointModel": "profiles"},
                      {"status": "Accepted", "currentTime": self._timestamp(), "interval": 300})
        self._status(wallbox, "Available")

    def _start(self, wallbox, session):
        if self.first_start is None:
            self.first_start = self.clock.seconds() - EPOCH
        self.starts += 1
        self._transaction_ids += 1
        wallbox.session = session
        wallbox.phases = (0,) if session.phases == 1 else (0, 1, 2)
        wallbox.transaction_id = self._transaction_ids
        self._deliver(wallbox, "StartTransaction",
                      {"connectorId": 1, "idTag": "TAG" + wallbox.name,
                       "meterStart": int(wallbox.energy_wh), "timestamp": self._timestamp()},
                      {"transactionId": wallbox.transaction_id, "idTagInfo": {"status": "Accepted"}})
        self._status(wallbox, "Charging")

    def _meter_values(self, wallbox):
        session = wallbox.session
        amps = wallbox.draws()
        wallbox.energy_wh += amps * session.phases * VOLTS * METER_INTERVAL / 3600
        currents = [amps, 0.0, 0.0] if session.phases == 1 else [amps] * 3
        samples = [{"measurand": "Energy.Active.Import.Register", "unit": "Wh",
                    "value": "{:.0f}".format(wallbox.energy_wh)},
                   {"measurand": "Power.Active.Import", "unit": "W",
                    "value": "{:.0f}".format(amps * session.phases * VOLTS)}]
        samples += [{"measurand": "Current.Import", "phase": phase, "unit": "A",
                     "value": "{:.1f}".format(current)}
                    for phase, current in zip(("L1", "L2", "L3"), currents)]
        self._deliver(wallbox, "MeterValues",
                      {"connectorId": 1, "transactionId": wallbox.transaction_id,
                       "meterValue": [{"timestamp": self._timestamp(), "sampledValue": samples}]},
                      {})

    def _stop(self, wallbox):
        self.stops += 1
        self._deliver(wallbox, "StopTransaction",
                      {"transactionId": wallbox.transaction_id, "meterStop": int(wallbox.energy_wh),
                       "timestamp": self._timestamp(), "reason": "EVDisconnected"}, {})
        wallbox.session = None
        wallbox.transaction_id = None
        self._status(wallbox, "Finishing")

    def schedule(self, seconds):
        """Put every wallbox's plan up to C{seconds} on the clock, one event
        of each wallbox at a time: the clock sorts its calls at every step,
        and a few dozen sort faster than thousands."""
        for wallbox in self.wallboxes:
            events = [(wallbox.boot_at, self._boot)]
            for session in wallbox.sessions:
                events.append((session.start, lambda w, s=session: self._start(w, s)))
                meter = session.start + METER_INTERVAL
                while meter < min(session.stop, seconds):
                    events.append((meter, self._meter_values))
                    meter += METER_INTERVAL
                if session.stop < seconds:
                    events.append((session.stop, self._stop))
                    events.append((session.stop + AVAILABLE_AFTER_STOP,
                                   lambda w: self._status(w, "Available")))
            self._next(wallbox, iter(events))

    def _next(self, wallbox, events):
        for at, event in events:
            self.clock.callLater(at + EPOCH - self.clock.seconds(), self._fire, wallbox, event, events)
            return

    def _fire(self, wallbox, event, events):
        event(wallbox)
        self._next(wallbox, events)

    def run(self, seconds):
        """Move the clock to C{seconds} after the start in steps of L{STEP},
        checking the fuse after each."""
        steps = round(seconds / STEP)
        for number in range(1, steps + 1):
            self.clock.advance(EPOCH + number * STEP - self.clock.seconds())
            self.check()


def most_within(times, window):
    """The most of the sorted C{times} that lie within any C{window} s."""
    most, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= window:
            first += 1
        most = max(most, last - first + 1)
    return most


def figures(site, sends, wall_seconds, args):
    """The figures of a finished run, for the table and the JSON."""
    changes = [s for s in sends if s.previous is not None]
    raises = [s for s in changes if s.amps > s.previous]
    lowerings = [s for s in changes if s.amps < s.previous]
    small = [s for s in raises + lowerings if abs(s.amps - s.previous) < SMALL_STEP - 1e-9]
    at_boot = [s for s in sends if site.first_start is None or s.at < site.first_start]
    per_wallbox: dict[str, list[float]] = {}
    for s in sends:
        per_wallbox.setdefault(s.name, []).append(s.at)
    return {
        "seed": args.seed,
        "site_a": args.site,
        "hours": args.hours,
        "transaction_minutes": list(args.transaction_minutes),
        "idle_minutes": list(args.idle_minutes),
        "wallboxes": WALLBOXES,
        "cfosproxy": os.path.dirname(os.path.abspath(cfosproxy.__file__)),
        "transactions": site.starts,
        "transactions_stopped": site.stops,
        "limits_sent": len(sends),
        "limits_before_first_transaction": len(at_boot),
        "limits_per_transaction": round(len(sends) / site.starts, 2) if site.starts else None,
        "first_limits": len(sends) - len(changes),
        "raises": len(raises),
        "lowerings": len(lowerings),
        "same_again": len(changes) - len(raises) - len(lowerings),
        "small_steps": len(small),
        "small_raises": sum(1 for s in small if s.amps > s.previous),
        "most_to_one_wallbox_in_10s": max(
            (most_within(times, BURST_WINDOW) for times in per_wallbox.values()), default=0
        ),
        "lifts": site.actuator.lifts,
        "max_drawable_a": round(site.max_drawable, 1),
        "max_drawable_per_phase_a": [round(amps, 1) for amps in site.max_drawable_per_phase],
        "checks_over_site": site.over_site,
        "wall_s": round(wall_seconds, 2),
    }


ROWS = (
    ("transactions started", "transactions"),
    ("limits sent", "limits_sent"),
    ("  of these before the first transaction", "limits_before_first_transaction"),
    ("limits per transaction", "limits_per_transaction"),
    ("raises", "raises"),
    ("lowerings", "lowerings"),
    ("same limit again", "same_again"),
    ("first limit of a wallbox", "first_limits"),
    ("steps below 0.5 A", "small_steps"),
    ("  of these raises", "small_raises"),
    ("most limits to one wallbox within 10 s", "most_to_one_wallbox_in_10s"),
    ("max sum the wallboxes may draw on a phase, A", "max_drawable_a"),
    ("site limit, A", "site_a"),
    ("checks with the sum above the site", "checks_over_site"),
    ("wall-clock s", "wall_s"),
)


def minutes_range(text: str) -> tuple[float, float]:
    """C{"1-5"} (or C{"3"}) as the shortest and longest time in minutes."""
    low, _, high = text.partition("-")
    try:
        shortest, longest = float(low), float(high or low)
    except ValueError:
        raise argparse.ArgumentTypeError("expected minutes as A-B, e.g. 1-5, not {!r}".format(text))
    if not 0 < shortest <= longest:
        raise argparse.ArgumentTypeError("expected 0 < A <= B, not {!r}".format(text))
    return shortest, longest


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1, help="the scenario's seed (default: %(default)s)")
    parser.add_argument("--site", type=float, default=63.0,
                        help="the site limit in A per phase (default: %(default)s)")
    parser.add_argument("--hours", type=float, default=2.0,
                        help="simulated hours (default: %(default)s)")
    parser.add_argument("--transaction-minutes", type=minutes_range, default=CHARGING_MINUTES,
                        metavar="A-B", help="how long a transaction lasts, in minutes (default: 5-60)")
    parser.add_argument("--idle-minutes", type=minutes_range, default=IDLE_MINUTES,
                        metavar="A-B", help="how long a wallbox is idle before a transaction, "
                        "in minutes (default: 1-20)")
    parser.add_argument("--json", help="write the figures to this file too")
    args = parser.parse_args()
    imported = os.path.dirname(os.path.dirname(os.path.abspath(cfosproxy.__file__)))
    if imported != ROOT:
        sys.exit("cfosproxy was imported from {}, not from {}".format(imported, ROOT))

    seconds = args.hours * 3600
    rng = random.Random(args.seed)
    # Drawn first, so that the plan is the same whatever the manager sends.
    answers_rng = random.Random(rng.getrandbits(64))
    site = Site(args.site, plan(rng, seconds, args.idle_minutes, args.transaction_minutes),
                answers_rng)
    site.schedule(seconds)
    began = time.perf_counter()
    site.run(seconds)
    wall_seconds = time.perf_counter() - began

    result = figures(site, site.actuator.sends, wall_seconds, args)
    print("Limits per transaction: seed {}, {} wallboxes on {:g} A, {:g} h, transactions of {:g} "
          "to {:g} min after {:g} to {:g} min idle; cfosproxy from {}".format(
              args.seed, WALLBOXES, args.site, args.hours, *args.transaction_minutes,
              *args.idle_minutes, result["cfosproxy"]))
    for label, key in ROWS:
        print("{:<44} {:>10}".format(label, result[key]))
    print(json.dumps(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    if site.over_site:
        print("the wallboxes together could draw more than the site on a phase: {:.1f} A > {:g} A".format(
            site.max_drawable, args.site), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
