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
- Autobahn checks that text frames are UTF-8 piece by piece through cffi;
  cfosproxy decodes every message anyway, and Python's decoder is as strict
  (RFC 3629: no surrogates, no overlong forms), so the factories switch
  Autobahn's check off (L{FACTORY_OPTIONS}) and L{RelayPathMixin.text_of}
  refuses what does not decode, with 1007 as Autobahn would.

- Autobahn's native masker (RFC 6455 §5.3: every frame a client sends is
  XORed with a 4-byte key) sets up C buffers through cffi for every frame;
  for frames of a few hundred bytes that costs more than the XOR itself.
  L{use_integer_masking} makes it XOR with one of Python's big integers.

L{RelayPathMixin} takes the first four out for an Autobahn protocol; the
frame parser, the limits and the close handshake are Autobahn's own.
"""

import autobahn.websocket.protocol
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


# For the factories of protocols with L{RelayPathMixin}.
FACTORY_OPTIONS = {"utf8validateIncoming": False}


class RelayPathMixin:
    """For Autobahn's Twisted protocols (list it before the Autobahn base
    class, and give the factory L{FACTORY_OPTIONS}): frames out through
    L{write_now}, frames in without the debug formatting and the observer
    event, and L{text_of} for a text message's UTF-8 check."""

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

    def text_of(self, payload):
        """The text of a text message; or C{None}, after failing the
        connection with 1007 (RFC 6455 §8.1) when it is not UTF-8."""
        try:
            return payload.decode("utf-8")
        except UnicodeDecodeError:
            self._invalid_payload("text message is not valid UTF-8")
            return None

    def onMessageEnd(self):
        # Autobahn's own, without fire("message", ...) for observers
        # registered with on("message"): cfosproxy registers none.
        if not self.failedByMe:
            payload = b"".join(self.message_data)
            if self.trackedTimings:
                self.trackedTimings.track("onMessage")
            self._onMessage(payload, self.message_is_binary)
        self.message_data = None


class IntegerMasker:
    """Masks and unmasks a WebSocket frame's payload (RFC 6455 §5.3), with
    the interface of Autobahn's maskers: the payload may come in pieces,
    and C{pointer()} is how much of it was processed.

    @param mask: the frame's 4-byte masking key.
    """

    __slots__ = ("_mask", "_offset")

    def __init__(self, mask, length=None):
        self._mask = bytes(mask)
        self._offset = 0

    def pointer(self):
        return self._offset

    def reset(self):
        self._offset = 0

    def process(self, data):
        size = len(data)
        start = self._offset & 3
        self._offset += size
        # The key, turned to where this piece starts, repeated over it.
        key = (self._mask[start:] + self._mask[:start]) * (size // 4 + 1)
        return (
            int.from_bytes(data, "little") ^ int.from_bytes(key[:size], "little")
        ).to_bytes(size, "little")


def use_integer_masking():
    """Make Autobahn mask and unmask frames with L{IntegerMasker} (for the
    whole process: the daemon calls it at start)."""
    autobahn.websocket.protocol.create_xor_masker = IntegerMasker
