"""The fast path: the per-frame path of cfosproxy's WebSockets, kept lean
(C{[server] fast_path}, on by default).

Every message a wallbox sends through a gateway crosses two WebSockets, so
what Twisted and Autobahn do per frame counts twice. These things they do
by default cost a measurable share of the daemon's CPU on the relay path
(C{bench/relay.py}) and give cfosproxy nothing:

- Twisted's C{transport.write()} only buffers until the reactor's next
  turn; L{cfosproxy.ws.writethrough} sends at once where that keeps the
  order, under TLS too.
- Autobahn's C{dataReceived} formats a debug line for every read, logged or
  not.
- Autobahn fires an observer event (a Deferred and its callbacks) for every
  message, for observers cfosproxy never registers.
- Autobahn checks that text frames are UTF-8 piece by piece through cffi;
  cfosproxy decodes every message anyway, and Python's decoder is as strict
  (RFC 3629: no surrogates, no overlong forms), so the factories switch
  Autobahn's check off (L{FACTORY_OPTIONS}) and
  L{cfosproxy.ws.peer.PeerProtocol} refuses what does not decode, with 1007
  as Autobahn would.
- Autobahn's native masker (RFC 6455 §5.3: every frame a client sends is
  XORed with a 4-byte key) sets up C buffers through cffi for every frame;
  for frames of a few hundred bytes that costs more than the XOR itself.
  L{use_integer_masking} makes it XOR with one of Python's big integers.
- Autobahn takes every frame through a general parser and writer: a dozen
  calls per frame for fragments, compression, control frames and
  statistics. Nearly every frame on the relay path is one whole text
  message in one read, so L{RelayPathMixin} reads and writes that case
  itself (L{cfosproxy.ws.wireframes}), within the same limits, and hands
  everything else to Autobahn: control frames, fragments, partial reads,
  large frames, anything Autobahn must refuse, and the close handshake.

All of this leans on Autobahn's and Twisted's internals
(L{cfosproxy.ws.internals}). L{fast_path_usable} checks once that they are
there; without them, or with C{fast_path = no}, the factories
(L{cfosproxy.ws.peer.PeerFactoryMixin}) build protocols without
L{RelayPathMixin} and with Autobahn's own options, and Autobahn carries
every frame.
"""

import functools

from autobahn.websocket.protocol import WebSocketProtocol
from twisted.logger import Logger

from cfosproxy.ws import internals, wireframes
from cfosproxy.ws.writethrough import end_write_through, write_now, write_through_under_tls

_OPEN = WebSocketProtocol.STATE_OPEN

_log = Logger()

# For the factories of protocols with L{RelayPathMixin}.
FACTORY_OPTIONS = {"utf8validateIncoming": False}


@functools.cache
def fast_path_usable():
    """Whether the Autobahn and Twisted installed have every internal the
    fast path relies on; checked once, and when one is missing the daemon
    says so, once, in its log."""
    missing = internals.missing_fast_path_internals()
    if missing:
        _log.warn(
            "The WebSocket fast path is off: {versions} lack what it relies on "
            "({missing}); Autobahn carries every frame",
            versions=internals.versions(),
            missing=", ".join(missing),
        )
    return not missing


def use_integer_masking():
    """Make Autobahn mask and unmask frames with
    L{wireframes.IntegerMasker} (for the whole process: the daemon calls it
    at start when the fast path is on); nothing when the fast path cannot
    be used."""
    if fast_path_usable():
        internals.use_masker(wireframes.IntegerMasker)


class RelayPathMixin:
    """The fast path for Autobahn's Twisted protocols (list it right before
    the Autobahn base class, and give the factory L{FACTORY_OPTIONS}): whole
    text frames read and written directly, other frames through Autobahn
    without its debug formatting and observer event, and frames out through
    L{write_now}."""

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
        if self.state == _OPEN and internals.parser_idle(self) and self._direct_frames():
            data = self._receive_whole_text_frames(data)
            if not data:
                return
        internals.parse(self, data)

    def _direct_frames(self):
        """Whether whole text frames may skip Autobahn's parser and writer:
        nothing negotiated or switched on that they would need to see."""
        direct = self._direct
        if direct is None:
            direct = self._direct = (
                internals.plain_frames(self)
                and self.applyMask
                and not self.logFrames
                and not self.logOctets
                and not self.autoFragmentSize
            )
            # What a direct frame may carry, either way: within the limits
            # (Autobahn closes with 1009 above them) and the 16-bit length.
            self._largest_direct_frame = min(
                [wireframes.LARGEST_SHORT_PAYLOAD]
                + [
                    limit
                    for limit in (self.maxMessagePayloadSize, self.maxFramePayloadSize)
                    if limit > 0
                ]
            )
        return direct

    def _receive_whole_text_frames(self, data):
        """Deliver the whole text frames at the start of C{data}, as
        Autobahn would, and return the rest for Autobahn's parser: from the
        first frame that L{wireframes.read_whole_text_frame} does not take
        on."""
        # RFC 6455 §5.1: a client masks every frame, a server none. A frame
        # the other way round is Autobahn's to refuse.
        masked = self.factory.isServer
        largest = self._largest_direct_frame
        start = 0
        size = len(data)
        while start < size:
            frame = wireframes.read_whole_text_frame(data, start, masked, largest)
            if frame is None:
                break
            payload, start = frame
            internals.deliver_text_frame(self, payload)
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
        if (
            isBinary
            or fragmentSize is not None
            or sync
            or self.state != _OPEN
            or internals.sends_queued(self)
            or not self._direct_frames()
            or len(payload) > self._largest_direct_frame
            or type(payload) is not bytes
        ):
            super().sendMessage(payload, isBinary, fragmentSize, sync, doNotCompress)
            return
        if self.maskServerFrames if self.factory.isServer else self.maskClientFrames:
            key = wireframes.new_mask_key()
        else:
            key = None
        write_now(self.transport, wireframes.whole_text_frame(payload, key))

    def sendData(self, data, sync=False, chopsize=None):
        # Chopped and synchronous sends (not used by cfosproxy), and
        # anything queued behind them, keep Autobahn's own path.
        if sync or chopsize or internals.sends_queued(self):
            super().sendData(data, sync, chopsize)
            return
        write_now(self.transport, data)
        internals.count_sent(self, len(data))

    def onMessageEnd(self):
        internals.end_message_without_observers(self)
