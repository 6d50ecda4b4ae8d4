"""The per-frame path of cfosproxy's WebSockets, kept lean.

Every message a wallbox sends through a gateway crosses two WebSockets, so
what Twisted and Autobahn do per frame counts twice. These things they do
by default cost a measurable share of the daemon's CPU on the relay path
(C{bench/relay.py}) and give cfosproxy nothing:

- Twisted's C{transport.write()} only buffers: it asks the reactor to report
  the socket writable and sends on the next turn, two C{epoll_ctl} calls
  and a turn of the event loop per frame. A socket whose send buffer is
  empty nearly always takes a frame of a few hundred bytes whole, so
  L{write_now} sends it at once when nothing waits before it, and
  L{write_through_under_tls} does the same for the encrypted records of a
  TLS connection.
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
- Autobahn takes every frame through a general parser and writer: a dozen
  calls per frame for fragments, compression, control frames and
  statistics. Nearly every frame on the relay path is one whole text
  message in one read, so L{RelayPathMixin} reads and writes that case
  itself, within the same limits, and hands everything else to Autobahn:
  control frames, fragments, partial reads, large frames, anything Autobahn
  must refuse, and the close handshake.

L{RelayPathMixin} takes the rest out for an Autobahn protocol, and
L{use_integer_masking} the masker for the frames Autobahn still handles.
"""

import random

import autobahn.websocket.protocol
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet import tcp
from twisted.protocols.tls import TLSMemoryBIOProtocol

_OPEN = WebSocketProtocol.STATE_OPEN

# The first byte of a whole text message in one frame: FIN, no RSV bits
# (nothing negotiated that uses them), opcode 1.
_WHOLE_TEXT_FRAME = 0x81

# The largest payload with a 16-bit length (RFC 6455 §5.2); longer frames,
# rare in OCPP, take Autobahn's path.
_LARGEST_SHORT_FRAME = 0xFFFF


def _xor(data, key):
    """C{data} XORed with the 4-byte C{key} repeated (RFC 6455 §5.3), with
    one of Python's big integers: for frames of a few hundred bytes far
    cheaper than a loop or a cffi call."""
    size = len(data)
    return (
        int.from_bytes(data, "little")
        ^ int.from_bytes((key * (size // 4 + 1))[:size], "little")
    ).to_bytes(size, "little")


def _unsent(transport, data):
    """Send C{data} on C{transport} at once where that is safe; what is
    left for C{transport.write()}: all of it, part, or nothing.

    Only a plain TCP connection with nothing buffered qualifies: then the
    data is the next thing on the wire either way, so the order is kept.
    What the socket does not take, a connection that is closing, and a
    socket that failed (so that Twisted reports the loss on its usual path)
    are left to C{write()}.
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
    if not isinstance(connection, tcp.Connection) or "write" in vars(connection):
        return
    buffered_write = connection.write

    def write(data):
        rest = _unsent(connection, data)
        if rest:
            buffered_write(rest)

    connection.write = write


def end_write_through(transport):
    """Take L{write_through_under_tls}'s override off the TCP connection
    again, once the connection is lost: it refers to the connection it sits
    on, a cycle that only Python's garbage collector would free, and with it
    whatever else the connection still holds.

    @param transport: a protocol's transport; anything else is left alone.
    """
    if isinstance(transport, TLSMemoryBIOProtocol):
        vars(transport.transport).pop("write", None)


# For the factories of protocols with L{RelayPathMixin}.
FACTORY_OPTIONS = {"utf8validateIncoming": False}


class RelayPathMixin:
    """For Autobahn's Twisted protocols (list it before the Autobahn base
    class, and give the factory L{FACTORY_OPTIONS}): whole text frames read
    and written directly, other frames through Autobahn without its debug
    formatting and observer event, frames out through L{write_now}, and
    L{text_of} for a text message's UTF-8 check."""

    # Set at the first frame once the WebSocket is open (see _direct_frames).
    _direct = None

    def connectionMade(self):
        write_through_under_tls(self.transport)
        super().connectionMade()

    def connectionLost(self, reason):
        end_write_through(self.transport)
        super().connectionLost(reason)

    def dataReceived(self, data):
        # Autobahn's own formats a debug line first; its parser takes what
        # the direct path leaves.
        if (
            self.state == _OPEN
            and not self.data
            and self.current_frame is None
            and not self.inside_message
            and self._direct_frames()
        ):
            data = self._receive_whole_text_frames(data)
            if not data:
                return
        self._dataReceived(data)

    def _direct_frames(self):
        """Whether whole text frames may skip Autobahn's parser and writer:
        nothing negotiated or switched on that they would need to see."""
        direct = self._direct
        if direct is None:
            direct = self._direct = (
                self._perMessageCompress is None
                and self.websocket_version != 0
                and self.applyMask
                and not self.logFrames
                and not self.logOctets
                and not self.trackedTimings
                and not self.autoFragmentSize
            )
            # What a direct frame may carry, either way: within the limits
            # (Autobahn closes with 1009 above them) and the 16-bit length.
            self._largest_direct_frame = min(
                [_LARGEST_SHORT_FRAME]
                + [
                    limit
                    for limit in (self.maxMessagePayloadSize, self.maxFramePayloadSize)
                    if limit > 0
                ]
            )
        return direct

    def _receive_whole_text_frames(self, data):
        """Deliver the whole text frames at the start of C{data}, as
        Autobahn would, and return the rest for Autobahn's parser: a frame
        that is cut off, fragmented, binary or a control frame, has the
        wrong masking, a 64-bit length or is above the limits, and
        everything after it."""
        # RFC 6455 §5.1: a client masks every frame, a server none. A frame
        # the other way round is Autobahn's to refuse.
        masked = self.factory.isServer
        largest = self._largest_direct_frame
        size = len(data)
        start = 0
        while size - start >= 2 and data[start] == _WHOLE_TEXT_FRAME:
            second = data[start + 1]
            if (second >= 0x80) != masked:
                break
            length = second & 0x7F
            header = 2
            if length == 126:
                if size - start < 4:
                    break
                length = (data[start + 2] << 8) | data[start + 3]
                if length < 126:  # not the shortest encoding: a violation
                    break
                header = 4
            elif length == 127:
                break
            if length > largest:
                break
            body = start + header + (4 if masked else 0)
            end = body + length
            if end > size:
                break
            payload = data[body:end]
            if masked:
                payload = _xor(payload, data[body - 4:body])
            start = end
            # As Autobahn does for any data frame: traffic counts as the
            # answer to a ping that is still waiting.
            if self.autoPingTimeoutCall and self.autoPingRestartOnAnyTraffic:
                self._cancelAutoPingTimeoutCall()
            self._onMessage(payload, False)
            if self.state != _OPEN:
                # Closed or failed by the handler: the rest is Autobahn's.
                break
        return data[start:] if start else data

    def sendMessage(
        self, payload, isBinary=False, fragmentSize=None, sync=False, doNotCompress=False
    ):
        # A whole text message of up to 64 KiB goes out as one frame built
        # here; anything else, and anything Autobahn must refuse (a closed
        # connection, a message above the limit), takes Autobahn's path.
        size = len(payload)
        if (
            isBinary
            or fragmentSize is not None
            or sync
            or self.state != _OPEN
            or self.send_queue
            or not self._direct_frames()
            or size > self._largest_direct_frame
            or type(payload) is not bytes
        ):
            super().sendMessage(payload, isBinary, fragmentSize, sync, doNotCompress)
            return
        is_server = self.factory.isServer
        if self.maskServerFrames if is_server else self.maskClientFrames:
            key = random.getrandbits(32).to_bytes(4, "big")
            payload = key + _xor(payload, key)
            mask_bit = 0x80
        else:
            mask_bit = 0
        if size < 126:
            header = bytes((_WHOLE_TEXT_FRAME, mask_bit | size))
        else:
            header = bytes((_WHOLE_TEXT_FRAME, mask_bit | 126, size >> 8, size & 0xFF))
        write_now(self.transport, header + payload)

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
        start = self._offset & 3
        self._offset += len(data)
        # The key turned to where this piece starts.
        return _xor(data, self._mask[start:] + self._mask[:start])


def use_integer_masking():
    """Make Autobahn mask and unmask frames with L{IntegerMasker} (for the
    whole process: the daemon calls it at start)."""
    autobahn.websocket.protocol.create_xor_masker = IntegerMasker
