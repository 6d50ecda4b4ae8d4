"""End-to-end TLS: the tls off/detect/on matrix, the server certificate, and
client certificates (security profile 3), with real wallbox clients."""

import asyncio
import json
import pathlib
import ssl

import websockets
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from tests.backendpeer import BackendPeer
from tests.certutil import TestPKI
from tests.harness import RunningDaemon, RunningWallbox, asyncio_test, eventually, free_port, wait_deferred
from tests.wallboxes import connect, http_get, refused_status


def client_ssl(ca_path, cert=None):
    """A TLS client context that trusts C{ca_path} (and presents C{cert})."""
    context = ssl.create_default_context(cafile=str(ca_path))
    if cert is not None:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    return context


async def heartbeat(url, **kwargs):
    """Connect, send a Heartbeat, return the answer frame."""
    async with await connect(url, **kwargs) as ws:
        await ws.send('[2,"hb","Heartbeat",{}]')
        return json.loads(await asyncio.wait_for(ws.recv(), 10))


async def fails(url, **kwargs):
    """Whether connecting to C{url} fails before a WebSocket opens."""
    try:
        ws = await connect(url, **kwargs)
    except (OSError, EOFError, ssl.SSLError, websockets.exceptions.InvalidHandshake, asyncio.TimeoutError):
        return True
    await ws.close()
    return False


class TLSModeTests(unittest.TestCase):
    """Which clients each tls mode serves on the one OCPP port."""

    def setUp(self):
        self.pki = TestPKI(pathlib.Path(self.mktemp_dir()))

    def mktemp_dir(self):
        import shutil
        import tempfile

        directory = tempfile.mkdtemp(prefix="cfosproxy-pki-")
        self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
        return directory

    def daemon(self, mode, extra=""):
        return RunningDaemon(
            self,
            server="tls = {}\ncertificate = {}\nprivate_key = {}\n{}".format(
                mode, self.pki.server_cert_path, self.pki.server_key_path, extra
            ),
        )

    @asyncio_test
    async def test_off(self):
        """tls = off: plain clients are served, TLS clients fail."""
        daemon = self.daemon("off")
        self.assertEqual((await heartbeat(daemon.url()))[:2], [3, "hb"])
        self.assertTrue(await fails(daemon.url(scheme="wss"), ssl=client_ssl(self.pki.ca_cert_path)))

    @asyncio_test
    async def test_on(self):
        """tls = on: TLS clients are served, plain clients fail."""
        daemon = self.daemon("on")
        answer = await heartbeat(daemon.url(scheme="wss"), ssl=client_ssl(self.pki.ca_cert_path))
        self.assertEqual(answer[:2], [3, "hb"])
        self.assertTrue(await fails(daemon.url()))

    @asyncio_test
    async def test_detect(self):
        """tls = detect: plain and TLS clients are both served on one port."""
        daemon = self.daemon("detect")
        self.assertEqual((await heartbeat(daemon.url()))[:2], [3, "hb"])
        answer = await heartbeat(daemon.url(scheme="wss"), ssl=client_ssl(self.pki.ca_cert_path))
        self.assertEqual(answer[:2], [3, "hb"])

    @asyncio_test
    async def test_wrong_trust_refused_by_client(self):
        """A client that trusts another CA refuses the server's certificate."""
        daemon = self.daemon("on")
        self.assertTrue(await fails(daemon.url(scheme="wss"), ssl=client_ssl(self.pki.other_ca_path)))

    @asyncio_test
    async def test_chain_served(self):
        """An operator certificate with an intermediate in its file is
        served with the chain: a client trusting only the root connects."""
        daemon = RunningDaemon(
            self,
            server="tls = on\ncertificate = {}\n".format(self.pki.combined_cert_path),
        )
        answer = await heartbeat(daemon.url(scheme="wss"), ssl=client_ssl(self.pki.ca_cert_path))
        self.assertEqual(answer[:2], [3, "hb"])

    @asyncio_test
    async def test_client_certificates(self):
        """require_client_certificate: no certificate and one from the wrong
        CA are refused; the right one is served and its subject shows in the
        status API; in detect mode a plain client gets 403."""
        daemon = self.daemon(
            "detect",
            "client_ca = {}\nrequire_client_certificate = yes\n".format(self.pki.ca_cert_path),
        )
        trust = self.pki.ca_cert_path
        url = daemon.url(scheme="wss")
        self.assertTrue(await fails(url, ssl=client_ssl(trust)))
        wrong = self.pki.client_cert_path("CB-0001", wrong_ca=True)
        self.assertTrue(await fails(url, ssl=client_ssl(trust, wrong)))
        right = self.pki.client_cert_path("CB-0001")
        async with await connect(url, ssl=client_ssl(trust, right)) as ws:
            await ws.send('[2,"hb","Heartbeat",{}]')
            self.assertEqual(json.loads(await ws.recv())[:2], [3, "hb"])
            _, device = await http_get(daemon.status_url("/api/devices/garage-1"))
            self.assertIn("CN=CB-0001", device["certificate_subject"])
        code, _ = await refused_status(daemon.url())
        self.assertEqual(code, 403)


TWO_WALLBOXES = """
[wallbox:a]
type = ocpp
address = CB-A
[wallbox:b]
type = ocpp
address = CB-B
"""


class CertificateIdentityTests(unittest.TestCase):
    """Security profile 3: a client certificate is good for the one
    ChargeBox-ID it names, and only that one."""

    def setUp(self):
        self.pki = make_pki(self)
        self.log = []
        globalLogPublisher.addObserver(self.log.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.log.append)

    def daemon(self, extra=""):
        return RunningDaemon(
            self,
            server="tls = on\ncertificate = {}\nprivate_key = {}\nclient_ca = {}\n"
            "require_client_certificate = yes\n{}".format(
                self.pki.server_cert_path, self.pki.server_key_path, self.pki.ca_cert_path, extra
            ),
            wallboxes=TWO_WALLBOXES,
        )

    def refusals(self):
        return [formatEvent(e) for e in self.log if "refused a connection" in (formatEvent(e) or "")]

    @asyncio_test
    async def test_certificate_of_one_wallbox_cannot_connect_as_another(self):
        """CB-B is connected with its own certificate. A client with the
        valid certificate of CB-A asking to be CB-B is refused with 403
        before the upgrade; the log names its address, the ChargeBox-ID it
        asked for and the certificate's CN; the real CB-B stays connected
        and is still served."""
        daemon = self.daemon()
        trust = self.pki.ca_cert_path
        own = client_ssl(trust, self.pki.client_cert_path("CB-B"))
        async with await connect(daemon.url("CB-B", scheme="wss"), ssl=own) as real:
            await real.send('[2,"1","Heartbeat",{}]')
            self.assertEqual(json.loads(await asyncio.wait_for(real.recv(), 10))[:2], [3, "1"])
            other = client_ssl(trust, self.pki.client_cert_path("CB-A"))
            code, _ = await refused_status(daemon.url("CB-B", scheme="wss"), ssl=other)
            self.assertEqual(code, 403)
            await real.send('[2,"2","Heartbeat",{}]')
            self.assertEqual(json.loads(await asyncio.wait_for(real.recv(), 10))[:2], [3, "2"])
            _, device = await http_get(daemon.status_url("/api/devices/b"))
            self.assertTrue(device["connected"])
            self.assertIn("CN=CB-B", device["certificate_subject"])
        [line] = self.refusals()
        self.assertRegex(line, r"from \S*127\.0\.0\.1:\d+")
        self.assertIn("'CB-B'", line)
        self.assertIn("subject CN is 'CB-A'", line)
        # The certificate is still good for its own wallbox.
        self.assertEqual(
            (await heartbeat(daemon.url("CB-A", scheme="wss"), ssl=other))[:2], [3, "hb"]
        )

    @asyncio_test
    async def test_certificate_without_common_name_refused(self):
        """A certificate from the client CA whose subject has no CN (its
        name only in a DNS subjectAltName) is refused with 403 and a log
        line saying it has no CN."""
        daemon = self.daemon()
        cert = self.pki.client_cert_with("no-cn", [], dns_names=["CB-A"])
        code, _ = await refused_status(
            daemon.url("CB-A", scheme="wss"), ssl=client_ssl(self.pki.ca_cert_path, cert)
        )
        self.assertEqual(code, 403)
        [line] = self.refusals()
        self.assertIn("has no subject CN", line)

    @asyncio_test
    async def test_identity_in_serial_number(self):
        """client_certificate_identity = serial_number: a certificate with
        CN=Power Brain and serialNumber=CB-A connects as CB-A only."""
        from cryptography.x509.oid import NameOID

        daemon = self.daemon("client_certificate_identity = serial_number\n")
        cert = self.pki.client_cert_with(
            "serial", [(NameOID.COMMON_NAME, "Power Brain"), (NameOID.SERIAL_NUMBER, "CB-A")]
        )
        context = client_ssl(self.pki.ca_cert_path, cert)
        self.assertEqual((await heartbeat(daemon.url("CB-A", scheme="wss"), ssl=context))[:2], [3, "hb"])
        code, _ = await refused_status(daemon.url("CB-B", scheme="wss"), ssl=client_ssl(self.pki.ca_cert_path, cert))
        self.assertEqual(code, 403)


class SelfSignedTests(unittest.TestCase):
    """The built-in certificate, made on first start and kept."""

    @asyncio_test
    async def test_generated_once_and_reused(self):
        """With no certificate configured, the first start makes one in
        state_dir (key mode 0600); a TLS client that trusts it connects; a
        restart serves the very same certificate."""
        daemon = RunningDaemon(self, server="tls = on\n")
        cert = pathlib.Path(daemon.state_dir, "server-cert.pem")
        key = pathlib.Path(daemon.state_dir, "server-key.pem")
        first = cert.read_bytes()
        self.assertEqual(key.stat().st_mode & 0o777, 0o600)
        context = ssl.create_default_context(cadata=first.decode())
        context.check_hostname = False  # the certificate names this host, not 127.0.0.1's name
        self.assertEqual((await heartbeat(daemon.url(scheme="wss"), ssl=context))[:2], [3, "hb"])
        await wait_deferred(daemon.restart())
        self.assertEqual(cert.read_bytes(), first)
        self.assertEqual((await heartbeat(daemon.url(scheme="wss"), ssl=context))[:2], [3, "hb"])


def make_pki(testcase):
    """A test PKI in a directory removed after C{testcase}."""
    import shutil
    import tempfile

    directory = tempfile.mkdtemp(prefix="cfosproxy-pki-")
    testcase.addCleanup(shutil.rmtree, directory, ignore_errors=True)
    return TestPKI(pathlib.Path(directory))


def server_ssl(cert):
    """A TLS server context for a backend with the certificate and key C{cert}."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert[0]), str(cert[1]))
    return context


class HostNameCheckTests(unittest.TestCase):
    """The TLS clients (the gateway toward a backend, the virtual wallbox
    toward its server) refuse a trusted certificate that is not for the
    URL's host, before anything, and any password, is sent."""

    async def backend_without_subject_alt_name(self, pki):
        """A backend (checking the password "geheim") whose certificate
        comes from the trusted test CA but is CN=evil.example with no
        subjectAltName."""
        peer = BackendPeer(free_port(), ssl=server_ssl(pki.server_cert_without_san("evil.example")))
        peer.password = "geheim"
        await peer.start()
        self.addCleanup(lambda: asyncio.ensure_future(peer.stop()))
        return peer

    @asyncio_test
    async def test_gateway_sends_no_password_to_certificate_without_subject_alt_name(self):
        """gateway_url = wss://localhost with gateway_ca: the backend's
        certificate without subjectAltName is refused, the backend never
        sees a WebSocket request (so never an Authorization header), the
        status API shows the link failed and why, and the wallbox is still
        answered locally."""
        pki = make_pki(self)
        peer = await self.backend_without_subject_alt_name(pki)
        daemon = RunningDaemon(self, wallboxes=(
            "[wallbox:garage-1]\ntype = ocpp\naddress = CB-0001\n"
            "gateway_url = wss://localhost:{}/ocpp/\ngateway_password = geheim\n"
            "gateway_ca = {}\n".format(peer.port, pki.ca_cert_path)
        ))
        async with await connect(daemon.url("CB-0001")) as ws:
            await ws.send('[2,"hb","Heartbeat",{}]')
            self.assertEqual(json.loads(await asyncio.wait_for(ws.recv(), 10))[:2], [3, "hb"])

            async def failed():
                _, device = await http_get(daemon.status_url("/api/devices/garage-1"))
                gateway = device["gateway"]
                return gateway if gateway["link"] == "failed" else None

            gateway = await eventually(failed)
        self.assertIn("certificate verify failed", gateway["last_error"])
        self.assertIn("no subjectAltName", gateway["last_error"])
        self.assertEqual(peer.requests, [])
        self.assertFalse(any("authorization" in headers for _, headers in peer.requests))

    @asyncio_test
    async def test_virtual_wallbox_sends_no_password_to_certificate_without_subject_alt_name(self):
        """The virtual wallbox with url = wss://localhost and a CA refuses a
        server certificate without subjectAltName: the server never sees a
        WebSocket request, and the wallbox's log says why."""
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        pki = make_pki(self)
        peer = await self.backend_without_subject_alt_name(pki)
        wallbox = RunningWallbox(self, ocpp=(
            "url = wss://localhost:{}/\nclient_id = CB-0001\npassword = geheim\n"
            "ca = {}\n".format(peer.port, pki.ca_cert_path)
        ))

        async def refused():
            return [
                formatEvent(e) for e in events
                if "no subjectAltName" in (formatEvent(e) or "")
            ]

        lines = await eventually(refused)
        self.assertIn("certificate verify failed", lines[0])
        self.assertEqual(peer.requests, [])

        async def booted_offline():
            return wallbox.virtual.chargepoint.booted

        # Without its server the wallbox runs on its own (answered locally).
        await eventually(booted_offline)
