"""The fuse state machine over a site as it is wired: circuits, wirings,
cars that draw on some phases only, priorities, max_imbalance, meters that
read the rest of the building (or fall silent) and a site limit changed at
run time.

L{tests.test_manager.FuseMachine} guards one site limit with devices on
every phase; this machine draws a random site (a tree of circuits, devices
on random wirings, circuits and priorities) and random sequences of wallbox
events, and checks the invariant on every phase of every circuit and of the
site at every step.
"""

import os

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, precondition, rule

from cfosproxy.site.manager import BOOT_GRACE, RETRY_DELAY
from cfosproxy.site.phases import PHASES, WIRINGS
from cfosproxy.site.sharing import to_deciamps
from tests.test_manager import CapturedLog, Site, WallboxEvents, assert_holds_what_it_may

NAMES = ("A", "B", "C", "D")

# The meters' timeout in the machine: when everything is answered they read
# every half of it, so that they stay heard while time passes.
METER_TIMEOUT = 20


def site_config(site_limit, circuits, devices, max_imbalance, meters=(), manager=""):
    """INI text for a site.

    @param circuits: C{[(name, parent or "", max_current)]}.
    @param devices: C{[(name, circuit or "", wiring, priority, max_current)]}.
    @param meters: the places (circuit names, "" for the site) with a
        meter of C{type = api}; the meter of a place is called after it
        (C{m-site} for the site's).
    @param manager: more lines of C{[manager]}.
    """
    text = f"[manager]\nmax_current = {site_limit}\nmax_imbalance = {max_imbalance}\n{manager}"
    if "" in meters:
        text += "meter = m-site\n"
    for place in meters:
        text += f"[meter:m-{place or 'site'}]\ntype = api\ntimeout = {METER_TIMEOUT}\n"
    for name, parent, amps in circuits:
        text += f"[circuit:{name}]\nmax_current = {amps}\nparent = {parent}\n"
        if name in meters:
            text += f"meter = m-{name}\n"
    for name, circuit, wiring, priority, most in devices:
        text += (
            f"[wallbox:{name}]\ntype = ocpp\naddress = CB-{name}\nmin_current = 6\n"
            f"max_current = {most}\ncircuit = {circuit}\nwiring = {wiring}\n"
            f"priority = {priority}\n"
        )
    return text


def meter_values(currents):
    """A MeterValues payload with one Current.Import sample per phase."""
    return {
        "connectorId": 1,
        "meterValue": [{
            "timestamp": "t",
            "sampledValue": [
                {"measurand": "Current.Import", "phase": phase, "unit": "A", "value": f"{amps:.1f}"}
                for phase, amps in zip(PHASES, currents)
            ],
        }],
    }


class SiteFuseMachine(WallboxEvents):
    """Random sites and random sequences of wallbox events.

    The cars are played truthfully: each draws, on the wallbox phases it
    uses, what the wallbox allows (at most 16 A) and nothing on the others,
    and reports it in MeterValues when the machine says so. A car may also
    start drawing on a phase it did not use (a car that switches from one
    to three phases): then, and when a new car starts on a wallbox that
    still holds the last car's limit, the wallbox may draw more on some
    phase than it was counted for until the manager has lowered it. That is
    what the manager cannot prevent (it learns of the car only when it
    draws); what it must do is never make it worse and set it right.

    Invariants, at every step:
      - every raise the manager sends keeps, on every limit the device is
        counted on, what all wallboxes may draw (held or in flight) within
        what is available (checked by the fake wallboxes as it goes out);
      - on every phase of every circuit and of the site, what the wallboxes
        may draw is within what is available, unless a car widened its
        phases since the last moment it was;
      - after a report, the device is counted on every site phase its car
        draws on;
      - grants are within every limit, between min and max or 0.
    Once every wallbox has answered everything, the site is within its
    fuses; once nothing is broken any more, every wallbox the manager can
    reach holds its grant (or within L{MIN_STEP} of it) or the room the
    others leave it."""

    NAMES = NAMES
    names = st.sampled_from(NAMES)

    @initialize(data=st.data())
    def setup(self, data):
        draw = data.draw
        site_limit = draw(st.sampled_from([10, 16, 20, 25, 32]), label="site")
        circuits = []
        for name in ("c1", "c2"):
            if draw(st.booleans(), label=f"has {name}"):
                parent = draw(st.sampled_from([""] + [c for c, _, _ in circuits]), label="parent")
                circuits.append((name, parent, draw(st.sampled_from([6, 10, 16, 20]), label="amps")))
        places = [""] + [name for name, _, _ in circuits]
        devices = [
            (
                name,
                draw(st.sampled_from(places), label=f"{name} circuit"),
                draw(st.sampled_from(sorted(WIRINGS)), label=f"{name} wiring"),
                draw(st.sampled_from([0, 0, 1]), label=f"{name} priority"),
                draw(st.sampled_from([10, 16]), label=f"{name} max"),
            )
            for name in NAMES
        ]
        max_imbalance = draw(st.sampled_from([0, 0, 6, 20]), label="max_imbalance")
        meters = [place for place in places if draw(st.booleans(), label=f"meter at {place or 'site'}")]
        manager = "reserve = {}\nfailsafe_current = {}\n".format(
            draw(st.sampled_from([0, 2]), label="reserve"),
            draw(st.sampled_from([0, 6, 10]), label="failsafe_current"),
        )
        self.log = CapturedLog().__enter__()
        self.site = Site(
            site_config(site_limit, circuits, devices, max_imbalance, meters, manager),
            check_raises=True,
        )
        # Per metered place: its meter, what the rest of the building draws
        # there, whether the meter answers when everything is answered, when
        # it last read, and per phase the least other load the manager may
        # see in that reading (see available_follows_the_meters).
        self.meters = {place or None: f"m-{place or 'site'}" for place in meters}
        self.other = {place: [0.0, 0.0, 0.0] for place in self.meters}
        self.meter_answers = dict.fromkeys(self.meters, True)
        self.read_at = {}
        self.least_other = {}
        self.available_before = {}
        # The wallbox phases each car draws on; absent: no car.
        self.cars = {}
        self.widened = False
        self.enabled = {}
        self.counted = {name: set(self.site.device(name).phases) for name in NAMES}
        for place in self.meters:
            self.read_meter(place)
        for name in NAMES:
            self.site.connect(name)
        self.site.settle()

    # -- the cars ------------------------------------------------------------

    def car_draws(self, name, most=16.0):
        """The currents on the wallbox's own L1, L2, L3 as its car draws:
        what the wallbox allows, at most C{most} (a car that is nearly full
        draws little)."""
        device = self.site.device(name)
        wired = len(WIRINGS[device.config.wiring])
        amps = min(self.site.wallboxes.applied.get(name, 16.0), most)
        uses = self.cars.get(name, set())
        return [
            amps if phase in uses and index < wired else 0.0
            for index, phase in enumerate(PHASES)
        ]

    def car_site_phases(self, name):
        wiring = WIRINGS[self.site.device(name).config.wiring]
        return {site for own, site in zip(PHASES, wiring) if own in self.cars.get(name, ())}

    @rule(name=names, data=st.data())
    def start(self, name, data):
        if self.site.device(name).connected:
            wired = PHASES[: len(WIRINGS[self.site.device(name).config.wiring])]
            uses = data.draw(st.sets(st.sampled_from(wired), min_size=1), label="car phases")
            self.cars[name] = uses
            self.site.start(name)

    @rule(name=names)
    def stop(self, name):
        if self.site.device(name).connected:
            self.cars.pop(name, None)
            self.site.stop(name)

    @rule(name=names, most=st.sampled_from([16.0, 16.0, 3.0, 1.5, 0.5]))
    def report(self, name, most):
        """The wallbox reports what its car draws; afterwards the manager
        counts the device on every site phase the car draws 1 A or more on."""
        if self.site.device(name).connected and name in self.cars:
            currents = self.car_draws(name, most)
            self.site.deliver(name, "MeterValues", meter_values(currents), {})
            drawing = {
                site for site, amps in zip(WIRINGS[self.site.device(name).config.wiring], currents)
                if amps >= 1
            }
            assert drawing <= set(self.site.device(name).phases), (name, drawing)

    @rule(name=names, data=st.data())
    def car_switches_phases(self, name, data):
        """The car starts drawing on another phase of the wallbox."""
        if name in self.cars:
            wired = PHASES[: len(WIRINGS[self.site.device(name).config.wiring])]
            self.cars[name] = self.cars[name] | {data.draw(st.sampled_from(wired), label="phase")}
            self.widened = True

    # -- the meters and the site limit ------------------------------------------

    def below(self, place):
        """The wallboxes below a place (L{None}: the site)."""
        return [n for n in NAMES if place in {node for node, _ in self.site.limits_of(n)}]

    def read_meter(self, place):
        """The place's meter reads the other load and what the cars below
        it really draw (on the site phases of their wallboxes' wiring).

        Then the manager may see no less other load on each phase than the
        reading less what the devices below may draw on the phases they are
        wired to (the most it can take them to draw).
        """
        reading = list(self.other[place])
        exposure = [0.0, 0.0, 0.0]
        for name in self.below(place):
            wiring = WIRINGS[self.site.device(name).config.wiring]
            for own, amps in zip(wiring, self.car_draws(name) if name in self.cars else [0.0] * 3):
                reading[PHASES.index(own)] += amps
            for own in wiring:
                exposure[PHASES.index(own)] += self.site.manager.exposure(self.site.device(name))
        self.least_other[place] = [reading[p] - exposure[p] for p in range(3)]
        self.read_at[place] = self.site.clock.seconds()
        self.site.manager.meters.push(self.meters[place], reading)
        self.site.clock.advance(0)

    @precondition(lambda self: self.meters)
    @rule(data=st.data(), amps=st.sampled_from([-10.0, 0.0, 3.0, 8.0, 20.0]))
    def meter_reads(self, data, amps):
        """The rest of the building draws C{amps} more or less on some
        phases (negative: a PV system feeds in), and the meter reads it."""
        place = data.draw(st.sampled_from(sorted(self.meters, key=str)), label="meter")
        for phase in data.draw(st.sets(st.sampled_from(range(3)), min_size=1), label="phases"):
            self.other[place][phase] = amps
        self.meter_answers[place] = True
        self.read_meter(place)

    @precondition(lambda self: self.meters)
    @rule(data=st.data(), answers=st.booleans())
    def meter_answers_or_not(self, data, answers):
        """The meter stops answering (it falls silent after its timeout,
        when time passes) or answers again."""
        place = data.draw(st.sampled_from(sorted(self.meters, key=str)), label="meter")
        self.meter_answers[place] = answers

    @rule(amps=st.sampled_from([0, 10, 16, 25, 32, 40]))
    def change_site_limit(self, amps):
        """The operator sets another site limit at run time."""
        self.site.manager.set_site_limit(amps)
        self.site.site_limit = amps
        self.site.clock.advance(0)

    @invariant()
    def available_follows_the_meters(self):
        """On each phase of each metered place, the manager makes available
        no more than the last reading allows (fuse − reserve − other load,
        within 0 and the fuse, the fuse as it is now), and while the meter
        is silent, no more than failsafe_current."""
        if not hasattr(self, "site"):
            return
        config = self.site.config
        available = self.site.manager.available()
        now = self.site.clock.seconds()
        for place, meter in self.meters.items():
            fuse = self.site.site_limit if place is None else config.circuit(place).max_current
            timeout = config.meter(meter).timeout
            silent = place not in self.read_at or now - self.read_at[place] >= timeout
            for phase in range(3):
                if silent:
                    most = min(fuse, config.manager.failsafe_current)
                else:
                    other = self.least_other[place][phase]
                    most = max(0.0, min(fuse, fuse - config.manager.reserve - other))
                most = to_deciamps(most)
                assert available[place, phase] <= most, (place, phase, silent, available[place, phase], most)

    @rule(heal=st.booleans())
    def everything_answered(self, heal):
        """Let every wallbox answer everything and report its car (boot
        grace, retries and raise intervals included), and the meters that
        answer read every second: then the site is within its fuses. With
        C{heal}, nothing is broken any more from the start, and the manager
        has recovered."""
        if heal:
            self.site.sharing_broken = False
            self.site.wallboxes.broken.clear()
        self.site.clock.advance(BOOT_GRACE)
        for _ in range(10):
            self.site.settle()
            for name in NAMES:
                if self.site.device(name).connected and name in self.cars:
                    self.site.deliver(name, "MeterValues", meter_values(self.car_draws(name)), {})
            self.pass_time(RETRY_DELAY)
        self.site.settle()
        # A wallbox that is offline, or that the actuator chokes on, cannot
        # be reached. Where one of them was counted on more phases after the
        # limit it holds was sent (a new car), a fuse may be over: then the
        # manager has lowered every other wallbox there to 0.
        unreachable = [
            n for n in self.site.managed_names()
            if not self.site.device(n).connected or n in self.site.wallboxes.broken
        ]
        for limit in self.site.over_limits():
            for name in self.site.managed_names():
                if name not in unreachable and limit in self.site.limits_of(name):
                    assert self.site.drawable(name) == 0, (limit, name)
        if heal:
            self.recovered()

    def pass_time(self, seconds):
        """C{seconds} go by; the meters that answer read every half of
        their timeout."""
        step = METER_TIMEOUT / 2
        for _ in range(int(seconds // step)):
            for place, answers in self.meter_answers.items():
                if answers:
                    self.read_meter(place)
            self.site.clock.advance(step)
            self.site.settle()

    def recovered(self):
        """Every wallbox the manager can send to holds what it may have
        (L{assert_holds_what_it_may}); with every wallbox reachable, the
        site's phases are within max_imbalance of each other."""
        devices = [self.site.device(n) for n in NAMES]
        for device in devices:
            if device.connected and device.enabled:
                assert_holds_what_it_may(self.site, device, devices)
        imbalance = self.site.config.manager.max_imbalance
        if imbalance and all(d.connected and d.enabled for d in devices):
            sums = [
                sum(to_deciamps(d.accepted_limit or 0) for d in devices if phase in d.phases)
                for phase in PHASES
            ]
            assert max(sums) - min(sums) <= to_deciamps(imbalance), sums

    def teardown(self):
        if hasattr(self, "log"):
            self.log.__exit__(None, None, None)

    # -- invariants ----------------------------------------------------------

    @invariant()
    def within_every_fuse(self):
        """On every phase of every circuit and of the site, what the
        wallboxes may draw is within what is available, unless a car drew
        on more phases than it was counted on since the last moment it
        was, a wallbox deactivated with lift_limit came back into load
        management, or a meter made less available (at a reading, a
        silence or a new site limit)."""
        if not hasattr(self, "site"):
            return
        available = dict(self.site.manager.available())
        if any(amps < self.available_before.get(limit, amps) for limit, amps in available.items()):
            # A meter read more other load, or fell silent: the lower
            # limits went out at once, and until they are taken the
            # wallboxes may draw more than is left.
            self.widened = True
        self.available_before = available
        for name in NAMES:
            device = self.site.device(name)
            phases = set(device.phases)
            if not phases <= self.counted[name]:
                self.widened = True
            self.counted[name] = phases
            if device.enabled and not self.enabled.get(name, True):
                # Deactivated with lift_limit, the wallbox was outside load
                # management (the operator's choice); what it holds or has
                # in flight from then counts again from now.
                self.widened = True
            self.enabled[name] = device.enabled
        free = self.site.free_names()
        over = self.site.over_limits()
        if free:
            # A wallbox deactivated with lift_limit and enabled again while
            # it charges holds no profile: it may draw anything until it
            # accepts one, which no manager can prevent.
            self.widened = True
        if over:
            assert self.widened, over
        else:
            self.widened = False

    @invariant()
    def grants_within_limits(self):
        """Grants add up to at most what is available on every limit, and
        each is 0 or between its device's min and max. (While sharing
        fails, the grants are held as they were, also where a new car
        counts its wallbox on more phases: only the limits are guarded
        then, by L{within_every_fuse}.)"""
        if not hasattr(self, "site") or self.site.manager.sharing_failures:
            return
        for limit in [(None, p) for p in range(3)] + [
            (c.name, p) for c in self.site.config.circuits for p in range(3)
        ]:
            total = sum(
                to_deciamps(self.site.device(n).grant)
                for n in NAMES
                if limit in self.site.limits_of(n)
            )
            assert total <= self.site.available(limit), limit
        for name in NAMES:
            device = self.site.device(name)
            assert device.grant == 0 or 6 <= device.grant <= device.config.max_current


# Each example draws a site and up to 60 steps. SITE_MACHINE_EXAMPLES=20000
# (or more) runs it longer, e.g. after a change to the manager or to sharing.
SiteFuseMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("SITE_MACHINE_EXAMPLES", "800")),
    stateful_step_count=60,
    deadline=None,
)
test_site_fuse_machine = SiteFuseMachine.TestCase
