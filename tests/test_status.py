"""The status listener's HTTP server: no secrets from URLs in the access log,
a deadline for each request and a bound on its head, and only the host
names it is meant to answer for (DNS rebinding)."""

import asyncio
import json

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial import unittest
from twisted.web import resource
from twisted.web.test.requesthelper import DummyRequest

from cfosproxy.ocpp.profiles import MANAGER_STACK_LEVEL
from cfosproxy.ops import status
from cfosproxy.config import ConfigError, config_from_string
from cfosproxy.ops.status import (
    MAX_REQUEST_HEAD,
    REQUEST_DEADLINE,
    StatusSite,
    mask_query_secrets,
    status_root,
)
from tests.harness import RunningDaemon, asyncio_test, wait_deferred
from tests.test_manager import Site as ManagedSite

pytestmark = pytest.mark.usefixtures("logged_errors", "no_reactor_timers")

# Only bounds the wait for what the daemon owes.
HANG_GUARD = 30


class Hello(resource.Resource):
    """Answers every request with C{hello}."""

    isLeaf = True

    def render_GET(self, request):
        return b"hello"

    render_POST = render_GET


PEER = IPv4Address("TCP", "192.0.2.7", 40000)


class Events:
    """Every log event from now until L{stop}."""

    def __init__(self):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)

    def stop(self):
        globalLogPublisher.removeObserver(self.events.append)

    def lines(self, level=None):
        return [
            formatEvent(event)
            for event in self.events
            if level is None or event.get("log_level") == level
        ]


@pytest.fixture
def log():
    """Every log event while the test runs."""
    events = Events()
    yield events
    events.stop()


@pytest.fixture
def clock():
    """The site's reactor: a fake clock for its deadlines."""
    return MemoryReactorClock()


@pytest.fixture
def site(clock):
    """A started L{StatusSite} on C{clock}, to drive through in-memory
    connections."""
    site = StatusSite(
        Hello(), allowed_hosts=("localhost", "127.0.0.1", "::1", "cfos.local"),
        reactor=clock,
    )
    site.doStart()
    yield site
    site.doStop()


@pytest.fixture
def connect(site):
    """Opens an in-memory connection from L{PEER} to C{site}; the ones the
    site left open are closed after the test."""
    opened = []

    def connect():
        channel = site.buildProtocol(PEER)
        transport = StringTransport(peerAddress=PEER)
        channel.makeConnection(transport)
        opened.append((channel, transport))
        return channel, transport

    yield connect
    for channel, transport in reversed(opened):
        if not transport.disconnecting:
            channel.connectionLost(None)


@pytest.fixture
def exchange(connect):
    """Sends a request head on a new connection; returns the answer."""

    def exchange(head):
        channel, transport = connect()
        channel.dataReceived(head)
        return transport.value()

    return exchange


def test_token_in_the_url_is_masked_in_the_access_log(exchange, log):
    """A token in the query (and in the Referer) is written as *** in
    the access log; the other parameters stay."""
    answer = exchange(
        b"GET /api/devices?token=s3cret&page=2 HTTP/1.1\r\nHost: 127.0.0.1:19580\r\n"
        b"Referer: http://127.0.0.1:19580/?TOKEN=an0ther\r\n\r\n"
    )
    assert b"200 OK" in answer
    [line] = [line for line in log.lines() if "/api/devices" in line]
    assert "s3cret" not in line
    assert "an0ther" not in line
    assert "/api/devices?token=***&page=2" in line
    assert "/?TOKEN=***" in line


def test_reads_are_logged_at_debug_and_changes_at_info(exchange, log):
    """A GET (the status page polls every few seconds) goes to the
    access log at debug level; a POST at info."""
    exchange(b"GET /api/devices HTTP/1.1\r\nHost: localhost\r\n\r\n")
    exchange(b"POST /api/devices/a/disable HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert len([l for l in log.lines(LogLevel.debug) if '"GET /api/devices' in l]) == 1
    assert len([l for l in log.lines(LogLevel.info) if '"POST /api/devices' in l]) == 1


def test_allowed_hosts_are_served(exchange):
    """Host names and addresses on the list are served, with or without
    a port, in any case, IPv6 in brackets; so is a request without a
    Host header (HTTP/1.0, not a browser)."""
    for host in (b"127.0.0.1:19580", b"LOCALHOST", b"[::1]:19580", b"cfos.local.", b"cfos.local"):
        answer = exchange(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
        assert b"200 OK" in answer, host
    assert b"200 OK" in exchange(b"GET / HTTP/1.0\r\n\r\n")


def test_other_hosts_are_refused(exchange, log):
    """A Host header naming anything else (a DNS-rebinding page's own
    name) gets 421 and nothing of the API, and a warning names the
    client and the host."""
    for host in (b"evil.example", b"evil.example:19580", b"127.0.0.1.evil.example", b"[::2]"):
        answer = exchange(b"GET /api/devices HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 421"), answer
        assert b"hello" not in answer
    warnings = log.lines(LogLevel.warn)
    assert len(warnings) == 4
    assert "192.0.2.7" in warnings[0]
    assert "evil.example" in warnings[0]


def test_any_host_with_a_star(clock):
    """allowed_hosts = * serves every host name."""
    site = StatusSite(Hello(), allowed_hosts=("*",), reactor=clock)
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: anything.example\r\n\r\n")
    assert b"200 OK" in transport.value()
    channel.connectionLost(None)


def test_a_trickling_request_is_cut_off_at_the_deadline(connect, clock, log):
    """A client that sends its request a byte at a time, never silent
    long enough for twisted.web's idle timeout, is closed once the
    deadline after its first byte has passed, with a log line."""
    channel, transport = connect()
    for byte in b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 200:
        channel.dataReceived(bytes([byte]))
        clock.advance(REQUEST_DEADLINE / 20)
        if transport.disconnecting:
            break
    assert transport.disconnecting
    assert clock.seconds() <= REQUEST_DEADLINE + 1
    assert any(
        "no whole request within" in line and "192.0.2.7" in line
        for line in log.lines(LogLevel.info)
    )


def test_each_request_on_a_kept_connection_has_its_own_deadline(connect, clock, log):
    """A connection kept open between requests: a request that comes
    in whole is answered, and the next one has the deadline again;
    the time spent on earlier requests does not count."""
    channel, transport = connect()
    for _ in range(3):
        clock.advance(REQUEST_DEADLINE - 1)
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert not transport.disconnecting
    assert transport.value().count(b"200 OK") == 3
    clock.advance(REQUEST_DEADLINE)
    assert transport.disconnecting
    # Closing a connection that sat idle is no news at info level.
    assert not [line for line in log.lines(LogLevel.info) if "no whole request" in line]
    assert [line for line in log.lines(LogLevel.debug) if "no whole request" in line]


def test_a_head_over_the_bound_is_refused(exchange):
    """A request head over MAX_REQUEST_HEAD bytes gets 400 and the
    connection is closed."""
    head = b"GET / HTTP/1.1\r\nHost: localhost\r\n"
    while len(head) <= MAX_REQUEST_HEAD:
        head += b"X-Padding: " + b"a" * 1000 + b"\r\n"
    answer = exchange(head + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 400"), answer[:40]


def test_secret_values_are_masked():
    """Values of token-like parameters become ***, in any case and
    percent-encoded; other parameters, the path and the fragment
    stay."""
    cases = {
        b"/a?token=x": b"/a?token=***",
        b"/a?b=1&Token=x&c=2": b"/a?b=1&Token=***&c=2",
        b"/a?%74oken=x": b"/a?%74oken=***",
        b"/a?access_token=x#f": b"/a?access_token=***#f",
        b"/a?tokens=x": b"/a?tokens=x",
        b"/a?token": b"/a?token",
        b"/token=x": b"/token=x",
        b"/a": b"/a",
    }
    for uri, masked in cases.items():
        assert mask_query_secrets(uri) == masked, uri


def test_default_is_the_listen_address_and_localhost():
    """Without allowed_hosts: localhost, 127.0.0.1, ::1, and the address
    the status listener binds to."""
    config = config_from_string("[status]\nlisten = tcp:19580:interface=192.168.1.5\n")
    assert config.status.host_allow_list == ("localhost", "127.0.0.1", "::1", "192.168.1.5")
    assert config_from_string("").status.host_allow_list == ("localhost", "127.0.0.1", "::1")


@pytest.mark.parametrize(
    "listen, extra",
    [
        (r"tcp6:19580:interface=FE80\:\:1", ("fe80::1",)),
        (r"tcp6:19580:interface=\:\:", ()),
        ("tcp:19580:interface=0.0.0.0", ()),
        ("tcp:19580:backlog=50:interface=10.0.0.7", ("10.0.0.7",)),
        ("unix:/run/cfosproxy.sock", ()),
    ],
)
def test_the_listen_address_is_read_from_the_endpoint_string(listen, extra):
    """The address is the endpoint's interface option wherever it stands,
    with escaped colons (IPv6); an endpoint that binds to every address,
    or has no address, adds none."""
    config = config_from_string("[status]\nlisten = {}\n".format(listen))
    assert config.status.host_allow_list == ("localhost", "127.0.0.1", "::1") + extra


def test_configured_list():
    """Names and addresses separated by commas or spaces, IPv6 with or
    without brackets, in any case; * for any host."""
    config = config_from_string("[status]\nallowed_hosts = CFOS.local, [::1] 10.0.0.2, *\n")
    assert config.status.host_allow_list == ("cfos.local", "::1", "10.0.0.2", "*")


def test_a_port_or_url_is_an_error():
    """A host with a port, or a URL, is refused at start, naming the key."""
    for value in ("cfos.local:19580", "http://cfos.local/", "a b/c"):
        with pytest.raises(ConfigError) as caught:
            config_from_string("[status]\nallowed_hosts = {}\n".format(value))
        assert "[status] allowed_hosts" in str(caught.value)


def render_health(failures):
    """What C{/api/health} answers, as C{(code, document)}, when sharing has
    failed C{failures} times in a row."""
    listeners = {"ocpp": type("Up", (), {"running": True})()}
    manager = type("Manager", (), {"sharing_failures": failures})()
    request = DummyRequest([b""])
    body = status.HealthResource(listeners, manager).render_GET(request)
    return request.responseCode or 200, json.loads(body)


def test_sharing_that_works_is_healthy():
    """Sharing works: 200, status ok, sharing ok."""
    code, document = render_health(0)
    assert (code, document["status"], document["sharing"]) == (200, "ok", "ok")


def test_sharing_that_fails_is_degraded():
    """Sharing keeps failing (limits are held): 503, status degraded,
    with the number of failed passes, so that monitoring alerts."""
    code, document = render_health(4)
    assert code == 503
    assert document["status"] == "degraded"
    assert (document["sharing"], document["sharing_failures"]) == ("failing", 4)


WIRED_SITE = """
[manager]
max_current = 16
max_imbalance = 10
[circuit:carport]
max_current = 10
[circuit:bay]
max_current = 8
parent = carport
[wallbox:A]
type = ocpp
address = CB-A
[wallbox:C]
type = ocpp
address = CB-C
circuit = bay
wiring = L3
priority = 1
"""


def wired_site():
    """A real load manager with circuits: the site (16 A) with the
    carport (10 A) below it and the bay (8 A) below that; wallbox A
    three-phase on the site, wallbox C single-phase on L3 in the bay.
    Both charge, with their limits accepted."""
    wired = ManagedSite(WIRED_SITE)
    for name in ("A", "C"):
        wired.connect(name)
        wired.start(name)
    wired.settle()
    return wired


def http(root, method, path, body=b"", token=None, host=b"localhost"):
    """C{method path} with C{body} (and C{token} as a bearer token) to a
    status listener's site over the resource tree C{root}, through an
    in-memory connection.

    @return: C{(status code, {lower-case header name: value}, body)}.
    """
    site = StatusSite(root, reactor=MemoryReactorClock())
    site.doStart()
    channel = site.buildProtocol(PEER)
    transport = StringTransport(peerAddress=PEER)
    channel.makeConnection(transport)
    head = method + b" " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n"
    if token is not None:
        head += b"Authorization: Bearer " + token + b"\r\n"
    if body:
        head += b"Content-Length: " + str(len(body)).encode("ascii") + b"\r\n"
    channel.dataReceived(head + b"\r\n" + body)
    channel.connectionLost(None)
    site.doStop()
    head, _, body = transport.value().partition(b"\r\n\r\n")
    status_line, *lines = head.split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def get(wired, path, host=b"localhost"):
    """C{GET path} from the status listener's site over C{wired}'s registry
    and manager, through an in-memory connection.

    @return: C{(status code, {lower-case header name: value}, body)}.
    """
    return http(status_root(wired.registry, wired.manager, "", {}), b"GET", path, host=host)


def test_site_api_shows_the_circuits_per_phase():
    """GET /api/site answers the manager's site state as JSON that is not
    to be cached: the site and each circuit under its parent, and on each
    phase the limit, what is available, counted and granted."""
    wired = wired_site()
    code, headers, body = get(wired, b"/api/site")
    assert code == 200
    assert headers[b"content-type"] == status.JSON_TYPE
    assert headers[b"cache-control"] == b"no-store"
    state = json.loads(body)
    assert state == wired.manager.site_state()
    assert state["phases"] == ["L1", "L2", "L3"]
    assert (state["max_imbalance"], state["imbalance"]) == (10.0, 8.0)
    site = state["site"]
    assert (site["name"], site["parent"], site["circuits"]) == ("site", None, ["carport"])
    assert site["max_current"] == site["available"] == [16.0, 16.0, 16.0]
    # C (8 A, held there by the bay) on L3 only, A (8 A) on every phase.
    assert site["counted"] == site["granted"] == [8.0, 8.0, 16.0]
    assert [
        (c["name"], c["parent"], c["max_current"], c["devices"], c["circuits"])
        for c in state["circuits"]
    ] == [
        ("carport", "site", [10.0, 10.0, 10.0], [], ["bay"]),
        ("bay", "carport", [8.0, 8.0, 8.0], ["C"], []),
    ]


def test_site_api_checks_the_host():
    """/api/site is behind the same Host check as the rest of the API: a
    request for another host name gets 421 and nothing of the site."""
    code, _, body = get(wired_site(), b"/api/site", host=b"rebound.example")
    assert code == 421
    assert b"carport" not in body


def test_site_api_has_no_pages_below_it():
    """A path below /api/site is a JSON 404 naming it."""
    code, headers, body = get(wired_site(), b"/api/site/carport")
    assert code == 404
    assert headers[b"content-type"] == status.JSON_TYPE
    assert json.loads(body) == {"error": "not found", "detail": "carport"}


def test_devices_api_shows_where_a_device_is_wired():
    """/api/devices shows per device its circuit (null: directly on the
    site), wiring, priority and the site phases it is counted on, which
    the status page's tiles show."""
    code, _, body = get(wired_site(), b"/api/devices")
    assert code == 200
    devices = {d["name"]: d for d in json.loads(body)["devices"]}
    shown = {
        name: (d["circuit"], d["wiring"], d["priority"], d["phases"])
        for name, d in devices.items()
    }
    assert shown == {
        "A": (None, "L1L2L3", 0, ["L1", "L2", "L3"]),
        "C": ("bay", "L3", 1, ["L3"]),
    }


MIXED_SITE = """
[manager]
max_current = 32
[wallbox:garage]
type = ocpp
address = CB-G
[wallbox:carport]
type = modbus
address = pb.local
"""


def mixed_site():
    """A real load manager over an OCPP wallbox (garage) charging a car
    that has drawn 1.5 kWh so far, and a Modbus wallbox (carport)."""
    mixed = ManagedSite(MIXED_SITE)
    mixed.connect("garage")
    mixed.start("garage")
    mixed.deliver(
        "garage", "MeterValues",
        {"connectorId": 1, "transactionId": 1, "meterValue": [{"timestamp": "t", "sampledValue": [
            {"value": "1500", "measurand": "Energy.Active.Import.Register", "unit": "Wh"}]}]},
        {},
    )
    mixed.settle()
    return mixed


def devices_of(mixed, path=b"/api/devices"):
    """The devices C{GET path} answers, by name."""
    code, _, body = get(mixed, path)
    assert code == 200
    document = json.loads(body)
    return {d["name"]: d for d in document.get("devices", [document])}


def test_devices_api_shows_how_limits_are_sent():
    """An OCPP wallbox the manager controls has C{limits}: the way its
    limits go (here the defaults: a TxDefaultProfile in A at the manager's
    stack level), the state and where the way comes from; a Modbus
    wallbox has C{null}. The energy of the running session shows too."""
    mixed = mixed_site()
    devices = devices_of(mixed)
    limits = devices["garage"]["limits"]
    assert limits == mixed.device("garage").strategy.as_json()
    assert (limits["state"], limits["purpose"], limits["rate_unit"], limits["voltage"]) == (
        "ready", "TxDefaultProfile", "A", None,
    )
    assert limits["stack_level"] == MANAGER_STACK_LEVEL
    assert (limits["source"], limits["wallbox"], limits["last_refusal"]) == ("defaults", None, None)
    assert devices["carport"]["limits"] is None
    assert devices["garage"]["session_energy_wh"] == 1500.0
    assert devices["carport"]["session_energy_wh"] is None


def test_devices_api_shows_the_last_refusal():
    """Once the wallbox refused a limit, C{GET /api/devices/<name>} shows
    when, the way refused and the wallbox's reason as it gave it, and the
    way tried next."""
    mixed = mixed_site()
    strategy = mixed.device("garage").strategy
    strategy.refused(strategy.way, 'SetChargingProfile answered <b>"Rejected"</b>', SET_AT)
    limits = devices_of(mixed, b"/api/devices/garage")["garage"]["limits"]
    assert limits["last_refusal"] == {
        "at": SET_AT,
        "way": "TxDefaultProfile, stack level {}, A".format(MANAGER_STACK_LEVEL),
        "reason": 'SetChargingProfile answered <b>"Rejected"</b>',
    }
    assert (limits["purpose"], limits["stack_level"], limits["state"]) == (
        "TxDefaultProfile", 0, "ready",
    )


async def http_exchange(port, data, *, trickle=None):
    """Send C{data} to the status port (all at once, or a byte every
    C{trickle} seconds) and read until the server closes.

    @return: C{(what came back, whether the server closed while bytes were
        still to be sent)}.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    cut_off = False
    try:
        if trickle is None:
            writer.write(data)
        else:
            for byte in data:
                if writer.is_closing() or reader.at_eof():
                    cut_off = True
                    break
                writer.write(bytes([byte]))
                try:
                    await writer.drain()
                except ConnectionError:
                    cut_off = True
                    break
                await asyncio.sleep(trickle)
        try:
            answer = await asyncio.wait_for(reader.read(), HANG_GUARD)
        except ConnectionResetError:
            answer = b""
        return answer, cut_off
    finally:
        writer.close()


class RealSocketTests(unittest.TestCase):
    """The daemon's status port, over real sockets."""

    @asyncio_test
    async def test_trickling_headers_are_cut_off(self):
        """A client that sends its headers a byte every half second is
        closed at the deadline although it never stays silent, while a
        normal request is answered."""
        self.patch(status, "REQUEST_DEADLINE", 2)
        log = Events()
        self.addCleanup(log.stop)
        daemon = RunningDaemon(self)
        slow = b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Slow: " + b"a" * 200
        loop = asyncio.get_running_loop()
        started = loop.time()
        trickled = asyncio.ensure_future(http_exchange(daemon.status_port, slow, trickle=0.5))
        answer, _ = await http_exchange(
            daemon.status_port, b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 200"), answer[:40])
        answer, cut_off = await trickled
        # Closed while it was still sending, long before its request could
        # have been whole.
        self.assertTrue(cut_off)
        self.assertLess(loop.time() - started, 0.5 * len(slow) / 2)
        self.assertNotIn(b"200 OK", answer)
        self.assertTrue(any("no whole request within 2 s" in line for line in log.lines()))

    @asyncio_test
    async def test_host_header_checked_both_ways(self):
        """With the default list, a request for 127.0.0.1 or localhost is
        answered; one for another host name gets 421 and a warning."""
        log = Events()
        self.addCleanup(log.stop)
        daemon = RunningDaemon(self)
        for host in (b"127.0.0.1", b"localhost:1234"):
            answer, _ = await http_exchange(
                daemon.status_port,
                b"GET /api/health HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n",
            )
            self.assertTrue(answer.startswith(b"HTTP/1.1 200"), answer[:40])
        answer, _ = await http_exchange(
            daemon.status_port,
            b"GET /api/devices HTTP/1.1\r\nHost: rebound.example\r\nConnection: close\r\n\r\n",
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 421"), answer[:40])
        self.assertNotIn(b"devices", answer.split(b"\r\n\r\n", 1)[1].replace(b"allowed_hosts", b""))
        self.assertTrue(any("rebound.example" in line for line in log.lines(LogLevel.warn)))

    @asyncio_test
    async def test_configured_host_is_served(self):
        """A name in [status] allowed_hosts is served, localhost then no
        longer is."""
        daemon = RunningDaemon(self, status="allowed_hosts = cfos.garage\n")
        answers = {}
        for host in (b"cfos.garage", b"localhost"):
            answer, _ = await http_exchange(
                daemon.status_port,
                b"GET /api/health HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n",
            )
            answers[host] = answer[:12]
        self.assertEqual(answers, {b"cfos.garage": b"HTTP/1.1 200", b"localhost": b"HTTP/1.1 421"})


# -- meters and the site limit -------------------------------------------------

TOKEN = b"meter-token"

# The site (32 A) measured by grid, an api meter; the carport (16 A) by
# sub, which cfosproxy polls over Modbus.
METERED_SITE = """
[manager]
max_current = 32
meter = grid
reserve = 2
failsafe_current = 6
[meter:grid]
type = api
[meter:sub]
type = sdm630
address = 192.0.2.1
[circuit:carport]
max_current = 16
meter = sub
[wallbox:A]
type = ocpp
address = CB-A
circuit = carport
"""

# 2026-12-05 13:02:00 UTC
SET_AT = 1796475720.0


def metered_site():
    """A real load manager over L{METERED_SITE}; no meter has read yet."""
    return ManagedSite(METERED_SITE)


def metered_root(wired, site_limit=None, token="meter-token"):
    """The status listener's resources over C{wired}, with C{token}."""
    return status_root(wired.registry, wired.manager, token, {}, site_limit=site_limit)


def push(root, body, name=b"grid", token=TOKEN):
    """C{POST /api/meters/<name>} with C{body}: C{(code, headers, body)}."""
    return http(root, b"POST", b"/api/meters/" + name, body, token)


def test_a_pushed_reading_is_taken():
    """POST /api/meters/grid with the token and three signed currents:
    204 without a body, and the meter's reading is what was sent, so
    the site's other load follows it."""
    wired = metered_site()
    root = metered_root(wired)
    code, _, body = push(root, b'{"currents": [12.5, 3, -4.25]}')
    assert (code, body) == (204, b"")
    assert wired.manager.meters.state("grid").currents == (12.5, 3.0, -4.25)
    state = json.loads(get(wired, b"/api/site")[2])
    [grid] = [m for m in state["meters"] if m["name"] == "grid"]
    assert (grid["currents"], grid["silent"]) == ([12.5, 3.0, -4.25], False)
    assert state["site"]["other"] == pytest.approx([12.5, 3.0, -4.25], abs=0.05)


@pytest.mark.parametrize("token, status_token, code", [
    (None, "meter-token", 401), (b"wrong", "meter-token", 401), (TOKEN, "", 403),
])
def test_a_reading_needs_the_token(token, status_token, code):
    """Without the right bearer token (401), or without a [status] token
    at all (403), as for the other POSTs, no reading is taken."""
    wired = metered_site()
    answer, _, _ = push(metered_root(wired, token=status_token), b'{"currents": [1, 2, 3]}',
                        token=token)
    assert answer == code
    assert wired.manager.meters.state("grid").currents is None


def test_an_unknown_meter_is_404():
    """A meter no [meter:*] section names, or no name at all: 404."""
    root = metered_root(metered_site())
    code, _, body = push(root, b'{"currents": [1, 2, 3]}', name=b"garage")
    assert code == 404
    assert json.loads(body) == {"error": "not found", "detail": "garage"}
    assert http(root, b"POST", b"/api/meters/", b'{"currents": [1, 2, 3]}', TOKEN)[0] == 404
    assert push(root, b'{"currents": [1, 2, 3]}', name=b"grid/more")[0] == 404


def test_a_polled_meter_takes_no_reading():
    """A meter cfosproxy polls (type sdm630): 409 with the reason."""
    wired = metered_site()
    code, _, body = push(metered_root(wired), b'{"currents": [1, 2, 3]}', name=b"sub")
    assert code == 409
    document = json.loads(body)
    assert document["error"] == "conflict"
    assert "type sdm630" in document["detail"]
    assert wired.manager.meters.state("sub").currents is None


@pytest.mark.parametrize("body, says", [
    (b"", "no body"),
    (b"currents=1,2,3", "not JSON"),
    (b"\xff\xfe", "not UTF-8"),
    (b"[1, 2, 3]", "must be a JSON object"),
    (b'{"current": [1, 2, 3]}', 'unknown key "current"'),
    (b'{"currents": [1, 2, 3], "at": 5}', 'unknown key "at"'),
    (b"{}", "currents is missing"),
    (b'{"currents": null}', "list of three numbers"),
    (b'{"currents": [1, 2]}', "list of three numbers"),
    (b'{"currents": [1, 2, 3, 4]}', "list of three numbers"),
    (b'{"currents": {"L1": 1}}', "list of three numbers"),
    (b'{"currents": [1, "2", 3]}', 'currents L2 is "2", not a number'),
    (b'{"currents": [1, 2, true]}', "currents L3 is true, not a number"),
    (b'{"currents": [NaN, 2, 3]}', "NaN is not a number JSON knows"),
    (b'{"currents": [1, -Infinity, 3]}', "-Infinity is not a number JSON knows"),
    (b'{"currents": [1e999, 2, 3]}', "L1 is inf"),
    (b'{"currents": [1, 2, 1' + b"0" * 400 + b"]}", "not a number of amperes"),
    (b'{"currents": [1, 2, 9000]}', "beyond any real meter"),
])
def test_a_malformed_reading_is_400_naming_the_fault(body, says):
    """A body that is no reading gets 400 with a detail that says what is
    wrong, and the meter keeps no reading."""
    wired = metered_site()
    code, headers, answer = push(metered_root(wired), body)
    assert code == 400
    assert headers[b"content-type"] == status.JSON_TYPE
    document = json.loads(answer)
    assert document["error"] == "bad request"
    assert says in document["detail"]
    assert wired.manager.meters.state("grid").currents is None


def test_a_long_body_is_refused_unread():
    """A body over MAX_BODY bytes gets 413, however well formed."""
    wired = metered_site()
    body = b'{"currents": [1, 2, 3]' + b" " * status.MAX_BODY + b"}"
    code, _, answer = push(metered_root(wired), body)
    assert code == 413
    assert str(status.MAX_BODY) in json.loads(answer)["detail"]
    assert wired.manager.meters.state("grid").currents is None


def test_readings_are_logged_at_debug_and_refusals_once(log):
    """Readings may come every second: neither the access log nor the
    meters say them at info. A refusal is a warning the first time of
    its kind only, and again once a reading was taken in between."""
    wired = metered_site()
    root = metered_root(wired)
    for _ in range(3):
        assert push(root, b'{"currents": [1, 2, 3]}')[0] == 204
    assert not [line for line in log.lines(LogLevel.info) if "/api/meters" in line]
    assert len([line for line in log.lines(LogLevel.debug) if '"POST /api/meters/grid' in line]) == 3
    assert len([line for line in log.lines(LogLevel.debug) if "meter grid: " in line]) == 3

    for _ in range(3):
        push(root, b'{"currents": [1, 2]}')
        push(root, b'{"currents": [1, 2, 3]}', name=b"sub")
    warnings = log.lines(LogLevel.warn)
    assert len(warnings) == 2
    assert "three numbers" in warnings[0] and "192.0.2.7" in warnings[0]
    assert "type sdm630" in warnings[1]
    push(root, b'{"currents": [1, 2, 3]}')
    push(root, b'{"currents": [1, 2]}')
    assert len(log.lines(LogLevel.warn)) == 3


def test_posts_elsewhere_stay_at_info(log):
    """Only meter readings leave the access log's info level: a POST to
    /api/site is still said there."""
    http(metered_root(metered_site()), b"POST", b"/api/site", b'{"max_current": 1}', TOKEN)
    assert [line for line in log.lines(LogLevel.info) if '"POST /api/site' in line]


@pytest.fixture
def store(tmp_path):
    """A real store in a temporary state directory."""
    from cfosproxy.store import Store

    store = Store.in_state_dir(str(tmp_path))
    yield store
    store.close()


def limit_of(wired, store):
    """The L{SiteLimit} over C{wired}'s manager and C{store}."""
    from cfosproxy.ops.sitelimit import SiteLimit

    return SiteLimit(
        wired.manager, wired.config.manager.max_current, lambda: store, now=lambda: SET_AT
    )


def site_json(root):
    """What C{GET /api/site} of C{root} answers, parsed."""
    code, _, body = http(root, b"GET", b"/api/site")
    assert code == 200
    return json.loads(body)


def test_site_api_shows_the_site_limit_from_the_config(store):
    """GET /api/site shows the limit in force at the top level: the
    configured one, from the config, with no time."""
    wired = metered_site()
    state = site_json(metered_root(wired, limit_of(wired, store)))
    assert state["site_limit"] == {
        "max_current": 32.0, "source": "config", "set_at": None, "configured": 32.0,
    }


def test_setting_the_site_limit(store):
    """POST /api/site {"max_current": 25} with the token: 204, the
    manager shares 25 A per phase, the store keeps it, and GET shows it
    as set over the API, with when."""
    wired = metered_site()
    root = metered_root(wired, limit_of(wired, store))
    code, _, body = http(root, b"POST", b"/api/site", b'{"max_current": 25}', TOKEN)
    assert (code, body) == (204, b"")
    assert wired.manager.site_limit == 25.0
    assert store.site_limit() == (25.0, SET_AT)
    state = site_json(root)
    assert state["site_limit"] == {
        "max_current": 25.0, "source": "api", "set_at": "2026-12-05T13:02:00Z",
        "configured": 32.0,
    }
    assert state["site"]["max_current"] == [25.0, 25.0, 25.0]


def test_null_goes_back_to_the_configured_limit(store):
    """{"max_current": null} puts [manager] max_current in force again and
    removes the kept limit."""
    wired = metered_site()
    root = metered_root(wired, limit_of(wired, store))
    http(root, b"POST", b"/api/site", b'{"max_current": 10.5}', TOKEN)
    code, _, _ = http(root, b"POST", b"/api/site", b'{"max_current": null}', TOKEN)
    assert code == 204
    assert wired.manager.site_limit == 32.0
    assert store.site_limit() is None
    assert site_json(root)["site_limit"]["source"] == "config"


@pytest.mark.parametrize("body, says", [
    (b'{"max_current": -1}', "0 A or more"),
    (b'{"max_current": 1e999}', "0 A or more"),
    (b'{"max_current": "25"}', "not a number"),
    (b'{"max_current": true}', "not a number"),
    (b'{"max_current": [25]}', "not a number"),
    (b'{"max_current": 25, "phases": 3}', 'unknown key "phases"'),
    (b"{}", "max_current is missing"),
    (b"25", "must be a JSON object"),
    (b'{"max_current": NaN}', "NaN"),
    (b'{"max_current": 40}', "40 A is above [manager] max_current = 32 A of the config"),
])
def test_a_site_limit_that_is_none_is_400(store, body, says):
    """Anything but a number of 0 A or more, or null, is 400 naming the
    fault; the limit and the store stay as they were."""
    wired = metered_site()
    code, _, answer = http(
        metered_root(wired, limit_of(wired, store)), b"POST", b"/api/site", body, TOKEN
    )
    assert code == 400
    assert says in json.loads(answer)["detail"]
    assert wired.manager.site_limit == 32.0
    assert store.site_limit() is None


def test_setting_the_site_limit_needs_the_token(store):
    """Without the bearer token, 401 and nothing changes."""
    wired = metered_site()
    root = metered_root(wired, limit_of(wired, store))
    assert http(root, b"POST", b"/api/site", b'{"max_current": 1}')[0] == 401
    assert http(root, b"POST", b"/api/site", b'{"max_current": 1}', b"nope")[0] == 401
    assert wired.manager.site_limit == 32.0
    assert store.site_limit() is None


def test_a_store_that_cannot_keep_the_limit_changes_nothing(store, monkeypatch, logged_errors):
    """When the store cannot write, 500 with the store's reason, an error
    in the log, and the manager keeps its limit."""
    from cfosproxy.core.errors import StoreError

    def full(amps, at=None):
        raise StoreError("cannot write store var/cfosproxy.sqlite: database or disk is full")

    monkeypatch.setattr(store, "set_site_limit", full)
    wired = metered_site()
    code, _, answer = http(
        metered_root(wired, limit_of(wired, store)), b"POST", b"/api/site",
        b'{"max_current": 20}', TOKEN,
    )
    assert code == 500
    assert "disk is full" in json.loads(answer)["detail"]
    assert wired.manager.site_limit == 32.0


def test_without_a_site_limit_setting_post_finds_nothing():
    """A status tree made without a SiteLimit shows no site_limit and
    answers a POST to /api/site with 404."""
    wired = metered_site()
    root = metered_root(wired)
    assert "site_limit" not in site_json(root)
    assert http(root, b"POST", b"/api/site", b'{"max_current": 1}', TOKEN)[0] == 404
    assert wired.manager.site_limit == 32.0


async def http_json(url, document=None, token=None):
    """GET C{url}, or POST C{document} as JSON to it with C{token} (in a
    thread: the daemon runs on this thread's loop).

    @return: C{(status, parsed JSON body or None when empty)}.
    """
    import urllib.error
    import urllib.request

    def send():
        data = None if document is None else json.dumps(document).encode("utf-8")
        request = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
        if token is not None:
            request.add_header("Authorization", "Bearer " + token)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    return await asyncio.get_running_loop().run_in_executor(None, send)


class SiteLimitDaemonTests(unittest.TestCase):
    """The site limit set over the API of a running daemon."""

    @asyncio_test
    async def test_the_site_limit_outlasts_a_restart(self):
        """A limit set with POST /api/site is in force again after a
        restart of the daemon, said in its log; null goes back to the
        configured one for good."""
        log = Events()
        self.addCleanup(log.stop)
        daemon = RunningDaemon(self, manager="max_current = 32\n", status="token = t0k\n")
        url = daemon.status_url("/api/site")
        self.assertEqual(await http_json(url, {"max_current": 25}, "t0k"), (204, None))
        await wait_deferred(daemon.restart())
        _, state = await http_json(url)
        self.assertEqual(state["site_limit"]["max_current"], 25.0)
        self.assertEqual(state["site_limit"]["source"], "api")
        self.assertEqual(state["site"]["max_current"], [25.0, 25.0, 25.0])
        self.assertTrue(any(
            "site limit 25 A per phase, set over the status API on" in line
            and "replaces [manager] max_current = 32 A" in line
            for line in log.lines(LogLevel.info)
        ))

        self.assertEqual(await http_json(url, {"max_current": None}, "t0k"), (204, None))
        await wait_deferred(daemon.restart())
        _, state = await http_json(url)
        self.assertEqual(state["site_limit"]["source"], "config")
        self.assertEqual(state["site"]["max_current"], [32.0, 32.0, 32.0])

    @asyncio_test
    async def test_a_reading_pushed_to_the_daemon(self):
        """POST /api/meters/<name> of a running daemon takes the reading:
        the site view shows it and the other load."""
        daemon = RunningDaemon(
            self,
            manager="max_current = 32\nmeter = grid\n",
            status="token = t0k\n",
            wallboxes="[meter:grid]\ntype = api\n",
        )
        answer = await http_json(
            daemon.status_url("/api/meters/grid"), {"currents": [10, 2, -3]}, "t0k"
        )
        self.assertEqual(answer, (204, None))
        _, state = await http_json(daemon.status_url("/api/site"))
        self.assertEqual(state["meters"][0]["currents"], [10.0, 2.0, -3.0])
        self.assertEqual(state["site"]["other"], [10.0, 2.0, -3.0])


def test_a_meter_name_from_the_url_cannot_forge_log_lines(log):
    """An unknown meter name with a line break (percent-encoded in the
    URL) is written escaped in the refusal's warning."""
    push(metered_root(metered_site()), b'{"currents": [1, 2, 3]}', name=b"x%0Aforged")
    [warning] = log.lines(LogLevel.warn)
    assert "\n" not in warning
    assert "x\\nforged" in warning
