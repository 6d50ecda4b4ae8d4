"""Every member of Autobahn and Twisted that cfosproxy uses outside their
documented interfaces, and the only module that touches them.

The fast frame path (L{cfosproxy.ws.relaypath}, L{cfosproxy.ws.writethrough})
reads Autobahn's parser state, calls its private hooks, swaps its masker
and sends on Twisted's sockets directly; flow control
(L{cfosproxy.ws.flowcontrol}) counts what waits in Twisted's buffers. None of
that is promised to survive a release, so:

- every such name is listed below, in one place;
- the fast path checks at start (L{missing_fast_path_internals}) that the
  ones it relies on are there, and stays off when one is missing (the
  daemon says so in its log; Autobahn then carries every frame);
- C{pyproject.toml} pins Autobahn and Twisted to the releases tested;
- C{tests/test_internals.py} fails when a name is touched anywhere else.

What flow control, the handshake limit, closing and dropping a connection
and the backend link's log rely on (L{ALWAYS_RELIED_ON}) has no fallback:
the tests fail first.

Not counted here: Autobahn's protocol options, its callbacks for
subclasses (C{onConnect}, C{onOpen}, C{failHandshake}, ...), and the
attributes in which it reports how a connection ended (C{closedByMe},
C{localCloseCode}, C{wasNotCleanReason}, C{http_status_line}, ...), which
the backend link reads for its log.
"""

import autobahn
import autobahn.websocket.protocol as autobahn_protocol
import twisted
from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from twisted.application.internet import ClientService
from twisted.internet import abstract, tcp
from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
)

# -- the names ----------------------------------------------------------------

# What the fast path relies on. On Autobahn's Twisted protocols: methods
# (private hooks, and the parser's entry without its per-read debug line)
# and the state of a connection, set once it is open or has had a message.
FAST_PATH_AUTOBAHN_METHODS = (
    "_dataReceived",
    "_onMessage",
    "_cancelAutoPingTimeoutCall",
    "_invalid_payload",
)
FAST_PATH_AUTOBAHN_STATE = (
    "data",
    "current_frame",
    "inside_message",
    "message_data",
    "message_is_binary",
    "failedByMe",
    "send_queue",
    "trafficStats",
    "trackedTimings",
    "_perMessageCompress",
    "websocket_version",
    "autoPingTimeoutCall",
)
# Protocol options the fast path reads on a connection (public, but a
# rename would break it all the same, so they are checked with the rest).
FAST_PATH_AUTOBAHN_OPTIONS = (
    "applyMask",
    "logFrames",
    "logOctets",
    "autoFragmentSize",
    "maxMessagePayloadSize",
    "maxFramePayloadSize",
    "autoPingRestartOnAnyTraffic",
)
# The function Autobahn's protocol module masks frames with, looked up by
# this name for every frame (L{use_masker} replaces it).
AUTOBAHN_MASKER = "create_xor_masker"
# On Twisted's TCP connection: its buffers, whether TLS was started on it,
# and its send without buffering. Its C{write} is replaced on a live
# connection under TLS (L{replace_write}).
FAST_PATH_TWISTED_CONNECTION = ("dataBuffer", "_tempDataLen", "TLS", "writeSomeData")

# Relied on whatever [server] fast_path says:
ALWAYS_RELIED_ON = {
    # Flow control: what waits in a TCP connection's buffers (FileDescriptor),
    # and the plain text Twisted's TLS layer holds until its handshake is done.
    "twisted.internet.abstract.FileDescriptor": ("dataBuffer", "offset", "_tempDataLen"),
    "twisted.protocols.tls.TLSMemoryBIOProtocol": ("_appSendBuffer",),
    # Closing with codes sendClose() refuses, the bytes of the opening
    # handshake held so far, and dropping with a reason.
    "autobahn.websocket.protocol.WebSocketProtocol": (
        "sendCloseFrame",
        "data",
        "wasClean",
        "wasNotCleanReason",
    ),
    # The backend link's quieter retry log.
    "twisted.application.internet.ClientService": ("_log",),
}


# -- Autobahn: receiving ------------------------------------------------------


def parser_idle(protocol):
    """Whether Autobahn's parser holds nothing: no buffered bytes, no frame
    and no message begun."""
    return not protocol.data and protocol.current_frame is None and not protocol.inside_message


def plain_frames(protocol):
    """Whether the connection's frames are plain RFC 6455 frames that
    Autobahn does nothing special with: no compression negotiated, not the
    old Hixie-76 protocol, no timings tracked."""
    return (
        protocol._perMessageCompress is None
        and protocol.websocket_version != 0
        and not protocol.trackedTimings
    )


def parse(protocol, data):
    """Hand C{data} to Autobahn's parser (its C{dataReceived} without the
    debug line it formats for every read)."""
    protocol._dataReceived(data)






def deliver_text_frame(protocol, payload):
    """Hand a whole text frame's payload to the protocol's C{onMessage}, as
    Autobahn's parser does; like any data frame, it counts as the answer to
    a ping still waiting when the options say so."""
    if protocol.autoPingTimeoutCall and protocol.autoPingRestartOnAnyTraffic:
        protocol._cancelAutoPingTimeoutCall()
    protocol._onMessage(payload, False)


def end_message_without_observers(protocol):
    """Autobahn's C{onMessageEnd} without its C{fire("message", ...)} for
    observers registered with C{on("message")} (a Deferred and callbacks per
    message, for observers cfosproxy never registers)."""
    if not protocol.failedByMe:
        payload = b"".join(protocol.message_data)
        if protocol.trackedTimings:
            protocol.trackedTimings.track("onMessage")
        protocol._onMessage(payload, protocol.message_is_binary)
    protocol.message_data = None


def fail_invalid_payload(protocol, reason):
    """Fail the connection with 1007 (RFC 6455 §8.1), as Autobahn does for
    a text message that is not UTF-8."""
    protocol._invalid_payload(reason)


def handshake_bytes(protocol):
    """How many bytes of the opening handshake Autobahn holds so far."""
    return len(protocol.data)


# -- Autobahn: sending and closing --------------------------------------------


def sends_queued(protocol):
    """Whether Autobahn holds chopped or synchronous sends back for a later
    turn of the reactor (then later sends must queue behind them)."""
    return bool(protocol.send_queue)


def count_sent(protocol, size):
    """Count C{size} bytes written by the fast path in Autobahn's traffic
    statistics, as its C{sendData} does."""
    if protocol.state == protocol.STATE_OPEN:
        protocol.trafficStats.outgoingOctetsWireLevel += size


def send_close_frame(protocol, code, reason):
    """Start the close handshake with any close code: Autobahn's
    C{sendClose()} takes only 1000 and 3000-4999, its (internal)
    C{sendCloseFrame} also the protocol's own codes (1001, 1002, 1003...).

    @param reason: UTF-8, at most 123 bytes.
    """
    protocol.sendCloseFrame(code, reason)


def drop_connection(protocol, reason):
    """Drop the connection without a close handshake; Autobahn's log line
    about the drop and C{onClose} give C{reason}."""
    protocol.wasClean = False
    protocol.wasNotCleanReason = reason
    protocol.dropConnection(abort=True)


def use_masker(masker):
    """Make Autobahn mask and unmask the frames it handles with
    C{masker(key, length)} instead of its own, for the whole process."""
    setattr(autobahn_protocol, AUTOBAHN_MASKER, masker)


# -- Twisted: a TCP connection's buffers --------------------------------------






def send_if_idle(transport, data):
    """Send what the socket takes of C{data} at once, past Twisted's
    buffer, if C{transport} is a plain TCP connection (no TLS started on
    it) that is open, not closing, and has nothing waiting in its buffer.

    @return: how many bytes were sent, the exception of a socket that
        failed (Twisted's C{writeSomeData}), or None when the transport is
        not such a connection (nothing was sent).
    """
    if (
        isinstance(transport, tcp.Connection)
        and transport.connected
        and not transport.disconnecting
        and not transport.TLS
        and not transport.dataBuffer
        and not transport._tempDataLen
    ):
        return transport.writeSomeData(data)
    return None


def tcp_bytes_waiting(connection):
    """How many bytes wait in the send buffer of C{connection}, a Twisted
    C{FileDescriptor}: a bytes buffer sent up to C{offset}, and a list of
    later writes (no public accessor says either)."""
    return len(connection.dataBuffer) - connection.offset + connection._tempDataLen


def tls_bytes_waiting(tls):
    """How many bytes of plain text Twisted's TLS layer C{tls} holds back
    until its handshake is done."""
    return sum(len(data) for data in tls._appSendBuffer)


def write_replaced(connection):
    """Whether L{replace_write} has replaced C{connection}'s C{write}."""
    return "write" in vars(connection)


def replace_write(connection, write):
    """Replace C{write} on the live C{connection} (on the instance: other
    connections keep Twisted's)."""
    connection.write = write


def restore_write(connection):
    """Give C{connection} back Twisted's own C{write}."""
    vars(connection).pop("write", None)


# -- Twisted: the backend link's retry log ------------------------------------


class QuietClientService(ClientService):
    """A C{ClientService} that logs only its warnings: it logs every retry at
    info level, and the backend link logs changes of state instead. Its
    logger is private."""

    _log = Logger(
        namespace="twisted.application.internet.ClientService",
        observer=FilteringLogObserver(
            globalLogPublisher, [LogLevelFilterPredicate(LogLevel.warn)]
        ),
    )


# -- the start-up check -------------------------------------------------------


def missing_fast_path_internals():
    """The internals the fast path relies on that the Autobahn and Twisted
    installed lack, by name; empty when all are there.

    Methods are looked up on the classes; a connection's state on a
    connection opened in memory (a client and a server over two string
    transports) that has had one message each way.
    """
    missing = []
    if not callable(getattr(autobahn_protocol, AUTOBAHN_MASKER, None)):
        missing.append("autobahn.websocket.protocol." + AUTOBAHN_MASKER)
    for cls in (WebSocketServerProtocol, WebSocketClientProtocol):
        for name in FAST_PATH_AUTOBAHN_METHODS:
            if not callable(getattr(cls, name, None)):
                missing.append("autobahn's {}.{}".format(cls.__name__, name))
    connection = abstract.FileDescriptor(_global_reactor())
    for name in FAST_PATH_TWISTED_CONNECTION:
        if not hasattr(tcp.Connection, name) and not hasattr(connection, name):
            missing.append("twisted's tcp.Connection." + name)
    try:
        opened = _open_in_memory()
    except Exception as e:
        missing.append("a WebSocket in memory ({}: {})".format(type(e).__name__, e))
        return missing
    for protocol in opened:
        for name in FAST_PATH_AUTOBAHN_STATE + FAST_PATH_AUTOBAHN_OPTIONS:
            if not hasattr(protocol, name):
                missing.append("autobahn's {}.{}".format(type(protocol).__name__, name))
        stats = getattr(protocol, "trafficStats", None)
        if stats is not None and not hasattr(stats, "outgoingOctetsWireLevel"):
            missing.append("autobahn's TrafficStats.outgoingOctetsWireLevel")
    # Each name once, though both sides may lack it.
    return list(dict.fromkeys(missing))


def versions():
    """The Autobahn and Twisted installed, for the log."""
    return "Autobahn {}, Twisted {}".format(autobahn.__version__, twisted.__version__)


def _global_reactor():
    from twisted.internet import reactor

    return reactor


def _open_in_memory():
    """A server and a client WebSocket of plain Autobahn, connected over
    string transports, after the opening handshake and one text message
    each way; no timers."""
    from twisted.internet.testing import StringTransport

    quiet = dict(openHandshakeTimeout=0, closeHandshakeTimeout=0, autoPingInterval=0)
    server_factory = WebSocketServerFactory()
    server_factory.setProtocolOptions(**quiet)
    server_factory.protocol = WebSocketServerProtocol
    client_factory = WebSocketClientFactory("ws://localhost/")
    client_factory.setProtocolOptions(**quiet)
    client_factory.protocol = WebSocketClientProtocol
    server = server_factory.buildProtocol(None)
    client = client_factory.buildProtocol(None)
    to_server, to_client = StringTransport(), StringTransport()
    server.makeConnection(to_client)
    client.makeConnection(to_server)

    def deliver_all():
        for wire, receiver in ((to_server, server), (to_client, client)) * 2:
            data = wire.value()
            wire.clear()
            if data:
                receiver.dataReceived(data)

    deliver_all()
    if not (server.state == client.state == server.STATE_OPEN):
        raise RuntimeError("the opening handshake did not complete")
    client.sendMessage(b"probe")
    server.sendMessage(b"probe")
    deliver_all()
    return server, client
