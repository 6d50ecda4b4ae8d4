"""Frames go onto the socket at once when nothing waits before them, and
through Twisted's buffer otherwise, in order."""

import socket

from autobahn.twisted.websocket import WebSocketServerProtocol
from twisted.internet import error, tcp
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactor, StringTransport

from cfosproxy.backend import _BackendProtocol
from cfosproxy.server import WallboxServerProtocol
from cfosproxy.writethrough import WriteThroughMixin, write_now


def connection():
    """A Twisted TCP connection over one end of a real socket pair, on a
    reactor that never runs: whatever reaches the other end was sent
    without the reactor's help."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.settimeout(1)
    reactor = MemoryReactor()
    conn = tcp.Connection(ours, Protocol(), reactor)
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


def test_both_websocket_legs_write_through():
    """The wallbox side and the backend side of cfosproxy send their frames
    with L{write_now}."""
    assert issubclass(WallboxServerProtocol, WriteThroughMixin)
    assert issubclass(_BackendProtocol, WriteThroughMixin)
    # The mixin comes first, so its sendData is the one Autobahn calls.
    assert WallboxServerProtocol.sendData is WriteThroughMixin.sendData
    assert _BackendProtocol.sendData is WriteThroughMixin.sendData
    assert WebSocketServerProtocol.sendData is not WriteThroughMixin.sendData
