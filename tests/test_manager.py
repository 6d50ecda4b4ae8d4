"""The load manager: default profiles, grants, ordering of limit changes,
refusals, deactivation, observe mode, and the fuse invariant."""

import json
import os
from decimal import Decimal

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from twisted.internet import defer, task
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from zope.interface import implementer

from cfosproxy.config import config_from_string
from cfosproxy.core.devices import DeviceRegistry
from cfosproxy.site.manager import (
    BOOT_GRACE,
    FAILURE_REMINDER,
    RECALCULATION_RETRY,
    RETRY_DELAY,
    LoadManager,
)
from cfosproxy.site.volume import MIN_STEP, RAISE_INTERVAL
from cfosproxy.ocpp.frames import Call, CallResult
from cfosproxy.core.errors import CallTimeout, LimitRefused, PeerGone
from cfosproxy.core.interfaces import ILimitActuator
from cfosproxy.site.circuits import share_circuits
from cfosproxy.site.sharing import Request, share, to_deciamps


@implementer(ILimitActuator)
class FakeWallboxes:
    """Plays the wallboxes: limits wait until the test accepts, refuses or
    times them out; C{applied} is what each wallbox really holds (absent:
    no profile, so it may draw its maximum while it charges).

    With C{check_raises}, every limit sent that raises what a wallbox may
    draw is checked against the fuse at that moment, unless another wallbox
    runs free (holds no profile of the manager's while it charges: it was
    deactivated with lift_limit and enabled again). Such a wallbox may draw
    anything until it accepts a profile, which no manager can prevent; the
    guarantee holds from then on. While the site's sharing is broken, every
    limit sent is checked to be no higher than the one the wallbox holds.

    C{broken} holds the names of wallboxes whose C{set_limit} raises (a
    device the actuator chokes on) instead of returning a Deferred."""

    def __init__(self):
        self.broken = set()
        self.violations = []
        self.sent = []
        self.pending = {}
        self.applied = {}
        self.lifted = []
        self.site = None
        # The reactor's turn ending, after each answer (the manager shares
        # again then); the Site sets it.
        self.turn = lambda: None

    def prepare(self, device):
        """Nothing to learn of a fake wallbox: its limit goes at once."""
        return defer.succeed(False)

    def set_limit(self, device, amps):
        if device.name in self.broken:
            raise RuntimeError("no way to send a limit to {}".format(device.name))
        if self.site is not None:
            self._check(device, amps)
        d = defer.Deferred()
        self.sent.append((device.name, amps))
        self.pending[device.name] = (amps, d)
        return d

    def _check(self, device, amps):
        """Record a limit that breaks the rules, and raise. The manager
        catches what an actuator raises (one wallbox must not stop the
        others), so tests look at C{violations}, not at the exception."""
        problem = None
        held = device.accepted_limit or 0.0
        if self.site.sharing_broken and amps > held:
            problem = "raised {} from {} to {} A while sharing failed".format(
                device.name, held, amps
            )
        elif amps > self.site.drawable(device.name) and not self.site.free_names(
            other_than=device.name
        ):
            for limit in self.site.limits_of(device.name):
                others = self.site.drawn_on(limit, but=device.name)
                if others + to_deciamps(amps) > self.site.available(limit):
                    problem = "raised {} to {} A while the others may draw {} A on {}".format(
                        device.name, amps, others / 10, limit
                    )
                    break
        if problem is not None:
            self.violations.append(problem)
            raise AssertionError(problem)

    def lift(self, device):
        self.lifted.append(device.name)
        self.applied.pop(device.name, None)
        return defer.succeed({"status": "Accepted"})

    def accept(self, name):
        amps, d = self.pending.pop(name)
        self.applied[name] = amps
        d.callback({"status": "Accepted"})
        self.turn()

    def refuse(self, name):
        _, d = self.pending.pop(name)
        d.errback(LimitRefused("SetChargingProfile answered Rejected"))
        self.turn()

    def time_out(self, name, applied):
        amps, d = self.pending.pop(name)
        if applied:
            self.applied[name] = amps
        d.errback(CallTimeout("SetChargingProfile"))
        self.turn()

    def drop(self, name):
        _, d = self.pending.pop(name)
        d.errback(PeerGone(name))
        self.turn()


def config_text(site=20, devices=("A", "B", "C"), lo=6, hi=16, extra=""):
    text = "[manager]\nmax_current = {}\n{}".format(site, extra)
    for name in devices:
        text += "[wallbox:{0}]\ntype = ocpp\naddress = CB-{0}\nmin_current = {1}\nmax_current = {2}\n".format(name, lo, hi)
    return text


class Site:
    """A registry, a manager and fake wallboxes wired as the daemon does."""

    def __init__(self, text, check_raises=False):
        self.clock = task.Clock()
        self.clock.advance(1_700_000_000)
        config = config_from_string(text)
        self.site_limit = config.manager.max_current
        self.config = config
        self.lift_on_deactivate = config.manager.on_deactivate == "lift_limit"
        self.registry = DeviceRegistry(config, self.clock)
        self.wallboxes = FakeWallboxes()
        self.saved = {}
        # "raises": every pass of sharing raises; "decimals": sharing hands
        # out Decimals, which sending cannot count with floats.
        self.sharing_broken = False
        self.manager = LoadManager(
            config, self.registry, self.clock,
            lambda name, enabled: self.saved.__setitem__(name, enabled),
            sharing=self._share,
        )
        self.manager.connect_actuators({"ocpp": self.wallboxes})
        self.wallboxes.turn = lambda: self.clock.advance(0)
        if check_raises:
            self.wallboxes.site = self

    def _share(self, site, circuits, demands, max_imbalance):
        if self.sharing_broken == "decimals":
            return {
                name: Decimal(str(amps))
                for name, amps in share_circuits(site, circuits, demands, max_imbalance).items()
            }
        if self.sharing_broken:
            raise ZeroDivisionError("sharing is broken")
        return share_circuits(site, circuits, demands, max_imbalance)

    def device(self, name):
        return self.registry.get(name)

    def connect(self, name, boot=True):
        cbid = self.device(name).address
        for observer in (self.registry, self.manager):
            observer.connected(cbid, "peer", None)
        self.clock.advance(0)
        if boot:
            self.deliver(name, "BootNotification", {"chargePointVendor": "v", "chargePointModel": "m"}, {"status": "Accepted", "currentTime": "t", "interval": 300})

    def disconnect(self, name):
        cbid = self.device(name).address
        if name in self.wallboxes.pending:
            self.wallboxes.drop(name)
        for observer in (self.registry, self.manager):
            observer.disconnected(cbid)
        self.clock.advance(0)

    def deliver(self, name, action, payload, result):
        cbid = self.device(name).address
        call, answer = Call("1", action, payload), CallResult("1", result)
        for observer in (self.registry, self.manager):
            observer.exchange(cbid, call, answer)
        self.clock.advance(0)

    def start(self, name):
        self.deliver(name, "StartTransaction", {"connectorId": 1, "idTag": "T", "meterStart": 0, "timestamp": "t"}, {"transactionId": 1, "idTagInfo": {"status": "Accepted"}})
        self.deliver(name, "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "SuspendedEVSE"}, {})

    def stop(self, name):
        self.deliver(name, "StopTransaction", {"transactionId": 1, "meterStop": 5, "timestamp": "t"}, {})
        self.deliver(name, "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Finishing"}, {})

    def settle(self):
        """Accept every limit in flight until none is left; no limit sent
        on the way broke the rules (see L{FakeWallboxes._check})."""
        while self.wallboxes.pending:
            self.wallboxes.accept(next(iter(self.wallboxes.pending)))
        assert self.wallboxes.violations == []

    def managed_names(self):
        """Devices inside load management (deactivated with lift_limit are
        outside it, by the operator's choice)."""
        return [
            d.name for d in self.registry
            if d.enabled or not self.lift_on_deactivate
        ]

    def free_names(self, other_than=None):
        """Managed wallboxes that charge without a profile of the manager's."""
        return [
            n for n in self.managed_names()
            if n != other_than
            and self.wallboxes.applied.get(n) is None
            and self.device(n).wants_current
        ]

    def limits_of(self, name):
        """The limits (circuit or None for the site, phase index) the
        device is counted on: the phases the manager counts it on, in its
        circuit and every one above it, worked out from the configuration
        (not from the manager)."""
        device = self.device(name)
        parents = {c.name: c.parent for c in self.config.circuits}
        path, circuit = [None], device.config.circuit
        while circuit:
            path.append(circuit)
            circuit = parents[circuit]
        return [(node, int(p[1]) - 1) for node in path for p in device.phases]

    def available(self, limit):
        """Deci-amperes available on a limit: from the configuration, or
        where a meter measures it, what the manager makes of the meter
        (which the meter machine checks against the readings)."""
        circuit, _ = limit
        if circuit is None:
            metered, fuse = self.config.manager.meter, self.site_limit
        else:
            metered, fuse = self.config.circuit(circuit).meter, self.config.circuit(circuit).max_current
        if metered:
            return self.manager.available()[limit]
        return to_deciamps(fuse)

    def drawn_on(self, limit, but=None):
        """Deci-amperes the managed wallboxes (but C{but}) may draw on a
        limit (L{drawable}), each on the limits it is counted on."""
        return sum(
            to_deciamps(self.drawable(n))
            for n in self.managed_names()
            if n != but and limit in self.limits_of(n)
        )

    def over_limits(self, exclude=()):
        """The limits on which the managed wallboxes (but C{exclude}) may
        draw more than is available."""
        limits = {(None, p) for p in range(3)}
        limits |= {(c.name, p) for c in self.config.circuits for p in range(3)}
        return sorted(
            (limit for limit in limits
             if sum(to_deciamps(self.drawable(n)) for n in self.managed_names()
                    if n not in exclude and limit in self.limits_of(n)) > self.available(limit)),
            key=str,
        )

    def drawable(self, name):
        """Amperes a wallbox may really draw: the limit it holds, or the one
        in flight if higher (it may apply it any moment); with no profile,
        its maximum while it charges."""
        device = self.device(name)
        held = self.wallboxes.applied.get(name)
        if held is None:
            held = device.config.max_current if device.wants_current else 0.0
        flying = self.wallboxes.pending.get(name, (0.0, None))[0]
        return max(held, flying)


def test_boot_sends_zero_default_profile():
    """After BootNotification every device gets a 0 A limit: no charging
    until current is granted."""
    site = Site(config_text())
    site.connect("A")
    assert site.wallboxes.sent == [("A", 0.0)]


def test_reconnect_without_boot_gets_default_after_grace():
    """A wallbox that reconnects without a BootNotification gets its
    default profile after BOOT_GRACE seconds."""
    site = Site(config_text())
    site.connect("A", boot=False)
    assert site.wallboxes.sent == []
    site.clock.advance(BOOT_GRACE)
    assert site.wallboxes.sent == [("A", 0.0)]


def test_start_transaction_grants_current():
    """StartTransaction raises the limit to the grant, at most max_current."""
    site = Site(config_text(site=32))
    site.connect("A")
    site.settle()
    site.start("A")
    assert site.wallboxes.sent[-1] == ("A", 16.0)
    site.settle()
    assert site.device("A").as_json()["accepted_limit"] == 16.0
    site.stop("A")
    assert site.wallboxes.sent[-1] == ("A", 0.0)


def test_lower_first_then_raise():
    """A second device starting: the first is lowered to 10 A, and the
    second is raised only after the first accepted."""
    site = Site(config_text(site=20))
    site.connect("A")
    site.connect("B")
    site.settle()
    site.start("A")
    site.settle()
    site.start("B")
    assert site.wallboxes.sent[-1] == ("A", 10.0)
    assert "B" not in site.wallboxes.pending, "raised B before A was lowered"
    site.wallboxes.accept("A")
    assert site.wallboxes.sent[-1] == ("B", 10.0)


def test_refused_limit_is_reported_and_retried():
    """A wallbox that refuses a profile: the error shows in the API, the
    grant is not counted on, and the limit is tried again later."""
    site = Site(config_text(site=20))
    site.connect("A")
    site.settle()
    site.start("A")
    site.wallboxes.refuse("A")
    state = site.device("A").as_json()
    assert "Rejected" in state["profile_error"]
    assert state["accepted_limit"] == 0.0
    count = len(site.wallboxes.sent)
    site.clock.advance(RETRY_DELAY)
    assert site.wallboxes.sent[count:] == [("A", 16.0)]


def test_unanswered_raise_counts_as_applied():
    """A raise that was not answered counts as if applied (worst case), so
    another device is not raised into it."""
    site = Site(config_text(site=20))
    site.connect("A")
    site.connect("B")
    site.settle()
    site.start("A")
    site.wallboxes.time_out("A", applied=True)
    site.start("B")
    # A may hold 16 A: B (target 10) must wait for A to accept 10 first.
    assert site.wallboxes.sent[-1] == ("A", 10.0)
    assert "B" not in site.wallboxes.pending


def test_disconnected_device_keeps_its_reservation():
    """A charging wallbox that disconnects still holds its limit and may
    draw it: its grant is shared out, but nobody is raised into its
    current until it is back and has accepted a lower limit."""
    site = Site(config_text(site=20))
    for name in ("A", "B"):
        site.connect(name)
    site.settle()
    site.start("A")
    site.start("B")
    site.settle()
    site.disconnect("A")
    assert site.device("B").grant == 16.0
    assert "B" not in site.wallboxes.pending
    # A is back; its car left while it was offline.
    site.connect("A")
    site.deliver("A", "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Available"}, {})
    while "A" in site.wallboxes.pending:
        assert "B" not in site.wallboxes.pending
        site.wallboxes.accept("A")
    assert site.wallboxes.applied["A"] == 0.0
    # B had its first grant (16 A) and was lowered to 10 A moments ago: its
    # raise waits until RAISE_INTERVAL after that first grant.
    assert site.wallboxes.sent[-1] == ("A", 0.0)
    site.clock.advance(RAISE_INTERVAL)
    assert site.wallboxes.sent[-1] == ("B", 16.0)


def test_disable_with_lift_limit_clears_and_frees_current():
    """Deactivating with lift_limit clears the manager's profiles, gives no
    grant, and the flag is saved; enabling brings the limit back."""
    site = Site(config_text(site=20))
    site.connect("A")
    site.connect("B")
    site.settle()
    site.start("A")
    site.start("B")
    site.settle()
    d = site.manager.set_enabled("A", False)
    assert site.wallboxes.lifted == ["A"]
    assert site.saved == {"A": False}
    assert d.result.as_json()["enabled"] is False
    assert site.device("A").grant == 0
    # A's 10 A counted until the lift was done; at the end of the
    # reactor's turn B may have them.
    assert site.device("B").pending_limit is None
    site.clock.advance(RAISE_INTERVAL)
    site.settle()
    assert site.device("B").accepted_limit == 16.0
    site.manager.set_enabled("A", True)
    assert site.saved == {"A": True}
    # A holds no profile after the lift, so it may draw its maximum: with
    # B at 16 A that is over the fuse. A, which came last, is stopped at
    # once, and B goes down to its new share (not to 0: once A has taken
    # its 0 A, B's share fits) ...
    assert sorted(site.wallboxes.sent[-2:]) == [("A", 0.0), ("B", 10.0)]
    site.settle()
    # ... and A then has the first grant of its charging.
    assert site.device("A").accepted_limit == site.device("B").accepted_limit == 10.0


def test_disable_with_keep_limit_sends_nothing():
    """With keep_limit deactivation leaves the wallbox's profile alone, and
    its limit still counts against the site."""
    site = Site(config_text(site=20, extra="on_deactivate = keep_limit\n"))
    site.connect("A")
    site.connect("B")
    site.settle()
    site.start("A")
    site.settle()
    sent = list(site.wallboxes.sent)
    site.manager.set_enabled("A", False)
    assert site.wallboxes.lifted == [] and site.wallboxes.sent == sent
    site.start("B")
    site.settle()
    assert site.device("B").grant == 16.0
    assert site.device("B").accepted_limit == 0.0, "raised B into A's kept 16 A"


def test_observe_mode_sends_nothing():
    """mode = observe: grants are computed and shown, nothing is sent."""
    site = Site(config_text(site=20, extra="mode = observe\n"))
    site.connect("A")
    site.start("A")
    site.manager.set_enabled("A", False)
    site.manager.set_enabled("A", True)
    assert site.wallboxes.sent == [] and site.wallboxes.lifted == []
    assert site.device("A").grant == 16.0


def test_restore_enabled_flags():
    """Flags kept on disk override the configuration at start."""
    site = Site(config_text())
    site.manager.restore_enabled({"B": False, "gone": True})
    assert site.device("B").as_json()["enabled"] is False
    site.connect("B")
    site.start("B")
    assert site.device("B").grant == 0


def test_unknown_device_cannot_be_enabled():
    """set_enabled on a name that is not a managed device raises KeyError."""
    site = Site(config_text())
    try:
        site.manager.set_enabled("nope", False)
    except KeyError:
        pass
    else:
        raise AssertionError("no KeyError")


def test_stop_cancels_timers():
    """stop() leaves no timer behind."""
    site = Site(config_text())
    site.connect("A", boot=False)
    site.manager.stop()
    assert site.clock.getDelayedCalls() == []


def test_a_lost_limit_does_not_lower_a_wallbox_without_profile():
    """A limit lost with the connection counts as possibly taken only if
    it raises what the wallbox is counted for: a wallbox whose profiles were
    lifted may draw its maximum, and the lost lower limit must not let the
    manager hand that current to another wallbox (found by FuseMachine)."""
    site = Site(config_text(site=16, devices=("A", "C")))
    site.connect("A")
    site.connect("C")
    site.settle()
    site.start("C")
    site.settle()
    site.start("A")
    assert site.wallboxes.pending["C"][0] == 8.0
    # While C's 8 A is in flight its limits are lifted: it holds no profile.
    site.manager.set_enabled("C", False)
    site.manager.set_enabled("C", True)
    site.disconnect("C")
    site.settle()
    assert site.drawable("C") == 16.0
    assert site.manager.exposure(site.device("C")) == 16.0
    assert site.device("A").accepted_limit == 0.0


def test_a_limit_taken_after_the_lift_is_lifted_again():
    """A limit in flight when a wallbox is deactivated with lift_limit, and
    taken after the lift, is cleared again: the wallbox runs without the
    manager, as the operator chose (found by FuseMachine)."""
    site = Site(config_text(site=6))
    for name in ("A", "B"):
        site.connect(name)
    site.settle()
    site.start("B")
    assert site.wallboxes.pending["B"][0] == 6.0
    site.manager.set_enabled("B", False)
    assert site.wallboxes.lifted == ["B"]
    site.wallboxes.accept("B")
    assert site.wallboxes.lifted == ["B", "B"]
    assert "B" not in site.wallboxes.applied
    assert site.device("B").accepted_limit is None


def test_a_limit_that_may_have_come_after_a_lift_counts_for_the_maximum():
    """A wallbox without profile that may have taken a limit after all (no
    answer) counts for the higher of that limit and its maximum until it
    answers a later one: no other wallbox is raised into that current
    (found by FuseMachine)."""
    site = Site(config_text(site=6), check_raises=True)
    for name in ("A", "B", "C"):
        site.connect(name)
    site.settle()
    site.start("B")
    site.stop("B")
    # B's 6 A is still in flight when its profiles are lifted.
    site.manager.set_enabled("B", False)
    site.manager.set_enabled("B", True)
    site.wallboxes.time_out("B", applied=True)
    assert site.manager.exposure(site.device("B")) == 16.0
    site.start("C")
    assert site.wallboxes.pending["B"][0] == 0.0
    assert "C" not in site.wallboxes.pending
    site.settle()
    assert site.device("B").accepted_limit == 0.0
    assert site.device("C").accepted_limit == 6.0


def test_an_offline_wallbox_counts_until_its_limits_are_lifted():
    """A wallbox deactivated with lift_limit while offline still holds the
    manager's limit: it counts until the lift reaches it, so that its
    current is not handed on and then counted twice should it be enabled
    again before it reconnects (found by FuseMachine)."""
    site = Site(config_text(site=6, devices=("A", "C")), check_raises=True)
    site.connect("A")
    site.connect("C")
    site.settle()
    site.start("A")
    site.settle()
    site.disconnect("A")
    site.start("C")
    site.manager.set_enabled("A", False)
    site.clock.advance(0)
    site.settle()
    assert site.wallboxes.lifted == []
    assert site.manager.exposure(site.device("A")) == 6.0
    assert site.device("C").accepted_limit == 0.0
    site.connect("A")
    site.settle()
    site.clock.advance(0)
    site.settle()
    assert site.wallboxes.lifted == ["A"]
    assert site.manager.exposure(site.device("A")) == 0.0
    assert site.device("C").accepted_limit == 6.0


class CapturedLog:
    """What the daemon logs while the block runs, as an operator reads it."""

    def __enter__(self):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        return self

    def __exit__(self, *exc_info):
        globalLogPublisher.removeObserver(self.events.append)

    def lines(self, min_level=LogLevel.debug):
        return [
            (formatEvent(e), e.get("log_failure"))
            for e in self.events
            if e.get("log_namespace", "").startswith("cfosproxy.site.")
            and e["log_level"] >= min_level
        ]


GARAGE = """
[server]
accept_unknown = yes
[manager]
max_current = 16
[wallbox:garage-1]
type = ocpp
address = CB-0001
[wallbox:garage-2]
type = ocpp
address = CB-0002
"""


def test_an_unknown_wallbox_named_like_a_device_does_not_stop_load_management():
    """An unknown wallbox connecting as "garage-1" (the name of the device
    whose ChargeBox-ID is CB-0001), and one more unknown wallbox after it,
    change nothing for the configured devices: when garage-1 stops, its
    limit goes back to 0 A, and garage-2, which starts then, gets the site's
    16 A; the status API shows the grants of both."""
    site = Site(GARAGE)
    site.connect("garage-1")
    site.connect("garage-2")
    site.settle()
    site.start("garage-1")
    site.settle()
    assert site.wallboxes.applied["garage-1"] == 16.0
    for cbid in ("garage-1", "CB-X"):
        for observer in (site.registry, site.manager):
            observer.connected(cbid, "peer", None)
        site.clock.advance(BOOT_GRACE)
    site.stop("garage-1")
    site.start("garage-2")
    site.settle()
    assert site.wallboxes.applied == {"garage-1": 0.0, "garage-2": 16.0}
    shown = {d["name"]: d for d in (device.as_json() for device in site.registry)}
    assert shown["garage-1"]["granted_current"] == 0.0
    assert shown["garage-2"]["granted_current"] == 16.0
    assert shown["unknown:garage-1:1"]["configured"] is False


def charging_pair(text=None):
    """A and B charging at 10 A each on a 20 A site, C connected and idle;
    their first grants are older than RAISE_INTERVAL, so either may be
    raised at once."""
    site = Site(text or config_text(site=20), check_raises=True)
    for name in ("A", "B", "C"):
        site.connect(name)
    site.settle()
    site.start("A")
    site.start("B")
    site.settle()
    assert site.wallboxes.applied == {"A": 10.0, "B": 10.0, "C": 0.0}
    site.clock.advance(RAISE_INTERVAL)
    return site


def test_a_failing_recalculation_holds_the_limits_and_recovers():
    """While sharing the site current raises, no wallbox is raised (C, which
    starts, waits; A, which stops, keeps its 10 A), the failure is logged
    once with its traceback however often it recurs, and load management
    goes on by itself once sharing works again: at the next retry C gets
    A's current, and the log says that it works again."""
    site = charging_pair()
    sent = len(site.wallboxes.sent)
    with CapturedLog() as log:
        site.sharing_broken = True
        site.start("C")
        site.stop("A")
        site.clock.advance(RECALCULATION_RETRY)
        site.clock.advance(RECALCULATION_RETRY)
        assert site.wallboxes.sent[sent:] == []
        assert site.wallboxes.applied == {"A": 10.0, "B": 10.0, "C": 0.0}
        assert [d.grant for d in map(site.device, "ABC")] == [10.0, 10.0, 0.0]
        failures = [(line, f) for line, f in log.lines(LogLevel.warn)]
        assert len(failures) == 1
        line, failure = failures[0]
        assert "Sharing the site current failed" in line
        assert failure is not None and "sharing is broken" in failure.getTraceback()
        site.sharing_broken = False
        site.clock.advance(RECALCULATION_RETRY)
        site.settle()
        assert site.wallboxes.applied == {"A": 0.0, "B": 10.0, "C": 10.0}
        assert any("works again" in line for line, _ in log.lines(LogLevel.info))


def test_a_failure_that_stays_or_recurs_is_not_logged_every_time():
    """A failure that stays is said again in one line (no traceback) every
    FAILURE_REMINDER seconds, not at every retry; one that comes and goes
    many times within that while is logged once, and so is its end."""
    site = charging_pair()
    with CapturedLog() as log:
        site.sharing_broken = True
        site.stop("A")
        for _ in range(int(FAILURE_REMINDER / RECALCULATION_RETRY)):
            site.clock.advance(RECALCULATION_RETRY)
        problems = log.lines(LogLevel.warn)
        assert len(problems) == 2
        assert problems[0][1] is not None
        assert problems[1][1] is None and "again" in problems[1][0]
    with CapturedLog() as log:
        for _ in range(20):
            site.sharing_broken = False
            site.clock.advance(RECALCULATION_RETRY)
            site.sharing_broken = True
            site.deliver("B", "Heartbeat", {}, {"currentTime": "t"})
        site.sharing_broken = False
        site.clock.advance(RECALCULATION_RETRY)
        said = [line for line, _ in log.lines(LogLevel.info) if "Sharing" in line]
        assert len(said) == 1 and "works again" in said[0], said
    site.settle()
    assert site.wallboxes.applied == {"A": 0.0, "B": 16.0, "C": 0.0}


def test_the_next_event_retries_a_failed_recalculation():
    """A failed pass is tried again at the next event of a managed wallbox,
    not only on the timer: a Heartbeat after sharing works again is enough."""
    site = charging_pair()
    site.sharing_broken = True
    site.stop("A")
    site.sharing_broken = False
    site.deliver("A", "Heartbeat", {}, {"currentTime": "t"})
    site.settle()
    assert site.wallboxes.applied == {"A": 0.0, "B": 16.0, "C": 0.0}


def test_a_pass_that_fails_after_sharing_changes_no_grant():
    """A pass can fail after the shares are worked out (here sharing hands
    out Decimals, which the sending cannot count with floats): the grants
    the status API shows stay those of the last pass that worked, nothing
    goes up, and the next pass after the fault is gone shares again."""
    site = charging_pair()
    site.sharing_broken = "decimals"
    site.start("C")
    site.stop("A")
    site.settle()
    shown = [site.device(n).as_json() for n in "ABC"]
    json.dumps(shown)
    assert [d["granted_current"] for d in shown] == [10.0, 10.0, 0.0]
    assert site.wallboxes.applied == {"A": 10.0, "B": 10.0, "C": 0.0}
    site.sharing_broken = False
    site.clock.advance(RECALCULATION_RETRY)
    site.settle()
    assert site.wallboxes.applied == {"A": 0.0, "B": 10.0, "C": 10.0}


def test_a_refused_raise_is_not_retried_while_sharing_fails():
    """A raise that the wallbox refused is tried again later, but not while
    sharing fails: then no limit goes up, not even to a grant worked out
    before. Once sharing works again, the raise goes out."""
    site = Site(config_text(site=20), check_raises=True)
    for name in ("A", "B"):
        site.connect(name)
    site.settle()
    site.start("A")
    site.settle()
    site.start("B")
    site.wallboxes.accept("A")
    site.wallboxes.refuse("B")
    assert site.wallboxes.applied == {"A": 10.0, "B": 0.0}
    site.sharing_broken = True
    site.clock.advance(RETRY_DELAY)
    assert site.wallboxes.pending == {}
    site.sharing_broken = False
    site.clock.advance(RECALCULATION_RETRY)
    site.settle()
    assert site.wallboxes.applied == {"A": 10.0, "B": 10.0}


def test_a_failing_recalculation_still_lowers_what_the_fuse_needs():
    """With sharing broken, a wallbox that comes back into load management
    without a profile (deactivated with lift_limit, enabled again while it
    charges) may draw its 16 A: it is lowered for the fuse all the same,
    and nobody is raised, until sharing works again."""
    site = charging_pair()
    site.manager.set_enabled("A", False)
    site.clock.advance(0)
    site.settle()
    assert site.wallboxes.applied == {"B": 16.0, "C": 0.0}
    site.sharing_broken = True
    site.manager.set_enabled("A", True)
    # A, which came last, is stopped; with A at 0 A, B's 16 A fit.
    assert sorted(site.wallboxes.pending) == ["A"]
    assert site.wallboxes.pending["A"][0] == 0.0
    site.settle()
    site.clock.advance(RECALCULATION_RETRY)
    assert site.wallboxes.applied == {"A": 0.0, "B": 16.0, "C": 0.0}
    site.sharing_broken = False
    site.clock.advance(RECALCULATION_RETRY)
    site.settle()
    assert site.wallboxes.applied == {"A": 10.0, "B": 10.0, "C": 0.0}


def test_a_device_the_actuator_chokes_on_does_not_stop_the_others():
    """An actuator that raises for one wallbox (instead of answering with a
    Deferred) fails that one send, and the failure is logged once with its
    traceback. The others are still managed (B, which stops, is lowered).
    The failed raise of A to 16 A may have gone out before the actuator
    raised, so A counts for 16 A until it answers a later limit, and C,
    which starts, waits. The send is tried again later; once it goes out,
    A and C share the site."""
    site = charging_pair()
    site.wallboxes.broken.add("A")
    with CapturedLog() as log:
        site.stop("B")
        site.settle()
        site.start("C")
        site.settle()
        site.clock.advance(RETRY_DELAY)
        site.settle()
        assert site.wallboxes.applied == {"A": 10.0, "B": 0.0, "C": 0.0}
        assert "no way to send a limit" in site.device("A").as_json()["profile_error"]
        raised = log.lines(LogLevel.critical)
        assert len(raised) == 1 and "RuntimeError" in raised[0][1].getTraceback()
    site.wallboxes.broken.clear()
    site.clock.advance(RETRY_DELAY)
    site.settle()
    assert site.wallboxes.applied == {"A": 10.0, "B": 0.0, "C": 10.0}
    assert site.device("A").as_json()["profile_error"] is None


def assert_holds_what_it_may(site, device, devices):
    """Once everything is answered, C{device} holds what it may have: its
    grant, or a limit less than MIN_STEP from it that it kept (not worth a
    profile); or, where the manager's L{LoadManager.exposure} of the other
    C{devices} leaves it less room than its grant on some limit it is
    counted on, at most that room, and 0 when the room is below its
    minimum (a car does not charge below it)."""
    room = min(
        site.available(limit) - sum(
            to_deciamps(site.manager.exposure(d))
            for d in devices
            if d is not device and limit in site.limits_of(d.name)
        )
        for limit in site.limits_of(device.name)
    )
    held, grant = to_deciamps(device.accepted_limit), to_deciamps(device.grant)
    if grant <= room:
        assert abs(held - grant) < to_deciamps(MIN_STEP), (device.name, held, grant)
    elif room >= to_deciamps(device.config.min_current) and room > 0:
        assert held <= room and room - held < to_deciamps(MIN_STEP), (device.name, held, room)
    else:
        assert held == 0, (device.name, held, room)


class WallboxEvents(RuleBasedStateMachine):
    """What happens to wallboxes and to the manager's helpers, as rules of
    a fuse state machine over a L{Site} in C{self.site} with the wallboxes
    C{NAMES}: limits answered in every way, disconnects and reconnects,
    deactivation, time passing, sharing and an actuator that break."""

    NAMES = ("A", "B", "C")

    # What the machine breaks on purpose; the manager must log nothing else.
    EXPECTED_FAILURES = ("sharing is broken", "no way to send a limit")

    @invariant()
    def no_limit_broke_the_rules(self):
        """Every limit sent kept the fuses, and none went up while sharing
        failed; the manager logged no failure but those caused on purpose
        (it catches what raises, which must not hide a bug)."""
        if not hasattr(self, "site"):
            return
        assert self.site.wallboxes.violations == []
        for line, failure in self.log.lines(LogLevel.critical):
            assert failure is not None and any(
                text in failure.getErrorMessage() for text in self.EXPECTED_FAILURES
            ), line

    def pick(self, data):
        return data.draw(st.sampled_from(self.NAMES), label="wallbox")

    @precondition(lambda self: self.site.wallboxes.pending)
    @rule(data=st.data())
    def answer(self, data):
        name = data.draw(st.sampled_from(sorted(self.site.wallboxes.pending)))
        how = data.draw(st.sampled_from(["accept", "accept", "refuse", "timeout-applied", "timeout-not"]))
        if how == "accept":
            self.site.wallboxes.accept(name)
        elif how == "refuse":
            self.site.wallboxes.refuse(name)
        else:
            self.site.wallboxes.time_out(name, applied=how == "timeout-applied")

    @rule(data=st.data())
    def disconnect(self, data):
        name = self.pick(data)
        if self.site.device(name).connected:
            self.site.disconnect(name)

    @rule(data=st.data(), boot=st.booleans())
    def reconnect(self, data, boot):
        name = self.pick(data)
        if not self.site.device(name).connected:
            self.site.connect(name, boot=boot)

    @rule(data=st.data(), enabled=st.booleans())
    def toggle(self, data, enabled):
        self.site.manager.set_enabled(self.pick(data), enabled)

    @rule(seconds=st.sampled_from([1, BOOT_GRACE, RAISE_INTERVAL, RECALCULATION_RETRY, RETRY_DELAY]))
    def wait(self, seconds):
        self.site.clock.advance(seconds)

    @rule(broken=st.booleans())
    def break_sharing(self, broken):
        """From now on every pass of sharing raises (or works again)."""
        self.site.sharing_broken = broken

    @rule(data=st.data(), broken=st.booleans())
    def break_actuator(self, data, broken):
        """From now on sending a limit to this wallbox raises (or works)."""
        name = self.pick(data)
        if broken:
            self.site.wallboxes.broken.add(name)
        else:
            self.site.wallboxes.broken.discard(name)


class FuseMachine(WallboxEvents):
    """Random sequences of wallbox events. Every raise the manager sends is
    checked at that moment: with it, what the wallboxes may draw (what they
    hold or what is in flight, whichever is higher) stays within the site
    limit. And once every wallbox has answered, the site is within it.

    Sharing may break (every pass raises) and heal, and the actuator may
    choke on a wallbox: while sharing is broken no limit goes up, the fuse
    holds throughout, and once nothing is broken any more the manager has
    recovered: the grants are the site's share among the charging devices,
    and every wallbox it can reach holds the limit it may have."""

    names = st.sampled_from(["A", "B", "C"])

    @initialize(site_limit=st.sampled_from([0, 6, 10, 16, 20, 25, 32]))
    def setup(self, site_limit):
        self.log = CapturedLog().__enter__()
        self.site_limit = site_limit
        self.site = Site(config_text(site=site_limit), check_raises=True)
        for name in ("A", "B", "C"):
            self.site.connect(name)
        self.site.settle()

    @rule(name=names)
    def start(self, name):
        if self.site.device(name).connected:
            self.site.start(name)

    @rule(name=names)
    def stop(self, name):
        if self.site.device(name).connected:
            self.site.stop(name)

    @rule(heal=st.booleans())
    def everything_answered(self, heal):
        """Let every wallbox answer everything (boot grace and retries
        included): then the site is within its fuse. With C{heal}, nothing
        is broken any more from the start, and the manager has recovered."""
        if heal:
            self.site.sharing_broken = False
            self.site.wallboxes.broken.clear()
        self.site.clock.advance(BOOT_GRACE)
        for _ in range(10):
            self.site.settle()
            self.site.clock.advance(RETRY_DELAY)
        self.site.settle()
        # A wallbox that runs free and is offline, or that the actuator
        # chokes on, cannot be reached.
        unreachable = [
            n for n in self.site.free_names()
            if not self.site.device(n).connected or n in self.site.wallboxes.broken
        ]
        assert self.site.over_limits(exclude=unreachable) == []
        if heal:
            self.recovered()

    def recovered(self):
        """Grants are what sharing gives the charging devices (all alike,
        so the order they came in does not change the amounts), and every
        wallbox the manager can send to holds the limit it may have now."""
        devices = [self.site.device(n) for n in ("A", "B", "C")]
        charging = [d for d in devices if d.as_json()["charging"]]
        expected = share(self.site_limit, [Request(d.name, 6, 16) for d in charging])
        assert sorted(d.grant for d in charging) == sorted(expected.values())
        assert all(d.grant == 0 for d in devices if d not in charging)
        for device in devices:
            if device.connected and device.enabled:
                assert_holds_what_it_may(self.site, device, devices)

    def teardown(self):
        if hasattr(self, "log"):
            self.log.__exit__(None, None, None)

    @invariant()
    def grants_within_limits(self):
        grants = [self.site.device(n).grant for n in ("A", "B", "C")]
        assert sum(to_deciamps(g) for g in grants) <= to_deciamps(self.site_limit)
        assert all(g == 0 or 6 <= g <= 16 for g in grants)


# The fuse is what the manager is trusted with: each of the four bugs this
# machine found needed about ten steps in a particular order, and 300 runs
# of 40 steps found one of them only now and then. About 20 s of the suite.
# FUSE_MACHINE_EXAMPLES=20000 (or more) runs it longer, e.g. after a change
# to the manager or to sharing.
FuseMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("FUSE_MACHINE_EXAMPLES", "1500")),
    stateful_step_count=60,
    deadline=None,
)
test_fuse_machine = FuseMachine.TestCase


def test_reapply_resends_and_reports():
    """reapply sends the device's limit again even when the amperes did not
    change, and fires with True once the wallbox accepted that send (not an
    older one); an unreachable device answers False at once."""
    site = Site(config_text(site=32))
    site.connect("A")
    site.settle()
    site.start("A")
    # The raise to 16 A is in flight; reapply wants a send after it.
    d = site.manager.reapply("A")
    site.wallboxes.accept("A")
    assert not d.called
    assert site.wallboxes.sent[-1] == ("A", 16.0)
    site.wallboxes.accept("A")
    assert d.result is True
    site.disconnect("A")
    assert site.manager.reapply("A").result is False


def test_devices_are_managed_once_their_actuators_are_connected():
    """A manager steers no device before its actuators are connected, and
    once they are, the devices of their types: also when it was asked
    which devices it manages before."""
    clock = task.Clock()
    config = config_from_string(config_text(devices=("A", "B")))
    manager = LoadManager(config, DeviceRegistry(config, clock), clock, lambda name, enabled: None)
    assert manager.managed() == []
    manager.connect_actuators({"ocpp": FakeWallboxes()})
    assert [device.name for device in manager.managed()] == ["A", "B"]


def test_a_limit_below_an_unanswered_one_is_not_taken_for_a_lowering():
    """A wallbox without a profile that did not answer 9 A may hold 9 A
    or none (its maximum, 16 A): it counts for 16 A. A limit of 12.5 A is
    below that but may raise it from 9 A, so it goes out only when the
    others' exposure leaves room for it: while B may still draw 16 A on a
    25 A site, A gets no more than 9 A."""
    site = Site(config_text(site=25), check_raises=True)
    for name in "ABC":
        site.connect(name)
    site.settle()
    site.start("B")
    site.manager.set_enabled("A", False)
    site.sharing_broken = True
    site.start("A")
    site.manager.set_enabled("A", True)
    site.sharing_broken = False
    site.wallboxes.refuse("A")
    site.wallboxes.time_out("A", applied=True)
    site.wallboxes.accept("B")
    assert site.wallboxes.violations == []
    assert all(amps <= 9.0 for name, amps in site.wallboxes.sent if name == "A")
    site.settle()
    site.clock.advance(RETRY_DELAY)
    site.settle()
    assert site.wallboxes.violations == []
    assert site.wallboxes.applied["A"] == site.wallboxes.applied["B"] == 12.5
