"""Making certificates and keys with ``cryptography``.

The server uses this for its built-in self-signed certificate; the test suite
and the ``cfosproxy-certs`` tool use it to build a small PKI (CA, server and
wallbox client certificates).

Keys are ECDSA P-256: the OCPP 1.6 security whitepaper makes the
``TLS_ECDHE_ECDSA_*`` cipher suites mandatory for charge points, and EC keys
are made in milliseconds even on a small box.
"""

import datetime
import ipaddress
import os
import secrets
import socket

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.logger import Logger

_log = Logger()

# Valid from a day back: a wallbox whose clock is a little behind must not
# see a brand-new certificate as "not yet valid".
_BACKDATE = datetime.timedelta(days=1)

# The generated server certificate is pinned on the wallboxes; when it
# expired they would all stop connecting, years after anyone remembers it.
SELF_SIGNED_DAYS = 3650
SERVER_CERT_FILE = "server-cert.pem"
SERVER_KEY_FILE = "server-key.pem"


def make_key():
    """Return a new ECDSA P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def make_ca(
    common_name, organization=None, days=3650, *, issuer_cert=None, issuer_key=None
):
    """Make a certificate authority.

    @param issuer_cert: the CA that signs the new one (an intermediate CA);
        L{None} makes a self-signed root.
    @param issuer_key: the private key of C{issuer_cert}.
    @return: C{(certificate, private_key)}
    """
    key = make_key()
    builder = _with_role(
        _builder(common_name, organization, key, issuer_cert, days), ca=True
    )
    return _sign(builder, key, issuer_cert, issuer_key), key


def make_certificate(
    common_name,
    issuer_cert,
    issuer_key,
    *,
    organization=None,
    dns_names=(),
    ip_addresses=(),
    server=True,
    client=False,
    days=825,
):
    """Make an end-entity certificate for a TLS server, client or both.

    @param issuer_cert: the signing CA certificate; L{None} makes the
        certificate self-signed (and C{issuer_key} is ignored).
    @param dns_names: host names for the subject alternative name, which is
        what TLS clients check (not the common name).
    @param ip_addresses: IP addresses (strings or C{ipaddress} objects) for
        the subject alternative name.
    @param server: allow the certificate for TLS servers (serverAuth).
    @param client: allow the certificate for TLS clients (clientAuth), as a
        wallbox needs for OCPP security profile 3.
    @return: C{(certificate, private_key)}
    """
    key = make_key()
    builder = _with_role(
        _builder(common_name, organization, key, issuer_cert, days), ca=False
    )
    names = [x509.DNSName(name) for name in dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(names), critical=False
        )
    purposes = [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
    purposes += [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    if purposes:
        builder = builder.add_extension(x509.ExtendedKeyUsage(purposes), critical=False)
    if issuer_cert is None:
        issuer_key = key
    return _sign(builder, key, issuer_cert, issuer_key), key


def _builder(common_name, organization, key, issuer_cert, days):
    # Most general attribute first, so that the RFC 4514 string (which lists
    # the last one first) reads "CN=...,O=...".
    attributes = []
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    subject = x509.Name(attributes)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer_cert is None else issuer_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    )
    if issuer_cert is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                issuer_cert.public_key()
            ),
            critical=False,
        )
    return builder


def _with_role(builder, *, ca):
    """Basic constraints and key usage of a CA (signs certificates and
    CRLs) or of an end entity (signs handshakes only)."""
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )
    return builder.add_extension(
        x509.BasicConstraints(ca=ca, path_length=None), critical=True
    ).add_extension(usage, critical=True)


def _sign(builder, key, issuer_cert, issuer_key):
    signer = key if issuer_cert is None else issuer_key
    # Ed25519/Ed448 sign without a separate hash; every other key with SHA-256.
    eddsa = isinstance(signer, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey))
    return builder.sign(signer, None if eddsa else hashes.SHA256())


def pem_certificate(cert):
    """Return C{cert} as PEM bytes."""
    return cert.public_bytes(serialization.Encoding.PEM)


def pem_private_key(key):
    """Return C{key} as unencrypted PKCS#8 PEM bytes."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_private_key(path, key):
    """Write C{key} as PEM to C{path}, readable by the owner only.

    The file is created with mode 0600 (never world-readable, not even for
    an instant) under a temporary name and then renamed over C{path}, so a
    crash leaves either the old key or the new one.
    """
    _write_atomically(path, pem_private_key(key), 0o600)


def write_certificate(path, *certs):
    """Write one or more certificates (leaf first, then its chain) as PEM.

    Replaces C{path} atomically; the file is world-readable (mode 0644).
    """
    _write_atomically(path, b"".join(pem_certificate(cert) for cert in certs), 0o644)


def _write_atomically(path, data, mode):
    path = os.fspath(path)
    temporary = "{}.{}.tmp".format(path, secrets.token_hex(4))
    fd = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            # The key must be on disk before the rename makes it the key.
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise


def ensure_self_signed(state_dir):
    """Return the built-in server certificate and key, making them on first use.

    The certificate names this host (common name and DNS name), C{localhost},
    127.0.0.1 and ::1. Once made, the files are kept as they are: wallboxes
    that pinned the certificate must keep accepting the server. C{state_dir}
    is created with mode 0700 if it does not exist.

    @return: C{(cert_path, key_path)}
    """
    cert_path = os.path.join(state_dir, SERVER_CERT_FILE)
    key_path = os.path.join(state_dir, SERVER_KEY_FILE)
    if os.path.exists(cert_path) and os.path.exists(key_path):
        return cert_path, key_path
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    host = socket.gethostname() or "localhost"
    cert, key = make_certificate(
        # A common name may have at most 64 characters; a host name can be longer.
        host[:64],
        None,
        None,
        dns_names=dict.fromkeys([host, "localhost"]),  # once each, in order
        ip_addresses=["127.0.0.1", "::1"],
        days=SELF_SIGNED_DAYS,
    )
    # The key first: a certificate file on disk means its key is there too.
    write_private_key(key_path, key)
    write_certificate(cert_path, cert)
    _log.info(
        "Generated a self-signed server certificate for {host} in {path} "
        "(SHA-256 fingerprint {fingerprint})",
        host=host,
        path=cert_path,
        fingerprint=cert.fingerprint(hashes.SHA256()).hex(":").upper(),
    )
    return cert_path, key_path
