"""``cfosproxy-certs``: the files it writes, its errors, its equivalence with
the README's OpenSSL recipe, and its certificates in a real TLS connection."""

import contextlib
import io
import ipaddress
import json
import os
import pathlib
import shutil
import ssl
import subprocess
import tempfile

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.trial import unittest

from cfosproxy.ops.certtool import main, safe_file_name
from tests.harness import RunningDaemon, asyncio_test
from tests.wallboxes import connect, http_get

UTF8_ORG = "Tiefgarage Köln GmbH"

# The README's recipe ("TLS" and "Client certificates"), command for command.
# It needs bash for the <(printf ...) process substitution.
OPENSSL_RECIPE = """
set -e
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \\
  -keyout ca-key.pem -out ca.pem -days 3650 -subj "/CN=Site CA/O=Example GmbH"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \\
  -keyout server-key.pem -out server.csr -subj "/CN=cfosproxy.local"
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial \\
  -days 825 -out server.pem \\
  -extfile <(printf "subjectAltName=DNS:cfosproxy.local,IP:192.168.1.10\\nextendedKeyUsage=serverAuth")
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \\
  -keyout cb-0001-key.pem -out cb-0001.csr -subj "/CN=CB-0001/O=Example GmbH"
openssl x509 -req -in cb-0001.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial \\
  -days 825 -out cb-0001.pem -extfile <(printf "extendedKeyUsage=clientAuth")
"""


def run(*argv):
    """Run the tool in-process; return C{(status, stdout, stderr)}."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


def load(path):
    return x509.load_pem_x509_certificate(pathlib.Path(path).read_bytes())


def attribute(cert, oid):
    return [a.value for a in cert.subject.get_attributes_for_oid(oid)]


def extension(cert, cls):
    """The value of the extension C{cls}, or L{None} when absent."""
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


def summary(cert):
    """What the recipe and the tool must agree on: SAN entries by type,
    extended key usages, and the CA flag (no basicConstraints at all, as in
    the recipe's leaf certificates, also means "not a CA")."""
    san = extension(cert, x509.SubjectAlternativeName)
    eku = extension(cert, x509.ExtendedKeyUsage)
    basic = extension(cert, x509.BasicConstraints)
    return {
        "san": None if san is None else sorted(
            (type(name).__name__, str(name.value)) for name in san
        ),
        "eku": None if eku is None else sorted(oid.dotted_string for oid in eku),
        "ca": bool(basic and basic.ca),
    }


def make_pki(directory, *, org="Example GmbH", dns=("cfosproxy.local",),
             ips=("192.168.1.10",), client_org=UTF8_ORG):
    """CA, server and CB-0001 client made by the tool into C{directory}."""
    out = str(directory)
    ca = ["--ca", out + "/ca.pem", "--ca-key", out + "/ca-key.pem", "--out", out]
    assert run("ca", "--out", out, "--cn", "Site CA", "--org", org)[0] == 0
    names = [a for d in dns for a in ("--dns", d)] + [a for i in ips for a in ("--ip", i)]
    assert run("server", *ca, *names)[0] == 0
    assert run("client", *ca, "--cn", "CB-0001", "--org", client_org)[0] == 0


# The certificates and keys the three subcommands write.
@pytest.fixture
def pki(tmp_path):
    """A directory with the CA, server and client the tool made."""
    make_pki(tmp_path)
    return tmp_path


def test_key_modes(pki):
    """Every key file is readable by the owner only; certificates are
    world-readable."""
    for name in ("ca-key.pem", "server-key.pem", "CB-0001-key.pem"):
        assert (pki / name).stat().st_mode & 0o777 == 0o600, name
    for name in ("ca.pem", "server.pem", "CB-0001.pem"):
        assert (pki / name).stat().st_mode & 0o777 == 0o644, name


def test_ca(pki):
    """The CA is self-signed, named as asked, and a CA."""
    ca = load(pki / "ca.pem")
    assert attribute(ca, NameOID.COMMON_NAME) == ["Site CA"]
    assert attribute(ca, NameOID.ORGANIZATION_NAME) == ["Example GmbH"]
    assert ca.issuer == ca.subject
    assert extension(ca, x509.BasicConstraints).ca


def test_server(pki):
    """The server certificate: one certificate in the file, signed by the
    CA, not a CA, SAN with the DNS name and the IP, EKU serverAuth, CN the
    first name by default."""
    ca = load(pki / "ca.pem")
    pem = (pki / "server.pem").read_bytes()
    assert len(x509.load_pem_x509_certificates(pem)) == 1
    server = load(pki / "server.pem")
    server.verify_directly_issued_by(ca)
    assert attribute(server, NameOID.COMMON_NAME) == ["cfosproxy.local"]
    san = extension(server, x509.SubjectAlternativeName)
    assert san.get_values_for_type(x509.DNSName) == ["cfosproxy.local"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("192.168.1.10")]
    assert list(extension(server, x509.ExtendedKeyUsage)) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not extension(server, x509.BasicConstraints).ca


def test_client_utf8(pki):
    """The client certificate: CN the charge box id, a UTF-8 organization
    that round-trips, EKU clientAuth only, signed by the CA, not a CA."""
    client = load(pki / "CB-0001.pem")
    client.verify_directly_issued_by(load(pki / "ca.pem"))
    assert attribute(client, NameOID.COMMON_NAME) == ["CB-0001"]
    assert attribute(client, NameOID.ORGANIZATION_NAME) == [UTF8_ORG]
    assert list(extension(client, x509.ExtendedKeyUsage)) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not extension(client, x509.BasicConstraints).ca
    assert extension(client, x509.SubjectAlternativeName) is None


def test_safe_file_names():
    """A charge box id with path separators or a leading dot stays a
    plain file name inside --out."""
    for cn in ("../evil", "a/b", "a\\b", ".hidden", ".."):
        name = safe_file_name(cn)
        assert os.sep not in name
        assert "/" not in name
        assert "\\" not in name
        assert not name.startswith("."), name
    assert safe_file_name("CB-0001") == "CB-0001"


# Expected errors: one line on stderr, exit 1 (failure) or 2 (usage).
@pytest.fixture
def ca_dir(tmp_path):
    """A directory with a CA the tool made."""
    assert run("ca", "--out", str(tmp_path))[0] == 0
    return tmp_path


def test_no_overwrite_without_force(ca_dir):
    """An existing CA is not replaced unless --force is given."""
    before = (ca_dir / "ca-key.pem").read_bytes()
    status, _, err = run("ca", "--out", str(ca_dir))
    assert status == 1
    assert "--force" in err
    assert "Traceback" not in err
    assert (ca_dir / "ca-key.pem").read_bytes() == before
    assert run("ca", "--out", str(ca_dir), "--force")[0] == 0
    assert (ca_dir / "ca-key.pem").read_bytes() != before


def test_unreadable_ca_key(ca_dir):
    """A CA key that cannot be read: exit 1, the message names the file."""
    missing = str(ca_dir / "missing-key.pem")
    status, _, err = run(
        "server", "--ca", str(ca_dir / "ca.pem"), "--ca-key", missing,
        "--out", str(ca_dir), "--dns", "localhost",
    )
    assert status == 1
    assert missing in err
    assert "Traceback" not in err
    assert not (ca_dir / "server.pem").exists()


def test_mismatching_ca_key(ca_dir):
    """A key that is not the CA's: exit 1, nothing written."""
    other = ca_dir / "other"
    assert run("ca", "--out", str(other))[0] == 0
    status, _, err = run(
        "client", "--ca", str(ca_dir / "ca.pem"), "--ca-key", str(other / "ca-key.pem"),
        "--out", str(ca_dir), "--cn", "CB-0001", "--org", "X",
    )
    assert status == 1
    assert "does not belong" in err
    assert not (ca_dir / "CB-0001.pem").exists()


def test_server_needs_a_name(ca_dir):
    """server without --dns or --ip is a usage error (exit 2)."""
    status, _, err = run(
        "server", "--ca", str(ca_dir / "ca.pem"), "--ca-key", str(ca_dir / "ca-key.pem"),
        "--out", str(ca_dir),
    )
    assert status == 2
    assert "--dns or --ip" in err


def test_bad_ip_is_usage_error(ca_dir):
    """A malformed --ip is a usage error (exit 2)."""
    status, _, _ = run(
        "server", "--ca", str(ca_dir / "ca.pem"), "--ca-key", str(ca_dir / "ca-key.pem"),
        "--out", str(ca_dir), "--ip", "300.1.2.3",
    )
    assert status == 2


# The tool and the README's OpenSSL recipe make equivalent certificates.
def test_same_extensions(tmp_path):
    """Same subjects, SAN types and values, EKU and CA flag for CA,
    server and client, from the recipe and from the tool."""
    if shutil.which("openssl") is None or shutil.which("bash") is None:
        pytest.skip("openssl (and bash, for the recipe's <(...)) not on PATH")
    recipe, tool = tmp_path / "recipe", tmp_path / "tool"
    recipe.mkdir()
    tool.mkdir()
    subprocess.run(["bash", "-c", OPENSSL_RECIPE], cwd=recipe, check=True, capture_output=True)
    make_pki(tool, client_org="Example GmbH")
    for theirs, ours in (("ca.pem", "ca.pem"), ("server.pem", "server.pem"),
                         ("cb-0001.pem", "CB-0001.pem")):
        expected, actual = load(recipe / theirs), load(tool / ours)
        assert summary(actual) == summary(expected), ours
        # Attribute order differs ("/CN=.../O=..." there), the content not.
        assert set(actual.subject) == set(expected.subject), ours
    assert summary(load(tool / "ca.pem"))["ca"]


class EndToEndTests(unittest.TestCase):
    """The tool's certificates in a real wss connection to cfosproxy."""

    @asyncio_test
    async def test_server_and_client_accepted(self):
        """cfosproxy serves the tool's server certificate and requires a
        client certificate from the tool's CA; a wss client trusting that CA
        and presenting the tool's client certificate is served, and the
        status API shows the certificate's subject."""
        pki = pathlib.Path(tempfile.mkdtemp(prefix="cfosproxy-certtool-"))
        self.addCleanup(shutil.rmtree, pki, ignore_errors=True)
        make_pki(pki, dns=("localhost",), ips=("127.0.0.1",))
        daemon = RunningDaemon(
            self,
            server=(
                "tls = on\ncertificate = {d}/server.pem\nprivate_key = {d}/server-key.pem\n"
                "client_ca = {d}/ca.pem\nrequire_client_certificate = yes\n"
            ).format(d=pki),
        )
        context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        context.load_cert_chain(str(pki / "CB-0001.pem"), str(pki / "CB-0001-key.pem"))
        async with await connect(daemon.url(scheme="wss"), ssl=context) as ws:
            await ws.send('[2,"hb","Heartbeat",{}]')
            self.assertEqual(json.loads(await ws.recv())[:2], [3, "hb"])
            _, device = await http_get(daemon.status_url("/api/devices/garage-1"))
        self.assertIn("CN=CB-0001", device["certificate_subject"])
        self.assertIn("O=" + UTF8_ORG, device["certificate_subject"])
