"""The WebSocket server that wallboxes connect to (a thin Autobahn adapter).

Everything that decides lives in L{cfosproxy.core.hub} and L{cfosproxy.core.session};
this module translates between Autobahn's callbacks and those objects.
"""

from urllib.parse import unquote

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.logger import Logger, LogLevel
from zope.interface import implementer

from cfosproxy.core.interfaces import IPeerConnection
from cfosproxy.core.logtext import printable
from cfosproxy.ws import internals, tls
from cfosproxy.ws.peer import PeerFactoryMixin, PeerProtocol, protocol_options
from cfosproxy.ws.relaypath import RelayPathMixin

SUBPROTOCOL = "ocpp1.6"

# A client that has not finished the HTTP upgrade this long after connecting
# is dropped: it holds a socket and gives nothing (slow-loris).
OPEN_HANDSHAKE_TIMEOUT = 10

# A wallbox's HTTP upgrade request is a few hundred bytes. Autobahn keeps
# what arrives until the blank line that ends the request and copies all of
# it on every read, so a client that streams headers without end would
# keep the reactor busy and the memory growing until the timeout above.
MAX_HANDSHAKE_SIZE = 32768

# RFC 6455 §7.4.1: "unsupported data", for binary frames.
CLOSE_UNSUPPORTED_DATA = 1003


def chargebox_id_from_path(path):
    """The ChargeBox-ID: the last segment of the URL path, percent-decoded.

    Any prefix (C{/ocpp/}, C{/steve/websocket/CentralSystemService/}) is
    accepted, since wallboxes are often configured with a central system's
    URL of another product.
    """
    segment = path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return unquote(segment, errors="strict") if segment else ""


@implementer(IPeerConnection)
class _WallboxConnection(PeerProtocol):
    """One wallbox's WebSocket, whichever path its frames take (the two
    classes below add it and Autobahn's server protocol).

    C{self.peer} (the remote address, for logs) is Autobahn's own.
    """

    _log = Logger()
    session = None
    chargebox_id = None
    _retry_after = None

    def dataReceived(self, data):
        if (
            self.state == self.STATE_CONNECTING
            and internals.handshake_bytes(self) + len(data) > MAX_HANDSHAKE_SIZE
        ):
            # As Autobahn's own timeouts do: the drop is logged with the
            # peer and this reason as a warning.
            internals.drop_connection(
                self, "HTTP upgrade request over {} bytes".format(MAX_HANDSHAKE_SIZE)
            )
            return
        super().dataReceived(data)

    def onConnect(self, request):
        try:
            chargebox_id = chargebox_id_from_path(request.path)
        except UnicodeDecodeError:
            chargebox_id = ""
        if SUBPROTOCOL not in request.protocols:
            self._refuse(
                400,
                "Subprotocol ocpp1.6 required",
                chargebox_id,
                "offered subprotocols: {}".format(request.protocols),
            )
        certificate = tls.peer_client_certificate(self.transport)
        self._certificate_subject = certificate.subject if certificate else None
        refusal = self.factory.hub.admit(
            chargebox_id,
            request.headers.get("authorization"),
            tls.is_tls(self.transport),
            certificate,
            self._client_address(),
        )
        if refusal is not None:
            self._retry_after = refusal.retry_after
            self._refuse(refusal.code, refusal.reason, chargebox_id, refusal.detail)
        self.chargebox_id = chargebox_id
        return SUBPROTOCOL

    def _client_address(self):
        try:
            return self.transport.getPeer().host
        except Exception:
            return ""

    def _refuse(self, code, reason, chargebox_id, detail=""):
        if code == 429:
            # One line when the back-off starts (cfosproxy.core.passwordbackoff),
            # not one per refused attempt of a flood.
            level = LogLevel.debug
        elif code == 403:
            level = LogLevel.warn
        else:
            level = LogLevel.info
        self._log.emit(
            level,
            "refused a connection from {peer} as ChargeBox-ID '{cbid}': {code} "
            "{reason}{detail}",
            peer=self.peer,
            cbid=printable(chargebox_id),
            code=code,
            reason=reason,
            detail="; " + printable(detail) if detail else "",
        )
        raise ConnectionDeny(code, reason)

    def failHandshake(self, reason, code=400, responseHeaders=None):
        # Autobahn's ConnectionDeny carries no headers, but a 401 must say
        # how to authenticate (RFC 7235 §3.1) and a 429 when to come back
        # (RFC 6585 §4).
        if code == 401 and not responseHeaders:
            responseHeaders = [
                ("WWW-Authenticate", 'Basic realm="cfosproxy", charset="UTF-8"')
            ]
        elif code == 429 and not responseHeaders and self._retry_after:
            responseHeaders = [("Retry-After", str(self._retry_after))]
        # Autobahn's own reasons quote request headers: logged and sent
        # back, they must not carry control characters.
        super().failHandshake(printable(reason), code, responseHeaders)

    def onOpen(self):
        try:
            self.session = self.factory.hub.open(
                self.chargebox_id, self, self._certificate_subject
            )
        except Exception:
            self._log.failure("{cbid}: opening the session", cbid=self.chargebox_id)
            self.dropConnection(abort=True)

    # -- messages (PeerProtocol) -------------------------------------------

    def open_for_messages(self):
        return self.session is not None

    def binary_message(self, payload):
        self._log.warn(
            "{cbid}: binary frame; OCPP-J uses text frames only",
            cbid=self.chargebox_id,
        )
        self.close(CLOSE_UNSUPPORTED_DATA, "OCPP-J needs text frames")

    def text_not_utf8(self):
        self._log.warn(
            "{cbid}: a text frame that is not UTF-8; closing with 1007",
            cbid=self.chargebox_id,
        )

    def text_message(self, text):
        try:
            self.session.text_received(text)
        except Exception:
            self._log.failure("{cbid}: handling a frame", cbid=self.chargebox_id)

    def onClose(self, wasClean, code, reason):
        if self.session is not None:
            self.factory.hub.closed(self.session, code, reason)
            self.session = None

    def connectionLost(self, reason):
        super().connectionLost(reason)
        # Counted for cfosproxy.ops.memory, which frees what closed
        # connections leave behind once enough of them have closed.
        self.factory.closed_connections += 1

    # -- IPeerConnection --------------------------------------------------

    def send_text(self, text):
        self.sendMessage(text.encode("utf-8"), isBinary=False)

    # pause_reading() and resume_reading() are FlowControlMixin's, close()
    # is PeerProtocol's.

    def flow_name(self):
        if self.chargebox_id is None:
            return self.peer
        return printable(self.chargebox_id)


class WallboxServerProtocol(_WallboxConnection, RelayPathMixin, WebSocketServerProtocol):
    """One wallbox's WebSocket on the fast path (the default)."""


class PlainWallboxServerProtocol(_WallboxConnection, WebSocketServerProtocol):
    """One wallbox's WebSocket with every frame through Autobahn alone
    (C{[server] fast_path = no}, or the fast path cannot be used)."""


class WallboxServerFactory(PeerFactoryMixin, WebSocketServerFactory):
    """Builds the protocols of one L{ChargePointHub}'s wallboxes.

    @ivar hub: the L{cfosproxy.core.hub.ChargePointHub}; kept on its own
        attribute because Autobahn owns C{self.server} and C{self.log}.
    @ivar closed_connections: how many of its connections have closed so
        far (see L{cfosproxy.ops.memory}).
    """

    protocol = WallboxServerProtocol
    plain_protocol = PlainWallboxServerProtocol
    closed_connections = 0

    def __init__(self, hub, server_config, fast_path=True):
        """
        @param hub: the L{cfosproxy.core.hub.ChargePointHub}.
        @param server_config: the C{[server]} section
            (L{cfosproxy.config.ServerConfig}).
        @param fast_path: whether frames take the fast path
            (L{cfosproxy.ws.relaypath}), C{[server] fast_path}.
        """
        super().__init__(server="cfosproxy", protocols=[SUBPROTOCOL])
        self.hub = hub
        self.setProtocolOptions(
            **protocol_options(
                max_message_size=server_config.max_message_size,
                ping_interval=server_config.ping_interval,
                open_timeout=OPEN_HANDSHAKE_TIMEOUT,
            )
        )
        self.use_fast_path(fast_path)
