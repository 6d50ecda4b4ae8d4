"""The gateway's decisions, with a fake backend link, a real store file
and a fake clock."""

import itertools
import json

import pytest
from twisted.internet import task

from cfosproxy.core.backendboot import BOOT_WAIT, MIN_BOOT_RETRY
from cfosproxy.core.gateway import MAX_ATTEMPTS, RETRY_DELAY, Gateway
from cfosproxy.core.localcs import LocalCentralSystem
from cfosproxy.core.session import OcppSession
from cfosproxy.store import Store
from tests.fakes import RecordingConnection


class FakeLink:
    """A backend link that records what is sent and never connects by
    itself."""

    url = "ws://backend.example/ocpp/CB-1"
    state = "connected"
    last_error = None

    def __init__(self):
        self.sent = []
        self.started = 0
        self.stopped = 0

    def start(self):
        self.started += 1

    def stop(self):
        self.stopped += 1

    def send_text(self, text):
        self.sent.append(text)
        return True

    def close(self):
        pass

    def pause_reading(self):
        self.reading = False

    def resume_reading(self):
        self.reading = True

    def last(self):
        return json.loads(self.sent[-1])


class Rig:
    """A gateway with a wallbox session, a fake link and a store."""

    def __init__(self, tmp_path, offline_authorize="cache", count=None, connector_ids=(1,)):
        self.clock = task.Clock()
        self.clock.advance(1_700_000_000)
        self.store = Store(str(tmp_path / "store.sqlite"))
        ids = itertools.count(1)
        local = LocalCentralSystem(self.clock, 300, lambda: next(ids))
        self.link = FakeLink()
        self.gateway = Gateway(
            "CB-1", "CB-1", lambda: self.store, local, self.clock, 30, offline_authorize,
            link=lambda handler: self.link, count=count, connector_ids=connector_ids,
        )
        self.wallbox = RecordingConnection()
        self.session = OcppSession("CB-1", self.wallbox, self.gateway.answer, (), self.clock, 30)
        self.gateway.session_opened(self.session)

    def wallbox_sends(self, unique_id, action, payload):
        self.session.text_received(json.dumps([2, unique_id, action, payload]))
        return self.wallbox.frames[-1] if self.wallbox.sent else None

    def open_link(self, boot_status="Accepted"):
        """Open the link; answer the gateway's BootNotification if it sends
        one (it does when the wallbox booted before)."""
        before = len(self.link.sent)
        self.gateway.link_opened(self.link)
        if len(self.link.sent) > before and json.loads(self.link.sent[before])[2] == "BootNotification":
            boot = json.loads(self.link.sent[before])
            self.backend_answers(boot[1], {"status": boot_status, "currentTime": "t", "interval": 60})

    def backend_answers(self, unique_id, payload):
        self.gateway.text_received(json.dumps([3, unique_id, payload]))

    def backend_refuses(self, unique_id):
        self.gateway.text_received(json.dumps([4, unique_id, "FormationViolation", "no", {}]))


START = {"connectorId": 1, "idTag": "TAG1", "meterStart": 0, "timestamp": "2026-11-23T10:00:00Z"}


def test_offline_authorize_cache(tmp_path):
    """offline_authorize = cache: an id tag the backend accepted before is
    accepted while it is away; an unknown one is Invalid."""
    rig = Rig(tmp_path)
    rig.store.remember_id_tag("CB-1", "TAG1", {"status": "Accepted"}, 0)
    assert rig.wallbox_sends("a1", "Authorize", {"idTag": "TAG1"})[2] == {"idTagInfo": {"status": "Accepted"}}
    assert rig.wallbox_sends("a2", "Authorize", {"idTag": "OTHER"})[2] == {"idTagInfo": {"status": "Invalid"}}


@pytest.mark.parametrize("policy,status", [("accept", "Accepted"), ("reject", "Invalid")])
def test_offline_authorize_policies(tmp_path, policy, status):
    """offline_authorize = accept / reject decide for every id tag."""
    rig = Rig(tmp_path, policy)
    rig.store.remember_id_tag("CB-1", "TAG1", {"status": "Accepted"}, 0)
    assert rig.wallbox_sends("a1", "Authorize", {"idTag": "TAG1"})[2]["idTagInfo"]["status"] == status


def test_authorize_answer_is_cached_while_online(tmp_path):
    """An Authorize the backend accepts while online is remembered for the
    next outage."""
    rig = Rig(tmp_path)
    rig.open_link()
    rig.session.text_received('[2,"a1","Authorize",{"idTag":"TAG9"}]')
    rig.backend_answers("a1", {"idTagInfo": {"status": "Accepted"}})
    # Relayed as the backend spelled it (json.dumps' spaces included).
    assert rig.wallbox.sent[-1] == '[3, "a1", {"idTagInfo": {"status": "Accepted"}}]'
    rig.gateway.link_closed("gone")
    assert rig.wallbox_sends("a2", "Authorize", {"idTag": "TAG9"})[2]["idTagInfo"]["status"] == "Accepted"


def test_refused_message_becomes_dead_letter(tmp_path):
    """A queued message the backend refuses MAX_ATTEMPTS times is set
    aside as a dead letter and reported; the queue then goes on."""
    rig = Rig(tmp_path)
    rig.wallbox_sends("s1", "StartTransaction", START)
    rig.wallbox_sends("d1", "DataTransfer", {"vendorId": "x"})
    rig.open_link()
    for attempt in range(MAX_ATTEMPTS):
        start = rig.link.last()
        assert start[2] == "StartTransaction"
        rig.backend_refuses(start[1])
        if attempt < MAX_ATTEMPTS - 1:
            rig.clock.advance(RETRY_DELAY)
    [dead] = rig.store.dead_letters("CB-1")
    assert dead.action == "StartTransaction" and dead.attempts == MAX_ATTEMPTS
    assert rig.gateway.status()["dead_letters"] == 1
    assert rig.link.last()[2] == "DataTransfer"


def test_live_messages_after_mapping_use_backend_id(tmp_path):
    """Once the queued StartTransaction got the backend's id, a live
    StopTransaction that carries the local id reaches the backend with the
    backend's id."""
    rig = Rig(tmp_path)
    local_id = rig.wallbox_sends("s1", "StartTransaction", START)[2]["transactionId"]
    rig.open_link()
    start = rig.link.last()
    rig.backend_answers(start[1], {"transactionId": 555, "idTagInfo": {"status": "Accepted"}})
    rig.session.text_received(json.dumps([2, "x1", "StopTransaction", {"transactionId": local_id, "meterStop": 5, "timestamp": "2026-11-23T11:00:00Z"}]))
    stop = rig.link.last()
    assert stop[2] == "StopTransaction" and stop[3]["transactionId"] == 555
    rig.backend_answers(stop[1], {})
    assert rig.wallbox.frames[-1] == [3, "x1", {}]


def test_remote_stop_gets_local_id(tmp_path):
    """A RemoteStopTransaction with the backend's id reaches the wallbox
    with the local id the wallbox knows."""
    rig = Rig(tmp_path)
    local_id = rig.wallbox_sends("s1", "StartTransaction", START)[2]["transactionId"]
    rig.open_link()
    rig.backend_answers(rig.link.last()[1], {"transactionId": 555, "idTagInfo": {"status": "Accepted"}})
    rig.gateway.text_received('[2,"r1","RemoteStopTransaction",{"transactionId":555}]')
    assert rig.wallbox.frames[-1][2:] == ["RemoteStopTransaction", {"transactionId": local_id}]
    rig.session.text_received(json.dumps([3, rig.wallbox.frames[-1][1], {"status": "Accepted"}]))
    assert rig.link.last() == [3, "r1", {"status": "Accepted"}]


def test_silent_backend_gets_local_answer_and_retry(tmp_path):
    """A backend that does not answer a live transaction message within the
    call timeout: the wallbox gets a local answer, the message stays queued
    and goes out again later."""
    rig = Rig(tmp_path)
    rig.open_link()
    rig.session.text_received(json.dumps([2, "s1", "StartTransaction", START]))
    assert rig.link.last()[2] == "StartTransaction"
    rig.clock.advance(30)
    answer = rig.wallbox.frames[-1]
    assert answer[:2] == [3, "s1"] and "transactionId" in answer[2]
    assert rig.store.queue_length("CB-1") == 1
    sent = len(rig.link.sent)
    rig.clock.advance(RETRY_DELAY)
    assert len(rig.link.sent) == sent + 1 and rig.link.last()[2] == "StartTransaction"


def test_pending_boot_holds_the_queue(tmp_path):
    """While the backend answers the boot with Pending the queue waits; the
    boot is asked again, and after Accepted the queue goes out."""
    rig = Rig(tmp_path)
    rig.wallbox_sends("b1", "BootNotification", {"chargePointVendor": "v", "chargePointModel": "m"})
    rig.wallbox_sends("s1", "StartTransaction", START)
    rig.open_link(boot_status="Pending")
    assert [json.loads(t)[2] for t in rig.link.sent] == ["BootNotification"]
    rig.clock.advance(60)
    boot = rig.link.last()
    assert boot[2] == "BootNotification"
    rig.backend_answers(boot[1], {"status": "Accepted", "currentTime": "t", "interval": 60})
    assert rig.link.last()[2] == "StartTransaction"


def test_backend_call_without_wallbox(tmp_path):
    """A backend CALL while the wallbox is not connected gets a CALLERROR."""
    rig = Rig(tmp_path)
    rig.open_link()
    rig.gateway.session_closed(rig.session)
    rig.gateway.text_received('[2,"r1","Reset",{"type":"Soft"}]')
    assert rig.link.last()[:3] == [4, "r1", "GenericError"]


def test_queue_goes_out_without_a_stored_boot(tmp_path):
    """A wallbox that never booted through cfosproxy: the queue is delivered
    right after the link opens, not held for a boot that may never come."""
    rig = Rig(tmp_path)
    rig.wallbox_sends("s1", "StartTransaction", START)
    rig.gateway.link_opened(rig.link)
    assert [json.loads(t)[2] for t in rig.link.sent] == ["StartTransaction"]


def test_link_stops_when_idle(tmp_path):
    """With the wallbox gone and the queue empty the link is stopped; with
    messages waiting it is kept."""
    rig = Rig(tmp_path)
    rig.wallbox_sends("s1", "StartTransaction", START)
    rig.gateway.session_closed(rig.session)
    assert rig.link.stopped == 0
    rig.open_link()
    rig.backend_answers(rig.link.last()[1], {"transactionId": 9, "idTagInfo": {"status": "Accepted"}})
    assert rig.link.stopped == 1


def test_live_message_not_held_while_waiting_to_retry(tmp_path):
    """While the gateway waits to try the backend again, a new transaction
    message is answered locally at once (not held for the retry delay)."""
    rig = Rig(tmp_path)
    rig.open_link()
    rig.session.text_received(json.dumps([2, "s1", "StartTransaction", START]))
    rig.clock.advance(30)  # the backend stays silent: local answer, retry later
    rig.store.delivered(rig.store.first_queued("CB-1").id)  # (the head went away)
    answer = rig.wallbox_sends("d1", "DataTransfer", {"vendorId": "x"})
    assert answer[:2] == [3, "d1"]


def test_stop_leaves_no_timer(tmp_path):
    """After a Pending boot and a silent backend, stop() cancels the boot
    and retry timers. (The backend leg's call deadline timer is the
    session's: it ends with the link.)"""
    rig = Rig(tmp_path)
    rig.wallbox_sends("b1", "BootNotification", {"chargePointVendor": "v", "chargePointModel": "m"})
    rig.open_link(boot_status="Pending")
    rig.gateway.stop()
    rig.gateway.link_closed("stopped")
    rig.session.connection_lost()
    assert rig.clock.getDelayedCalls() == []


def test_backend_messages_counted(tmp_path):
    """The gateway counts CALLs answered by the backend (with the outcome)
    and CALLs from the backend, for the metrics."""
    counted = []
    rig = Rig(tmp_path, count=lambda action, direction, outcome="": counted.append((action, direction, outcome)))
    rig.open_link()
    rig.session.text_received('[2,"h1","Heartbeat",{}]')
    rig.backend_answers("h1", {"currentTime": "t"})
    rig.gateway.text_received('[2,"r1","Reset",{"type":"Soft"}]')
    assert counted == [("Heartbeat", "to_backend", "result"), ("Reset", "from_backend", "")]


def test_a_closing_link_ends_the_backend_leg_at_once(tmp_path):
    """A link that can no longer send (its close handshake runs: the wallbox
    left and came straight back) reports the link closed from within the
    send, as L{cfosproxy.ws.backend.BackendLink.send_text} does. The wallbox
    does not wait a whole call timeout: its CALL is answered locally at
    once, a transaction message is queued, and the gateway waits for the
    link to open again."""
    rig = Rig(tmp_path)
    rig.open_link()

    def closing(text):
        rig.gateway.link_closed("the link to the backend is closing")
        return False

    rig.link.send_text = closing
    answer = rig.wallbox_sends("b1", "BootNotification", {"chargePointVendor": "v", "chargePointModel": "m"})
    assert answer[:2] == [3, "b1"] and answer[2]["status"] == "Accepted"
    assert rig.gateway.backend is None
    assert rig.gateway.status()["booted"] is False
    assert rig.wallbox_sends("s1", "StartTransaction", START)[:2] == [3, "s1"]
    assert [m.action for m in rig.store.queued("CB-1")] == ["StartTransaction"]


BOOT = {"chargePointVendor": "v", "chargePointModel": "m"}
BOOT_ANSWER = {"status": "Accepted", "currentTime": "2026-11-23T10:00:00Z", "interval": 300}


def test_status_is_asked_for_again_after_the_backend_was_away(tmp_path):
    """When the link opens again and the backend accepts the boot that the
    gateway sends for the wallbox, the wallbox is asked (TriggerMessage,
    with the connector's id) to send its StatusNotification again: the
    backend knows nothing of its connectors since. The wallbox's own boot
    asks nothing (it reports its status by itself after booting)."""
    rig = Rig(tmp_path)
    rig.open_link()
    rig.session.text_received(json.dumps([2, "b1", "BootNotification", BOOT]))
    rig.backend_answers("b1", BOOT_ANSWER)
    assert rig.wallbox.last() == [3, "b1", BOOT_ANSWER]
    rig.gateway.link_closed("gone")
    rig.open_link()  # answers the gateway's boot with Accepted
    trigger = rig.wallbox.last()
    assert trigger[0] == 2 and trigger[2:] == [
        "TriggerMessage", {"requestedMessage": "StatusNotification", "connectorId": 1}
    ]
    # The wallbox accepts and reports; the report goes to the backend.
    rig.session.text_received(json.dumps([3, trigger[1], {"status": "Accepted"}]))
    rig.session.text_received('[2,"st1","StatusNotification",{"connectorId":1,"errorCode":"NoError","status":"Charging"}]')
    assert json.loads(rig.link.sent[-1])[1:3] == ["st1", "StatusNotification"]


def test_a_wallbox_without_trigger_message_is_left_alone(tmp_path):
    """A wallbox that answers TriggerMessage with NotImplemented goes on as
    before: one log line, nothing else."""
    rig = Rig(tmp_path)
    rig.open_link()
    rig.session.text_received(json.dumps([2, "b1", "BootNotification", BOOT]))
    rig.backend_answers("b1", BOOT_ANSWER)
    rig.gateway.link_closed("gone")
    rig.open_link()
    trigger = rig.wallbox.last()
    assert trigger[0] == 2 and trigger[2] == "TriggerMessage"
    rig.session.text_received(json.dumps([4, trigger[1], "NotImplemented", "", {}]))
    rig.session.text_received('[2,"h1","Heartbeat",{}]')
    assert json.loads(rig.link.sent[-1])[1:3] == ["h1", "Heartbeat"]
    assert rig.gateway.booted and rig.gateway.backend is not None


def boots_sent(rig):
    """The BootNotifications sent to the backend, as frames."""
    return [frame for frame in map(json.loads, rig.link.sent) if frame[2:3] == ["BootNotification"]]


def test_an_unanswered_boot_is_sent_again_with_growing_patience(tmp_path):
    """A backend that does not answer the gateway's BootNotification within
    the call timeout gets it again after MIN_BOOT_RETRY, with twice the time
    to answer; the status API shows the boot unanswered meanwhile, and the
    queue goes out once the backend accepts. (A backend that answers every
    boot after 35 s is booted although call_timeout is 30.)"""
    rig = Rig(tmp_path)
    rig.wallbox_sends("b1", "BootNotification", BOOT)
    rig.wallbox_sends("s1", "StartTransaction", START)
    rig.gateway.link_opened(rig.link)
    assert len(boots_sent(rig)) == 1
    rig.clock.advance(30)
    status = rig.gateway.status()
    assert status["boot"] == "no answer" and status["booted"] is False
    assert "no answer to BootNotification" in status["last_error"]
    rig.clock.advance(MIN_BOOT_RETRY)
    assert len(boots_sent(rig)) == 2
    rig.clock.advance(35)  # more than call_timeout: this one may take 60 s
    rig.backend_answers(boots_sent(rig)[-1][1], BOOT_ANSWER)
    assert rig.link.last()[2] == "StartTransaction"
    status = rig.gateway.status()
    assert status["boot"] == "accepted" and status["last_error"] is None


def test_boot_retries_back_off(tmp_path):
    """Boots left unanswered are sent again further and further apart (10,
    20, 40 s after each silence), not in a tight loop."""
    rig = Rig(tmp_path)
    rig.wallbox_sends("b1", "BootNotification", BOOT)
    rig.gateway.link_opened(rig.link)
    sent_at = [rig.clock.seconds()]
    for _ in range(200):
        rig.clock.advance(1)
        if len(boots_sent(rig)) > len(sent_at):
            sent_at.append(rig.clock.seconds())
    gaps = [b - a for a, b in zip(sent_at, sent_at[1:])]
    # timeout + delay: 30 + 10, 60 + 20, 120 + 40
    assert gaps == [40, 80]


def test_a_boot_refused_with_a_callerror_is_sent_again(tmp_path):
    """A backend that answers the BootNotification with a CALLERROR does not
    stall the queue for ever: the boot goes again after MIN_BOOT_RETRY."""
    rig = Rig(tmp_path)
    rig.wallbox_sends("b1", "BootNotification", BOOT)
    rig.wallbox_sends("s1", "StartTransaction", START)
    rig.gateway.link_opened(rig.link)
    rig.backend_refuses(boots_sent(rig)[-1][1])
    assert rig.gateway.status()["boot"] == "refused"
    rig.clock.advance(MIN_BOOT_RETRY)
    rig.backend_answers(boots_sent(rig)[-1][1], BOOT_ANSWER)
    assert len(boots_sent(rig)) == 2 and rig.link.last()[2] == "StartTransaction"


def test_first_boot_waits_for_a_connecting_link(tmp_path):
    """A wallbox that boots while its backend link is still connecting (it
    has just connected, and so has the link) does not get cfosproxy's answer:
    its BootNotification waits for the link, goes to the backend byte for
    byte, and the wallbox gets the backend's answer (interval 60, not 300).
    The gateway sends no boot of its own besides."""
    rig = Rig(tmp_path)
    rig.link.state = "connecting"
    text = '[2,"b1","BootNotification",{"chargePointVendor":"v","chargePointModel":"m"}]'
    rig.session.text_received(text)
    assert rig.wallbox.sent == []
    rig.clock.advance(BOOT_WAIT / 2)
    rig.link.state = "connected"
    rig.gateway.link_opened(rig.link)
    assert rig.link.sent == [text]
    rig.backend_answers("b1", {"status": "Accepted", "currentTime": "t", "interval": 60})
    assert rig.wallbox.frames == [[3, "b1", {"status": "Accepted", "currentTime": "t", "interval": 60}]]
    assert rig.gateway.status()["booted"] is True
    rig.clock.advance(BOOT_WAIT)  # no second, local answer
    assert len(rig.wallbox.sent) == 1


def test_a_held_boot_is_answered_locally_when_the_link_stays_away(tmp_path):
    """When the link does not open within boot_wait, cfosproxy answers the
    held BootNotification itself, as it does while the backend is away."""
    rig = Rig(tmp_path)
    rig.link.state = "connecting"
    rig.wallbox_sends("b1", "BootNotification", BOOT)
    assert rig.wallbox.sent == []
    rig.clock.advance(BOOT_WAIT)
    answer = rig.wallbox.last()
    assert answer[:2] == [3, "b1"] and answer[2]["status"] == "Accepted"
    assert answer[2]["interval"] == 300


def test_no_wait_for_a_link_that_is_down(tmp_path):
    """A link that is not connecting (it failed and waits to retry) holds
    nothing: the boot is answered at once."""
    rig = Rig(tmp_path)
    rig.link.state = "failed"
    assert rig.wallbox_sends("b1", "BootNotification", BOOT)[:2] == [3, "b1"]


def test_statuses_heard_while_the_link_was_down_reach_the_backend(tmp_path):
    """StatusNotifications that cfosproxy answered while the link was not up
    are not lost for the backend: once it accepts the boot, each connector's
    latest one is sent to it, as the wallbox sent it. An older status of the
    same connector is not."""
    rig = Rig(tmp_path)
    rig.link.state = "connecting"
    rig.wallbox_sends("b1", "BootNotification", BOOT)
    older = '[2,"s1","StatusNotification",{"connectorId":1,"errorCode":"NoError","status":"Available"}]'
    zero = '[2,"s2","StatusNotification",{"connectorId":0,"errorCode":"NoError","status":"Available"}]'
    latest = '[2,"s3","StatusNotification",{"connectorId":1,"errorCode":"NoError","status":"Preparing"}]'
    for text in (older, zero, latest):
        rig.session.text_received(text)
    rig.clock.advance(BOOT_WAIT)  # the boot is answered locally
    assert [frame[1] for frame in rig.wallbox.frames] == ["s1", "s2", "s3", "b1"]
    rig.link.state = "connected"
    rig.open_link()  # the gateway boots; the backend accepts
    assert rig.link.sent[1:] == [zero]
    rig.backend_answers("s2", {})
    assert rig.link.sent[2:] == [latest]
    rig.backend_answers("s3", {})
    # Each went once: a later boot sends nothing again.
    rig.gateway.link_closed("gone")
    rig.open_link()
    assert [json.loads(t)[2] for t in rig.link.sent[3:]] == ["BootNotification"]


def test_status_is_asked_for_per_configured_connector(tmp_path):
    """A wallbox with two configured connectors is asked for the status of
    each, by connectorId (a TriggerMessage without one is not sent)."""
    rig = Rig(tmp_path, connector_ids=(1, 2))
    rig.open_link()
    rig.session.text_received(json.dumps([2, "b1", "BootNotification", BOOT]))
    rig.backend_answers("b1", BOOT_ANSWER)
    rig.gateway.link_closed("gone")
    rig.open_link()
    first = rig.wallbox.last()
    assert first[2:] == ["TriggerMessage", {"requestedMessage": "StatusNotification", "connectorId": 1}]
    rig.session.text_received(json.dumps([3, first[1], {"status": "Accepted"}]))
    second = rig.wallbox.last()
    assert second[2:] == ["TriggerMessage", {"requestedMessage": "StatusNotification", "connectorId": 2}]
