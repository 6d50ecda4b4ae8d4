"""Who may connect, and one session per ChargeBox-ID."""

import base64

from twisted.internet import task

from cfosproxy.core.auth import ClientCertificate
from cfosproxy.config import config_from_string
from cfosproxy.core.devices import DeviceRegistry
from cfosproxy.core.hub import ChargePointHub, Refusal
from tests.fakes import AnsweringHandler, RecordingConnection

CONFIG = """
[server]
password = geheim
client_ca = ca.pem
require_client_certificate = yes
[wallbox:a]
type = ocpp
address = CB-1
"""


def hub(text=CONFIG, clock=None):
    config = config_from_string(text)
    clock = clock or task.Clock()
    return ChargePointHub(config.server, DeviceRegistry(config, clock), lambda _: AnsweringHandler(), clock)


def certificate(cn=None, *, serial_numbers=(), dns_names=(), common_names=None):
    """A client certificate as the TLS layer describes it."""
    if common_names is None:
        common_names = () if cn is None else (cn,)
    subject = ",".join(["CN=" + n for n in common_names] + ["O=Tiefgarage"])
    return ClientCertificate(subject, tuple(common_names), tuple(serial_numbers), tuple(dns_names))


def basic(user, password):
    return "Basic " + base64.b64encode("{}:{}".format(user, password).encode()).decode()


def test_admission_order():
    """No id → 400; bad password → 401 (before revealing whether the id is
    known); no client certificate → 403; unknown id → 404; all good → admit."""
    h = hub()
    subject = certificate("CB-1")
    assert h.admit("", basic("CB-1", "geheim"), True, subject) == Refusal(400, "No ChargeBox-ID in URL")
    assert h.admit("CB-9", None, True, subject).code == 401
    assert h.admit("CB-1", basic("CB-1", "falsch"), True, subject).code == 401
    assert h.admit("CB-1", basic("CB-2", "geheim"), True, subject).code == 401
    assert h.admit("CB-1", basic("CB-1", "geheim"), False, None).code == 403
    assert h.admit("CB-9", basic("CB-9", "geheim"), True, certificate("CB-9")).code == 404
    assert h.admit("CB-1", basic("CB-1", "geheim"), True, subject) is None


def test_no_password_configured_ignores_header():
    """Without a configured password any (or no) Authorization is fine."""
    h = hub("[wallbox:a]\ntype = ocpp\naddress = CB-1\n")
    assert h.admit("CB-1", None, False, None) is None
    assert h.admit("CB-1", "Basic garbage", False, None) is None


def test_new_connection_replaces_old():
    """A second open for the same id closes the first connection; closing the
    old one afterwards does not unregister the new one."""
    h = hub("[wallbox:a]\ntype = ocpp\naddress = CB-1\n")
    first, second = RecordingConnection(), RecordingConnection()
    old = h.open("CB-1", first)
    new = h.open("CB-1", second)
    assert first.closed_with == (1000, "replaced by a new connection")
    h.closed(old, 1000, "replaced")
    assert h.sessions["CB-1"] is new
    h.closed(new, 1006, None)
    assert h.sessions == {}


def test_close_all_waits_for_sessions():
    """close_all closes every connection with the given code and fires when
    the last one is gone."""
    h = hub("[wallbox:a]\ntype = ocpp\naddress = CB-1\n")
    connection = RecordingConnection()
    session = h.open("CB-1", connection)
    d = h.close_all(1001, "bye")
    assert connection.closed_with == (1001, "bye")
    assert not d.called
    h.closed(session, 1001, "bye")
    assert d.called


PROFILE_3 = """
[server]
client_ca = ca.pem
require_client_certificate = yes
{extra}
[wallbox:a]
type = ocpp
address = CB-A
[wallbox:b]
type = ocpp
address = CB-B
"""


def test_certificate_binds_chargebox_id():
    """With a client certificate the ChargeBox-ID must be its CN: CN=CB-A
    is admitted as CB-A and refused (403) as CB-B, and the log detail
    names the ChargeBox-ID's rival, the certificate's CN."""
    h = hub(PROFILE_3.format(extra=""))
    assert h.admit("CB-A", None, True, certificate("CB-A")) is None
    refusal = h.admit("CB-B", None, True, certificate("CB-A"))
    assert refusal.code == 403
    assert "subject CN is 'CB-A'" in refusal.detail


def test_certificate_mismatch_leaves_connected_wallbox_alone():
    """A wallbox with the certificate of CB-A that asks to be CB-B is
    refused before the real CB-B's connection is touched."""
    h = hub(PROFILE_3.format(extra=""))
    real = RecordingConnection()
    session = h.open("CB-B", real, "CN=CB-B")
    assert h.admit("CB-B", None, True, certificate("CB-A")).code == 403
    assert h.sessions["CB-B"] is session
    assert real.closed_with is None


def test_certificate_without_identity_refused():
    """A certificate without a CN (the default identity) is refused for
    every ChargeBox-ID, and the detail says it has none."""
    h = hub(PROFILE_3.format(extra=""))
    refusal = h.admit("CB-A", None, True, certificate(None, dns_names=["CB-A"]))
    assert refusal.code == 403
    assert "has no subject CN" in refusal.detail


def test_certificate_with_two_common_names_refused():
    """A subject with two CNs names no single wallbox: refused even for
    either of them."""
    h = hub(PROFILE_3.format(extra=""))
    two = certificate(common_names=["CB-A", "CB-B"])
    assert h.admit("CB-A", None, True, two).code == 403
    assert h.admit("CB-B", None, True, two).code == 403


def test_identity_serial_number():
    """client_certificate_identity = serial_number: the subject's
    serialNumber must be the ChargeBox-ID, whatever the CN says."""
    h = hub(PROFILE_3.format(extra="client_certificate_identity = serial_number"))
    assert h.admit("CB-A", None, True, certificate("Power Brain", serial_numbers=["CB-A"])) is None
    assert h.admit("CB-B", None, True, certificate("CB-B", serial_numbers=["CB-A"])).code == 403
    refusal = h.admit("CB-A", None, True, certificate("CB-A"))
    assert refusal.code == 403
    assert "has no subject serialNumber" in refusal.detail


def test_identity_san_dns():
    """client_certificate_identity = san_dns: any DNS subjectAltName may
    be the ChargeBox-ID, compared without regard to case as DNS does."""
    h = hub(PROFILE_3.format(extra="client_certificate_identity = san_dns"))
    cert = certificate("wallbox", dns_names=["cb-a", "spare.example"])
    assert h.admit("CB-A", None, True, cert) is None
    assert h.admit("CB-B", None, True, cert).code == 403
    assert "has no DNS subjectAltName" in h.admit("CB-A", None, True, certificate("CB-A")).detail


def test_optional_client_certificate_still_binds():
    """With client_ca but require_client_certificate = no, a wallbox
    without a certificate is admitted, one with a certificate of another
    wallbox is not."""
    h = hub(PROFILE_3.format(extra="").replace("require_client_certificate = yes", ""))
    assert h.admit("CB-B", None, True, None) is None
    assert h.admit("CB-B", None, True, certificate("CB-A")).code == 403


def test_chargebox_id_with_control_characters_refused():
    """A ChargeBox-ID with ESC, CR or another unprintable character is
    refused with 400, even where unknown wallboxes are accepted."""
    h = hub("[server]\naccept_unknown = yes\n")
    for bad in ("CB\x1b[2J", "CB-1\r\nforged line", "CB\u2028", "CB\x7f"):
        assert h.admit(bad, None, False, None) == Refusal(400, "Invalid ChargeBox-ID")
    assert h.admit("Tiefgarage-Köln-1", None, False, None) is None


BACKOFF = """
[server]
password = geheim
password_failures = 3
password_backoff_max = 8
[wallbox:a]
type = ocpp
address = CB-1
"""


def test_wrong_passwords_back_off_per_address():
    """After 3 wrong passwords from one address its attempts, the right
    password included, get 429 with Retry-After without being checked;
    another address is not affected; once the back-off is over the
    right password is admitted again."""
    clock = task.Clock()
    h = hub(BACKOFF, clock)
    for _ in range(3):
        assert h.admit("CB-1", basic("CB-1", "falsch"), False, None, "192.0.2.7").code == 401
    refusal = h.admit("CB-1", basic("CB-1", "geheim"), False, None, "192.0.2.7")
    assert (refusal.code, refusal.retry_after) == (429, 1)
    assert h.admit("CB-1", basic("CB-1", "geheim"), False, None, "192.0.2.8") is None
    clock.advance(1)
    assert h.admit("CB-1", basic("CB-1", "geheim"), False, None, "192.0.2.7") is None


def test_backoff_grows_and_is_capped():
    """Each wrong password after the allowance doubles the back-off
    (1, 2, 4, 8 s) up to password_backoff_max (8 s), so the right password
    waits at most that long; a success clears the address."""
    clock = task.Clock()
    h = hub(BACKOFF, clock)
    address = "192.0.2.7"
    for _ in range(3):
        h.admit("CB-1", basic("CB-1", "falsch"), False, None, address)
    waits = []
    for _ in range(6):
        wait = h.admit("CB-1", basic("CB-1", "falsch"), False, None, address).retry_after
        waits.append(wait)
        clock.advance(wait)
        assert h.admit("CB-1", basic("CB-1", "falsch"), False, None, address).code == 401
    assert waits == [1, 2, 4, 8, 8, 8]
    assert h.admit("CB-1", basic("CB-1", "geheim"), False, None, address).retry_after == 8
    clock.advance(8)
    assert h.admit("CB-1", basic("CB-1", "geheim"), False, None, address) is None
    # Cleared: a fresh allowance of 3 wrong passwords.
    for _ in range(3):
        assert h.admit("CB-1", basic("CB-1", "falsch"), False, None, address).code == 401


def test_missing_credentials_are_no_guess():
    """Requests without an Authorization header (a client waiting for the
    401 challenge) do not use up the allowance."""
    h = hub(BACKOFF)
    for _ in range(20):
        assert h.admit("CB-1", None, False, None, "192.0.2.7").code == 401
    assert h.admit("CB-1", basic("CB-1", "geheim"), False, None, "192.0.2.7") is None


def test_no_backoff_when_disabled():
    """password_failures = 0: wrong passwords are answered 401 for ever."""
    h = hub(BACKOFF.replace("password_failures = 3", "password_failures = 0"))
    for _ in range(50):
        assert h.admit("CB-1", basic("CB-1", "falsch"), False, None, "192.0.2.7").code == 401
    assert h.admit("CB-1", basic("CB-1", "geheim"), False, None, "192.0.2.7") is None


class TellingHandler(AnsweringHandler):
    """Records the sessions it is told of."""

    def __init__(self):
        self.events = []

    def session_opened(self, session):
        self.events.append(("opened", session))

    def session_closed(self, session):
        self.events.append(("closed", session))


def test_the_handler_is_attached_to_the_session_it_answers():
    """The hub gives each wallbox's session its handler's answers, tells the
    handler when the session opens and closes; a replaced session's close
    is not told (the handler already has the new one)."""
    config = config_from_string(CONFIG)
    clock = task.Clock()
    handlers = {}
    the_hub = ChargePointHub(
        config.server,
        DeviceRegistry(config, clock),
        lambda chargebox_id: handlers.setdefault(chargebox_id, TellingHandler()),
        clock,
    )
    first = the_hub.open("CB-1", RecordingConnection())
    second = the_hub.open("CB-1", RecordingConnection())
    the_hub.closed(first, 1000, "replaced")
    the_hub.closed(second, 1000, "")
    assert handlers["CB-1"].events == [
        ("opened", first), ("opened", second), ("closed", second)
    ]
