"""A small test PKI on disk, and TLS client settings that use it.

Not a test module: the whole suite uses it for TLS servers, wallboxes with
client certificates and backends.
"""

import datetime
import pathlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    optionsForClientTLS,
    trustRootFromCertificates,
)

from cfosproxy.ws import certs

CLIENT_ORGANIZATION = "Tiefgarage Köln GmbH"


class TestPKI:
    """Certificates for C{localhost}/127.0.0.1, written into C{directory}.

    - C{ca_cert_path}: the test root CA.
    - C{server_cert_path}, C{server_key_path}: a server certificate signed
      by the root.
    - C{chain_cert_path}, C{chain_key_path}: a server certificate signed by
      an intermediate CA; the certificate file holds the leaf and then the
      intermediate.
    - C{combined_cert_path}: leaf, intermediate and key in one file.
    - C{other_ca_path}: a second root that signs nothing the server trusts.
    - L{client_cert_path}: wallbox client certificates, made on demand.
    """

    __test__ = False  # a helper with a Test name, not a pytest test class

    def __init__(self, directory: pathlib.Path):
        self.directory = pathlib.Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._ca = certs.make_ca("cfosproxy test root CA", "cfosproxy tests")
        self._other_ca = certs.make_ca("other root CA", "somebody else")
        intermediate = certs.make_ca(
            "cfosproxy test intermediate CA",
            "cfosproxy tests",
            issuer_cert=self._ca[0],
            issuer_key=self._ca[1],
        )
        self.ca_cert_path = self._write_cert("ca.pem", self._ca[0])
        self.other_ca_path = self._write_cert("other-ca.pem", self._other_ca[0])

        server = self._server_cert(*self._ca)
        self.server_cert_path = self._write_cert("server.pem", server[0])
        self.server_key_path = self._write_key("server-key.pem", server[1])

        chained = self._server_cert(*intermediate)
        self.chain_cert_path = self._write_cert(
            "chain.pem", chained[0], intermediate[0]
        )
        self.chain_key_path = self._write_key("chain-key.pem", chained[1])
        self.combined_cert_path = self.directory / "combined.pem"
        self.combined_cert_path.write_bytes(
            self.chain_cert_path.read_bytes() + self.chain_key_path.read_bytes()
        )
        self._clients = {}

    def client_cert_path(self, cn="CB-0001", *, wrong_ca=False):
        """Return C{(cert_path, key_path)} of a wallbox client certificate.

        The subject is C{CN=<cn>,O=Tiefgarage Köln GmbH}; C{wrong_ca} signs it
        with the other root instead of the test root.
        """
        if (cn, wrong_ca) not in self._clients:
            issuer = self._other_ca if wrong_ca else self._ca
            cert, key = certs.make_certificate(
                cn,
                *issuer,
                organization=CLIENT_ORGANIZATION,
                server=False,
                client=True,
            )
            name = "client-{}{}".format(cn, "-wrong-ca" if wrong_ca else "")
            self._clients[cn, wrong_ca] = (
                self._write_cert(name + ".pem", cert),
                self._write_key(name + "-key.pem", key),
            )
        return self._clients[cn, wrong_ca]

    def client_context(
        self, *, client_cn=None, wrong_ca=False, verify=True, trust=None
    ):
        """Return TLS client settings for connecting to C{localhost}.

        @param client_cn: present a client certificate with this common name.
        @param wrong_ca: that certificate comes from the other root.
        @param verify: verify the server certificate and host name.
        @param trust: a PEM file of certificates to trust instead of the
            test root (e.g. a self-signed server certificate).
        """
        extra = {}
        if client_cn is not None:
            cert_path, key_path = self.client_cert_path(client_cn, wrong_ca=wrong_ca)
            # cryptography objects, not a PrivateCertificate: pyOpenSSL has
            # deprecated its own X509/PKey forms for a connection's identity.
            extra = dict(
                certificate=x509.load_pem_x509_certificate(cert_path.read_bytes()),
                privateKey=load_pem_private_key(key_path.read_bytes(), None),
            )
        if not verify:
            return CertificateOptions(**extra)
        pem = pathlib.Path(trust or self.ca_cert_path).read_bytes()
        roots = [
            Certificate.loadPEM(certs.pem_certificate(cert))
            for cert in x509.load_pem_x509_certificates(pem)
        ]
        return optionsForClientTLS(
            "localhost",
            trustRoot=trustRootFromCertificates(roots),
            extraCertificateOptions=extra,
        )

    def server_cert_for(self, host):
        """Return C{(cert_path, key_path)} of a server certificate from the
        test CA that names C{host} only (for host name checks)."""
        cert, key = certs.make_certificate(host, self._ca[0], self._ca[1], dns_names=[host])
        name = host.replace(".", "-")
        return self._write_cert(name + ".pem", cert), self._write_key(name + "-key.pem", key)

    def server_cert_without_san(self, common_name="evil.example"):
        """Return C{(cert_path, key_path)} of a server certificate from the
        test CA with C{common_name} as its only name: no subjectAltName,
        which no host name can be checked against."""
        cert, key = certs.make_certificate(common_name, self._ca[0], self._ca[1])
        name = "no-san-" + common_name.replace(".", "-")
        return self._write_cert(name + ".pem", cert), self._write_key(name + "-key.pem", key)

    def client_cert_with(self, name, attributes, *, dns_names=()):
        """Return C{(cert_path, key_path)} of a wallbox client certificate
        from the test root with exactly the subject C{attributes} (pairs of
        C{NameOID} and value; none at all for an empty subject) and DNS
        subjectAltNames C{dns_names}, for the identity rules of profile 3.

        @param name: the file name stem.
        """
        key = certs.make_key()
        subject = x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes])
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._ca[0].subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        )
        if dns_names:
            # RFC 5280 §4.2.1.6: with an empty subject the SAN must be critical.
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]),
                critical=not attributes,
            )
        cert = builder.sign(self._ca[1], hashes.SHA256())
        return self._write_cert(name + ".pem", cert), self._write_key(name + "-key.pem", key)

    def _server_cert(self, issuer_cert, issuer_key):
        return certs.make_certificate(
            "localhost",
            issuer_cert,
            issuer_key,
            organization="cfosproxy tests",
            dns_names=["localhost"],
            ip_addresses=["127.0.0.1"],
        )

    def _write_cert(self, name, *chain):
        path = self.directory / name
        certs.write_certificate(path, *chain)
        return path

    def _write_key(self, name, key):
        path = self.directory / name
        certs.write_private_key(path, key)
        return path

