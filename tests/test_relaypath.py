"""The fast path's pieces: frames go onto the socket at once when nothing
waits before them, and through Twisted's buffer otherwise, in order (also
under TLS); both WebSocket legs take the fast path unless told not to; and
the daemon masks frames with integers only when the fast path is on."""

import socket
from types import SimpleNamespace

import autobahn.websocket.protocol
from autobahn.twisted.websocket import (
    WebSocketAdapterProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from twisted.internet import error, tcp
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import optionsForClientTLS
from twisted.internet.testing import MemoryReactor, MemoryReactorClock, StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory

from cfosproxy.config import ServerConfig
from cfosproxy.ws.backend import (
    BackendLink,
    _BackendFactory,
    _BackendProtocol,
    _PlainBackendProtocol,
)
from cfosproxy.ws.server import (
    PlainWallboxServerProtocol,
    WallboxServerFactory,
    WallboxServerProtocol,
)
from cfosproxy.ws.relaypath import RelayPathMixin, use_integer_masking
from cfosproxy.ws.wireframes import IntegerMasker
from cfosproxy.ws.writethrough import write_now, write_through_under_tls


class _Connection(tcp.Connection):
    """Twisted's TCP connection, with the addresses a connected one has."""

    def getPeer(self):
        return IPv4Address("TCP", "192.0.2.10", 443)

    def getHost(self):
        return IPv4Address("TCP", "127.0.0.1", 50000)


def connection():
    """A Twisted TCP connection over one end of a real socket pair, on a
    reactor that never runs: whatever reaches the other end was sent
    without the reactor's help."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.settimeout(1)
    reactor = MemoryReactor()
    conn = _Connection(ours, Protocol(), reactor)
    conn.connected = True
    return conn, theirs, reactor


def test_sent_at_once_when_nothing_is_buffered():
    """The frame is on the wire before the reactor ever runs, and the
    connection never asked the reactor to wait for writability."""
    conn, peer, reactor = connection()
    write_now(conn, b"frame one")
    assert peer.recv(100) == b"frame one"
    assert conn not in reactor.getWriters()


def test_buffered_data_goes_first():
    """Data already in Twisted's buffer is sent before the new frame: the
    new one is buffered behind it."""
    conn, peer, reactor = connection()
    conn.write(b"first ")
    write_now(conn, b"second")
    peer.settimeout(0.05)
    try:
        early = peer.recv(100)
    except socket.timeout:
        early = b""
    assert early == b""
    assert conn in reactor.getWriters()
    conn.doWrite()
    assert peer.recv(100) == b"first second"


def test_what_the_socket_does_not_take_is_buffered():
    """A frame larger than the socket takes at once: the rest waits in
    Twisted's buffer, and the whole frame arrives in order."""
    conn, peer, reactor = connection()
    conn.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    frame = bytes(range(256)) * 4096  # 1 MiB
    write_now(conn, frame)
    assert conn in reactor.getWriters()
    received = bytearray()
    peer.settimeout(0.2)
    while len(received) < len(frame):
        conn.doWrite()
        try:
            received += peer.recv(1 << 20)
        except socket.timeout:
            pass
    assert bytes(received) == frame


def test_a_closing_connection_uses_the_buffer():
    """While Twisted closes a connection it owns the order of what is left,
    so nothing is sent past it."""
    conn, peer, reactor = connection()
    conn.disconnecting = True
    write_now(conn, b"late")
    assert conn.dataBuffer == b"" and conn._tempDataLen == len(b"late")


def test_other_transports_are_written_as_usual():
    """A transport that is not plain TCP (TLS, or a test's) gets write()."""
    transport = StringTransport()
    write_now(transport, b"frame")
    assert transport.value() == b"frame"


def test_a_broken_socket_is_left_to_twisted():
    """A socket whose peer is gone: the frame goes to write(), and the
    reactor's next write attempt reports the loss as usual."""
    conn, peer, reactor = connection()
    peer.close()
    write_now(conn, b"frame")
    assert conn._tempDataLen == len(b"frame")
    assert isinstance(conn.doWrite(), error.ConnectionLost)


class _WriteThroughApplication(Protocol):
    """An application under TLS that asks for write-through, as
    L{RelayPathMixin} does when it is connected."""

    def connectionMade(self):
        write_through_under_tls(self.transport)


def test_tls_records_go_out_at_once():
    """Under Twisted's TLS layer the TCP connection sends each record at
    once: the ClientHello is on the wire before the reactor runs, and the
    connection never waited for writability."""
    conn, peer, reactor = connection()
    factory = TLSMemoryBIOFactory(
        optionsForClientTLS("cfosproxy.invalid"), True, Factory.forProtocol(_WriteThroughApplication)
    )
    tls = factory.buildProtocol(None)
    conn.protocol = tls
    tls.makeConnection(conn)
    record = peer.recv(4096)
    assert record[:1] == b"\x16"  # a TLS handshake record
    assert conn not in reactor.getWriters()
    # Once is enough: asked again, the connection keeps its one override.
    override = conn.write
    write_through_under_tls(tls)
    assert conn.write is override
    # What the socket does not take goes to Twisted's buffer, in order.
    conn.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    big = bytes(range(256)) * 4096
    conn.write(big)
    conn.write(b"after")
    assert conn in reactor.getWriters()
    received = bytearray()
    peer.settimeout(0.2)
    while len(received) < len(big) + 5:
        conn.doWrite()
        try:
            received += peer.recv(1 << 20)
        except socket.timeout:
            pass
    assert bytes(received) == big + b"after"


def test_plain_transports_are_left_alone_by_the_tls_write_through():
    """Only Twisted's TLS layer over TCP is changed."""
    transport = StringTransport()
    write_through_under_tls(transport)
    assert "write" not in vars(transport)
    conn, _, _ = connection()
    write_through_under_tls(conn)
    assert "write" not in vars(conn)


def test_both_websocket_legs_take_the_fast_path():
    """By default the wallbox side and the backend side of cfosproxy send
    and receive frames through L{RelayPathMixin}."""
    for protocol in (WallboxServerProtocol, _BackendProtocol):
        # The mixin comes before Autobahn's classes, so its methods are the
        # ones Autobahn calls.
        assert protocol.sendMessage is RelayPathMixin.sendMessage
        assert protocol.sendData is RelayPathMixin.sendData
        assert protocol.onMessageEnd is RelayPathMixin.onMessageEnd
        assert protocol.__mro__.index(RelayPathMixin) < protocol.__mro__.index(
            WebSocketAdapterProtocol
        )
    assert _BackendProtocol.dataReceived is RelayPathMixin.dataReceived
    assert WallboxServerFactory(None, ServerConfig()).protocol is WallboxServerProtocol
    assert _BackendFactory("ws://localhost/CB-1").protocol is _BackendProtocol


def test_without_the_fast_path_nothing_of_it_is_installed():
    """With C{fast_path} off, both factories build protocols without
    L{RelayPathMixin} and leave Autobahn's UTF-8 check on."""
    factories = [
        WallboxServerFactory(None, ServerConfig(), fast_path=False),
        _BackendFactory("ws://localhost/CB-1", fast_path=False),
    ]
    assert [factory.protocol for factory in factories] == [
        PlainWallboxServerProtocol,
        _PlainBackendProtocol,
    ]
    for factory in factories:
        assert not factory.fast_path
        assert RelayPathMixin not in factory.protocol.__mro__
        assert factory.utf8validateIncoming
    on = WallboxServerFactory(None, ServerConfig())
    assert on.fast_path and not on.utf8validateIncoming


def test_the_backend_link_passes_fast_path_on(monkeypatch):
    """A L{BackendLink} builds its factory with its C{fast_path}, on unless
    told otherwise."""
    built = []

    class Recording(_BackendFactory):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr("cfosproxy.ws.backend._BackendFactory", Recording)
    options = dict(
        url="ws://localhost/CB-1", client_id="CB-1", password="", ca="",
        certificate="", private_key="", handler=None, reactor=MemoryReactorClock(),
    )
    BackendLink(**options)
    BackendLink(fast_path=False, **options)
    assert [factory.protocol for factory in built] == [_BackendProtocol, _PlainBackendProtocol]


def tls_client_over(conn, factory):
    """Connect C{factory}'s protocol through Twisted's TLS layer over the
    TCP connection C{conn}; return the protocol."""
    tls_factory = TLSMemoryBIOFactory(optionsForClientTLS("cfosproxy.invalid"), True, factory)
    tls = tls_factory.buildProtocol(None)
    conn.protocol = tls
    tls.makeConnection(conn)
    return tls.wrappedProtocol


def test_write_through_under_tls_comes_with_the_fast_path_only():
    """Under TLS, a protocol on the fast path makes its TCP connection send
    at once; one without leaves the connection's write() as Twisted's."""
    for fast_path in (True, False):
        conn, _, reactor = connection()
        factory = _BackendFactory("wss://localhost/CB-1", fast_path=fast_path, reactor=reactor)
        factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0)
        factory.link = None
        protocol = tls_client_over(conn, factory)
        assert isinstance(protocol, RelayPathMixin) == fast_path
        assert ("write" in vars(conn)) == fast_path


class Recorder(RelayPathMixin, WebSocketServerProtocol):
    """Keeps the messages it receives and the observer events it fires."""

    def __init__(self):
        super().__init__()
        self.messages = []
        self.fired = []

    def onMessage(self, payload, isBinary):
        self.messages.append((payload, isBinary))

    def fire(self, event, *args, **kwargs):
        self.fired.append(event)
        return super().fire(event, *args, **kwargs)


def masked_frame(opcode, payload, fin=True):
    """A client's frame (masked, as RFC 6455 requires), payload < 126 bytes."""
    mask = b"\x01\x02\x03\x04"
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([(0x80 if fin else 0) | opcode, 0x80 | len(payload)]) + mask + body


def test_messages_arrive_whole_without_an_observer_event():
    """A text message in two fragments reaches onMessage once, joined, and
    the next message starts afresh; no observer event is fired for it."""
    factory = WebSocketServerFactory()
    factory.protocol = Recorder
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(
        b"GET /CB-1 HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    assert b"101 Switching Protocols" in transport.value()
    protocol.fired.clear()
    protocol.dataReceived(
        masked_frame(0x1, b'[2,"a",', fin=False)
        + masked_frame(0x0, b'"Heartbeat",{}]')
        + masked_frame(0x1, b"second")
    )
    assert protocol.messages == [(b'[2,"a","Heartbeat",{}]', False), (b"second", False)]
    assert "message" not in protocol.fired


def test_masked_frames_round_trip_with_integer_masking(monkeypatch):
    """With integer masking in place, a client's masked frame is unmasked
    by the server side to the text that was sent (Autobahn's parser and
    frame writer use it through the same name)."""
    monkeypatch.setattr(autobahn.websocket.protocol, "create_xor_masker",
                        autobahn.websocket.protocol.create_xor_masker)
    use_integer_masking()
    assert autobahn.websocket.protocol.create_xor_masker is IntegerMasker
    factory = WebSocketServerFactory()
    factory.protocol = Recorder
    protocol = factory.buildProtocol(None)
    protocol.makeConnection(StringTransport())
    protocol.dataReceived(
        b"GET /CB-1 HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    protocol.dataReceived(masked_frame(0x1, b'[2,"m","Heartbeat",{}]'))
    assert protocol.messages == [(b'[2,"m","Heartbeat",{}]', False)]


def daemon_options(fast_path):
    """What twistd hands the daemon's entry, as far as it reads it."""
    return SimpleNamespace(config=SimpleNamespace(server=SimpleNamespace(fast_path=fast_path)))


def test_twistd_entry_uses_integer_masking(monkeypatch):
    """The daemon's entry installs integer masking when the fast path is
    on, and leaves Autobahn's masker alone when it is off; building the
    services alone (as the tests do) leaves Autobahn as it is."""
    from cfosproxy import tap

    autobahns = autobahn.websocket.protocol.create_xor_masker
    monkeypatch.setattr(autobahn.websocket.protocol, "create_xor_masker", autobahns)
    monkeypatch.setattr("cfosproxy.ops.gctuning.tune_garbage_collection", lambda reactor: None)
    monkeypatch.setattr("cfosproxy.wiring.daemon.build_daemon", lambda options: "service")
    tap.makeService(daemon_options(fast_path=False))
    assert autobahn.websocket.protocol.create_xor_masker is autobahns
    tap.makeService(daemon_options(fast_path=True))
    assert autobahn.websocket.protocol.create_xor_masker is IntegerMasker
