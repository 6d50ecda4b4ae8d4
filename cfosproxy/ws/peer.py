"""What cfosproxy's two kinds of WebSocket share: a wallbox's connection to
the server (L{cfosproxy.ws.server}) and the link to a backend
(L{cfosproxy.ws.backend}).

- L{protocol_options}: the same limits, pings and close handshake on both.
- L{PeerProtocol}: flow control, L{PeerProtocol.close} with any close code,
  and the guards every message passes: OCPP-J is text, and text is UTF-8.
- L{PeerFactoryMixin}: the hookup of the fast path
  (L{cfosproxy.ws.relaypath}). Each side has two protocol classes, one
  with L{cfosproxy.ws.relaypath.RelayPathMixin} and one without; the
  factory builds the first only when the fast path is wanted and usable,
  so that with C{fast_path = no} nothing of it is installed.
"""

from cfosproxy.ws import internals
from cfosproxy.ws.flowcontrol import FlowControlMixin
from cfosproxy.ws.relaypath import FACTORY_OPTIONS, fast_path_usable

# Seconds the close handshake may take before the connection is dropped.
CLOSE_HANDSHAKE_TIMEOUT = 5

# RFC 6455 §5.5: a control frame carries at most 125 bytes, two of them the
# close code.
MAX_CLOSE_REASON = 123


def protocol_options(*, max_message_size, ping_interval, open_timeout):
    """Autobahn's protocol options for one of cfosproxy's WebSockets.

    @param max_message_size: the largest message (and frame) taken, in
        bytes; a larger one closes the connection with 1009.
    @param ping_interval: seconds between pings, and how long the peer has
        to answer one.
    @param open_timeout: seconds the opening handshake may take.
    """
    return dict(
        maxMessagePayloadSize=max_message_size,
        maxFramePayloadSize=max_message_size,
        autoPingInterval=ping_interval,
        autoPingTimeout=ping_interval,
        openHandshakeTimeout=open_timeout,
        closeHandshakeTimeout=CLOSE_HANDSHAKE_TIMEOUT,
        # Send a close frame with the reason (1009 for a frame that is too
        # big, 1007 for invalid UTF-8) instead of just dropping TCP.
        failByDrop=False,
    )


class PeerProtocol(FlowControlMixin):
    """The part cfosproxy's Autobahn protocols share (list it first; with
    the fast path, C{RelayPathMixin} comes between it and the Autobahn base
    class).

    Messages reach a subclass through four methods: L{open_for_messages}
    says whether it takes any now; then L{binary_message},
    L{text_not_utf8} (after the connection was failed with 1007), or
    L{text_message} with the decoded text.
    """

    def close(self, code, reason):
        """Start the close handshake with C{code} and C{reason} (text; cut
        to what a close frame holds), if the WebSocket is open.

        @param code: any close code, also the protocol's own (1001 "going
            away", 1002 "protocol error", 1003 "unsupported data"), which
            Autobahn's C{sendClose()} refuses; sent with the same close
            handshake and timeout.
        """
        if self.state == self.STATE_OPEN:
            internals.send_close_frame(self, code, reason.encode("utf-8")[:MAX_CLOSE_REASON])

    def onMessage(self, payload, isBinary):
        if not self.open_for_messages():
            return
        if isBinary:
            self.binary_message(payload)
            return
        # With the fast path Autobahn's UTF-8 check is off
        # (relaypath.FACTORY_OPTIONS): the text is checked here, where it is
        # decoded anyway, and refused with 1007 as Autobahn would.
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            internals.fail_invalid_payload(self, "text message is not valid UTF-8")
            self.text_not_utf8()
            return
        self.text_message(text)

    def open_for_messages(self):
        """Whether messages are taken now; others are dropped unread."""
        raise NotImplementedError

    def binary_message(self, payload):
        """A binary message arrived; OCPP-J has none."""
        raise NotImplementedError

    def text_not_utf8(self):
        """A text message arrived that is not UTF-8; the connection is
        being failed with 1007."""
        raise NotImplementedError

    def text_message(self, text):
        """A text message arrived, decoded."""
        raise NotImplementedError


class PeerFactoryMixin:
    """For the factories of L{PeerProtocol}s (list it before Autobahn's
    factory class): chooses the protocol class and options for the fast
    path, or without it.

    @cvar protocol: the protocol class with C{RelayPathMixin}.
    @cvar plain_protocol: the same protocol without it.
    @ivar fast_path: whether the connections this factory builds take the
        fast path.
    """

    plain_protocol = None
    fast_path = False

    def use_fast_path(self, wanted):
        """Build protocols with the fast path if C{wanted} and the
        Autobahn and Twisted installed allow it (L{fast_path_usable});
        otherwise plain ones, with Autobahn's own options.

        @param wanted: C{[server] fast_path}.
        """
        self.fast_path = bool(wanted) and fast_path_usable()
        if self.fast_path:
            self.setProtocolOptions(**FACTORY_OPTIONS)
        else:
            self.protocol = self.plain_protocol
