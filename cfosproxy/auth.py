"""HTTP Basic authentication of wallboxes (OCPP security profiles 1 and 2).

The user name is the ChargeBox-ID. The OCPP security whitepaper defines the
password (AuthorizationKey) as 20 bytes written as 40 hex digits; wallboxes
differ in whether they send the hex text or the 20 raw bytes, so a configured
password of 40 hex digits matches both forms.
"""

import base64
import binascii
import hmac
import re

_HEX40 = re.compile(r"[0-9a-fA-F]{40}\Z")


def parse_basic_authorization(header):
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


def password_matches(given, configured):
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
