"""The load manager: default profiles, grants, ordering of limit changes,
refusals, deactivation, observe mode, and the fuse invariant."""

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from twisted.internet import defer, task
from zope.interface import implementer

from cfosproxy.config import config_from_string
from cfosproxy.devices import DeviceRegistry
from cfosproxy.manager import BOOT_GRACE, RETRY_DELAY, ILimitActuator, LimitRefused, LoadManager
from cfosproxy.ocpp.frames import Call, CallResult
from cfosproxy.session import CallTimeout, SessionClosed
from cfosproxy.sharing import to_deciamps


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
    guarantee holds from then on."""

    def __init__(self):
        self.sent = []
        self.pending = {}
        self.applied = {}
        self.lifted = []
        self.site = None
        # The reactor's turn ending, after each answer (the manager shares
        # again then); the Site sets it.
        self.turn = lambda: None

    def set_limit(self, device, amps):
        if (
            self.site is not None
            and amps > self.site.drawable(device.name)
            and not self.site.free_names(other_than=device.name)
        ):
            others = sum(
                self.site.drawable(n) for n in self.site.managed_names() if n != device.name
            )
            assert to_deciamps(others) + to_deciamps(amps) <= to_deciamps(self.site.site_limit), (
                "raised {} to {} A while the others may draw {} A".format(device.name, amps, others)
            )
        d = defer.Deferred()
        self.sent.append((device.name, amps))
        self.pending[device.name] = (amps, d)
        return d

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
        d.errback(SessionClosed(name))
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
        self.lift_on_deactivate = config.manager.on_deactivate == "lift_limit"
        self.registry = DeviceRegistry(config, self.clock)
        self.wallboxes = FakeWallboxes()
        self.saved = {}
        self.manager = LoadManager(
            config, self.registry, {"ocpp": self.wallboxes}, self.clock,
            lambda name, enabled: self.saved.__setitem__(name, enabled),
        )
        self.wallboxes.turn = lambda: self.clock.advance(0)
        if check_raises:
            self.wallboxes.site = self

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
        """Accept every limit in flight until none is left."""
        while self.wallboxes.pending:
            self.wallboxes.accept(next(iter(self.wallboxes.pending)))

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
    site.clock.advance(0)
    site.settle()
    assert site.device("B").accepted_limit == 16.0
    site.manager.set_enabled("A", True)
    assert site.saved == {"A": True}
    # A holds no profile after the lift, so it may draw its maximum: with
    # B at 16 A that is over the fuse, so both are stopped at once ...
    assert sorted(site.wallboxes.sent[-2:]) == [("A", 0.0), ("B", 0.0)]
    site.settle()
    # ... and then share the site.
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


class FuseMachine(RuleBasedStateMachine):
    """Random sequences of wallbox events. Every raise the manager sends is
    checked at that moment: with it, what the wallboxes may draw (what they
    hold or what is in flight, whichever is higher) stays within the site
    limit. And once every wallbox has answered, the site is within it."""

    names = st.sampled_from(["A", "B", "C"])

    @initialize(site_limit=st.sampled_from([0, 6, 10, 16, 20, 25, 32]))
    def setup(self, site_limit):
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

    @rule(name=names)
    def disconnect(self, name):
        if self.site.device(name).connected:
            self.site.disconnect(name)

    @rule(name=names, boot=st.booleans())
    def reconnect(self, name, boot):
        if not self.site.device(name).connected:
            self.site.connect(name, boot=boot)

    @rule(name=names, enabled=st.booleans())
    def toggle(self, name, enabled):
        self.site.manager.set_enabled(name, enabled)

    @rule(seconds=st.sampled_from([1, BOOT_GRACE, RETRY_DELAY]))
    def wait(self, seconds):
        self.site.clock.advance(seconds)

    @rule()
    def everything_answered(self):
        """Let every wallbox answer everything (boot grace and retries
        included): then the site is within its fuse."""
        self.site.clock.advance(BOOT_GRACE)
        for _ in range(10):
            self.site.settle()
            self.site.clock.advance(RETRY_DELAY)
        self.site.settle()
        # A wallbox that runs free and is offline cannot be reached.
        unreachable = [n for n in self.site.free_names() if not self.site.device(n).connected]
        total = sum(
            to_deciamps(self.site.drawable(n))
            for n in self.site.managed_names()
            if n not in unreachable
        )
        assert total <= to_deciamps(self.site_limit)

    @invariant()
    def grants_within_limits(self):
        grants = [self.site.device(n).grant for n in ("A", "B", "C")]
        assert sum(to_deciamps(g) for g in grants) <= to_deciamps(self.site_limit)
        assert all(g == 0 or 6 <= g <= 16 for g in grants)


# The fuse is what the manager is trusted with: each of the four bugs this
# machine found needed about ten steps in a particular order, and 300 runs
# of 40 steps found one of them only now and then. About 15 s of the suite.
FuseMachine.TestCase.settings = settings(max_examples=1500, stateful_step_count=60, deadline=None)
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
