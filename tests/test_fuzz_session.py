"""Fuzzing one wallbox session without a network: hypothesis-made frames go
into an OcppSession answered by the local central system, with the device
registry watching, on a fake clock."""

import itertools
import json
from contextlib import contextmanager

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import task
from twisted.logger import globalLogPublisher

from cfosproxy.config import config_from_string
from cfosproxy.core.devices import DeviceRegistry
from cfosproxy.core.localcs import LocalCentralSystem
from cfosproxy.core.session import OcppSession
from tests.fakes import RecordingConnection
from tests.fuzzing import CHARGEBOX_ID, CONFIG, check_answers, frames


class Utf8Connection(RecordingConnection):
    """Keeps the frames a session sends, encoded as a WebSocket would
    encode them, so that text that cannot go out as UTF-8 fails here as it
    would in the server."""

    def send_text(self, text):
        text.encode("utf-8")
        super().send_text(text)


@contextmanager
def logged_failures():
    """Collect the failures logged meanwhile: the session turns a crash in
    its responder or an observer into a log line, which a fuzz test must
    not let pass."""
    failures = []

    def observer(event):
        if "log_failure" in event:
            failures.append(event["log_failure"])

    globalLogPublisher.addObserver(observer)
    try:
        yield failures
    finally:
        globalLogPublisher.removeObserver(observer)


def new_session(connection, clock):
    config = config_from_string(CONFIG.format(server=""))
    local = LocalCentralSystem(clock, 300, itertools.count(1).__next__)
    registry = DeviceRegistry(config, clock)
    return OcppSession(CHARGEBOX_ID, connection, local.answer, [registry], clock, 30)


@settings(max_examples=60, deadline=None)
@given(st.lists(frames, max_size=8))
def test_fuzzed_frames_are_answered_and_session_stays_usable(fuzzed_frames):
    """Whatever a wallbox sends: no exception escapes the session and none
    is logged; every CALL whose id can be read gets exactly one answer with
    that id, nothing else gets more than one; the connection stays open and
    is read from; afterwards the session still answers a Heartbeat and still gets the
    answer to its own outstanding CALL."""
    clock = task.Clock()
    connection = Utf8Connection()
    session = new_session(connection, clock)
    with logged_failures() as failures:
        # A CALL of our own is outstanding the whole time: the fuzz must
        # not answer it, fail it or lose it.
        own = session.call("GetConfiguration", {})
        [own_frame] = connection.sent
        own_id = json.loads(own_frame)[1]
        sent = 1
        for fuzzed in fuzzed_frames:
            session.text_received(fuzzed.text)
            check_answers(fuzzed, connection.sent[sent:])
            sent = len(connection.sent)
        assert connection.closed_with is None
        assert connection.reading

        session.text_received('[2,"final-hb","Heartbeat",{}]')
        assert json.loads(connection.sent[-1]) == [3, "final-hb", {"currentTime": "1970-01-01T00:00:00.000Z"}]
        assert not own.called
        session.text_received(json.dumps([3, own_id, {"configurationKey": []}]))
        assert own.result == {"configurationKey": []}
    assert failures == []
