"""The link to an external OCPP backend, against a real ``websockets`` backend
on loopback: URL, auth, text both ways, reconnects, refusals, TLS."""

import asyncio
import base64
import http
import pathlib
import shutil
import ssl
import tempfile

from twisted.internet import defer, reactor
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial import unittest
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed
from zope.interface import implementer

from cfosproxy.ws import certs
from cfosproxy.core.interfaces import IBackendHandler
from cfosproxy.ws.backend import BackendLink, BackendOutages, backend_url
from tests.certutil import TestPKI
from tests.harness import asyncio_test, free_port, wait_deferred

PASSWORD = "s3cret-Passw0rd"
TIMEOUT = 5


# L{backend_url}: gateway URL + client id.
def test_slash_added():
    """A / is put between the URL and the client id."""
    assert backend_url("ws://example.com:8080/ocpp", "CB-1") == "ws://example.com:8080/ocpp/CB-1"


def test_slash_kept():
    """A URL ending in / gets no second one; path and port stay."""
    assert (
        backend_url("wss://example.com:9443/steve/websocket/", "CB-1")
        == "wss://example.com:9443/steve/websocket/CB-1"
    )


def test_client_id_percent_encoded():
    """The client id stays one path segment, whatever it holds."""
    assert backend_url("ws://h/ocpp", "Box 1/ä?#") == "ws://h/ocpp/Box%201%2F%C3%A4%3F%23"


@implementer(IBackendHandler)
class RecordingHandler:
    """Records what the link reports, for tests to await in order."""

    def __init__(self):
        self.events = asyncio.Queue()

    def link_opened(self, link):
        self.events.put_nowait(("opened", link))

    def link_closed(self, reason):
        self.events.put_nowait(("closed", reason))

    def text_received(self, text):
        self.events.put_nowait(("text", text))

    async def next(self):
        return await asyncio.wait_for(self.events.get(), TIMEOUT)


class FakeBackend:
    """An OCPP backend made with C{websockets} on a loopback port.

    @ivar requests: every HTTP upgrade request it got.
    @ivar refuse: an HTTP status to refuse upgrades with, or None.
    """

    def __init__(self, *, ssl=None, subprotocols=("ocpp1.6",), refuse=None):
        self.port = free_port()
        self.ssl = ssl
        self.subprotocols = list(subprotocols)
        self.refuse = refuse
        self.requests = []
        self.connections = asyncio.Queue()
        self.received = asyncio.Queue()
        self.close_codes = asyncio.Queue()
        self.server = None

    def url(self, path="/ocpp", client_id="CB-0001", host="127.0.0.1"):
        scheme = "wss" if self.ssl else "ws"
        return backend_url("{}://{}:{}{}".format(scheme, host, self.port, path), client_id)

    async def start(self):
        self.server = await serve(
            self._serve,
            "127.0.0.1",
            self.port,
            ssl=self.ssl,
            subprotocols=self.subprotocols or None,
            process_request=self._process_request,
        )

    async def stop(self):
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    def _process_request(self, connection, request):
        self.requests.append(request)
        if self.refuse is not None:
            return connection.respond(self.refuse, "go away\n")
        return None

    async def _serve(self, ws):
        await self.connections.put(ws)
        try:
            async for message in ws:
                await self.received.put(message)
        except ConnectionClosed:
            pass
        await self.close_codes.put(ws.close_code)

    async def next_connection(self):
        return await asyncio.wait_for(self.connections.get(), TIMEOUT)


async def eventually(predicate, timeout=TIMEOUT):
    """Wait until C{predicate()} is true (checked every 10 ms)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out waiting for {}".format(predicate))
        await asyncio.sleep(0.01)


class LinkTestCase(unittest.TestCase):
    """Starts backends and links that are stopped again after each test."""

    def setUp(self):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def pki(self):
        directory = tempfile.mkdtemp(prefix="cfosproxy-backend-")
        self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
        return TestPKI(pathlib.Path(directory))

    async def backend(self, **kwargs):
        backend = FakeBackend(**kwargs)
        await backend.start()
        self.addCleanup(
            lambda: defer.Deferred.fromFuture(asyncio.ensure_future(backend.stop()))
        )
        return backend

    def link(self, url, handler=None, **kwargs):
        options = dict(
            url=url,
            client_id="CB-0001",
            password="",
            ca="",
            certificate="",
            private_key="",
            handler=handler or RecordingHandler(),
            reactor=reactor,
            min_delay=0.05,
            max_delay=0.2,
            refused_delay=0.05,
        )
        options.update(kwargs)
        link = BackendLink(**options)
        self.addCleanup(link.stop)
        link.start()
        return link

    def link_log(self, level=None):
        """The link's own log events (not Autobahn's or Twisted's)."""
        return [
            e
            for e in self.events
            if e.get("log_namespace", "").startswith("cfosproxy.ws.backend")
            and (level is None or e.get("log_level") == level)
        ]


class ConnectionTests(LinkTestCase):
    """A plain ws:// backend: handshake, frames, reconnects, stop."""

    @asyncio_test
    async def test_path_and_basic_auth(self):
        """The backend sees the URL path with the client id, the subprotocol
        and the Basic auth header of client id and password."""
        backend = await self.backend()
        handler = RecordingHandler()
        link = self.link(
            backend.url(path="/steve/websocket/", client_id="Box 1"),
            handler,
            client_id="Box 1",
            password=PASSWORD,
        )
        kind, opened = await handler.next()
        self.assertEqual((kind, opened), ("opened", link))
        self.assertEqual(link.state, "connected")
        self.assertTrue(link.connected)
        request = backend.requests[0]
        self.assertEqual(request.path, "/steve/websocket/Box%201")
        self.assertEqual(
            request.headers["Authorization"],
            "Basic " + base64.b64encode(b"Box 1:" + PASSWORD.encode()).decode(),
        )
        ws = await backend.next_connection()
        self.assertEqual(ws.subprotocol, "ocpp1.6")

    @asyncio_test
    async def test_no_password_no_auth_header(self):
        """Without a password no Authorization header is sent."""
        backend = await self.backend()
        handler = RecordingHandler()
        self.link(backend.url(), handler)
        await handler.next()
        self.assertNotIn("Authorization", backend.requests[0].headers)

    @asyncio_test
    async def test_text_both_ways(self):
        """Text frames pass both ways unchanged, byte for byte."""
        backend = await self.backend()
        handler = RecordingHandler()
        link = self.link(backend.url(), handler)
        await handler.next()
        ws = await backend.next_connection()
        frame = '[2,"1","Heartbeat",{"x":"Köln \\u00e4"}]'
        self.assertTrue(link.send_text(frame))
        self.assertEqual(await asyncio.wait_for(backend.received.get(), TIMEOUT), frame)
        await ws.send('[3,"1",{"currentTime":"2024-01-01T00:00:00Z"}]')
        self.assertEqual(
            await handler.next(), ("text", '[3,"1",{"currentTime":"2024-01-01T00:00:00Z"}]')
        )

    @asyncio_test
    async def test_binary_frames_ignored(self):
        """A binary frame from the backend is logged and dropped; the link
        stays open and later text frames arrive."""
        backend = await self.backend()
        handler = RecordingHandler()
        link = self.link(backend.url(), handler)
        await handler.next()
        ws = await backend.next_connection()
        await ws.send(b"\x00\x01binary")
        await ws.send("[2,\"a\",\"Reset\",{}]")
        self.assertEqual(await handler.next(), ("text", "[2,\"a\",\"Reset\",{}]"))
        self.assertTrue(link.connected)
        self.assertTrue(
            any("binary" in formatEvent(e) for e in self.link_log(LogLevel.warn))
        )

    @asyncio_test
    async def test_text_frame_not_utf8_closes_with_1007(self):
        """A backend's text frame that is not UTF-8 is not handed on: the
        link closes with 1007 (invalid payload), logs it, and connects
        again."""
        backend = await self.backend()
        handler = RecordingHandler()
        link = self.link(backend.url(), handler)
        self.assertEqual((await handler.next())[0], "opened")
        ws = await backend.next_connection()
        await ws.send(b'[2,"a","Reset",{"type":"\xc3\x28"}]', text=True)
        await asyncio.wait_for(ws.wait_closed(), 10)
        self.assertEqual(ws.close_code, 1007)
        self.assertEqual((await handler.next())[0], "closed")
        self.assertEqual((await handler.next())[0], "opened")
        self.assertTrue(
            any("not UTF-8" in formatEvent(e) for e in self.link_log(LogLevel.warn))
        )
        self.assertTrue(link.connected)

    @asyncio_test
    async def test_handler_exception_logged(self):
        """An exception in the handler is logged; the link keeps working."""

        class Failing(RecordingHandler):
            def text_received(self, text):
                if text == "boom":
                    raise ZeroDivisionError(text)
                super().text_received(text)

        backend = await self.backend()
        handler = Failing()
        link = self.link(backend.url(), handler)
        await handler.next()
        ws = await backend.next_connection()
        await ws.send("boom")
        await ws.send("after")
        self.assertEqual(await handler.next(), ("text", "after"))
        self.assertTrue(link.connected)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    @asyncio_test
    async def test_reconnects(self):
        """When the backend goes away and comes back, the handler sees
        link_closed and then link_opened again."""
        backend = await self.backend()
        handler = RecordingHandler()
        link = self.link(backend.url(), handler)
        self.assertEqual((await handler.next())[0], "opened")
        await backend.stop()
        kind, reason = await handler.next()
        self.assertEqual(kind, "closed")
        self.assertEqual(reason, "closed by the backend with 1001")
        self.assertFalse(link.connected)
        self.assertFalse(link.send_text("[2,\"x\",\"Heartbeat\",{}]"))
        # Down for a moment: attempts fail with "connection refused".
        await eventually(lambda: link.state == "failed")
        self.assertEqual(link.last_error, "connection refused")
        await backend.start()
        self.assertEqual(await handler.next(), ("opened", link))
        self.assertEqual(link.state, "connected")
        self.assertIsNone(link.last_error)
        # One warning when it went down, one info line when it came back.
        self.assertEqual(len(self.link_log(LogLevel.warn)), 1)
        connected = [e for e in self.link_log(LogLevel.info) if "Connected" in formatEvent(e)]
        self.assertEqual(len(connected), 2)

    @asyncio_test
    async def test_a_backend_close_reason_cannot_forge_log_lines(self):
        """A backend's close reason reaches the handler, last_error and the
        log with control characters escaped: a CR LF or an ESC in it cannot
        forge a log line or a terminal's colours."""
        backend = await self.backend()
        handler = RecordingHandler()
        link = self.link(backend.url(), handler)
        await handler.next()
        ws = await backend.next_connection()
        await ws.close(4000, "bye\r\n2026 [cfosproxy#critical] forged\x1b[31m")
        kind, reason = await handler.next()
        self.assertEqual(kind, "closed")
        self.assertEqual(
            reason, "closed by the backend with 4000 bye\\r\\n2026 [cfosproxy#critical] forged\\x1b[31m"
        )
        self.assertEqual(link.last_error, reason)
        for event in self.link_log(LogLevel.info):
            self.assertNotIn("\n", formatEvent(event))
            self.assertNotIn("\x1b", formatEvent(event))

    @asyncio_test
    async def test_sending_on_a_closing_link_reports_it_closed(self):
        """A frame sent while the close handshake runs is not sent, and the
        handler hears at once that the link closed (its session would
        otherwise wait a whole call timeout for an answer that cannot
        come); the close itself is reported when it is done."""
        backend = await self.backend()
        handler = RecordingHandler()
        link = self.link(backend.url(), handler)
        self.assertEqual((await handler.next())[0], "opened")
        await backend.next_connection()
        link.close(1000, "bye")
        self.assertFalse(link.send_text('[2,"x","Heartbeat",{}]'))
        self.assertEqual(
            handler.events.get_nowait(), ("closed", "the link to the backend is closing")
        )
        kind, _ = await handler.next()
        self.assertEqual(kind, "closed")

    @asyncio_test
    async def test_stop_closes_with_going_away(self):
        """stop() closes with 1001, tells the handler, and does not reconnect."""
        backend = await self.backend()
        handler = RecordingHandler()
        link = self.link(backend.url(), handler)
        await handler.next()
        await backend.next_connection()
        await wait_deferred(link.stop())
        self.assertEqual(await asyncio.wait_for(backend.close_codes.get(), TIMEOUT), 1001)
        self.assertEqual(
            await handler.next(), ("closed", "closed by cfosproxy with 1001 going away")
        )
        self.assertEqual(link.state, "stopped")
        self.assertFalse(link.send_text("[]"))
        await asyncio.sleep(0.3)  # several retry delays: no new attempt
        self.assertEqual(len(backend.requests), 1)

    @asyncio_test
    async def test_start_during_stop_keeps_the_link(self):
        """A wallbox that drops and comes back at once stops its link and
        starts it again while the close handshake still runs: the stop is
        called off and the link opens again (it used to end stopped)."""
        backend = await self.backend()
        handler = RecordingHandler()
        link = self.link(backend.url(), handler)
        self.assertEqual((await handler.next())[0], "opened")
        stopping = link.stop()
        link.start()
        await wait_deferred(stopping)
        self.assertEqual((await handler.next())[0], "closed")
        self.assertEqual(await handler.next(), ("opened", link))
        self.assertEqual(link.state, "connected")
        self.assertEqual(len(backend.requests), 2)

    @asyncio_test
    async def test_send_text_when_not_connected(self):
        """send_text returns False before the link has ever connected."""
        link = self.link("ws://127.0.0.1:{}/ocpp/CB-0001".format(free_port()))
        self.assertFalse(link.connected)
        self.assertFalse(link.send_text("[2,\"1\",\"Heartbeat\",{}]"))
        await eventually(lambda: link.state == "failed")
        self.assertEqual(link.last_error, "connection refused")

    @asyncio_test
    async def test_subprotocol_required(self):
        """A backend that does not select ocpp1.6 is not used: the attempt
        counts as failed and the handler is not told of a link."""
        backend = await self.backend(subprotocols=())
        handler = RecordingHandler()
        link = self.link(backend.url(), handler)
        await eventually(lambda: link.state == "failed")
        self.assertIn("ocpp1.6", link.last_error)
        self.assertTrue(handler.events.empty())


class RefusalTests(LinkTestCase):
    """A backend that answers the upgrade with an HTTP error."""

    @asyncio_test
    async def test_refused_waits_refused_delay(self):
        """A 401 makes the link "refused" and it waits refused_delay before
        the next attempt instead of hammering the backend."""
        backend = await self.backend(refuse=http.HTTPStatus.UNAUTHORIZED)
        handler = RecordingHandler()
        link = self.link(backend.url(), handler, password=PASSWORD, refused_delay=60)
        await eventually(lambda: link.state == "refused")
        self.assertIn("401", link.last_error)
        self.assertFalse(link.connected)
        await asyncio.sleep(0.5)  # ten min_delays
        self.assertEqual(len(backend.requests), 1)
        self.assertTrue(handler.events.empty())

    @asyncio_test
    async def test_refusals_logged_once(self):
        """Refused again and again: one warning, not one per attempt."""
        backend = await self.backend(refuse=http.HTTPStatus.FORBIDDEN)
        link = self.link(backend.url(), password=PASSWORD)
        await eventually(lambda: len(backend.requests) >= 3)
        self.assertEqual(link.state, "refused")
        self.assertIn("403", link.last_error)
        warnings = self.link_log(LogLevel.warn)
        self.assertEqual(len(warnings), 1)
        self.assertIn("403", formatEvent(warnings[0]))

    @asyncio_test
    async def test_password_not_logged(self):
        """Neither the password nor the Basic auth token appears in any log
        event, whether the backend refuses or accepts the link."""
        token = base64.b64encode(("CB-0001:" + PASSWORD).encode()).decode()
        refusing = await self.backend(refuse=http.HTTPStatus.UNAUTHORIZED)
        link = self.link(refusing.url(), password=PASSWORD)
        await eventually(lambda: len(refusing.requests) >= 2)
        await wait_deferred(link.stop())
        backend = await self.backend()
        handler = RecordingHandler()
        link = self.link(backend.url(), handler, password=PASSWORD)
        await handler.next()
        self.assertTrue(link.send_text("[2,\"1\",\"Heartbeat\",{}]"))
        await wait_deferred(link.stop())
        self.assertTrue(self.events)
        for event in self.events:
            text = formatEvent(event) + repr(event)
            self.assertNotIn(PASSWORD, text)
            self.assertNotIn(token, text)


def server_ssl(cert, key, client_ca=None):
    """A TLS server context for the fake backend (optionally asking for a
    client certificate from C{client_ca})."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(str(client_ca))
    return context


class TLSTests(LinkTestCase):
    """wss:// backends: server verification and client certificates."""

    @asyncio_test
    async def test_wss_with_ca(self):
        """A backend whose certificate comes from gateway_ca is accepted,
        by IP address and by host name."""
        pki = self.pki()
        backend = await self.backend(ssl=server_ssl(pki.server_cert_path, pki.server_key_path))
        for host in ("127.0.0.1", "localhost"):
            handler = RecordingHandler()
            link = self.link(backend.url(host=host), handler, ca=str(pki.ca_cert_path))
            self.assertEqual(await handler.next(), ("opened", link))
            self.assertTrue(link.send_text("[]"))
            self.assertEqual(await asyncio.wait_for(backend.received.get(), TIMEOUT), "[]")
            await wait_deferred(link.stop())

    @asyncio_test
    async def test_wss_unknown_ca(self):
        """A backend certificate from another CA fails verification."""
        pki = self.pki()
        backend = await self.backend(ssl=server_ssl(pki.server_cert_path, pki.server_key_path))
        handler = RecordingHandler()
        link = self.link(backend.url(), handler, ca=str(pki.other_ca_path))
        await eventually(lambda: link.state == "failed")
        self.assertIn("certificate verify failed", link.last_error)
        self.assertTrue(handler.events.empty())

    @asyncio_test
    async def test_wss_host_name_mismatch(self):
        """A trusted certificate that does not name the URL's host fails,
        and last_error says it is the host name."""
        directory = pathlib.Path(tempfile.mkdtemp(prefix="cfosproxy-backend-"))
        self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
        ca_cert, ca_key = certs.make_ca("backend test CA")
        cert, key = certs.make_certificate(
            "backend.example", ca_cert, ca_key, dns_names=["backend.example"]
        )
        certs.write_certificate(directory / "ca.pem", ca_cert)
        certs.write_certificate(directory / "cert.pem", cert)
        certs.write_private_key(directory / "key.pem", key)
        backend = await self.backend(ssl=server_ssl(directory / "cert.pem", directory / "key.pem"))
        handler = RecordingHandler()
        link = self.link(backend.url(), handler, ca=str(directory / "ca.pem"))
        await eventually(lambda: link.state == "failed")
        self.assertIn("hostname mismatch", link.last_error)
        self.assertIn("127.0.0.1", link.last_error)
        self.assertTrue(handler.events.empty())

    @asyncio_test
    async def test_wss_certificate_without_subject_alt_name(self):
        """A certificate from the trusted CA that names its host only in the
        common name (CN=evil.example, no subjectAltName) fails the host name
        check: no WebSocket request (so no password) reaches the backend,
        and last_error says why."""
        pki = self.pki()
        cert, key = pki.server_cert_without_san("evil.example")
        backend = await self.backend(ssl=server_ssl(cert, key))
        handler = RecordingHandler()
        link = self.link(
            backend.url(host="localhost"), handler, ca=str(pki.ca_cert_path), password=PASSWORD
        )
        await eventually(lambda: link.state == "failed")
        self.assertIn("certificate verify failed", link.last_error)
        self.assertIn("no subjectAltName", link.last_error)
        self.assertTrue(handler.events.empty())
        self.assertEqual(backend.requests, [])

    @asyncio_test
    async def test_client_certificate(self):
        """A backend that requires a client certificate (security profile 3)
        accepts the link's certificate, with the key in its own file or in
        the certificate file."""
        pki = self.pki()
        backend = await self.backend(
            ssl=server_ssl(pki.server_cert_path, pki.server_key_path, pki.ca_cert_path)
        )
        cert_path, key_path = pki.client_cert_path("CB-0001")
        combined = pathlib.Path(str(cert_path) + ".combined")
        combined.write_bytes(cert_path.read_bytes() + key_path.read_bytes())
        for certificate, private_key in ((cert_path, key_path), (combined, "")):
            handler = RecordingHandler()
            link = self.link(
                backend.url(),
                handler,
                ca=str(pki.ca_cert_path),
                certificate=str(certificate),
                private_key=str(private_key),
            )
            self.assertEqual(await handler.next(), ("opened", link))
            ws = await backend.next_connection()
            self.assertEqual(
                dict(x[0] for x in ws.transport.get_extra_info("peercert")["subject"])["commonName"],
                "CB-0001",
            )
            await wait_deferred(link.stop())

    @asyncio_test
    async def test_client_certificate_missing(self):
        """Without a client certificate such a backend cannot be reached."""
        pki = self.pki()
        backend = await self.backend(
            ssl=server_ssl(pki.server_cert_path, pki.server_key_path, pki.ca_cert_path)
        )
        handler = RecordingHandler()
        link = self.link(backend.url(), handler, ca=str(pki.ca_cert_path))
        await eventually(lambda: link.state == "failed")
        # TLS 1.2 reports the server's alert; with TLS 1.3 the server hangs
        # up after the client finished its handshake.
        self.assertRegex(link.last_error, "TLS handshake failed|client certificate")
        self.assertTrue(handler.events.empty())
        self.assertEqual(backend.requests, [])


class OutageLogTests(LinkTestCase):
    """A backend that goes down is logged once for all its links."""

    @asyncio_test
    async def test_one_warning_for_many_links_and_one_line_when_back(self):
        """Three wallboxes' links to one backend that is down: one warning
        naming the backend, not three; once it is back and every link is
        open, one line saying so."""
        port = free_port()
        outages = BackendOutages(reactor)
        links = [
            self.link(
                backend_url("ws://127.0.0.1:{}/ocpp".format(port), "CB-{}".format(n)),
                outages=outages,
            )
            for n in range(3)
        ]
        await eventually(lambda: all(link.state == "failed" for link in links))
        await asyncio.sleep(0.3)  # several more failed attempts each
        warnings = [formatEvent(e) for e in self.link_log(LogLevel.warn)]
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn("ws://127.0.0.1:{}/ocpp/".format(port), warnings[0])
        self.assertIn("connection refused", warnings[0])

        backend = FakeBackend()
        backend.port = port
        await backend.start()
        self.addCleanup(lambda: defer.Deferred.fromFuture(asyncio.ensure_future(backend.stop())))
        await eventually(lambda: all(link.state == "connected" for link in links))
        back = [formatEvent(e) for e in self.link_log(LogLevel.info) if "reachable again" in formatEvent(e)]
        self.assertEqual(len(back), 1, back)
        self.assertEqual(len(self.link_log(LogLevel.warn)), 1)
