"""Who may connect, and one session per ChargeBox-ID."""

import base64

from twisted.internet import task

from cfosproxy.config import config_from_string
from cfosproxy.devices import DeviceRegistry
from cfosproxy.hub import ChargePointHub, Refusal
from tests.fakes import RecordingConnection

CONFIG = """
[server]
password = geheim
client_ca = ca.pem
require_client_certificate = yes
[wallbox:a]
type = ocpp
address = CB-1
"""


def hub(text=CONFIG):
    config = config_from_string(text)
    clock = task.Clock()
    return ChargePointHub(config.server, DeviceRegistry(config, clock), object(), clock)


def basic(user, password):
    return "Basic " + base64.b64encode("{}:{}".format(user, password).encode()).decode()


def test_admission_order():
    """No id → 400; bad password → 401 (before revealing whether the id is
    known); no client certificate → 403; unknown id → 404; all good → admit."""
    h = hub()
    subject = "CN=CB-1"
    assert h.admit("", basic("CB-1", "geheim"), True, subject) == Refusal(400, "No ChargeBox-ID in URL")
    assert h.admit("CB-9", None, True, subject).code == 401
    assert h.admit("CB-1", basic("CB-1", "falsch"), True, subject).code == 401
    assert h.admit("CB-1", basic("CB-2", "geheim"), True, subject).code == 401
    assert h.admit("CB-1", basic("CB-1", "geheim"), False, None).code == 403
    assert h.admit("CB-9", basic("CB-9", "geheim"), True, subject).code == 404
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
