"""The fuse state machine over real wallbox behaviour (DESIGN §8): the
manager with its real OCPP actuator (L{ChargingProfileActuator}) against
fake wallboxes that hold charging profiles as OCPP 1.6 says, each of a kind
seen in the field: stack level 0 only, W only, no TxDefaultProfile, no
answer to GetConfiguration, no profile at all. Cars draw what the profiles
the wallbox holds let them draw, on one phase or three; the daemon restarts
now and then, and comes back with what it kept on disk.

Unlike L{tests.test_manager.FuseMachine}, which checks what the manager
sends, this machine checks the physics: on every phase, what the cars may
draw with the profiles their wallboxes hold (and any profile in flight,
which may be applied at any moment) stays within the site limit, and the
manager never counts a device for less than its car may draw. Windows that
no manager can close (a car starting on a wallbox that holds no limit, or
one sent for a three-phase car, before the manager has heard of it) are
allowed until the manager has set them right.
"""

import os

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from twisted.internet import defer, task

from cfosproxy.config import config_from_string
from cfosproxy.core.devices import DeviceRegistry
from cfosproxy.core.errors import PeerGone
from cfosproxy.ocpp.errors import ErrorCode, OcppError
from cfosproxy.ocpp.frames import Call, CallResult
from cfosproxy.site.manager import BOOT_GRACE, RETRY_DELAY, STATE_WAIT, LoadManager
from cfosproxy.site.ocpplimits import ChargingProfileActuator
from cfosproxy.site.volume import RAISE_INTERVAL
from tests.test_manager import CapturedLog

NAMES = ("A", "B", "C")
VOLTS = 230.0
CAR_MAX = 16.0
# Rounding of limits to 0.1 A and of watts to 0.1 W.
SLACK = 0.05

# How each kind of wallbox takes profiles: the stack levels it takes, what
# it reports as ChargeProfileMaxStackLevel, the units it takes, whether it
# takes TxDefaultProfiles, and whether it answers GetConfiguration.
KINDS = {
    "plain": dict(takes_stack=8, reports_stack=8, units=("A",), default=True, answers=True),
    "stack0": dict(takes_stack=0, reports_stack=0, units=("A",), default=True, answers=True),
    "abb": dict(takes_stack=0, reports_stack=3, units=("A",), default=True, answers=True),
    "watts": dict(takes_stack=8, reports_stack=8, units=("W",), default=True, answers=True),
    "txonly": dict(takes_stack=8, reports_stack=8, units=("A",), default=False, answers=True),
    "silent": dict(takes_stack=0, reports_stack=None, units=("W",), default=True, answers=False),
    "refuses": dict(takes_stack=-1, reports_stack=8, units=("A",), default=True, answers=True),
}
UNIT_NAMES = {"A": "Current", "W": "Power"}


class FakeWallbox:
    """One wallbox (connector 1) holding charging profiles, and its car."""

    def __init__(self, name, kind, max_current):
        self.name = name
        self.kind = KINDS[kind]
        self.kind_name = kind
        self.max_current = max_current
        self.profiles = {}
        self.transaction = None
        # The phases the car draws on (1: L1 only, 3: all); None: no car.
        self.car_phases = None
        # SetChargingProfile calls waiting for an answer: [(payload, d)].
        self.pending = []

    def takes(self, payload):
        """Whether this wallbox accepts the SetChargingProfile C{payload}."""
        profile = payload["csChargingProfiles"]
        unit = profile["chargingSchedule"]["chargingRateUnit"]
        if profile["stackLevel"] > self.kind["takes_stack"] or unit not in self.kind["units"]:
            return False
        if profile["chargingProfilePurpose"] == "TxDefaultProfile":
            return self.kind["default"]
        return self.transaction is not None and profile.get("transactionId") == self.transaction

    def apply(self, payload):
        profile = payload["csChargingProfiles"]
        self.profiles[profile["chargingProfileId"]] = profile

    def end_transaction(self):
        """A transaction ends: its TxProfiles go with it (OCPP 1.6 3.13.2)."""
        self.transaction = None
        self.car_phases = None
        self.profiles = {
            i: p for i, p in self.profiles.items() if p["chargingProfilePurpose"] != "TxProfile"
        }

    def per_phase(self, profiles):
        """What the car may draw on each phase it uses, with C{profiles}."""
        if self.transaction is None or self.car_phases is None:
            return 0.0
        mine = [
            p for p in profiles.values()
            if p["chargingProfilePurpose"] == "TxProfile" and p.get("transactionId") == self.transaction
        ]
        if not mine:
            mine = [p for p in profiles.values() if p["chargingProfilePurpose"] == "TxDefaultProfile"]
        amps = self.max_current
        if mine:
            top = max(mine, key=lambda p: p["stackLevel"])
            schedule = top["chargingSchedule"]
            limit = schedule["chargingSchedulePeriod"][0]["limit"]
            if schedule["chargingRateUnit"] == "W":
                limit = limit / VOLTS / self.car_phases
            amps = limit
        return min(amps, self.max_current, CAR_MAX)

    def may_draw(self):
        """The most the car may draw on each phase it uses: with what the
        wallbox holds, or with any profile in flight applied."""
        most = self.per_phase(self.profiles)
        for payload, _ in self.pending:
            held = dict(self.profiles)
            profile = payload["csChargingProfiles"]
            held[profile["chargingProfileId"]] = profile
            most = max(most, self.per_phase(held))
        return most

    def runs_free(self):
        """Whether the car charges without a limit the wallbox took."""
        return self.transaction is not None and self.car_phases is not None and not any(
            p["chargingProfilePurpose"] == "TxDefaultProfile"
            or p.get("transactionId") == self.transaction
            for p in self.profiles.values()
        )

    def phases(self):
        """The site phases the car draws on (wiring L1L2L3)."""
        if self.car_phases is None:
            return ()
        return ("L1",) if self.car_phases == 1 else ("L1", "L2", "L3")

    def configuration(self):
        keys = []
        if self.kind["reports_stack"] is not None:
            keys.append({"key": "ChargeProfileMaxStackLevel", "readonly": True,
                         "value": str(self.kind["reports_stack"])})
        keys.append({"key": "ChargingScheduleAllowedChargingRateUnit", "readonly": True,
                     "value": ",".join(UNIT_NAMES[u] for u in self.kind["units"])})
        return {"configurationKey": keys}


class FakeSession:
    """The session of a connected wallbox, as the actuator uses it."""

    def __init__(self, machine, box):
        self.machine = machine
        self.box = box

    def call(self, action, payload, timeout=None):
        box = self.box
        if action == "GetConfiguration":
            if not box.kind["answers"]:
                return defer.fail(OcppError(ErrorCode.NotSupported, "no"))
            return defer.succeed(box.configuration())
        if action == "TriggerMessage":
            self.machine.clock.callLater(0, self.machine.report, box.name, payload["requestedMessage"])
            return defer.succeed({"status": "Accepted"})
        if action == "ClearChargingProfile":
            box.profiles.pop(payload.get("id"), None)
            return defer.succeed({"status": "Accepted"})
        assert action == "SetChargingProfile", action
        d = defer.Deferred()
        box.pending.append((payload, d))
        return d


class FakeHub:
    def __init__(self):
        self.sessions = {}


class StrategyFuseMachine(RuleBasedStateMachine):
    """Random wallbox kinds and configurations, random events, restarts."""

    names = st.sampled_from(NAMES)

    @initialize(data=st.data())
    def setup(self, data):
        draw = data.draw
        self.site_limit = draw(st.sampled_from([10, 16, 20, 32]), label="site")
        self.boxes = {}
        text = f"[manager]\nmax_current = {self.site_limit}\n"
        for name in NAMES:
            kind = draw(st.sampled_from(sorted(KINDS)), label=f"{name} kind")
            most = draw(st.sampled_from([10, 16]), label=f"{name} max")
            self.boxes[name] = FakeWallbox(name, kind, most)
            text += (
                f"[wallbox:{name}]\ntype = ocpp\naddress = CB-{name}\nmin_current = 6\n"
                f"max_current = {most}\n"
            )
            for key, choices in (
                ("charging_profile", ["auto", "auto", "TxProfile"]),
                ("stack_level", ["auto", "auto", "0"]),
                ("rate_unit", ["auto", "auto", "W"]),
            ):
                text += f"{key} = {draw(st.sampled_from(choices), label=f'{name} {key}')}\n"
        self.text = text
        self.log = CapturedLog().__enter__()
        self.clock = task.Clock()
        self.clock.advance(1_700_000_000)
        self.kept = {}
        self.transactions = 0
        self.widened = set()
        self.start_daemon()
        for name in NAMES:
            self.connect(name, boot=True)

    def teardown(self):
        if hasattr(self, "log"):
            self.log.__exit__(None, None, None)

    # -- the daemon ------------------------------------------------------------

    def start_daemon(self):
        """A daemon as the real one is wired, with what was kept on disk."""
        config = config_from_string(self.text)
        self.registry = DeviceRegistry(config, self.clock)
        self.hub = FakeHub()
        self.manager = LoadManager(
            config, self.registry, self.clock, lambda name, enabled: None,
            save_state=lambda name, state: self.kept.__setitem__(name, dict(state)),
        )
        self.manager.connect_actuators({"ocpp": ChargingProfileActuator(self.hub, self.clock)})
        self.manager.restore_state(self.kept)

    def deliver(self, name, action, payload, result):
        call, answer = Call("1", action, payload), CallResult("1", result)
        for observer in (self.registry, self.manager):
            observer.exchange(f"CB-{name}", call, answer)
        self.clock.advance(0)

    def report(self, name, message):
        """The wallbox sends what it was asked for (TriggerMessage)."""
        box = self.boxes[name]
        if f"CB-{name}" not in self.hub.sessions:
            return
        if message == "StatusNotification":
            self.deliver(name, "StatusNotification", self.status(box), {})
        elif message == "MeterValues":
            self.deliver(name, "MeterValues", self.meter_values(box), {})

    @staticmethod
    def status(box):
        status = "Available" if box.transaction is None else "Charging"
        return {"connectorId": 1, "errorCode": "NoError", "status": status}

    @staticmethod
    def meter_values(box):
        amps = box.per_phase(box.profiles)
        drawn = [amps if phase in box.phases() else 0.0 for phase in ("L1", "L2", "L3")]
        return {"connectorId": 1, "meterValue": [{"timestamp": "t", "sampledValue": [
            {"measurand": "Current.Import", "phase": phase, "unit": "A", "value": f"{a:.1f}"}
            for phase, a in zip(("L1", "L2", "L3"), drawn)
        ]}]}

    def connect(self, name, boot):
        cbid = f"CB-{name}"
        self.hub.sessions[cbid] = FakeSession(self, self.boxes[name])
        for observer in (self.registry, self.manager):
            observer.connected(cbid, "peer", None)
        self.clock.advance(0)
        if boot:
            self.deliver(name, "BootNotification", {"chargePointVendor": "v", "chargePointModel": "m"},
                         {"status": "Accepted", "currentTime": "t", "interval": 300})

    # -- rules -----------------------------------------------------------------

    @precondition(lambda self: any(b.pending for b in self.boxes.values()))
    @rule(data=st.data())
    def answer(self, data):
        """A wallbox answers its oldest SetChargingProfile: as its kind
        does, or not at all (applied or not)."""
        name = data.draw(st.sampled_from(sorted(n for n, b in self.boxes.items() if b.pending)))
        box = self.boxes[name]
        payload, d = box.pending.pop(0)
        how = data.draw(st.sampled_from(["answer", "answer", "answer", "timeout-applied", "timeout-not"]))
        if how == "answer":
            if box.takes(payload):
                box.apply(payload)
                d.callback({"status": "Accepted"})
            else:
                d.callback({"status": "Rejected"})
        else:
            if how == "timeout-applied" and box.takes(payload):
                box.apply(payload)
            d.errback(defer.TimeoutError("no answer"))
        self.clock.advance(0)

    @rule(name=names, phases=st.sampled_from([1, 3]))
    def start(self, name, phases):
        """A car plugs in and its transaction starts."""
        box = self.boxes[name]
        if f"CB-{name}" not in self.hub.sessions or box.transaction is not None:
            return
        self.transactions += 1
        box.transaction = self.transactions
        box.car_phases = phases
        device = self.registry.get(name)
        before, counted = box.may_draw(), self.manager.exposure(device)
        self.deliver(name, "StartTransaction",
                     {"connectorId": 1, "idTag": "T", "meterStart": 0, "timestamp": "t"},
                     {"transactionId": box.transaction, "idTagInfo": {"status": "Accepted"}})
        self.deliver(name, "StatusNotification", self.status(box), {})
        if before > counted + SLACK:
            # The car draws what the wallbox holds before the manager hears
            # of it (no limit held, or one sent for three phases).
            self.widened.add(name)

    @rule(name=names)
    def stop(self, name):
        box = self.boxes[name]
        if f"CB-{name}" not in self.hub.sessions or box.transaction is None:
            return
        transaction = box.transaction
        box.end_transaction()
        self.deliver(name, "StopTransaction", {"transactionId": transaction, "meterStop": 5, "timestamp": "t"}, {})
        self.deliver(name, "StatusNotification", self.status(box), {})

    @rule(name=names)
    def meter_report(self, name):
        box = self.boxes[name]
        if f"CB-{name}" in self.hub.sessions and box.transaction is not None:
            self.deliver(name, "MeterValues", self.meter_values(box), {})

    @rule(name=names)
    def disconnect(self, name):
        cbid = f"CB-{name}"
        if cbid not in self.hub.sessions:
            return
        self.drop_calls(self.boxes[name], applied=False)
        del self.hub.sessions[cbid]
        for observer in (self.registry, self.manager):
            observer.disconnected(cbid)
        self.clock.advance(0)

    def drop_calls(self, box, applied):
        for payload, d in box.pending:
            if applied and box.takes(payload):
                box.apply(payload)
            d.errback(PeerGone(box.name))
        box.pending = []

    @rule(name=names, boot=st.booleans())
    def reconnect(self, name, boot):
        if f"CB-{name}" not in self.hub.sessions:
            self.connect(name, boot)

    @rule(applied=st.booleans())
    def restart(self, applied):
        """The daemon restarts: every connection goes, a profile in flight
        may or may not have been taken, and the new daemon starts with what
        the old one kept on disk. The wallboxes and their cars go on."""
        self.manager.stop()
        for box in self.boxes.values():
            for payload, _ in box.pending:
                if applied and box.takes(payload):
                    box.apply(payload)
            box.pending = []
        self.start_daemon()

    @rule(seconds=st.sampled_from([0.5, STATE_WAIT, BOOT_GRACE, RAISE_INTERVAL, RETRY_DELAY]))
    def wait(self, seconds):
        self.clock.advance(seconds)

    @rule()
    def everything_answered(self):
        """Every wallbox answers everything as its kind does and reports
        its car: then the cars draw within the site limit, each within what
        its device is counted for."""
        for name in NAMES:
            if f"CB-{name}" not in self.hub.sessions:
                self.connect(name, boot=False)
        for _ in range(12):
            self.answer_all()
            for name in NAMES:
                self.meter_report(name)
            self.clock.advance(RETRY_DELAY / 4)
        self.answer_all()
        self.widened.clear()
        self.check_physics(allow_widened=False)
        for name, box in self.boxes.items():
            if box.car_phases is None or box.runs_free():
                continue
            # The manager knows what each car may draw: no more (the fuse),
            # and no less (a car that charged goes on charging at what it
            # is counted for, also after a restart).
            counted = min(self.manager.exposure(self.registry.get(name)), CAR_MAX)
            assert abs(box.per_phase(box.profiles) - counted) <= 0.15, (name, self.describe())

    def answer_all(self):
        """Every wallbox answers what it was sent, as its kind does."""
        for box in self.boxes.values():
            while box.pending:
                payload, d = box.pending.pop(0)
                if box.takes(payload):
                    box.apply(payload)
                    d.callback({"status": "Accepted"})
                else:
                    d.callback({"status": "Rejected"})
                self.clock.advance(0)

    # -- invariants ------------------------------------------------------------

    @invariant()
    def within_the_fuse(self):
        """On every phase, what the cars may draw is within the site limit,
        and each device is counted for at least what its car may draw,
        unless a car started drawing before the manager could know."""
        if hasattr(self, "boxes"):
            self.check_physics(allow_widened=True)

    def check_physics(self, allow_widened):
        """Check both invariants; a window that was allowed closes once
        nothing is over or counted short any more."""
        counted_short = []
        for name, box in self.boxes.items():
            device = self.registry.get(name)
            drawn = box.may_draw()
            if drawn > self.manager.exposure(device) + SLACK:
                counted_short.append((name, drawn, self.manager.exposure(device)))
        over = []
        for phase in ("L1", "L2", "L3"):
            on_phase = [b for b in self.boxes.values() if phase in b.phases()]
            limited = [b for b in on_phase if not b.runs_free()]
            if allow_widened:
                # A wallbox that charges without any limit of the manager's
                # may draw its maximum until it takes one, which no manager
                # can prevent (it is counted so, checked above); the others
                # keep within the fuse meanwhile.
                total = sum(b.may_draw() for b in limited)
                if total > self.site_limit + SLACK:
                    over.append((phase, total))
                continue
            total = sum(b.may_draw() for b in on_phase)
            # Once everything is answered, one that refuses every limit
            # still runs free: then the others on its phase draw nothing.
            if total > self.site_limit + SLACK and any(b.may_draw() > 0 for b in limited):
                over.append((phase, total))
        if not over and not counted_short:
            self.widened.clear()
        if allow_widened and self.widened:
            return
        assert counted_short == [], (counted_short, self.describe())
        assert over == [], (over, self.describe())

    def describe(self):
        return {
            name: (box.kind_name, box.transaction, box.car_phases, box.may_draw(),
                   self.registry.get(name).accepted_limit, self.registry.get(name).phases)
            for name, box in self.boxes.items()
        }

    @invariant()
    def nothing_failed(self):
        """The manager logged no failure (it catches what raises)."""
        if hasattr(self, "log"):
            from twisted.logger import LogLevel
            assert [line for line, failure in self.log.lines(LogLevel.critical)] == []


# STRATEGY_MACHINE_EXAMPLES=10000 (or more) runs it longer, e.g. after a
# change to how limits are sent.
StrategyFuseMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("STRATEGY_MACHINE_EXAMPLES", "300")),
    stateful_step_count=50,
    deadline=None,
)
test_strategy_fuse_machine = StrategyFuseMachine.TestCase
