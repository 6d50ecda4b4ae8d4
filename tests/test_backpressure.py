"""Back-pressure on a real socket: a wallbox that sends CALLs faster than
they are answered (a slow backend behind the gateway) is held back by TCP
instead of being buffered without bound; and one that never reads what it
is sent is held back, then closed."""

import asyncio
import json
import pathlib
import shutil
import socket
import ssl
import tempfile

import websockets
from twisted.internet import defer, reactor
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from cfosproxy.ws import flowcontrol

from cfosproxy.ws import tls
from cfosproxy.config import config_from_string
from cfosproxy.core.devices import DeviceRegistry
from cfosproxy.ws.flowcontrol import WRITE_PAUSE_SIZE, buffered_bytes, write_buffer_limit
from cfosproxy.core.hub import ChargePointHub
from cfosproxy.ws.server import WallboxServerFactory
from cfosproxy.core.session import MAX_UNANSWERED
from tests.certutil import TestPKI
from tests.fakes import AnsweringHandler
from tests.fuzzing import CHARGEBOX_ID
from tests.harness import asyncio_test, eventually, wait_deferred
from tests.wallboxserver import WallboxServer

# Only bounds the wait for what the daemon owes, so that a daemon that
# never closes fails the test instead of hanging the suite.
HANG_GUARD = 60

CONFIG = """
[server]
tls = off
[wallbox:a]
type = ocpp
address = CB-1
"""

FLOOD = 200


class HoldingResponder(AnsweringHandler):
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
            config.server, DeviceRegistry(config, reactor), lambda _: self.responder, reactor
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


# -- a wallbox that never reads ------------------------------------------------

UPGRADE = (
    "GET /{cbid} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Protocol: ocpp1.6\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def masked_heartbeats(start, count):
    """C{count} Heartbeat CALLs as masked text frames (RFC 6455 §5.3)."""
    mask = b"\x11\x22\x33\x44"
    frames = []
    for n in range(start, start + count):
        payload = '[2,"hb{}","Heartbeat",{{}}]'.format(n).encode()
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        frames.append(bytes((0x81, 0x80 | len(payload))) + mask + body)
    return b"".join(frames)


async def non_reading_wallbox(port, ssl_context=None):
    """A wallbox's socket with a small receive buffer that, once its
    WebSocket is open, never reads again."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(
        sock=sock, ssl=ssl_context, server_hostname="localhost" if ssl_context else None
    )
    writer.write(UPGRADE.format(cbid=CHARGEBOX_ID).encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HANG_GUARD)
    assert head.startswith(b"HTTP/1.1 101"), head
    return writer


class NonReadingWallboxTests(unittest.TestCase):
    """A wallbox that sends Heartbeats as fast as it can and never reads the
    answers: what the daemon keeps for it stays bounded, and the daemon
    closes the connection, in plain and in TLS connections."""

    def setUp(self):
        # The wallbox takes nothing at all: closing it sooner than the
        # daemon's minute changes nothing else.
        self.patch(flowcontrol, "WRITE_STALL_TIMEOUT", 2)
        self.log = []

        def observer(event):
            self.log.append(formatEvent(event))

        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    async def flood(self, wallboxes, ssl_context=None):
        """Flood C{wallboxes} from a non-reading wallbox; return the most
        bytes seen waiting for it in the daemon, sampled between writes."""
        writer = await non_reading_wallbox(wallboxes.port, ssl_context)
        [session] = wallboxes.hub.sessions.values()
        transport = session.connection.transport
        largest = 0
        sent = 0
        try:
            while wallboxes.hub.sessions:
                largest = max(largest, buffered_bytes(transport))
                if writer.transport.get_write_buffer_size() < 1 << 20:
                    writer.write(masked_heartbeats(sent, 200))
                    sent += 200
                # Let the daemon read, answer and write.
                await asyncio.sleep(0.001)
                if asyncio.get_running_loop().time() > self.deadline:
                    self.fail("the daemon did not close the connection")
        finally:
            writer.transport.abort()
        return largest

    async def check_bounded_and_closed(self, wallboxes, ssl_context=None):
        self.deadline = asyncio.get_running_loop().time() + HANG_GUARD
        largest = await self.flood(wallboxes, ssl_context)
        self.assertGreater(largest, WRITE_PAUSE_SIZE)
        self.assertLessEqual(largest, write_buffer_limit(65536))
        closing = [line for line in self.log if "closing the connection" in line]
        self.assertEqual(len(closing), 1, self.log)
        self.assertTrue(closing[0].startswith(CHARGEBOX_ID + ": closing the connection: "))
        self.assertIn("reading paused", "\n".join(self.log))

    @asyncio_test
    async def test_plain_connection(self):
        """Over plain TCP: bounded, then closed."""
        await self.check_bounded_and_closed(WallboxServer(self, "off"))

    @asyncio_test
    async def test_tls_connection(self):
        """Over TLS (the buffer sits under the TLS layer): bounded, then
        closed."""
        directory = tempfile.mkdtemp(prefix="cfosproxy-pki-")
        self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
        pki = TestPKI(pathlib.Path(directory))
        context = tls.server_context_factory(
            certificate=str(pki.server_cert_path),
            private_key=str(pki.server_key_path),
            client_ca="",
            require_client_certificate=False,
            state_dir=directory,
        )
        await self.check_bounded_and_closed(
            WallboxServer(self, "on", context),
            ssl.create_default_context(cafile=str(pki.ca_cert_path)),
        )
