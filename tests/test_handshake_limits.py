"""Clients that abuse the opening handshake: those that never finish it
(slow-loris) are closed by the server in every TLS mode, and so is one that
sends an endless HTTP request, while other wallboxes are served.

The timeouts are shortened for the test (the open handshake timeout is a
module constant of cfosproxy.ws.server, the first-byte timeout a parameter of
tls.wrap_factory); the tests check that the server closes such connections,
never how long that took.
"""

import asyncio
import collections
import json
import pathlib
import re
import shutil
import ssl
import tempfile

from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from cfosproxy.ws import server

from cfosproxy.ws import tls
from tests.certutil import TestPKI
from tests.harness import asyncio_test
from tests.wallboxes import connect
from tests.wallboxserver import WallboxServer

# Only bounds the wait for a close that the server owes, so that a server
# which never closes fails the test instead of hanging the suite.
HANG_GUARD = 30

SILENT = b""
HALF_UPGRADE = b"GET /CB-FUZZ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
# A TLS handshake record announcing 512 bytes, of which only 4 come.
PARTIAL_TLS = b"\x16\x03\x01\x02\x00\x01\x00\x01"

# What the operator reads in the log for each kind of dropped client: the
# first-byte timeout's line, and Autobahn's warning for the open handshake.
NOTHING_RECEIVED = "nothing received within"
NO_UPGRADE = "opening handshake timeout"


async def slow_client(port, first_bytes):
    """A TCP client that sends C{first_bytes} (maybe nothing) and then
    waits; its reader tells when the server has closed the connection.

    @return: C{(reader, writer, peer)}, C{peer} as the server logs it.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if first_bytes:
        writer.write(first_bytes)
        await writer.drain()
    return reader, writer, "127.0.0.1:{}".format(writer.get_extra_info("sockname")[1])


async def closed_by_server(reader, writer):
    """Whether the server closed the connection: end of stream, or a reset
    (an aborted connection), before the hang guard ran out."""
    try:
        await asyncio.wait_for(reader.read(), HANG_GUARD)
    except ConnectionResetError:
        pass
    except asyncio.TimeoutError:
        return False
    finally:
        writer.close()
    return True


def mentions(line, peer, reason):
    """Whether a log line names C{peer} ("127.0.0.1:4711", not a prefix of
    "127.0.0.1:47110") and C{reason}."""
    return reason in line and re.search(re.escape(peer) + r"(?!\d)", line) is not None


async def heartbeat(url, **kwargs):
    async with await connect(url, **kwargs) as ws:
        await ws.send('[2,"hb","Heartbeat",{}]')
        return json.loads(await asyncio.wait_for(ws.recv(), HANG_GUARD))


class SlowLorisTests(unittest.TestCase):
    """In each TLS mode, clients that stall in the handshake are dropped."""

    def setUp(self):
        # Autobahn's timers fire on whole seconds: a timeout of 1 may run
        # out at once, 2 leaves a good client at least a second.
        self.patch(server, "OPEN_HANDSHAKE_TIMEOUT", 2)
        self.log = []

        def observer(event):
            self.log.append(formatEvent(event))

        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        directory = tempfile.mkdtemp(prefix="cfosproxy-pki-")
        self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
        self.pki = TestPKI(pathlib.Path(directory))
        self.context = tls.server_context_factory(
            certificate=str(self.pki.server_cert_path),
            private_key=str(self.pki.server_key_path),
            client_ca="",
            require_client_certificate=False,
            state_dir=directory,
        )

    def client_ssl(self):
        return ssl.create_default_context(cafile=str(self.pki.ca_cert_path))

    async def check_dropped(self, wallboxes, stalls, urls):
        """Open one stalling client per C{(first bytes, log reason)} in
        C{stalls}; while they hang, wallboxes are served at C{urls}
        (C{(url, connect kwargs)}); then each stalled client is closed by the
        server, and wallboxes are still served.

        @return: C{(peer, reason)} of each stalled client, for the log.
        """
        clients = [await slow_client(wallboxes.port, first) for first, _ in stalls]
        for url, kwargs in urls:
            self.assertEqual((await heartbeat(url, **kwargs))[:2], [3, "hb"])
        for (first, _), (reader, writer, _) in zip(stalls, clients):
            self.assertTrue(await closed_by_server(reader, writer), "not closed: {!r}".format(first))
        for url, kwargs in urls:
            self.assertEqual((await heartbeat(url, **kwargs))[:2], [3, "hb"])
        return [(peer, reason) for (_, reason), (_, _, peer) in zip(stalls, clients)]

    @asyncio_test
    async def test_stalled_handshakes_are_dropped_in_every_tls_mode(self):
        """tls = off: a client that sends nothing, and one that sends half
        an HTTP upgrade. tls = on: a client that never starts the TLS
        handshake, and one that stops in the middle of it. tls = detect: a
        client that sends no first byte (so neither plain nor TLS is
        chosen), one with half an HTTP upgrade, and one that stops in the
        middle of a TLS handshake. Every one of them is closed by the
        server, and plain and TLS wallboxes are served meanwhile. (The
        three modes run at once: each waits for its timeouts.)"""
        off = WallboxServer(self, "off", sniff_timeout=1)
        on = WallboxServer(self, "on", self.context)
        detect = WallboxServer(self, "detect", self.context, sniff_timeout=1)
        tls_client = {"ssl": self.client_ssl()}
        dropped = await asyncio.gather(
            self.check_dropped(
                off,
                [(SILENT, NOTHING_RECEIVED), (HALF_UPGRADE, NO_UPGRADE)],
                [(off.url(), {})],
            ),
            self.check_dropped(
                on,
                [(SILENT, NO_UPGRADE), (PARTIAL_TLS, NO_UPGRADE)],
                [(on.url("wss"), tls_client)],
            ),
            self.check_dropped(
                detect,
                [(SILENT, NOTHING_RECEIVED), (HALF_UPGRADE, NO_UPGRADE), (PARTIAL_TLS, NO_UPGRADE)],
                [(detect.url(), {}), (detect.url("wss"), tls_client)],
            ),
        )
        # Each dropped client has its log line, naming it and saying why.
        # Two servers' clients may share a source port, so lines are
        # counted per (peer, reason) rather than expected once per peer.
        expected = collections.Counter(pair for pairs in dropped for pair in pairs)
        for (peer, reason), count in expected.items():
            lines = [line for line in self.log if mentions(line, peer, reason)]
            self.assertEqual(len(lines), count, (peer, reason, self.log))


class OversizedHandshakeTests(unittest.TestCase):
    """An HTTP upgrade request that never ends is cut off at its size, not
    buffered until the handshake times out."""

    def setUp(self):
        self.log = []

        def observer(event):
            self.log.append(formatEvent(event))

        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    @asyncio_test
    async def test_endless_request_is_cut_off_and_big_headers_pass(self):
        """A client that streams header bytes without end is closed, with a
        log line naming it, once its request passes MAX_HANDSHAKE_SIZE; a
        wallbox whose upgrade request carries a few KiB of headers is served
        as before."""
        # The open handshake timeout stays at its default, far longer than
        # this test: only the size limit can close this client.
        wallboxes = WallboxServer(self)
        reader, writer, peer = await slow_client(wallboxes.port, HALF_UPGRADE)
        try:
            for _ in range(2 * server.MAX_HANDSHAKE_SIZE // 1024):
                writer.write(b"X-Padding: " + b"a" * 1012 + b"\r\n")
                await writer.drain()
        except ConnectionResetError:
            pass  # closed while still sending
        self.assertTrue(await closed_by_server(reader, writer))
        reason = "HTTP upgrade request over {} bytes".format(server.MAX_HANDSHAKE_SIZE)
        self.assertEqual(len([line for line in self.log if mentions(line, peer, reason)]), 1)

        padding = {"X-Padding-{}".format(n): "b" * 1000 for n in range(8)}
        answer = await heartbeat(wallboxes.url(), additional_headers=padding)
        self.assertEqual(answer[:2], [3, "hb"])
