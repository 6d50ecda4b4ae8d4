"""Fuzzing the OCPP server over a real socket: a WebSocket client sends
hypothesis-made text and binary frames to the server in this process."""

import asyncio
import json
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.logger import globalLogPublisher
from twisted.trial import unittest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.fuzzing import check_answers, frames
from tests.harness import asyncio_test
from tests.wallboxserver import WallboxServer

# Each example opens a real connection; a few dozen are enough to keep the
# adapter honest, the session-level fuzz test runs many more.
SOCKET_FUZZ = settings(max_examples=30, deadline=None)
# Bounds a wait that should end at once, so a hang fails instead of
# blocking the suite; no test checks how long anything took.
RECV_TIMEOUT = 10


def in_thread(function):
    """Run a blocking C{function} (a hypothesis test using the synchronous
    websockets client) in a worker thread, so the reactor that runs the
    server keeps turning in this one."""
    return asyncio.get_running_loop().run_in_executor(None, function)


def open_wallbox(server):
    return connect(server.url(), subprotocols=["ocpp1.6"], open_timeout=RECV_TIMEOUT)


def heartbeat(ws):
    """Send a Heartbeat under a fresh id; return the frames that came
    before its answer, as text. A fuzzed frame cannot guess the id, so
    everything before the answer belongs to what was sent before it."""
    probe = str(uuid.uuid4())
    ws.send(json.dumps([2, probe, "Heartbeat", {}]))
    before = []
    while True:
        text = ws.recv(timeout=RECV_TIMEOUT)
        frame = json.loads(text)
        if frame[1] == probe:
            assert frame[0] == 3 and "currentTime" in frame[2], text
            return before
        before.append(text)


class ServerFuzzTests(unittest.TestCase):
    """The server never crashes on what a wallbox sends and keeps serving."""

    def setUp(self):
        self.server = WallboxServer(self)
        # Failures the server logs (a crash in onMessage, in the session or
        # an observer), checked after every frame so that hypothesis sees
        # the frame that caused one.
        self.failures = []

        def observer(event):
            if "log_failure" in event:
                self.failures.append(event["log_failure"])

        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    @asyncio_test
    async def test_text_garbage_then_heartbeat(self):
        """On one connection, after each hypothesis-made text frame (random
        text, random JSON, huge and wrongly typed ids, deep nesting, cut-off
        CALLs, real actions with odd payloads): every CALL with a readable
        id got exactly one answer with that id, nothing else got more than
        one, nothing was logged as a failure, and a Heartbeat sent next is
        answered on the same connection."""

        @SOCKET_FUZZ
        @given(st.lists(frames, min_size=1, max_size=6))
        def exchange(fuzzed_frames):
            with open_wallbox(self.server) as ws:
                for fuzzed in fuzzed_frames:
                    ws.send(fuzzed.text)
                    check_answers(fuzzed, heartbeat(ws))
                    assert self.failures == [], self.failures

        await in_thread(exchange)

    @asyncio_test
    async def test_binary_garbage_closes_with_1003_and_next_is_served(self):
        """Any binary frame closes its connection with 1003 (unsupported
        data), and the next connection of the same wallbox is served."""

        @settings(max_examples=10, deadline=None)
        @given(st.binary(max_size=2000))
        def exchange(data):
            with open_wallbox(self.server) as ws:
                ws.send(data)
                try:
                    ws.recv(timeout=RECV_TIMEOUT)
                except ConnectionClosed:
                    pass
                else:
                    raise AssertionError("the server answered a binary frame")
                assert ws.close_code == 1003, ws.close_code
            with open_wallbox(self.server) as ws:
                assert heartbeat(ws) == []
            assert self.failures == [], self.failures

        await in_thread(exchange)
