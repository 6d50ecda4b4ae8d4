"""The boot toward a backend, alone: a fake clock, a fake backend session
that keeps what is sent, and a fake store."""

import json

import pytest
from twisted.internet import defer, task

from cfosproxy.core.backendboot import (
    BOOT_WAIT,
    MAX_BOOT_RETRY,
    MAX_BOOT_TIMEOUT,
    MIN_BOOT_RETRY,
    BackendBoot,
    BootState,
    is_boot_error,
)
from cfosproxy.core.errors import CallTimeout, PeerGone
from cfosproxy.ocpp.frames import Call, CallError, CallResult

pytestmark = pytest.mark.usefixtures("logged_errors", "no_reactor_timers")

CALL_TIMEOUT = 30

BOOT_TEXT = json.dumps(
    [2, "b0", "BootNotification", {"chargePointVendor": "v", "chargePointModel": "m"}]
)


class FakeStore:
    """The wallbox's last boot, and a queue length for the logs."""

    def __init__(self, boot=BOOT_TEXT):
        self.boot = boot

    def last_boot(self, link):
        return self.boot

    def queue_length(self, link):
        return 3


class FakeSession:
    """The backend leg's session: each CALL sent, with its timeout and the
    Deferred the test fires as the backend's answer."""

    def __init__(self):
        self.sent = []

    def send_call(self, call, timeout=None):
        d = defer.Deferred()
        self.sent.append((call, timeout, d))
        return d

    def answer(self, payload):
        """The backend answers the last CALL with C{payload}."""
        call, _, d = self.sent[-1]
        d.callback(CallResult(call.unique_id, payload))

    def fail(self, error):
        """The last CALL fails with C{error} (no answer, link gone)."""
        self.sent[-1][2].errback(error)


class Rig:
    """A L{BackendBoot} and what it reports to its gateway."""

    def __init__(self, store=None, call_timeout=CALL_TIMEOUT, boot_wait=BOOT_WAIT):
        self.clock = task.Clock()
        self.store = store or FakeStore()
        self.session = FakeSession()
        self.forwarded = []
        self.answered_locally = []
        self.errors = []
        self.ready = []
        self.boot = BackendBoot(
            "CB-1", lambda: self.store, "CB-1", self.clock, call_timeout, boot_wait,
            forward=self.forward,
            answer_locally=self.answer_locally,
            report_error=self.errors.append,
            ready=lambda newly_accepted, again: self.ready.append((newly_accepted, again)),
        )

    def forward(self, call):
        """The gateway relays the wallbox's boot: a Deferred the test fires
        as the backend's answer."""
        d = defer.Deferred()
        self.forwarded.append((call, d))
        return d

    def answer_locally(self, call):
        self.answered_locally.append(call)
        return {"status": "Accepted", "interval": 300}

    def timeouts(self):
        """The timeout given to each boot sent."""
        return [timeout for _, timeout, _ in self.session.sent]


WALLBOX_BOOT = Call("w1", "BootNotification", {"chargePointVendor": "v", "chargePointModel": "m"})


def test_a_held_boot_is_answered_locally_after_boot_wait():
    """The wallbox's boot held for a connecting link is answered by
    cfosproxy once boot_wait has passed, not sooner."""
    rig = Rig()
    answers = []
    rig.boot.hold(WALLBOX_BOOT).addCallback(answers.append)
    assert rig.boot.holding
    rig.clock.advance(BOOT_WAIT - 0.1)
    assert answers == []
    rig.clock.advance(0.1)
    assert answers == [{"status": "Accepted", "interval": 300}]
    assert rig.answered_locally == [WALLBOX_BOOT]
    assert not rig.boot.holding and rig.boot.state is BootState.NOT_SENT


def test_a_boot_sent_again_releases_the_one_held():
    """A wallbox that gave up and sent its boot again gets the earlier one
    answered locally at once; the new one is held for a whole boot_wait."""
    rig = Rig()
    first, second = [], []
    rig.boot.hold(WALLBOX_BOOT).addCallback(first.append)
    rig.clock.advance(BOOT_WAIT - 1)
    again = Call("w2", "BootNotification", WALLBOX_BOOT.payload)
    rig.boot.hold(again).addCallback(second.append)
    assert len(first) == 1 and rig.answered_locally == [WALLBOX_BOOT]
    rig.clock.advance(BOOT_WAIT - 0.1)
    assert second == []
    rig.clock.advance(0.1)
    assert len(second) == 1 and rig.answered_locally == [WALLBOX_BOOT, again]


def test_a_held_boot_goes_first_when_the_link_opens():
    """When the link opens, the held boot is relayed to the backend in
    place of the stored one, and the wallbox gets the backend's answer; the
    boot_wait timer is gone."""
    rig = Rig()
    answers = []
    rig.boot.hold(WALLBOX_BOOT).addCallback(answers.append)
    rig.boot.link_opened(rig.session)
    assert rig.session.sent == []
    [(call, d)] = rig.forwarded
    assert call is WALLBOX_BOOT and rig.boot.state is BootState.SENT
    assert rig.clock.getDelayedCalls() == []
    backend_answer = CallResult("w1", {"status": "Accepted", "currentTime": "t", "interval": 60})
    d.callback(backend_answer)
    assert answers == [backend_answer] and rig.answered_locally == []


def test_an_unanswered_boot_is_sent_again_later_and_with_more_patience():
    """Each boot the backend leaves unanswered is sent again after twice the
    delay (from MIN_BOOT_RETRY up to MAX_BOOT_RETRY) and given twice the time
    to answer (from the call timeout up to MAX_BOOT_TIMEOUT); the state and
    the reported error say so."""
    rig = Rig()
    rig.boot.link_opened(rig.session)
    delays = []
    for _ in range(8):
        rig.session.fail(CallTimeout())
        [retry] = rig.clock.getDelayedCalls()
        delays.append(retry.getTime() - rig.clock.seconds())
        assert rig.boot.state is BootState.UNANSWERED and not rig.boot.booted
        rig.clock.advance(delays[-1])
        assert rig.boot.state is BootState.SENT
    assert delays == [10, 20, 40, 80, 160, MAX_BOOT_RETRY, MAX_BOOT_RETRY, MAX_BOOT_RETRY]
    assert rig.timeouts() == [30, 60, MAX_BOOT_TIMEOUT] + [MAX_BOOT_TIMEOUT] * 6
    assert rig.errors[0] == "no answer to BootNotification within 30 s; sent again in 10 s"
    assert rig.ready == []


def test_a_long_call_timeout_is_not_cut_to_the_cap():
    """A call timeout above MAX_BOOT_TIMEOUT stays the boot's timeout: the
    cap limits the growth, not what was configured."""
    rig = Rig(call_timeout=MAX_BOOT_TIMEOUT + 30)
    rig.boot.link_opened(rig.session)
    rig.session.fail(CallTimeout())
    rig.clock.advance(MIN_BOOT_RETRY)
    assert rig.timeouts() == [MAX_BOOT_TIMEOUT + 30] * 2


def test_patience_starts_afresh_on_a_new_link():
    """A link that opens again gives the boot the call timeout again and
    the next silence the shortest delay."""
    rig = Rig()
    rig.boot.link_opened(rig.session)
    rig.session.fail(CallTimeout())
    rig.clock.advance(MIN_BOOT_RETRY)
    assert rig.timeouts() == [30, 60]
    rig.boot.link_closed()
    rig.session = FakeSession()
    rig.boot.link_opened(rig.session)
    rig.session.fail(CallTimeout())
    [retry] = rig.clock.getDelayedCalls()
    assert rig.timeouts() == [30] and retry.getTime() - rig.clock.seconds() == MIN_BOOT_RETRY
    rig.boot.stop()


def test_patience_starts_afresh_after_an_accepted_boot():
    """Once a boot was accepted, the next boot sent on that link (the
    backend answered a later boot of the wallbox with Pending) has the call
    timeout again, not the grown one."""
    rig = Rig()
    rig.boot.link_opened(rig.session)
    rig.session.fail(CallTimeout())
    rig.clock.advance(MIN_BOOT_RETRY)
    rig.session.fail(CallTimeout())
    rig.boot.answered(CallResult("w1", {"status": "Accepted", "currentTime": "t", "interval": 60}))
    rig.boot.answered(CallResult("w2", {"status": "Pending", "currentTime": "t", "interval": 60}))
    rig.clock.advance(60)
    assert rig.timeouts() == [30, 60, 30]
    rig.boot.stop()


def test_a_link_gone_before_the_answer_sends_nothing_again():
    """A boot that fails because the link went (PeerGone) is not sent
    again on that link: the next link boots afresh."""
    rig = Rig()
    rig.boot.link_opened(rig.session)
    rig.session.fail(PeerGone("CB-1"))
    assert rig.clock.getDelayedCalls() == [] and rig.errors == []


@pytest.mark.parametrize("status,state", [("Pending", BootState.PENDING), ("Rejected", BootState.REJECTED)])
def test_pending_and_rejected_wait_for_the_interval(status, state):
    """A Pending or Rejected boot is sent again after the backend's
    interval; the queue is not released meanwhile."""
    rig = Rig()
    rig.boot.link_opened(rig.session)
    rig.session.answer({"status": status, "currentTime": "t", "interval": 60})
    assert rig.boot.state is state and not rig.boot.booted
    assert rig.errors == ["BootNotification {}".format(status)]
    rig.clock.advance(59)
    assert len(rig.session.sent) == 1
    rig.clock.advance(1)
    assert len(rig.session.sent) == 2 and rig.boot.state is BootState.SENT
    assert rig.ready == []
    rig.boot.stop()


@pytest.mark.parametrize("interval", [3, 0, None, True, "60"])
def test_a_short_or_odd_interval_waits_min_boot_retry(interval):
    """An interval shorter than MIN_BOOT_RETRY, or none a number of
    seconds, has the boot sent again after MIN_BOOT_RETRY."""
    rig = Rig()
    rig.boot.link_opened(rig.session)
    rig.session.answer({"status": "Pending", "currentTime": "t", "interval": interval})
    rig.clock.advance(MIN_BOOT_RETRY - 0.1)
    assert len(rig.session.sent) == 1
    rig.clock.advance(0.1)
    assert len(rig.session.sent) == 2
    rig.boot.stop()


def test_a_callerror_is_sent_again_after_min_boot_retry():
    """A boot the backend answers with a CALLERROR is refused, reported,
    and sent again after MIN_BOOT_RETRY."""
    rig = Rig()
    rig.boot.link_opened(rig.session)
    call, _, d = rig.session.sent[-1]
    d.callback(CallError(call.unique_id, "FormationViolation", "bad", {}))
    assert rig.boot.state is BootState.REFUSED
    assert rig.errors == ["BootNotification refused: FormationViolation bad"]
    rig.clock.advance(MIN_BOOT_RETRY)
    assert len(rig.session.sent) == 2
    rig.boot.stop()


def test_an_accepted_boot_makes_the_backend_ready():
    """Accepted: booted, the error is over, and the gateway hears that the
    backend has just accepted the boot sent for the wallbox (again). A later
    Accepted (the wallbox's own boot) only says the queue may go."""
    rig = Rig()
    rig.boot.link_opened(rig.session)
    sent_call = rig.session.sent[-1][0]
    assert sent_call.action == "BootNotification" and sent_call.unique_id != "b0"
    assert sent_call.payload == json.loads(BOOT_TEXT)[3]
    rig.session.answer({"status": "Accepted", "currentTime": "t", "interval": 60})
    assert rig.boot.booted and rig.boot.state is BootState.ACCEPTED
    assert rig.errors == [None] and rig.ready == [(True, True)]
    rig.boot.answered(CallResult("w1", {"status": "Accepted", "currentTime": "t", "interval": 60}))
    assert rig.ready == [(True, True), (False, False)] and rig.errors == [None]


def test_accepted_cancels_a_pending_retry():
    """The wallbox's own boot accepted while the gateway's waits to be sent
    again: the retry is cancelled."""
    rig = Rig()
    rig.boot.link_opened(rig.session)
    rig.session.fail(CallTimeout())
    rig.boot.answered(CallResult("w1", {"status": "Accepted", "currentTime": "t", "interval": 60}))
    assert rig.clock.getDelayedCalls() == [] and rig.ready == [(True, False)]


def test_without_a_stored_boot_the_backend_is_ready_at_once():
    """A wallbox that never booted through cfosproxy leaves nothing to send:
    the queue may go as soon as the link opens, with nothing to tell."""
    rig = Rig(FakeStore(boot=None))
    rig.boot.link_opened(rig.session)
    assert rig.session.sent == [] and rig.boot.booted
    assert rig.boot.state is BootState.NOT_SENT and rig.ready == [(False, False)]


def test_the_wallboxs_own_boot_unanswered_has_the_boot_sent_again():
    """The gateway reports the wallbox's own boot unanswered while the
    backend is not booted: the stored boot is sent again after
    MIN_BOOT_RETRY. The boot sent for the link, unanswered as well, adds no
    second timer."""
    rig = Rig()
    rig.boot.link_opened(rig.session)
    rig.boot.unanswered(CALL_TIMEOUT)
    rig.session.fail(CallTimeout())
    assert len(rig.clock.getDelayedCalls()) == 1 and len(rig.errors) == 1
    rig.clock.advance(MIN_BOOT_RETRY)
    assert len(rig.session.sent) == 2 and rig.clock.getDelayedCalls() == []


def test_silence_after_the_boot_was_accepted_changes_nothing():
    """Once the backend accepted a boot, a later boot left unanswered (the
    wallbox's own) neither sends the boot again nor changes the state."""
    rig = Rig()
    rig.boot.link_opened(rig.session)
    rig.session.answer({"status": "Accepted", "currentTime": "t", "interval": 60})
    rig.boot.unanswered(CALL_TIMEOUT)
    assert rig.clock.getDelayedCalls() == [] and rig.boot.state is BootState.ACCEPTED
    assert rig.boot.booted and rig.errors == [None]


def test_a_closing_link_cancels_the_retry():
    """The link closes while a boot waits to be sent again: the timer is
    cancelled, the state is back to not sent, and nothing more is sent."""
    rig = Rig()
    rig.boot.link_opened(rig.session)
    rig.session.fail(CallTimeout())
    assert len(rig.clock.getDelayedCalls()) == 1
    rig.boot.link_closed()
    assert rig.clock.getDelayedCalls() == []
    assert rig.boot.state is BootState.NOT_SENT and not rig.boot.booted
    rig.clock.advance(MAX_BOOT_RETRY)
    assert len(rig.session.sent) == 1


def test_no_retry_while_the_link_is_closed():
    """A refusal or a Pending that arrives with no link open (the link
    closed meanwhile) starts no timer."""
    rig = Rig()
    rig.boot.link_opened(rig.session)
    rig.boot.link_closed()
    rig.boot.answered(CallResult("w1", {"status": "Pending", "currentTime": "t", "interval": 60}))
    rig.boot.answered(CallError("w2", "InternalError", "", {}))
    rig.boot.unanswered(CALL_TIMEOUT)
    assert rig.clock.getDelayedCalls() == []


def test_stop_cancels_the_held_boot():
    """stop() cancels the held boot's timer: it is neither answered locally
    nor sent when the link opens later."""
    rig = Rig()
    answers = []
    rig.boot.hold(WALLBOX_BOOT).addCallback(answers.append)
    rig.boot.stop()
    assert rig.clock.getDelayedCalls() == [] and not rig.boot.holding
    rig.clock.advance(BOOT_WAIT)
    assert answers == [] and rig.answered_locally == []


def test_stop_cancels_the_retry():
    """stop() cancels a boot waiting to be sent again."""
    rig = Rig()
    rig.boot.link_opened(rig.session)
    rig.session.answer({"status": "Rejected", "currentTime": "t", "interval": 60})
    rig.boot.stop()
    assert rig.clock.getDelayedCalls() == []


def test_boot_wait_zero_holds_nothing():
    """boot_wait = 0: the wallbox's boot does not wait for the link."""
    assert not Rig(boot_wait=0).boot.waits_for_link
    assert Rig().boot.waits_for_link


def test_boot_errors_are_told_apart():
    """The texts of a boot's trouble are recognised; another error is not."""
    assert is_boot_error("no answer to BootNotification within 30 s; sent again in 10 s")
    assert is_boot_error("BootNotification Pending")
    assert is_boot_error("BootNotification refused: InternalError")
    assert not is_boot_error("no answer to StartTransaction")
    assert not is_boot_error("gone")
    assert not is_boot_error(None)
