"""The OCPP listener's connection backlog, for reconnect storms."""

from twisted.internet.endpoints import serverFromString
from twisted.internet import reactor

from cfosproxy.services import OCPP_BACKLOG, with_backlog


def test_tcp_gets_the_large_backlog():
    """A TCP endpoint without a backlog of its own gets OCPP_BACKLOG, and
    the result is still an endpoint Twisted understands."""
    for description in ("tcp:19520", "tcp:19520:interface=127.0.0.1", "tcp6:19520:interface=\\:\\:"):
        extended = with_backlog(description)
        assert extended == "{}:backlog={}".format(description, OCPP_BACKLOG)
        endpoint = serverFromString(reactor, extended)
        assert endpoint._backlog == OCPP_BACKLOG


def test_an_operator_backlog_is_kept():
    """A backlog set in the configuration wins."""
    assert with_backlog("tcp:19520:backlog=64") == "tcp:19520:backlog=64"


def test_other_endpoints_are_left_alone():
    """Endpoints that are not TCP ports (a UNIX socket) are not touched."""
    assert with_backlog("unix:/run/cfosproxy.sock") == "unix:/run/cfosproxy.sock"
