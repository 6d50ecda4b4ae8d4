"""Frames onto the socket at once, past Twisted's buffer, where that keeps
their order.

Twisted's C{transport.write()} only buffers: it asks the reactor to report
the socket writable and sends on the next turn, two C{epoll_ctl} calls and
a turn of the event loop per frame. A socket whose send buffer is empty
nearly always takes a frame of a few hundred bytes whole, so L{write_now}
sends it at once when nothing waits before it, and
L{write_through_under_tls} does the same for the encrypted records of a TLS
connection. Part of the fast path (L{cfosproxy.ws.relaypath}).
"""

from twisted.internet import tcp
from twisted.protocols.tls import TLSMemoryBIOProtocol

from cfosproxy.ws import internals


def _unsent(transport, data):
    """Send C{data} on C{transport} at once where that is safe; what is
    left for C{transport.write()}: all of it, part, or nothing.

    Only a plain TCP connection with nothing buffered qualifies: then the
    data is the next thing on the wire either way, so the order is kept.
    What the socket does not take, a connection that is closing, and a
    socket that failed (so that Twisted reports the loss on its usual path)
    are left to C{write()}.
    """
    sent = internals.send_if_idle(transport, data)
    if isinstance(sent, int):
        return data[sent:]
    return data


def write_now(transport, data):
    """Write C{data} to C{transport}, sending it at once where that is safe
    (see L{_unsent}); any other transport gets C{write()} as before.

    @param transport: the protocol's transport.
    @param data: the bytes to send.
    """
    rest = _unsent(transport, data)
    if rest:
        transport.write(rest)


def write_through_under_tls(transport):
    """Let the TCP connection under Twisted's TLS layer send at once, as
    L{write_now} does for a plain one: the TLS layer writes each encrypted
    record to it with C{write()}, which would only buffer it until the
    reactor's next turn.

    @param transport: a protocol's transport; anything but Twisted's TLS
        layer over TCP is left as it is.
    """
    if not isinstance(transport, TLSMemoryBIOProtocol):
        return
    connection = transport.transport
    if not isinstance(connection, tcp.Connection) or internals.write_replaced(connection):
        return
    buffered_write = connection.write

    def write(data):
        rest = _unsent(connection, data)
        if rest:
            buffered_write(rest)

    internals.replace_write(connection, write)


def end_write_through(transport):
    """Take L{write_through_under_tls}'s override off the TCP connection
    again, once the connection is lost: it refers to the connection it sits
    on, a cycle that only Python's garbage collector would free, and with it
    whatever else the connection still holds.

    @param transport: a protocol's transport; anything else is left alone.
    """
    if isinstance(transport, TLSMemoryBIOProtocol):
        internals.restore_write(transport.transport)
