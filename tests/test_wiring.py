"""What both plugins make for a backend: its TLS files read at start, and
a gateway linked to it with the settings the process shares."""

import pytest
from twisted.internet.testing import MemoryReactorClock

from cfosproxy.wiring.backends import Backend
from cfosproxy.wiring.gateways import GatewayMaker
from cfosproxy.ws.tls import TLSConfigError


def test_a_ws_backend_has_no_tls_files_to_read():
    """A C{ws://} backend is plain: nothing is read, whatever the TLS
    settings say, and it has no TLS options."""
    backend = Backend.read(
        "ws://backend.example/ocpp", "CB-1", ca="/nonexistent/ca.pem", section="ocpp"
    )
    assert backend.tls_options is None
    assert backend.ca == "/nonexistent/ca.pem"


def test_a_wss_backend_s_unreadable_file_names_its_setting():
    """The files of a C{wss://} backend are read at once; one that cannot
    be read fails with the section and the key the plugin calls it by."""
    with pytest.raises(TLSConfigError) as caught:
        Backend.read(
            "wss://backend.example/ocpp",
            "CB-1",
            ca="/nonexistent/ca.pem",
            section="ocpp",
            keys=("ca", "certificate", "private_key"),
        )
    assert "[ocpp] ca" in str(caught.value)


def test_each_gateway_links_to_its_backend_with_the_shared_settings():
    """Every gateway the maker makes presents its wallbox's client id to its
    own backend, at the backend's URL with that id, and waits for the
    backend's answers as long as the process's other gateways do."""
    make_gateway = GatewayMaker(lambda: None, object(), MemoryReactorClock(), 45, "accept")
    first = make_gateway("CB-1", Backend("ws://one.example/ocpp", "garage"), (1, 2))
    second = make_gateway("pb", Backend("wss://two.example/ocpp/", "pb 2"))
    assert (first.chargebox_id, first.link_id) == ("CB-1", "garage")
    assert (first.link.url, first.link.client_id) == ("ws://one.example/ocpp/garage", "garage")
    assert second.link.url == "wss://two.example/ocpp/pb%202"
    assert first.link.call_timeout == second.link.call_timeout == 45
    assert first.link is not second.link
