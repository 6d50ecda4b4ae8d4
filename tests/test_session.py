"""The sans-IO wallbox session: answers, malformed frames, the call queue."""

import json

from twisted.internet import defer, task
from twisted.trial import unittest

from cfosproxy.ocpp.errors import ErrorCode, OcppError
from cfosproxy.ocpp.frames import CallResult
from cfosproxy.core.errors import CallTimeout, PeerGone
from cfosproxy.core.session import MAX_UNANSWERED, OcppSession
from tests.fakes import RecordingConnection


class EchoResponder:
    """Answers every CALL with its own payload; some actions fail."""

    def __init__(self):
        self.deferreds = {}

    def answer(self, call):
        if call.action == "Broken":
            raise RuntimeError("bug")
        if call.action == "Refused":
            raise OcppError(ErrorCode.NotSupported, "no")
        if call.action == "Later":
            d = self.deferreds[call.unique_id] = defer.Deferred()
            return d
        return {"echo": call.payload}


class Observer:
    def __init__(self):
        self.exchanges = []

    def exchange(self, chargebox_id, call, answer):
        self.exchanges.append((chargebox_id, call.action, answer))


class SessionTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.connection = RecordingConnection()
        self.responder = EchoResponder()
        self.observer = Observer()
        self.session = OcppSession(
            "CB-1", self.connection, self.responder.answer, [self.observer], self.clock, 30
        )

    def test_call_is_answered_and_observed(self):
        """A CALL from the wallbox gets a CALLRESULT with the same id, and
        observers see the call with its answer."""
        self.session.text_received('[2,"a1","Heartbeat",{"x":1}]')
        self.assertEqual(self.connection.frames, [[3, "a1", {"echo": {"x": 1}}]])
        [(cbid, action, answer)] = self.observer.exchanges
        self.assertEqual((cbid, action), ("CB-1", "Heartbeat"))
        self.assertIsInstance(answer, CallResult)

    def test_ocpp_error_becomes_callerror(self):
        """A responder's OcppError is sent as a CALLERROR with its code."""
        self.session.text_received('[2,"a2","Refused",{}]')
        self.assertEqual(self.connection.last(), [4, "a2", "NotSupported", "no", {}])

    def test_bug_becomes_internal_error(self):
        """An unexpected exception answers InternalError and is logged; the
        session keeps working."""
        self.session.text_received('[2,"a3","Broken",{}]')
        self.assertEqual(self.connection.last()[:3], [4, "a3", "InternalError"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.session.text_received('[2,"a4","Heartbeat",{}]')
        self.assertEqual(self.connection.last(), [3, "a4", {"echo": {}}])

    def test_deferred_answer(self):
        """An answer that comes later is sent when it comes."""
        self.session.text_received('[2,"a5","Later",{}]')
        self.assertEqual(self.connection.sent, [])
        self.responder.deferreds["a5"].callback({"late": True})
        self.assertEqual(self.connection.last(), [3, "a5", {"late": True}])

    def test_malformed_call_with_id_gets_callerror(self):
        """A malformed CALL whose id can be read gets a CALLERROR, and the
        session stays usable."""
        self.session.text_received('[2,"m1","Heartbeat",[]]')
        frame = self.connection.last()
        self.assertEqual(frame[:2], [4, "m1"])
        self.assertIn(frame[2], {e.value for e in ErrorCode})
        self.session.text_received('[2,"m2","Heartbeat",{}]')
        self.assertEqual(self.connection.last(), [3, "m2", {"echo": {}}])

    def test_unreadable_frame_is_dropped(self):
        """Text that is not JSON gets no answer (there is no id to answer)."""
        self.session.text_received("this is not json")
        self.assertEqual(self.connection.sent, [])

    def test_calls_to_wallbox_go_one_at_a_time(self):
        """Two CALLs to the wallbox: the second is sent only after the first
        is answered, and each Deferred gets its own result."""
        first = self.session.call("GetConfiguration", {})
        second = self.session.call("ClearCache", {})
        self.assertEqual(len(self.connection.sent), 1)
        first_id = self.connection.last()[1]
        self.assertEqual(self.session.queue_length, 2)
        self.session.text_received(json.dumps([3, first_id, {"configurationKey": []}]))
        self.assertEqual(self.successResultOf(first), {"configurationKey": []})
        self.assertEqual(len(self.connection.sent), 2)
        second_frame = self.connection.last()
        self.assertEqual(second_frame[2], "ClearCache")
        self.assertNotEqual(second_frame[1], first_id)
        self.session.text_received(json.dumps([4, second_frame[1], "NotSupported", "", {}]))
        self.assertEqual(self.failureResultOf(second, OcppError).value.code, "NotSupported")

    def test_timeout_fails_call_and_sends_next(self):
        """An unanswered CALL fails with CallTimeout after call_timeout, and
        the next queued CALL goes out; a late answer is dropped."""
        first = self.session.call("Reset", {"type": "Soft"})
        second = self.session.call("ClearCache", {})
        late_id = self.connection.last()[1]
        self.clock.advance(29.9)
        self.assertNoResult(first)
        self.clock.advance(0.2)
        self.failureResultOf(first, CallTimeout)
        self.assertEqual(self.connection.last()[2], "ClearCache")
        self.session.text_received(json.dumps([3, late_id, {}]))
        self.assertNoResult(second)

    def test_each_call_gets_its_whole_timeout(self):
        """A CALL sent 25 s after an earlier one (answered) still has the
        whole call timeout: it is not failed at the earlier one's deadline,
        and it is failed at its own."""
        first = self.session.call("GetConfiguration", {})
        self.clock.advance(25)
        self.session.text_received(json.dumps([3, self.connection.last()[1], {}]))
        self.successResultOf(first)
        second = self.session.call("ClearCache", {})
        self.clock.advance(5.1)  # past the first CALL's deadline
        self.assertNoResult(second)
        self.clock.advance(24.8)
        self.assertNoResult(second)
        self.clock.advance(0.2)
        self.failureResultOf(second, CallTimeout)

    def test_one_timer_for_many_calls(self):
        """A session that sends CALL after CALL, each answered at once,
        schedules one timer, not one per CALL: setting and cancelling a
        timer per message was a tenth of the relay's cost."""
        scheduled = []
        call_later = self.clock.callLater

        def counting_call_later(*args, **kwargs):
            scheduled.append(args[1])
            return call_later(*args, **kwargs)

        self.clock.callLater = counting_call_later
        for _ in range(100):
            d = self.session.call("DataTransfer", {"vendorId": "x"})
            self.session.text_received(json.dumps([3, self.connection.last()[1], {}]))
            self.successResultOf(d)
            self.clock.advance(0.1)
        self.assertEqual(len(scheduled), 1)
        # After the last answer the timer finds nothing to time out, and
        # none is left.
        self.clock.advance(30)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_connection_lost_fails_waiting_calls(self):
        """Calls outstanding or queued fail with PeerGone when the
        connection goes; later calls fail at once; no timer is left."""
        first = self.session.call("Reset", {"type": "Soft"})
        second = self.session.call("ClearCache", {})
        self.session.connection_lost()
        self.failureResultOf(first, PeerGone)
        self.failureResultOf(second, PeerGone)
        self.failureResultOf(self.session.call("ClearCache", {}), PeerGone)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_answer_to_unknown_id_is_dropped(self):
        """A CALLRESULT nobody waits for is dropped without an answer."""
        self.session.text_received('[3,"nobody",{}]')
        self.assertEqual(self.connection.sent, [])

    def test_malformed_result_is_not_answered(self):
        """A broken CALLRESULT is not answered with a CALLERROR (that would
        be a second answer to our own CALL)."""
        self.session.text_received('[3,"x"]')
        self.assertEqual(self.connection.sent, [])


class BackPressureTests(unittest.TestCase):
    """A peer that sends CALLs faster than they are answered is held back:
    the session stops reading from it instead of queueing without bound."""

    def setUp(self):
        self.connection = RecordingConnection()
        self.responder = EchoResponder()
        self.session = OcppSession(
            "CB-1", self.connection, self.responder.answer, [], task.Clock(), 30
        )

    def flood(self, count):
        for n in range(count):
            self.session.text_received('[2,"f{}","Later",{{}}]'.format(n))

    def test_reading_pauses_at_the_limit(self):
        """One CALL short of the limit the session still reads; at the
        limit it pauses."""
        self.flood(MAX_UNANSWERED - 1)
        self.assertTrue(self.connection.reading)
        self.session.text_received('[2,"last","Later",{}]')
        self.assertFalse(self.connection.reading)
        self.assertTrue(self.session.reading_paused)

    def test_reading_resumes_when_half_are_answered(self):
        """Reading resumes once at most half the limit waits, and every CALL
        is answered, in the order the answers came."""
        self.flood(MAX_UNANSWERED)
        ids = ["f{}".format(n) for n in range(MAX_UNANSWERED)]
        for n, unique_id in enumerate(ids[: MAX_UNANSWERED // 2]):
            self.assertFalse(self.connection.reading, unique_id)
            self.responder.deferreds[unique_id].callback({"n": n})
        self.assertTrue(self.connection.reading)
        for unique_id in ids[MAX_UNANSWERED // 2 :]:
            self.responder.deferreds[unique_id].callback({})
        self.assertEqual([frame[1] for frame in self.connection.frames], ids)

    def test_failed_answers_count_as_answered(self):
        """A CALL whose answer failed (a CALLERROR went back) no longer
        counts against the limit."""
        self.flood(MAX_UNANSWERED)
        for n in range(MAX_UNANSWERED):
            self.responder.deferreds["f{}".format(n)].errback(
                OcppError(ErrorCode.GenericError, "no")
            )
        self.assertTrue(self.connection.reading)
        self.assertEqual(
            [frame[2] for frame in self.connection.frames],
            ["GenericError"] * MAX_UNANSWERED,
        )

    def test_no_resume_after_the_connection_is_gone(self):
        """Answers that arrive after the connection closed do not touch the
        dead transport."""
        self.flood(MAX_UNANSWERED)
        self.session.connection_lost()
        for n in range(MAX_UNANSWERED):
            self.responder.deferreds["f{}".format(n)].callback({})
        self.assertFalse(self.connection.reading)


class LogTests(unittest.TestCase):
    """What a session writes into the log about a peer's frames."""

    def test_a_huge_message_id_is_cut_short_in_the_log(self):
        """A malformed CALL with an id of 10,000 characters is answered with
        that id, but the log line shows only its start and its length."""
        from twisted.logger import LogLevel, formatEvent, globalLogPublisher

        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        connection = RecordingConnection()
        session = OcppSession("CB-1", connection, EchoResponder().answer, [], task.Clock(), 30)
        huge = "x" * 10000
        session.text_received('[2,"{}","Heartbeat",{{}}]'.format(huge))
        self.assertEqual(connection.last()[1], huge)
        [line] = [formatEvent(e) for e in events if e.get("log_level") == LogLevel.warn]
        self.assertIn("(10000 characters)", line)
        self.assertLess(len(line), 300)
