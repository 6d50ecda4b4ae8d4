"""End-to-end TLS: the tls off/detect/on matrix, the server certificate, and
client certificates (security profile 3), with real wallbox clients."""

import asyncio
import json
import pathlib
import ssl

import websockets
from twisted.trial import unittest

from tests.certutil import TestPKI
from tests.harness import RunningDaemon, asyncio_test, wait_deferred
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
