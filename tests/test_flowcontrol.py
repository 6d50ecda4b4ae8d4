"""What waits to be sent to one peer is bounded: reading from a peer that
does not read pauses, and its connection is closed when the buffer keeps
growing or does not drain; reading pauses for two reasons compose; and
pausing is logged at most once a minute however often it happens.

The connections here are Twisted TCP connections over one end of a real
socket pair whose other end reads only when the test says so, on a
reactor that never runs (L{MemoryReactorClock}): a socket whose buffer
really fills, and timers the test advances.
"""

import itertools
import socket
import struct

import pytest
from twisted.internet import defer, reactor, tcp
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from cfosproxy.ws import flowcontrol
from cfosproxy.ws.backend import _BackendFactory
from cfosproxy.config import config_from_string
from cfosproxy.core.devices import DeviceRegistry
from cfosproxy.ws.flowcontrol import (
    PAUSE_LOG_WINDOW,
    UNANSWERED_CALLS,
    WRITE_BUFFER_FULL,
    WRITE_PAUSE_SIZE,
    WRITE_STALL_TIMEOUT,
    ReadPauses,
    buffered_bytes,
    write_buffer_limit,
)
from cfosproxy.core.hub import ChargePointHub
from cfosproxy.core.localcs import LocalCentralSystem
from cfosproxy.ws.server import WallboxServerFactory
from cfosproxy.core.session import MAX_UNANSWERED
from tests.fakes import AnsweringHandler, switching_protocols

CONFIG = """
[server]
tls = off
max_message_size = {size}
[wallbox:a]
type = ocpp
address = CB-1
"""
HANDSHAKE = (
    b"GET /CB-1 HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Protocol: ocpp1.6\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
# Autobahn's timers run on the global reactor: none in these tests.
NO_AUTOBAHN_TIMERS = dict(
    openHandshakeTimeout=0, closeHandshakeTimeout=0, autoPingInterval=0, autoPingTimeout=0
)


@pytest.fixture
def log():
    """The text of every log line at info level or above (what the daemon
    logs by default) while the test runs."""
    lines = []

    def observer(event):
        if event.get("log_level", LogLevel.info) >= LogLevel.info:
            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    yield lines
    globalLogPublisher.removeObserver(observer)


@pytest.fixture(autouse=True)
def no_timers_left():
    """Nothing here may leave a timer on the global reactor."""
    before = set(reactor.getDelayedCalls())
    yield
    assert set(reactor.getDelayedCalls()) <= before


def heartbeats(count, start=0):
    """C{count} Heartbeat CALLs as a wallbox sends them: masked text frames."""
    frames = []
    mask = b"\x0f\x1e\x2d\x3c"
    for n in range(start, start + count):
        payload = '[2,"hb{}","Heartbeat",{{}}]'.format(n).encode()
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        frames.append(struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + body)
    return b"".join(frames)


class _Connection(tcp.Connection):
    """Twisted's TCP connection, with the addresses an accepted one has."""

    def getPeer(self):
        return IPv4Address("TCP", "192.0.2.10", 50000)

    def getHost(self):
        return IPv4Address("TCP", "127.0.0.1", 19520)


class Wire:
    """A TCP connection over a socket pair. The far end reads nothing until
    L{drain} is called; both socket buffers are small, so that what the
    daemon sends soon waits in Twisted's buffer."""

    def __init__(self, clock):
        ours, self.far = socket.socketpair()
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        self.far.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        ours.setblocking(False)
        self.far.setblocking(False)
        self.clock = clock
        self.connection = _Connection(ours, None, clock)
        self.connection.connected = True

    def attach(self, protocol):
        self.connection.protocol = protocol
        protocol.makeConnection(self.connection)
        self.connection.startReading()

    @property
    def reading(self):
        """Whether the daemon reads from this connection now."""
        return self.connection in self.clock.getReaders()

    def drain(self):
        """The far end reads everything, as often as the daemon has more."""
        while buffered_bytes(self.connection):
            self.connection.doWrite()
            try:
                while self.far.recv(1 << 16):
                    pass
            except BlockingIOError:
                pass

    def read_some(self, size):
        """The far end reads up to C{size} bytes once, and the daemon sends
        what now fits."""
        try:
            got = len(self.far.recv(size))
        except BlockingIOError:
            got = 0
        self.connection.doWrite()
        return got

    def close(self):
        self.far.close()
        if self.connection.connected:
            self.connection.connectionLost(Failure(ConnectionDone()))


class Wallbox:
    """cfosproxy's wallbox side (hub, local central system, the Autobahn
    protocol) on a L{Wire}, the WebSocket open."""

    def __init__(self, max_message_size=65536, responder=None):
        self.clock = MemoryReactorClock()
        config = config_from_string(CONFIG.format(size=max_message_size))
        if responder is None:
            responder = LocalCentralSystem(self.clock, 300, itertools.count(1).__next__)
        self.hub = ChargePointHub(
            config.server, DeviceRegistry(config, self.clock), lambda _: responder, self.clock
        )
        factory = WallboxServerFactory(self.hub, config.server)
        factory.setProtocolOptions(**NO_AUTOBAHN_TIMERS)
        factory.reactor = self.clock
        self.protocol = factory.buildProtocol(None)
        self.wire = Wire(self.clock)
        self.wire.attach(self.protocol)
        self.protocol.dataReceived(HANDSHAKE)
        assert self.protocol.state == self.protocol.STATE_OPEN
        self.sent = 0

    def send(self, count):
        """The wallbox sends C{count} more Heartbeats in one read."""
        self.protocol.dataReceived(heartbeats(count, self.sent))
        self.sent += count

    def send_until_paused(self):
        """Heartbeats, a hundred per read, until the daemon stops reading
        (some megabytes of answers at most)."""
        for _ in range(1000):
            if not self.wire.reading:
                return
            self.send(100)
        raise AssertionError("the daemon kept reading from a wallbox that reads nothing")

    @property
    def connected(self):
        return bool(self.hub.sessions)

    def close(self):
        self.wire.close()
        self.clock.advance(0)


@pytest.fixture
def wallbox():
    box = Wallbox()
    yield box
    box.close()


def test_reading_pauses_above_the_mark_and_resumes_once_drained(wallbox, log):
    """A wallbox that sends Heartbeats and reads none of the answers: once
    more than Twisted's buffer size waits, the daemon stops reading from
    it; when the wallbox reads everything, the daemon reads again, and the
    connection stays up."""
    wallbox.send_until_paused()
    assert WRITE_PAUSE_SIZE < buffered_bytes(wallbox.wire.connection)
    assert wallbox.connected
    wallbox.wire.drain()
    assert wallbox.wire.reading
    assert wallbox.connected
    assert [line for line in log if "reading" in line] == [
        "CB-1: reading paused: " + WRITE_BUFFER_FULL,
        "CB-1: reading again",
    ]


def test_over_the_limit_the_connection_is_closed(wallbox, log):
    """Reading paused, a wallbox can still add the answers to what one read
    brought in; a buffer above the limit closes the connection at the next
    turn of the reactor, with a log line saying why."""
    limit = write_buffer_limit(65536)
    wallbox.send_until_paused()
    while buffered_bytes(wallbox.wire.connection) <= limit:
        wallbox.send(100)
    assert wallbox.connected
    wallbox.clock.advance(0)
    wallbox.clock.advance(0)  # the aborted connection's loss
    assert not wallbox.connected
    [line] = [line for line in log if "closing the connection" in line]
    assert line.startswith("CB-1: closing the connection: ")
    assert "more than the limit of {:,}".format(limit) in line


def test_a_peer_that_takes_nothing_is_closed_after_the_timeout(wallbox, log):
    """Reading paused, a wallbox that takes nothing of what waits for
    WRITE_STALL_TIMEOUT seconds is closed, with a log line saying so."""
    wallbox.send_until_paused()
    wallbox.clock.advance(WRITE_STALL_TIMEOUT - 1)
    assert wallbox.connected
    wallbox.clock.advance(1)
    wallbox.clock.advance(0)
    assert not wallbox.connected
    assert any(
        line.startswith("CB-1: closing the connection: it has taken none of the")
        for line in log
    )


def test_a_slow_reader_gets_more_time(wallbox):
    """A wallbox that takes some of what waits within the timeout is not
    closed then; once it stops taking anything, it is."""
    wallbox.send_until_paused()
    wallbox.clock.advance(WRITE_STALL_TIMEOUT - 1)
    assert wallbox.wire.read_some(1000) > 0
    wallbox.clock.advance(1)
    wallbox.clock.advance(0)
    assert wallbox.connected
    assert not wallbox.wire.reading
    wallbox.clock.advance(WRITE_STALL_TIMEOUT)
    wallbox.clock.advance(0)
    assert not wallbox.connected


def test_two_reasons_to_pause_compose(wallbox):
    """Paused by its session (its CALLs wait for answers) and by its full
    buffer, a wallbox is read again only when both reasons are gone, in
    either order."""
    protocol, wire = wallbox.protocol, wallbox.wire
    wallbox.send_until_paused()
    protocol.pause_reading()
    wire.drain()
    assert not wire.reading
    protocol.resume_reading()
    assert wire.reading

    protocol.pause_reading()
    wallbox.send(0)
    while buffered_bytes(wire.connection) <= WRITE_PAUSE_SIZE:
        # Read by hand while the session holds reading back.
        protocol.dataReceived(heartbeats(100, wallbox.sent))
        wallbox.sent += 100
    protocol.resume_reading()
    assert not wire.reading
    wire.drain()
    assert wire.reading


def test_a_small_max_message_size_gives_a_small_limit():
    """The limit follows max_message_size: with 1024 bytes, one read of
    Heartbeats past the pause is enough to close a wallbox that does not
    read."""
    box = Wallbox(max_message_size=1024)
    try:
        assert write_buffer_limit(1024) == WRITE_PAUSE_SIZE + 4 * 1024
        box.send_until_paused()
        box.send(1000)
        box.clock.advance(0)
        box.clock.advance(0)
        assert not box.connected
    finally:
        box.close()


class FakeLink:
    """What a backend protocol reports to (a L{BackendLink}'s private side)."""

    url = "ws://backend.example/ocpp/CB-1"

    def __init__(self):
        self.protocol = None
        self.closed = None

    def _opened(self, protocol):
        self.protocol = protocol

    def _closed(self, reason):
        self.closed = reason

    def _attempt_failed(self, state, message):
        self.closed = message

    def _text_received(self, text):
        pass


def open_backend_leg(clock):
    """cfosproxy's backend side on a L{Wire}, after the backend agreed to
    the WebSocket."""
    factory = _BackendFactory(url=FakeLink.url, protocols=["ocpp1.6"])
    factory.setProtocolOptions(**NO_AUTOBAHN_TIMERS)
    factory.reactor = clock
    factory.link = FakeLink()
    protocol = factory.buildProtocol(None)
    wire = Wire(clock)
    wire.attach(protocol)
    request = wire.far.recv(4096).decode("ascii")
    protocol.dataReceived(switching_protocols(request, "ocpp1.6"))
    assert factory.link.protocol is protocol
    return protocol, wire, factory.link


def test_the_backend_leg_is_bounded_too(log):
    """A backend that does not read what cfosproxy sends it: reading from
    it pauses above the mark, and above the limit the link is closed,
    saying why."""
    clock = MemoryReactorClock()
    protocol, wire, link = open_backend_leg(clock)
    try:
        frame = ('[2,"m","DataTransfer",{"data":"' + "x" * 1000 + '"}]').encode()
        # What the sockets take, and then the limit, at most.
        for _ in range(2 * write_buffer_limit(65536) // len(frame)):
            protocol.sendMessage(frame)
            if buffered_bytes(wire.connection) > write_buffer_limit(65536):
                break
        assert not wire.reading
        clock.advance(0)
        clock.advance(0)
        assert link.closed is not None and "does not read" in link.closed
        assert any(
            line.startswith("OCPP backend {}: closing the connection".format(FakeLink.url))
            for line in log
        )
    finally:
        wire.close()
        clock.advance(0)


class HoldingResponder(AnsweringHandler):
    """Answers each CALL when the test says so, as a slow backend does."""

    def __init__(self):
        self.waiting = []

    def answer(self, call):
        d = defer.Deferred()
        self.waiting.append(d)
        return d

    def answer_some(self, count):
        for _ in range(count):
            self.waiting.pop(0).callback({"currentTime": "2026-12-04T10:00:00Z"})


def test_a_flapping_wallbox_gives_a_few_log_lines(log):
    """A wallbox that keeps MAX_UNANSWERED CALLs waiting behind a slow
    backend: its session pauses and resumes reading 2,400 times within 30
    seconds. The log has the first pause and its end, and one line a
    minute later that sums up the rest, not 2,400 pairs."""
    responder = HoldingResponder()
    box = Wallbox(responder=responder)
    try:
        box.send(MAX_UNANSWERED)
        for n in range(2400):
            assert not box.wire.reading
            responder.answer_some(MAX_UNANSWERED // 2)
            box.wire.drain()  # this wallbox reads its answers
            assert box.wire.reading
            box.send(MAX_UNANSWERED // 2)
            if n % 80 == 79:
                box.clock.advance(1)
        box.clock.advance(PAUSE_LOG_WINDOW - 30)
        lines = [line for line in log if "reading" in line]
        assert lines == [
            "CB-1: reading paused: " + UNANSWERED_CALLS,
            "CB-1: reading again",
            "CB-1: reading paused 2,400 more times in the last 60 s: "
            "{} (2,400 times); paused now".format(UNANSWERED_CALLS),
        ]
    finally:
        box.close()


# -- ReadPauses alone --------------------------------------------------------


def pauses_on_a_transport():
    transport = StringTransport()
    clock = MemoryReactorClock()
    return ReadPauses(transport, clock, lambda: "CB-1"), transport, clock


def test_reading_resumes_only_when_every_reason_is_gone():
    """Two reasons: reading stops at the first and starts again only after
    the last; a reason given twice is one reason."""
    pauses, transport, _ = pauses_on_a_transport()
    pauses.pause(UNANSWERED_CALLS)
    pauses.pause(WRITE_BUFFER_FULL)
    pauses.pause(WRITE_BUFFER_FULL)
    assert transport.producerState == "paused"
    pauses.resume(WRITE_BUFFER_FULL)
    assert transport.producerState == "paused"
    pauses.resume(UNANSWERED_CALLS)
    assert transport.producerState == "producing"
    pauses.stop()


def test_thousands_of_pauses_give_a_few_log_lines(log):
    """A wallbox paused and read again 2,400 times within 30 s: the first
    pause and its end are logged, then one line a minute later sums up the
    rest; while pausing goes on, one summary a minute; after a quiet
    minute, the next pause is logged at once again."""
    pauses, transport, clock = pauses_on_a_transport()
    for n in range(2400):
        pauses.pause(UNANSWERED_CALLS)
        pauses.resume(UNANSWERED_CALLS)
        if n % 80 == 79:
            clock.advance(1)
    assert log == ["CB-1: reading paused: " + UNANSWERED_CALLS, "CB-1: reading again"]
    clock.advance(PAUSE_LOG_WINDOW - 30)
    assert log[2:] == [
        "CB-1: reading paused 2,399 more times in the last 60 s: "
        "{} (2,399 times); reading now".format(UNANSWERED_CALLS)
    ]
    # Still flapping: one more summary a minute on, none in between.
    pauses.pause(WRITE_BUFFER_FULL)
    pauses.resume(WRITE_BUFFER_FULL)
    pauses.pause(WRITE_BUFFER_FULL)
    clock.advance(PAUSE_LOG_WINDOW - 1)
    assert len(log) == 3
    clock.advance(1)
    assert log[3:] == [
        "CB-1: reading paused 2 more times in the last 60 s: "
        "{} (2 times); paused now".format(WRITE_BUFFER_FULL)
    ]
    # A quiet minute closes the window: the next pause is logged at once.
    pauses.resume(WRITE_BUFFER_FULL)
    clock.advance(PAUSE_LOG_WINDOW)
    pauses.pause(UNANSWERED_CALLS)
    assert log[4:] == ["CB-1: reading paused: " + UNANSWERED_CALLS]
    pauses.stop()
    assert not clock.getDelayedCalls()


def test_a_closed_connection_sums_up_and_leaves_no_timer(log):
    """Pauses not yet summed up when the connection closes are summed up
    then, and no timer is left behind."""
    pauses, transport, clock = pauses_on_a_transport()
    for _ in range(3):
        pauses.pause(UNANSWERED_CALLS)
        pauses.resume(UNANSWERED_CALLS)
    pauses.stop()
    assert log[-1].startswith("CB-1: reading paused 2 more times")
    assert not clock.getDelayedCalls()
    # Gone: the transport is left alone.
    pauses.pause(UNANSWERED_CALLS)
    assert transport.producerState == "producing"


def test_buffered_bytes_of_a_transport_without_a_buffer():
    """A transport without a send buffer of its own (a test's) has none
    waiting."""
    transport = StringTransport()
    transport.write(b"x" * 100)
    assert buffered_bytes(transport) == 0


def test_limits_are_named_and_far_above_one_message():
    """The limit leaves room for several of the largest messages above the
    pause mark, and the stall timeout for a slow link."""
    assert flowcontrol.WRITE_LIMIT_MESSAGES >= 2
    assert write_buffer_limit(65536) >= WRITE_PAUSE_SIZE + 2 * 65536
    assert write_buffer_limit(0) == write_buffer_limit(65536)
    assert WRITE_STALL_TIMEOUT >= 30
