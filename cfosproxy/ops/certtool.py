"""``cfosproxy-certs``: a small PKI for cfosproxy without typing OpenSSL.

Three subcommands write PEM files, with the same content as the OpenSSL
recipe in the README (a CA; a server certificate with subject alternative
names and serverAuth; wallbox client certificates with clientAuth for
security profile 3)::

    cfosproxy-certs ca --out pki --cn "Site CA" --org "Example GmbH"
    cfosproxy-certs server --ca pki/ca.pem --ca-key pki/ca-key.pem --out pki \\
        --dns cfosproxy.local --ip 192.168.1.10
    cfosproxy-certs client --ca pki/ca.pem --ca-key pki/ca-key.pem --out pki \\
        --cn CB-0001 --org "Example GmbH"

Keys are written with mode 0600 and no file is overwritten without
``--force``. Exit status: 0 done, 1 failed (unreadable or mismatching CA,
existing files), 2 usage error.
"""

import argparse
import ipaddress
import os
import re
import sys

from cryptography import x509

from cfosproxy.ws import certs

from cfosproxy.ws import tls

PROG = "cfosproxy-certs"


class _Failure(Exception):
    """An expected failure: reported as one line, exit status 1."""


def main(argv=None):
    """Run the tool on C{argv} (default: C{sys.argv[1:]}); return the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "server" and not (args.dns or args.ip):
            args.parser.error("at least one --dns or --ip is required")
    except SystemExit as e:
        # argparse exits (2 for usage errors, 0 for --help); a caller of
        # main() gets the status back instead.
        return e.code if isinstance(e.code, int) else 2
    try:
        written = args.run(args)
    except _Failure as e:
        print("{}: error: {}".format(PROG, e), file=sys.stderr)
        return 1
    for path in written:
        print("wrote {}".format(path))
    return 0


def _parser():
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Make a CA, server and wallbox client certificates for cfosproxy.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ca = commands.add_parser("ca", help="make a certificate authority (ca.pem, ca-key.pem)")
    _common(ca, days=3650)
    ca.add_argument("--cn", type=_text, default="Site CA", help="common name (default: %(default)s)")
    ca.add_argument("--org", type=_text, help="organization")
    ca.set_defaults(run=_run_ca)

    server = commands.add_parser(
        "server", help="make a server certificate (server.pem, server-key.pem)"
    )
    _common(server, days=825, signed=True)
    server.add_argument(
        "--dns", action="append", default=[], type=_dns_name, metavar="NAME",
        help="host name the wallboxes connect to (repeatable)",
    )
    server.add_argument(
        "--ip", action="append", default=[], type=_ip_address, metavar="ADDR",
        help="IP address the wallboxes connect to (repeatable)",
    )
    server.add_argument("--cn", type=_text, help="common name (default: the first --dns or --ip)")
    server.set_defaults(run=_run_server, parser=server)

    client = commands.add_parser(
        "client", help="make a wallbox client certificate (<CN>.pem, <CN>-key.pem)"
    )
    _common(client, days=825, signed=True)
    client.add_argument("--cn", type=_text, required=True, metavar="CHARGEBOX-ID",
                        help="the wallbox's charge box id")
    client.add_argument("--org", type=_text, required=True, metavar="OPERATOR",
                        help="the operator's organization")
    client.set_defaults(run=_run_client)
    return parser


def _common(parser, *, days, signed=False):
    parser.add_argument("--out", required=True, metavar="DIR", help="directory for the files")
    parser.add_argument("--days", type=_days, default=days, help="validity (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    if signed:
        parser.add_argument("--ca", required=True, metavar="FILE", help="the CA certificate (PEM)")
        parser.add_argument("--ca-key", required=True, metavar="FILE", help="the CA's private key (PEM)")


# -- argument types: bad values are usage errors (exit 2), caught by argparse


def _text(value):
    if not value.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    # X.509 limits CN and O to 64 characters; said here rather than as a
    # ValueError from deep inside cryptography.
    if len(value) > 64:
        raise argparse.ArgumentTypeError("at most 64 characters: {!r}".format(value))
    return value


def _days(value):
    try:
        days = int(value)
    except ValueError:
        days = 0
    if days < 1:
        raise argparse.ArgumentTypeError("must be a positive number of days: {!r}".format(value))
    return days


def _dns_name(value):
    # A certificate holds host names as ASCII (IDNA A-labels); a wallbox
    # compares the name it connects to, so "xn--..." must be given as such.
    if not value or not value.isascii() or any(c.isspace() for c in value):
        raise argparse.ArgumentTypeError(
            "not an ASCII host name: {!r} (write international names as xn--...)".format(value)
        )
    return value


def _ip_address(value):
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise argparse.ArgumentTypeError("not an IP address: {!r}".format(value)) from None


# -- the subcommands: each returns the paths it wrote


def _run_ca(args):
    cert_path, key_path = _targets(args, "ca")
    cert, key = _build(certs.make_ca, args.cn, args.org, args.days)
    return _write(cert_path, key_path, cert, key)


def _run_server(args):
    issuer = _load_ca(args.ca, args.ca_key)
    cert_path, key_path = _targets(args, "server")
    cert, key = _build(
        certs.make_certificate,
        args.cn or (args.dns + args.ip)[0],
        *issuer,
        dns_names=dict.fromkeys(args.dns),  # each once, in order
        ip_addresses=dict.fromkeys(args.ip),
        server=True,
        days=args.days,
    )
    return _write(cert_path, key_path, cert, key)


def _run_client(args):
    issuer = _load_ca(args.ca, args.ca_key)
    cert_path, key_path = _targets(args, safe_file_name(args.cn))
    cert, key = _build(
        certs.make_certificate,
        args.cn,
        *issuer,
        organization=args.org,
        server=False,
        client=True,
        days=args.days,
    )
    return _write(cert_path, key_path, cert, key)


def safe_file_name(name):
    """C{name} as a file name stem: no path separators, no leading dot.

    A charge box id may hold any printable character; everything but ASCII
    letters, digits, ``.``, ``_`` and ``-`` becomes ``_`` so that the files
    land in the output directory and nowhere else.
    """
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    if stem.startswith("."):
        stem = "_" + stem[1:]  # neither hidden nor "." / ".."
    return stem


def _targets(args, stem):
    """The certificate and key paths for C{stem}, checked before anything
    is made: an existing pair is a CA or wallbox identity in use."""
    cert_path = os.path.join(args.out, stem + ".pem")
    key_path = os.path.join(args.out, stem + "-key.pem")
    if not args.force:
        existing = [p for p in (cert_path, key_path) if os.path.lexists(p)]
        if existing:
            raise _Failure(
                "{} {} already; use --force to replace".format(
                    " and ".join(existing), "exists" if len(existing) == 1 else "exist"
                )
            )
    return cert_path, key_path


def _load_ca(ca_path, key_path):
    """The CA certificate and its key, checked to belong together."""
    try:
        ca_cert = tls.load_certificates("--ca", ca_path)[0]
        ca_key = tls.load_private_key("--ca-key", key_path)
    except tls.TLSConfigError as e:
        raise _Failure(str(e)) from None
    try:
        is_ca = ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        # A wallbox would refuse a certificate signed by a non-CA anyway.
        raise _Failure("--ca: {} is not a CA certificate (basicConstraints CA:TRUE)".format(ca_path))
    if tls.public_der(ca_key) != tls.public_der(ca_cert):
        raise _Failure(
            "--ca-key: the key in {} does not belong to the CA certificate in {}".format(
                key_path, ca_path
            )
        )
    return ca_cert, ca_key


def _build(make, *args, **kwargs):
    try:
        return make(*args, **kwargs)
    except (ValueError, TypeError) as e:
        # e.g. a CA key type cryptography cannot sign with
        raise _Failure("cannot make the certificate: {}".format(e)) from None


def _write(cert_path, key_path, cert, key):
    directory = os.path.dirname(cert_path) or "."
    # The key first: a certificate on disk means its key is there too.
    for path, write, thing in (
        (directory, lambda p, _: os.makedirs(p, exist_ok=True), None),
        (key_path, certs.write_private_key, key),
        (cert_path, certs.write_certificate, cert),
    ):
        try:
            write(path, thing)
        except OSError as e:
            # Named by the path asked for, not the temporary file's name.
            raise _Failure("cannot write {}: {}".format(path, e.strerror or e)) from None
    return [cert_path, key_path]


if __name__ == "__main__":
    sys.exit(main())
