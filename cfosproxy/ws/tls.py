"""TLS for the OCPP server port: contexts, and plain/TLS detection.

``[server] tls`` is ``off`` (plain only), ``on`` (TLS only) or ``detect``:
plain and TLS on one port, told apart by the first byte a client sends. A
TLS connection always starts with a handshake record (content type 0x16),
while a plain WebSocket client starts with ``GET``.
"""

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from OpenSSL.crypto import X509
from service_identity import CertificateError, VerificationError
from service_identity.cryptography import extract_patterns
from service_identity.hazmat import DNS_ID, IPAddress_ID, verify_service_identity
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import (
    IHandshakeListener,
    ILoggingContext,
    IOpenSSLClientConnectionCreator,
    ISSLTransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    TLSVersion,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from cfosproxy.ws import certs
from cfosproxy.core.auth import ClientCertificate
from cfosproxy.core.logtext import printable

_log = Logger()

_TLS_HANDSHAKE_RECORD = b"\x16"


class TLSConfigError(Exception):
    """A certificate, key or CA file that cannot be used.

    The message names the configuration key and the file.
    """


def server_context_factory(
    *, certificate, private_key, client_ca, require_client_certificate, state_dir
):
    """Build the TLS settings of the OCPP server from the ``[server]`` section.

    @param certificate: PEM file with the server certificate first and its
        chain after it; empty: the built-in self-signed certificate in
        C{state_dir}, made on first use.
    @param private_key: PEM file with the key of C{certificate}; empty: the
        key is read from the C{certificate} file.
    @param client_ca: PEM file with the CA certificates that may sign wallbox
        client certificates; empty: no client certificate is asked for.
    @param require_client_certificate: refuse TLS clients without a
        certificate from C{client_ca}.
    @param state_dir: where the built-in certificate lives.
    @raise TLSConfigError: a file cannot be read or used, or the key does not
        match the certificate.
    @return: L{CertificateOptions} allowing TLS 1.2 and newer.
    """
    if not certificate:
        try:
            certificate, private_key = certs.ensure_self_signed(state_dir)
        except (OSError, ValueError) as e:
            raise TLSConfigError(
                "[manager] state_dir: cannot make the self-signed server "
                "certificate in {}: {}".format(state_dir, e)
            ) from e
    chain = load_certificates("[server] certificate", certificate)
    if private_key:
        key_name, key_path = "private_key", private_key
    else:
        key_name, key_path = "certificate", certificate
    key = load_private_key("[server] " + key_name, key_path)
    if public_der(key) != public_der(chain[0]):
        raise TLSConfigError(
            "[server] {}: the key in {} does not match the certificate in {} "
            "(the server certificate must come first in the file)".format(
                key_name, key_path, certificate
            )
        )
    if chain[0].not_valid_after_utc < datetime.datetime.now(datetime.timezone.utc):
        _log.warn(
            "The server certificate in {path} expired on {date}; TLS clients "
            "will refuse it",
            path=certificate,
            date=chain[0].not_valid_after_utc.isoformat(),
        )

    # pyOpenSSL takes cryptography objects for the server's own certificate,
    # chain and key (its X509/PKey forms are deprecated there), but the trust
    # store for client certificates still wants X509 objects.
    options = dict(
        privateKey=key,
        certificate=chain[0],
        extraCertChain=chain[1:],
        raiseMinimumTo=TLSVersion.TLSv1_2,
    )
    if client_ca:
        authorities = load_certificates("[server] client_ca", client_ca)
        options.update(
            verify=True,
            caCerts=[X509.from_cryptography(ca) for ca in authorities],
            requireCertificate=require_client_certificate,
        )
    elif require_client_certificate:
        raise TLSConfigError(
            "[server] require_client_certificate: needs client_ca, the CA "
            "certificates that sign the wallboxes' certificates"
        )
    context_factory = CertificateOptions(**options)
    try:
        # Build the OpenSSL context now, so that what OpenSSL refuses fails
        # at start and not at the first wallbox connection.
        context_factory.getContext()
    except SSL.Error as e:
        raise TLSConfigError(
            "[server] certificate: OpenSSL cannot use {} with the key in {}: "
            "{}".format(certificate, key_path, e)
        ) from e
    return context_factory


def _read(label, path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise TLSConfigError(
            "{}: cannot read {}: {}".format(label, path, e.strerror or e)
        ) from e


def load_certificates(label, path):
    """Every PEM certificate in the file at C{path}, first one first.

    @param label: what the file is, for errors, e.g. C{"[server] client_ca"}.
    @raise TLSConfigError: unreadable, or no certificate in it.
    """
    try:
        return x509.load_pem_x509_certificates(_read(label, path))
    except ValueError as e:
        raise TLSConfigError(
            "{}: no PEM certificate in {}: {}".format(label, path, e)
        ) from e


def load_private_key(label, path):
    """The unencrypted PEM private key in the file at C{path}.

    @raise TLSConfigError: unreadable, encrypted, or no key in it.
    """
    try:
        return serialization.load_pem_private_key(_read(label, path), password=None)
    except TypeError as e:
        # The daemon starts unattended: nobody could type a passphrase.
        raise TLSConfigError(
            "{}: the private key in {} is encrypted; store it without "
            "a passphrase (mode 0600)".format(label, path)
        ) from e
    except ValueError as e:
        raise TLSConfigError(
            "{}: no usable PEM private key in {}: {}".format(label, path, e)
        ) from e


def public_der(key_or_cert):
    """The DER SubjectPublicKeyInfo of a key or certificate, to compare."""
    return key_or_cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


GATEWAY_KEYS = ("gateway_ca", "gateway_certificate", "gateway_private_key")


def client_tls_options(
    host, *, ca, certificate, private_key, section="wallbox", keys=GATEWAY_KEYS
):
    """TLS 1.2+ client settings toward an OCPP server: its certificate
    checked against C{ca} (or the system's roots) and its name against
    C{host}; C{certificate} presented when set (security profile 3).

    @param section: the configuration section, for errors.
    @param keys: the names of the ca, certificate and key settings, for
        errors.
    @raise TLSConfigError: a file cannot be read or used, or the key does not
        match the certificate.
    """
    label = "[{}] ".format(section)
    ca_key, certificate_key, private_key_key = keys
    if ca:
        roots = [
            Certificate.loadPEM(certs.pem_certificate(cert))
            for cert in load_certificates(label + ca_key, ca)
        ]
        trust = trustRootFromCertificates(roots)
    else:
        trust = platformTrust()
    extra = dict(raiseMinimumTo=TLSVersion.TLSv1_2)
    if certificate:
        chain = load_certificates(label + certificate_key, certificate)
        key_name = private_key_key if private_key else certificate_key
        key = load_private_key(label + key_name, private_key or certificate)
        if public_der(key) != public_der(chain[0]):
            raise TLSConfigError(
                "{}{}: the key does not match the certificate in {} (the client "
                "certificate must come first in the file)".format(label, key_name, certificate)
            )
        # cryptography objects: pyOpenSSL has deprecated its own X509/PKey
        # forms for a connection's identity.
        extra.update(certificate=chain[0], extraCertChain=chain[1:], privateKey=key)
    return _HostVerifyingOptions(
        optionsForClientTLS(host, trustRoot=trust, extraCertificateOptions=extra), host
    )


class HostVerificationError(Exception):
    """The server's certificate is trusted but not for the host that was
    asked for; the message says why (for C{last_error} and the log)."""


@implementer(IOpenSSLClientConnectionCreator)
class _HostVerifyingOptions:
    """Client TLS settings whose host name check fails closed.

    Twisted's own check turns only service_identity's C{VerificationError}
    (a name mismatch) into a failed handshake; the C{CertificateError} of a
    certificate without any subjectAltName is logged and the handshake goes
    on, password and all. This replaces that check with one that refuses
    the connection whatever goes wrong while checking.

    @param options: the connection creator of C{optionsForClientTLS}, which
        verifies the chain against the trust roots.
    @param host: the host name or IP address of the URL.
    """

    def __init__(self, options, host):
        self._options = options
        self._host = host
        if isIPAddress(host) or isIPv6Address(host):
            self._service_id = IPAddress_ID(host)
        else:
            self._service_id = DNS_ID(host)

    def clientConnectionForTLS(self, tls_protocol):
        connection = self._options.clientConnectionForTLS(tls_protocol)
        connection.set_verify(
            SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT,
            self._verify_callback(tls_protocol),
        )
        return connection

    def _verify_callback(self, tls_protocol):
        def verify(connection, certificate, error_number, depth, chain_ok):
            nonlocal tls_protocol
            if not chain_ok:
                # OpenSSL's verdict on the chain (an unknown CA, expired)
                # stands; it reports it as the handshake's error.
                return False
            if depth != 0:
                return True
            try:
                problem = self.host_problem(certificate.to_cryptography())
            except Exception:
                _log.failure("Checking the host name {host}", host=self._host)
                problem = "the certificate could not be read"
            # The OpenSSL connection keeps this callback as long as it
            # lives; as Twisted's own check does, it keeps no reference to
            # the protocol that owns the connection after this.
            protocol, tls_protocol = tls_protocol, None
            if problem is None:
                return True
            if protocol is not None:
                # The reason the connection is lost with: the application
                # sees it instead of a bare "certificate verify failed".
                protocol.failVerification(Failure(HostVerificationError(problem)))
            return False

        return verify

    def host_problem(self, certificate):
        """Why C{certificate} is not one for the host, or None if it is.

        Only the subjectAltName counts (RFC 6125); a host named only in the
        common name is refused, as browsers do.
        """
        try:
            verify_service_identity(extract_patterns(certificate), [self._service_id], [])
        except CertificateError:
            return (
                "the certificate has no subjectAltName, so it cannot be for "
                "{} (it names only {})".format(self._host, _subject_text(certificate))
            )
        except VerificationError:
            return "hostname mismatch (the certificate is not for {})".format(self._host)
        except Exception as e:
            # Fail closed: a certificate that cannot be checked is refused.
            _log.failure("Checking the host name {host} in a server certificate", host=self._host)
            return "the host name could not be checked ({})".format(
                type(e).__name__
            )
        return None


def _subject_text(certificate):
    try:
        # The server's own words, for last_error and the log.
        return printable(certificate.subject.rfc4514_string()) or "an empty subject"
    except ValueError:
        return "an unreadable subject"


def wrap_factory(mode, factory, context_factory, *, clock, sniff_timeout=10.0):
    """Put the TLS mode C{mode} around the server protocol factory C{factory}.

    @param mode: C{"off"}: plain only (a TLS client is told so in the log
        and closed at once, not left to time out); C{"on"}: TLS only;
        C{"detect"}: plain or TLS, chosen by the first byte of a connection.
    @param context_factory: from L{server_context_factory}; unused for C{"off"}.
    @param clock: the reactor, for the detection timeout and TLS write batching.
    @param sniff_timeout: in C{"off"} and C{"detect"} mode, a connection that
        sends nothing for this many seconds is closed.
    @return: an L{IProtocolFactory} to listen with.
    """
    if mode == "off":
        return _DetectingFactory(factory, None, clock, sniff_timeout)
    if mode not in ("on", "detect"):
        raise ValueError("tls mode must be off, on or detect, not {!r}".format(mode))
    tls_factory = _ServerTLSFactory(context_factory, False, factory, clock)
    if mode == "on":
        return tls_factory
    return _DetectingFactory(factory, tls_factory.wrap, clock, sniff_timeout)


def is_tls(transport):
    """Return whether C{transport} is a TLS connection."""
    return ISSLTransport.providedBy(transport)


def peer_certificate_subject(transport):
    """Return the RFC 4514 subject of the peer's certificate, or L{None}.

    L{None} for plain transports and for TLS peers that sent no certificate.
    """
    certificate = peer_client_certificate(transport)
    return None if certificate is None else certificate.subject


def peer_client_certificate(transport):
    """The peer's certificate as a L{ClientCertificate}, or L{None} for
    plain transports and for TLS peers that sent no certificate."""
    if not is_tls(transport):
        return None
    try:
        cert = transport.getPeerCertificate()
    except Exception:
        # A TLS transport whose connection is gone has no certificate left.
        return None
    if cert is None:
        return None
    if isinstance(cert, X509):
        cert = cert.to_cryptography()
    return client_certificate(cert)


def client_certificate(cert):
    """The names in the C{cryptography} certificate C{cert} that identify
    a wallbox, as a L{ClientCertificate}.

    A part that cannot be decoded counts as absent: a certificate whose
    names cannot be read identifies nobody.
    """
    try:
        subject = cert.subject
        # RFC 4514 knows no short name for serialNumber; "2.5.4.5=" would
        # be all the log and the status page showed of it.
        subject_text = subject.rfc4514_string({NameOID.SERIAL_NUMBER: "serialNumber"})
    except ValueError:
        return ClientCertificate(subject="(unreadable subject)")

    def attribute(oid):
        return tuple(
            a.value for a in subject.get_attributes_for_oid(oid) if isinstance(a.value, str)
        )

    try:
        alternative_names = cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
        dns_names = tuple(alternative_names.get_values_for_type(x509.DNSName))
    except (x509.ExtensionNotFound, ValueError):
        dns_names = ()
    return ClientCertificate(
        subject=subject_text,
        common_names=attribute(NameOID.COMMON_NAME),
        serial_numbers=attribute(NameOID.SERIAL_NUMBER),
        dns_names=dns_names,
    )


def _peer(transport):
    try:
        address = transport.getPeer()
        return "{}:{}".format(address.host, address.port)
    except Exception:
        return "?"


def _log_prefix(thing):
    if ILoggingContext.providedBy(thing):
        return thing.logPrefix()
    return thing.__class__.__name__


class _ServerTLSFactory(TLSMemoryBIOFactory):
    """TLS around a server factory, logging handshakes that fail."""

    def buildProtocol(self, addr):
        # TLSMemoryBIOFactory would wrap a None from the application factory
        # and fail later; None here makes the port close the connection.
        inner = self.wrappedFactory.buildProtocol(addr)
        return None if inner is None else self.wrap(inner)

    def wrap(self, inner):
        """Return a TLS server protocol carrying the protocol C{inner}."""
        return self.protocol(self, _HandshakeWatcher(inner))


@implementer(IHandshakeListener)
class _HandshakeWatcher(Protocol):
    """Sits between the TLS layer and the application protocol.

    A failed handshake (no client certificate, an unknown CA, an old TLS
    version) reaches the application only as a lost connection; the operator
    gets a log line here. The application protocol gets the TLS layer itself
    as its transport.
    """

    _handshake_done = False

    def __init__(self, inner):
        self._inner = inner

    def makeConnection(self, transport):
        self.transport = transport
        self._inner.makeConnection(transport)

    def dataReceived(self, data):
        self._inner.dataReceived(data)

    def handshakeCompleted(self):
        self._handshake_done = True
        if IHandshakeListener.providedBy(self._inner):
            self._inner.handshakeCompleted()

    def connectionLost(self, reason):
        if not self._handshake_done and reason.check(SSL.Error):
            _log.warn(
                "TLS handshake with {peer} failed: {error}",
                peer=_peer(self.transport),
                error=reason.value,
            )
        self._inner.connectionLost(reason)

    def logPrefix(self):
        return _log_prefix(self._inner)


class _DetectingFactory(Factory):
    """Plain and TLS connections on one port (``tls = detect``), or plain
    ones only (``tls = off``: C{wrap_tls} is None)."""

    noisy = False

    def __init__(self, factory, wrap_tls, clock, timeout):
        self._factory = factory
        self._wrap_tls = wrap_tls
        self._clock = clock
        self._timeout = timeout

    def startFactory(self):
        self._factory.doStart()

    def stopFactory(self):
        self._factory.doStop()

    def logPrefix(self):
        kind = " (plain only)" if self._wrap_tls is None else " (plain or TLS)"
        return _log_prefix(self._factory) + kind

    def buildProtocol(self, addr):
        inner = self._factory.buildProtocol(addr)
        if inner is None:
            return None
        return _DetectingProtocol(inner, self._wrap_tls, self._clock, self._timeout)


class _DetectingProtocol(Protocol):
    """Waits for the first byte, then hands the connection on.

    The chosen protocol (the application's, or TLS carrying it) gets the TCP
    transport itself, so producer registration, pausing and the peer address
    are the real socket's. This protocol stays the socket's protocol and only
    passes on received data and the connection loss.
    """

    def __init__(self, inner, wrap_tls, clock, timeout):
        self._inner = inner
        self._wrap_tls = wrap_tls
        self._clock = clock
        self._timeout = timeout
        self._chosen = None
        self._timer = None

    def connectionMade(self):
        self._timer = self._clock.callLater(self._timeout, self._timed_out)

    def dataReceived(self, data):
        if self._chosen is None:
            if not data:
                return
            self._cancel_timer()
            if data[:1] == _TLS_HANDSHAKE_RECORD:
                if self._wrap_tls is None:
                    _log.warn(
                        "Closing the connection from {peer}: it starts a TLS "
                        "handshake, but this port has tls = off",
                        peer=_peer(self.transport),
                    )
                    self.transport.abortConnection()
                    return
                self._chosen = self._wrap_tls(self._inner)
            else:
                self._chosen = self._inner
            self._chosen.makeConnection(self.transport)
            # From now on the socket's reads go straight to the chosen
            # protocol (Twisted looks the method up on this instance).
            self.dataReceived = self._chosen.dataReceived
        self._chosen.dataReceived(data)

    def connectionLost(self, reason):
        self._cancel_timer()
        # A connection closed before its first byte never reached the
        # application, so it is not told about the loss either.
        if self._chosen is not None:
            self._chosen.connectionLost(reason)

    def _timed_out(self):
        self._timer = None
        _log.info(
            "Closing the connection from {peer}: nothing received within "
            "{timeout} seconds",
            peer=_peer(self.transport),
            timeout=self._timeout,
        )
        self.transport.abortConnection()

    def _cancel_timer(self):
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
