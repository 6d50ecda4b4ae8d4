"""Send small frames at once instead of waiting for the reactor.

Twisted's C{transport.write()} only buffers: it asks the reactor to report
the socket writable and sends on the next turn. For each OCPP frame that is
two C{epoll_ctl} calls and a turn of the event loop, about a fifth of the
daemon's CPU on the relay path, where every message crosses two sockets. A
socket whose send buffer is empty nearly always takes a frame of a few
hundred bytes whole, so when nothing waits before it the frame is sent from
here, and only what the socket does not take goes through C{write()}.
"""

from twisted.internet import tcp


def write_now(transport, data):
    """Write C{data} to C{transport}, sending it at once where that is safe.

    Only a plain TCP connection with nothing buffered qualifies: then the
    data is the next thing on the wire either way, so the order is kept.
    What the socket does not take, a TLS connection, and a connection that
    is closing go through C{transport.write()} as before; so does a socket
    that failed, so that Twisted reports the loss on its usual path.

    @param transport: the protocol's transport.
    @param data: the bytes to send.
    """
    if (
        isinstance(transport, tcp.Connection)
        and transport.connected
        and not transport.disconnecting
        and not transport.TLS
        and not transport.dataBuffer
        # Twisted's list of writes since the last flush; no public
        # accessor says whether it is empty. tests/test_writethrough.py
        # fails if this stops being the name.
        and not transport._tempDataLen
    ):
        sent = transport.writeSomeData(data)
        if isinstance(sent, int):
            if sent == len(data):
                return
            data = data[sent:]
    transport.write(data)


class WriteThroughMixin:
    """For Autobahn protocols: frames go out through L{write_now}.

    Overrides Autobahn's C{sendData}, which every frame passes through.
    Chopped and synchronous sends (not used by cfosproxy) and anything
    queued behind them keep Autobahn's own path.
    """

    def sendData(self, data, sync=False, chopsize=None):
        if sync or chopsize or self.send_queue:
            super().sendData(data, sync, chopsize)
            return
        write_now(self.transport, data)
        if self.state == self.STATE_OPEN:
            self.trafficStats.outgoingOctetsWireLevel += len(data)
