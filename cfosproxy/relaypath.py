"""The per-frame path of cfosproxy's WebSockets, kept lean.

Every message a wallbox sends through a gateway crosses two WebSockets, so
what Twisted and Autobahn do per frame counts twice. Three things they do
by default cost a measurable share of the daemon's CPU on the relay path
(C{bench/relay.py}) and give cfosproxy nothing:

- Twisted's C{transport.write()} only buffers: it asks the reactor to report
  the socket writable and sends on the next turn, two C{epoll_ctl} calls
  and a turn of the event loop per frame. A socket whose send buffer is
  empty nearly always takes a frame of a few hundred bytes whole, so
  L{write_now} sends it at once when nothing waits before it.
- Autobahn's C{dataReceived} formats a debug line for every read, logged or
  not.
- Autobahn fires an observer event (a Deferred and its callbacks) for every
  message, for observers cfosproxy never registers.

L{RelayPathMixin} takes these out for an Autobahn protocol; the frame
parser, the limits and the close handshake are Autobahn's own.
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
        # accessor says whether it is empty. tests/test_relaypath.py
        # fails if this stops being the name.
        and not transport._tempDataLen
    ):
        sent = transport.writeSomeData(data)
        if isinstance(sent, int):
            if sent == len(data):
                return
            data = data[sent:]
    transport.write(data)


class RelayPathMixin:
    """For Autobahn's Twisted protocols (list it before the Autobahn base
    class): frames out through L{write_now}, frames in without the debug
    formatting and the observer event."""

    def dataReceived(self, data):
        # Autobahn's own formats a debug line first; the parser is the same.
        self._dataReceived(data)

    def sendData(self, data, sync=False, chopsize=None):
        # Chopped and synchronous sends (not used by cfosproxy), and
        # anything queued behind them, keep Autobahn's own path.
        if sync or chopsize or self.send_queue:
            super().sendData(data, sync, chopsize)
            return
        write_now(self.transport, data)
        if self.state == self.STATE_OPEN:
            self.trafficStats.outgoingOctetsWireLevel += len(data)

    def onMessageEnd(self):
        # Autobahn's own, without fire("message", ...) for observers
        # registered with on("message"): cfosproxy registers none.
        if not self.failedByMe:
            payload = b"".join(self.message_data)
            if self.trackedTimings:
                self.trackedTimings.track("onMessage")
            self._onMessage(payload, self.message_is_binary)
        self.message_data = None
