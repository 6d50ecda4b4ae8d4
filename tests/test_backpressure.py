"""Back-pressure on a real socket: a wallbox that sends CALLs faster than
they are answered (a slow backend behind the gateway) is held back by TCP
instead of being buffered without bound."""

import asyncio
import json

import websockets
from twisted.internet import defer, reactor
from twisted.trial import unittest

from cfosproxy.config import config_from_string
from cfosproxy.devices import DeviceRegistry
from cfosproxy.hub import ChargePointHub
from cfosproxy.server import WallboxServerFactory
from cfosproxy.session import MAX_UNANSWERED
from tests.harness import asyncio_test, eventually, wait_deferred

CONFIG = """
[server]
tls = off
[wallbox:a]
type = ocpp
address = CB-1
"""

FLOOD = 200


class HoldingResponder:
    """Answers nothing until told to: each CALL's Deferred waits in order,
    as behind a backend that has gone quiet."""

    def __init__(self):
        self.waiting = []

    def answer(self, call):
        d = defer.Deferred()
        self.waiting.append((call.unique_id, d))
        return d


class BackPressureTests(unittest.TestCase):
    def setUp(self):
        config = config_from_string(CONFIG)
        self.responder = HoldingResponder()
        hub = ChargePointHub(
            config.server, DeviceRegistry(config, reactor), self.responder, reactor
        )
        self.factory = WallboxServerFactory(hub, config.server)
        self.listener = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(self.listener.stopListening)
        self.url = "ws://127.0.0.1:{}/CB-1".format(self.listener.getHost().port)
        self.hub = hub

    def reading(self):
        """Whether the server reads from the wallbox's socket now."""
        [session] = self.hub.sessions.values()
        return session.connection.transport in reactor.getReaders()

    @asyncio_test
    async def test_flood_is_held_back_then_answered_in_order(self):
        """Two hundred CALLs sent without waiting: the server stops reading at
        the limit and the rest wait in the sockets; as answers come, it
        reads again, and every CALL is answered once, in order."""
        ws = await websockets.connect(self.url, subprotocols=["ocpp1.6"])
        try:
            ids = ["h{}".format(n) for n in range(FLOOD)]
            for unique_id in ids:
                await ws.send(json.dumps([2, unique_id, "Heartbeat", {}]))

            async def paused():
                return len(self.responder.waiting) >= MAX_UNANSWERED and not self.reading()

            await eventually(paused)
            # Held back: however long the backend stays quiet, no more CALLs
            # are taken in than the limit (and what one read brought along).
            await asyncio.sleep(0.3)
            self.assertFalse(self.reading())
            held = len(self.responder.waiting)
            self.assertLess(held, FLOOD)

            answered = []
            while len(answered) < FLOOD:
                while self.responder.waiting:
                    unique_id, d = self.responder.waiting.pop(0)
                    d.callback({"currentTime": "2026-11-23T10:00:00Z"})
                frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                answered.append(frame[1])
                # Let the server read again once it may.
                await asyncio.sleep(0)
            self.assertEqual(answered, ids)
            self.assertTrue(self.reading())
        finally:
            await ws.close()
            # Wait until the server saw the close, so that the test leaves
            # no session (and no transport) behind.
            await wait_deferred(self.hub.close_all(1000, "test over"))
