"""TLS on the OCPP server port: off / on / detect, certificates, client certificates.

The first-byte timeout, the certificate files and the names in
certificates are tested on a fake clock and in-memory transports; the
modes and certificates in use on a real listener on 127.0.0.1 with a real
TLS client.
"""

import os
import pathlib
import shutil
import stat
import tempfile

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet import defer, reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    connectProtocol,
    wrapClientTLS,
)
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest
from zope.interface import implementer

from cfosproxy.ws import certs

from cfosproxy.ws import tls
from tests.certutil import TestPKI

ADDRESS = IPv4Address("TCP", "192.0.2.7", 40000)

pytestmark = pytest.mark.usefixtures("logged_errors", "no_reactor_timers")


class EchoServer(Protocol):
    """Answers the first chunk with C{b"tls:"} or C{b"plain:"} and the chunk,
    then closes; records what it saw of its transport."""

    received = b""
    tls = subject = peer = reason = None

    def dataReceived(self, data):
        self.received += data
        self.tls = tls.is_tls(self.transport)
        self.subject = tls.peer_certificate_subject(self.transport)
        self.peer = self.transport.getPeer().host
        self.transport.write((b"tls:" if self.tls else b"plain:") + data)
        self.transport.loseConnection()

    def connectionLost(self, reason):
        self.reason = reason
        self.factory.closed.put(self)


class EchoFactory(Factory):
    protocol = EchoServer

    def __init__(self):
        self.closed = defer.DeferredQueue()


class NoProtocolFactory(Factory):
    def buildProtocol(self, addr):
        return None


class Client(Protocol):
    """Sends C{payload}, collects everything until the connection is lost."""

    def __init__(self, payload=b"hello"):
        self.payload = payload
        self.data = b""
        self.done = defer.Deferred()

    def connectionMade(self):
        self.transport.write(self.payload)

    def dataReceived(self, data):
        self.data += data

    def connectionLost(self, reason):
        self.done.callback((self.data, reason))


@implementer(IOpenSSLClientConnectionCreator)
class TLS11Client:
    """A client that offers TLS 1.1 only, with OpenSSL's security level
    lowered so that it can still send such a hello."""

    def _context(self):
        context = SSL.Context(SSL.TLS_METHOD)
        context.set_min_proto_version(SSL.TLS1_1_VERSION)
        context.set_max_proto_version(SSL.TLS1_1_VERSION)
        context.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
        return context

    def clientConnectionForTLS(self, tlsProtocol):
        connection = SSL.Connection(self._context(), None)
        connection.set_connect_state()
        return connection

    def can_say_hello(self):
        connection = self.clientConnectionForTLS(None)
        try:
            connection.do_handshake()
        except SSL.WantReadError:
            return True  # the hello is out; it waits for the server
        except SSL.Error:
            return False
        return True


def server_context(pki, state_dir, **settings):
    """The server's context factory with C{pki}'s server certificate and
    key, no client certificates, and C{settings} on top."""
    options = dict(
        certificate=str(pki.server_cert_path),
        private_key=str(pki.server_key_path),
        client_ca="",
        require_client_certificate=False,
        state_dir=str(state_dir),
    )
    options.update(settings)
    return tls.server_context_factory(**options)


@pytest.fixture
def pki(tmp_path):
    """The test PKI, in the test's temporary directory."""
    return TestPKI(tmp_path / "pki")


@pytest.fixture
def context(pki, tmp_path):
    """Makes a server context factory as L{server_context} does, with the
    state directory in the test's temporary directory."""
    return lambda **settings: server_context(pki, tmp_path / "var", **settings)


# tls = detect and tls = off on a fake clock and in-memory transports.
def detecting(context, factory=None, clock=None):
    """A tls = detect protocol for one connection from L{ADDRESS}."""
    wrapped = tls.wrap_factory(
        "detect",
        factory or EchoFactory(),
        context(),
        clock=clock or task.Clock(),
        sniff_timeout=10.0,
    )
    return wrapped.buildProtocol(ADDRESS)


def test_idle_connection_closed_after_sniff_timeout(context):
    """A connection that sends nothing is closed after sniff_timeout seconds,
    not before."""
    clock = task.Clock()
    protocol = detecting(context, clock=clock)
    transport = StringTransport()
    protocol.makeConnection(transport)
    clock.advance(9.9)
    assert not transport.disconnecting
    clock.advance(0.1)
    assert transport.disconnecting
    protocol.connectionLost(Failure(ConnectionDone()))
    assert clock.getDelayedCalls() == []


def test_first_byte_stops_timer_and_is_replayed(context):
    """After the first plain byte the timeout is off, the application protocol
    gets every byte and the socket's transport itself (so pausing reaches the
    socket), and it hears about the connection loss."""
    clock = task.Clock()
    factory = EchoFactory()
    protocol = detecting(context, factory, clock)
    transport = StringTransport(peerAddress=ADDRESS)
    protocol.makeConnection(transport)
    protocol.dataReceived(b"G")
    assert clock.getDelayedCalls() == []
    assert transport.value() == b"plain:G"
    protocol.connectionLost(Failure(ConnectionDone()))
    server = factory.closed.get().result
    assert server.transport is transport
    assert server.peer == "192.0.2.7"


def test_connection_lost_before_first_byte(context):
    """A connection closed before its first byte stops the timer and never
    reaches the application protocol."""
    clock = task.Clock()
    factory = EchoFactory()
    protocol = detecting(context, factory, clock)
    protocol.makeConnection(StringTransport())
    protocol.connectionLost(Failure(ConnectionDone()))
    assert clock.getDelayedCalls() == []
    assert not factory.closed.get().called


def test_factory_without_protocol_closes(context):
    """When the application factory builds no protocol, detect and on modes
    build none either, so the port closes the connection."""
    for mode in ("detect", "on"):
        wrapped = tls.wrap_factory(
            mode, NoProtocolFactory(), context(), clock=task.Clock()
        )
        assert wrapped.buildProtocol(ADDRESS) is None, mode


def test_off_closes_tls_client_at_once():
    """tls = off: a connection that starts a TLS handshake is closed at
    the first byte and logged, instead of waiting out the WebSocket
    handshake timeout; the application never sees it."""
    factory = EchoFactory()
    protocol = tls.wrap_factory("off", factory, None, clock=task.Clock()).buildProtocol(ADDRESS)
    transport = StringTransport(peerAddress=ADDRESS)
    protocol.makeConnection(transport)
    protocol.dataReceived(b"\x16\x03\x01\x00\xa5")
    assert transport.disconnecting
    assert transport.value() == b""
    protocol.connectionLost(Failure(ConnectionDone()))
    assert not factory.closed.get().called


def test_off_passes_plain_through():
    """tls = off: plain bytes reach the application protocol unchanged."""
    factory = EchoFactory()
    protocol = tls.wrap_factory("off", factory, None, clock=task.Clock()).buildProtocol(ADDRESS)
    transport = StringTransport(peerAddress=ADDRESS)
    protocol.makeConnection(transport)
    protocol.dataReceived(b"GET")
    assert transport.value() == b"plain:GET"


def test_plain_transport_has_no_tls():
    """A plain transport is not TLS and has no peer certificate subject."""
    assert not tls.is_tls(StringTransport())
    assert tls.peer_certificate_subject(StringTransport()) is None


def test_unknown_mode_refused():
    """A TLS mode other than off, on and detect is an error."""
    with pytest.raises(ValueError):
        tls.wrap_factory("auto", EchoFactory(), None, clock=task.Clock())


# Certificates and keys: the built-in one, the operator's, the files written.
def test_self_signed_made_once_and_kept(tmp_path):
    """The built-in certificate is made on first start (key mode 0600, state
    directory 0700) and the same files are used, unchanged, later."""
    state_dir = str(tmp_path / "var")
    paths = certs.ensure_self_signed(state_dir)
    cert_path, key_path = paths
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(state_dir).st_mode) == 0o700
    before = [pathlib.Path(path).read_bytes() for path in paths]

    assert certs.ensure_self_signed(state_dir) == paths
    assert [pathlib.Path(path).read_bytes() for path in paths] == before

    cert = x509.load_pem_x509_certificate(before[0])
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert "localhost" in names.value.get_values_for_type(x509.DNSName)


def test_mismatched_key_refused(context, pki):
    """A key that does not belong to the certificate is a config error naming
    private_key and the key file."""
    with pytest.raises(tls.TLSConfigError) as error:
        context(private_key=str(pki.chain_key_path))
    assert "[server] private_key" in str(error.value)
    assert str(pki.chain_key_path) in str(error.value)


def test_unreadable_file_refused(context, tmp_path):
    """A certificate file that cannot be read is a config error naming the key
    and the file."""
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(tls.TLSConfigError) as error:
        context(certificate=missing)
    assert "[server] certificate: cannot read " + missing in str(error.value)


def test_write_private_key_owner_only(tmp_path):
    """A written key file is mode 0600 even under umask 0, and writing again
    replaces it without leaving temporary files."""
    path = tmp_path / "key.pem"
    old_umask = os.umask(0)
    try:
        certs.write_private_key(path, certs.make_key())
        second = certs.make_key()
        certs.write_private_key(path, second)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_bytes() == certs.pem_private_key(second)
    assert os.listdir(tmp_path) == ["key.pem"]


def test_utf8_organization_round_trips():
    """A UTF-8 organization survives PEM and reads back in the RFC 4514 subject."""
    ca, ca_key = certs.make_ca("Root", "Tiefgarage Köln GmbH")
    cert, _ = certs.make_certificate(
        "CB-0001", ca, ca_key, organization="Tiefgarage Köln GmbH", client=True
    )
    loaded = x509.load_pem_x509_certificate(certs.pem_certificate(cert))
    subject = loaded.subject
    assert subject.rfc4514_string() == "CN=CB-0001,O=Tiefgarage Köln GmbH"
    organization = subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0]
    assert organization.value == "Tiefgarage Köln GmbH"
    assert loaded.issuer == ca.subject


def test_required_without_client_ca_refused(context):
    """Requiring client certificates without client_ca is a config error."""
    with pytest.raises(tls.TLSConfigError) as error:
        context(require_client_certificate=True)
    assert "require_client_certificate" in str(error.value)


# L{tls.client_certificate}: the names in a wallbox's certificate that
# the profile 3 identity rule compares with the ChargeBox-ID.
def load(paths):
    """The certificate in the first of C{paths}."""
    return x509.load_pem_x509_certificate(pathlib.Path(paths[0]).read_bytes())


def test_common_name_serial_number_and_dns_names(pki):
    """CN, subject serialNumber and DNS subjectAltNames are read as the
    certificate has them, next to the RFC 4514 subject."""
    cert = load(pki.client_cert_with(
        "all",
        [(NameOID.COMMON_NAME, "Power Brain"), (NameOID.SERIAL_NUMBER, "CB-0001")],
        dns_names=["cb-0001.wallboxes.example", "spare.example"],
    ))
    identity = tls.client_certificate(cert)
    assert identity.common_names == ("Power Brain",)
    assert identity.serial_numbers == ("CB-0001",)
    assert identity.dns_names == ("cb-0001.wallboxes.example", "spare.example")
    assert identity.subject == "serialNumber=CB-0001,CN=Power Brain"


def test_empty_subject_has_no_identity_but_its_subject_alt_name(pki):
    """A certificate with an empty subject has no CN and no
    serialNumber; its subjectAltName is still read."""
    identity = tls.client_certificate(
        load(pki.client_cert_with("empty", [], dns_names=["CB-0001"]))
    )
    assert (identity.common_names, identity.serial_numbers) == ((), ())
    assert identity.dns_names == ("CB-0001",)


def test_usual_client_certificate(pki):
    """The test PKI's wallbox certificate: its CN is the ChargeBox-ID
    and it has no subjectAltName."""
    identity = tls.client_certificate(load(pki.client_cert_path("CB-0001")))
    assert identity.common_names == ("CB-0001",)
    assert identity.dns_names == ()


# The client side's host name check (toward a backend, or from the
# virtual wallbox): what it says about a server's certificate.
def host_problem(pki, host, cert_paths):
    """What the client side says about the certificate in C{cert_paths[0]}
    for C{host}, trusting C{pki}'s CA; None when it is good."""
    options = tls.client_tls_options(
        host, ca=str(pki.ca_cert_path), certificate="", private_key=""
    )
    cert = x509.load_pem_x509_certificate(pathlib.Path(cert_paths[0]).read_bytes())
    return options.host_problem(cert)


def test_certificate_for_the_host_accepted(pki):
    """The test server certificate names localhost and 127.0.0.1 in its
    subjectAltName: good for both."""
    server = (pki.server_cert_path, pki.server_key_path)
    assert host_problem(pki, "localhost", server) is None
    assert host_problem(pki, "127.0.0.1", server) is None


def test_certificate_without_subject_alt_name_refused(pki):
    """CN=localhost without subjectAltName is not a certificate for
    localhost: the common name is not looked at."""
    problem = host_problem(pki, "localhost", pki.server_cert_without_san("localhost"))
    assert "no subjectAltName" in problem
    assert "CN=localhost" in problem


def test_certificate_for_another_host_refused(pki):
    """A certificate for elsewhere.example is not one for localhost."""
    problem = host_problem(pki, "localhost", pki.server_cert_for("elsewhere.example"))
    assert "hostname mismatch" in problem


# On a real loopback listener with a real TLS client: trial runs the
# reactor for these.
class TLSTestCase(unittest.TestCase):
    def setUp(self):
        self.tmp = pathlib.Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.tmp)
        self.pki = TestPKI(self.tmp / "pki")

    def context(self, **settings):
        return server_context(self.pki, self.tmp / "var", **settings)

    def listen(self, mode, **settings):
        """Listen on a free loopback port with C{mode}; return the port number."""
        self.server = EchoFactory()
        context_factory = None if mode == "off" else self.context(**settings)
        factory = tls.wrap_factory(mode, self.server, context_factory, clock=reactor)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    @defer.inlineCallbacks
    def exchange(self, port, creator=None, served=True):
        """Connect (with TLS when C{creator} is given), send C{b"hello"}.

        @param served: whether the connection reaches the application
            protocol; when not, there is no server protocol to wait for.
        @return: a Deferred firing with C{(data, reason, server)} once both
            ends have closed: what the client got, why its connection ended,
            and the server's L{EchoServer} (None when not C{served}).
        """
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        if creator is not None:
            endpoint = wrapClientTLS(creator, endpoint)
        client = Client()
        yield connectProtocol(endpoint, client)
        data, reason = yield client.done
        server = (yield self.server.closed.get()) if served else None
        return data, reason, server


class ModeTests(TLSTestCase):
    @defer.inlineCallbacks
    def test_off_serves_plain_and_not_tls(self):
        """tls = off: a plain client is answered; a TLS client's connection
        is closed without reaching the application."""
        port = self.listen("off")
        data, _, server = yield self.exchange(port)
        self.assertEqual(data, b"plain:hello")
        self.assertFalse(server.tls)
        self.assertIsNone(server.subject)

        data, reason, _ = yield self.exchange(port, self.pki.client_context(), served=False)
        self.assertEqual(data, b"")
        self.assertTrue(reason.check(SSL.Error, ConnectionLost, ConnectionDone))
        self.assertEqual(self.server.closed.pending, [])

    @defer.inlineCallbacks
    def test_on_serves_tls_and_not_plain(self):
        """tls = on: a TLS client is answered; plain bytes get no answer and the
        connection is closed."""
        port = self.listen("on")
        data, _, server = yield self.exchange(port, self.pki.client_context())
        self.assertEqual(data, b"tls:hello")
        self.assertIsNone(server.subject)

        data, _, server = yield self.exchange(port)
        self.assertNotIn(b"hello", data)
        self.assertEqual(server.received, b"")
        self.assertTrue(server.reason.check(SSL.Error))

    @defer.inlineCallbacks
    def test_detect_serves_plain_and_tls_on_one_port(self):
        """tls = detect: plain and TLS clients on the same port are both answered,
        and the application protocol sees which one it has and the real peer."""
        port = self.listen("detect")
        data, _, server = yield self.exchange(port)
        self.assertEqual(data, b"plain:hello")
        self.assertEqual((server.tls, server.peer), (False, "127.0.0.1"))

        data, _, server = yield self.exchange(port, self.pki.client_context())
        self.assertEqual(data, b"tls:hello")
        self.assertEqual((server.tls, server.peer), (True, "127.0.0.1"))

    @defer.inlineCallbacks
    def test_tls_1_1_refused(self):
        """A client that speaks only TLS 1.1 cannot connect: TLS 1.2 is the minimum."""
        client = TLS11Client()
        if not client.can_say_hello():
            raise unittest.SkipTest("the local OpenSSL cannot make a TLS 1.1 client")
        port = self.listen("on")
        data, reason, server = yield self.exchange(port, client)
        self.assertEqual(data, b"")
        self.assertTrue(reason.check(SSL.Error))
        self.assertEqual(server.received, b"")
        self.assertTrue(server.reason.check(SSL.Error))


class CertificateTests(TLSTestCase):
    @defer.inlineCallbacks
    def test_self_signed_certificate_served(self):
        """With no certificate configured the server uses the built-in one, and a
        client that trusts that certificate connects to localhost."""
        port = self.listen("on", certificate="", private_key="")
        cert_path, _ = certs.ensure_self_signed(str(self.tmp / "var"))
        client = self.pki.client_context(trust=cert_path)
        data, _, _ = yield self.exchange(port, client)
        self.assertEqual(data, b"tls:hello")

    @defer.inlineCallbacks
    def test_operator_certificate_with_chain_served(self):
        """An operator certificate file with leaf and intermediate is served whole:
        a client that trusts only the root connects."""
        port = self.listen(
            "on",
            certificate=str(self.pki.chain_cert_path),
            private_key=str(self.pki.chain_key_path),
        )
        data, _, _ = yield self.exchange(port, self.pki.client_context())
        self.assertEqual(data, b"tls:hello")

    @defer.inlineCallbacks
    def test_leaf_without_chain_not_trusted(self):
        """Without the intermediate in the file the same client refuses the server:
        the chain in the certificate file is what made the previous test work."""
        leaf_only = self.tmp / "leaf.pem"
        leaf = x509.load_pem_x509_certificates(self.pki.chain_cert_path.read_bytes())[0]
        certs.write_certificate(leaf_only, leaf)
        port = self.listen(
            "on", certificate=str(leaf_only), private_key=str(self.pki.chain_key_path)
        )
        data, reason, _ = yield self.exchange(port, self.pki.client_context())
        self.assertEqual(data, b"")
        self.assertTrue(reason.check(SSL.Error))

    @defer.inlineCallbacks
    def test_key_read_from_certificate_file(self):
        """With private_key empty, the key is read from the certificate file."""
        port = self.listen(
            "on", certificate=str(self.pki.combined_cert_path), private_key=""
        )
        data, _, _ = yield self.exchange(port, self.pki.client_context())
        self.assertEqual(data, b"tls:hello")


class ClientCertificateTests(TLSTestCase):
    def listen_with_client_ca(self, required=True):
        return self.listen(
            "detect",
            client_ca=str(self.pki.ca_cert_path),
            require_client_certificate=required,
        )

    @defer.inlineCallbacks
    def assertRefused(self, port, creator):
        data, _, server = yield self.exchange(port, creator)
        self.assertEqual(data, b"")
        self.assertEqual(server.received, b"")
        self.assertTrue(server.reason.check(SSL.Error))

    def test_required_without_certificate_refused(self):
        """Client certificate required: a TLS client without one cannot connect."""
        port = self.listen_with_client_ca()
        return self.assertRefused(port, self.pki.client_context())

    def test_required_with_wrong_ca_refused(self):
        """Client certificate required: a certificate from another CA is refused."""
        port = self.listen_with_client_ca()
        client = self.pki.client_context(client_cn="CB-0001", wrong_ca=True)
        return self.assertRefused(port, client)

    @defer.inlineCallbacks
    def test_required_with_right_ca_accepted(self):
        """Client certificate required: a certificate from client_ca is accepted and
        the server reads its subject, UTF-8 organization included."""
        port = self.listen_with_client_ca()
        client = self.pki.client_context(client_cn="CB-0001")
        data, _, server = yield self.exchange(port, client)
        self.assertEqual(data, b"tls:hello")
        self.assertEqual(server.subject, "CN=CB-0001,O=Tiefgarage Köln GmbH")

    @defer.inlineCallbacks
    def test_optional_without_certificate_accepted(self):
        """client_ca set but not required: a client without a certificate connects
        and has no subject."""
        port = self.listen_with_client_ca(required=False)
        data, _, server = yield self.exchange(port, self.pki.client_context())
        self.assertEqual(data, b"tls:hello")
        self.assertIsNone(server.subject)
