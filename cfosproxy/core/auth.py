"""How wallboxes prove who they are.

HTTP Basic authentication (OCPP security profiles 1 and 2): the user name
is the ChargeBox-ID. The OCPP security whitepaper defines the password
(AuthorizationKey) as 20 bytes written as 40 hex digits; wallboxes differ
in whether they send the hex text or the 20 raw bytes, so a configured
password of 40 hex digits matches both forms.

Client certificates (profile 3): the whitepaper (A00.FR.405, A00.FR.511)
puts the charge point's unique serial number into the certificate's
subject CN, and the CN is what identifies the wallbox; a wallbox may use
only the ChargeBox-ID its certificate names. Some PKIs carry the serial
number elsewhere, so ``[server] client_certificate_identity`` chooses the
field.
"""

import base64
import binascii
import hmac
import re
from dataclasses import dataclass

_HEX40 = re.compile(r"[0-9a-fA-F]{40}\Z")


def parse_basic_authorization(header: str | None) -> tuple[str, bytes] | None:
    """Split an C{Authorization: Basic ...} header value.

    @return: C{(user, password)} with the user as text and the password as
        the raw bytes sent, or None when the header is absent or not Basic.
    """
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    if not colon:
        return None
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None


def password_matches(given: bytes, configured: str) -> bool:
    """Compare a password sent by a wallbox with the configured one.

    Constant time in the length of the configured password, whatever
    C{given} is, so that timing tells an attacker nothing.

    @param given: the password bytes from the Basic header.
    @param configured: the configured password text.
    """
    candidates = [configured.encode("utf-8")]
    if _HEX40.match(configured):
        candidates.append(bytes.fromhex(configured))
    # Compare against every form, and only then decide, to keep the time
    # independent of which form matched.
    results = [hmac.compare_digest(given, candidate) for candidate in candidates]
    return any(results)


# [server] client_certificate_identity: the field of a client certificate
# that must equal the ChargeBox-ID, and how a log line names it.
CERTIFICATE_IDENTITIES = {
    # The whitepaper's rule: CN = the charge point's serial number.
    "cn": "subject CN",
    # Certificates that keep the device serial in the subject's
    # serialNumber attribute (OID 2.5.4.5) and a product name in the CN.
    "serial_number": "subject serialNumber",
    # PKIs that name devices in a DNS subjectAltName, as for servers.
    "san_dns": "DNS subjectAltName",
}


@dataclass(frozen=True)
class ClientCertificate:
    """What the admission of a wallbox needs to know of its certificate.

    @ivar subject: the subject as an RFC 4514 string, for logs and the
        status API.
    @ivar common_names: every CN attribute of the subject.
    @ivar serial_numbers: every serialNumber attribute of the subject.
    @ivar dns_names: every DNS name in the subjectAltName.
    """

    subject: str
    common_names: tuple[str, ...] = ()
    serial_numbers: tuple[str, ...] = ()
    dns_names: tuple[str, ...] = ()

    def identities(self, kind: str) -> tuple[str, ...]:
        """The values of the field C{kind} (a key of
        L{CERTIFICATE_IDENTITIES})."""
        return {
            "cn": self.common_names,
            "serial_number": self.serial_numbers,
            "san_dns": self.dns_names,
        }[kind]


def certificate_identity_problem(
    certificate: ClientCertificate, kind: str, chargebox_id: str
) -> str | None:
    """Whether C{certificate} may be used by the wallbox C{chargebox_id}.

    The ChargeBox-ID must equal the certificate's identity of the kind
    C{kind}: exactly, except that DNS names compare without regard to case
    (as DNS does). A subject with more than one CN (or serialNumber) names
    no single wallbox and is refused; of several DNS names any one may
    match.

    @return: None if it may; otherwise why not, for the log.
    """
    field = CERTIFICATE_IDENTITIES[kind]
    values = certificate.identities(kind)
    if not values:
        return "the client certificate has no {} (subject {!r})".format(
            field, certificate.subject
        )
    if kind == "san_dns":
        if chargebox_id.casefold() in (value.casefold() for value in values):
            return None
    elif len(values) > 1:
        return "the client certificate has {} {} values {!r}, not one".format(
            len(values), field, list(values)
        )
    elif values[0] == chargebox_id:
        return None
    return "the client certificate's {} is {} (subject {!r})".format(
        field, ", ".join(repr(value) for value in values), certificate.subject
    )
