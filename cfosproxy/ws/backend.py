"""The link from cfosproxy to one external OCPP backend (a thin Autobahn adapter).

A L{BackendLink} keeps one WebSocket to the backend open: it connects,
reconnects with backoff and tells an L{cfosproxy.core.interfaces.IBackendHandler} (the gateway)
what happens. Everything that decides about frames lives in the handler.
"""

import base64
import random
from urllib.parse import quote, urlsplit

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import defer, error
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from zope.interface import implementer

from cfosproxy.core.interfaces import IBackendLink
from cfosproxy.core.logtext import printable
from cfosproxy.ws.internals import QuietClientService
from cfosproxy.ws.peer import PeerFactoryMixin, PeerProtocol, protocol_options
from cfosproxy.ws.relaypath import RelayPathMixin
from cfosproxy.ws.tls import HostVerificationError, client_tls_options

SUBPROTOCOL = "ocpp1.6"

# RFC 6455 §7.4.1
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002

STOPPED = "stopped"
CONNECTING = "connecting"
CONNECTED = "connected"
REFUSED = "refused"
FAILED = "failed"


def backend_url(gateway_url: str, client_id: str) -> str:
    """The URL of C{client_id} at the backend C{gateway_url}.

    A C{/} is put between them unless C{gateway_url} already ends with one;
    the client id is percent-encoded, so that it stays one path segment.
    """
    separator = "" if gateway_url.endswith("/") else "/"
    return gateway_url + separator + quote(client_id, safe="")


class BackendOutages:
    """Which backends have links that cannot connect, so that a backend that
    goes down is logged once, not once per wallbox: a site with 500
    wallboxes on one backend otherwise writes 500 warnings per outage.

    Links are grouped by their backend (the C{gateway_url}); a refusal
    (HTTP 4xx) concerns one client id and stays the link's own warning.

    @param clock: L{IReactorTime}, to say how long an outage lasted.
    """

    _log = Logger()

    def __init__(self, clock):
        self._clock = clock
        self._down = {}  # backend -> [set of link urls, since]

    def failed(self, backend, link_url, error):
        """A link to C{backend} could not connect (not a refusal)."""
        if backend not in self._down:
            self._down[backend] = [set(), self._clock.seconds()]
            self._log.warn(
                "Cannot connect to the OCPP backend {backend}: {error}; the links "
                "to it keep retrying, messages wait in the store",
                backend=backend,
                error=error,
            )
        self._down[backend][0].add(link_url)

    def connected(self, backend, link_url):
        """A link to C{backend} is open."""
        self._forget(backend, link_url, recovered=True)

    def stopped(self, backend, link_url):
        """A link to C{backend} stopped trying (its wallbox left)."""
        self._forget(backend, link_url, recovered=False)

    def _forget(self, backend, link_url, recovered):
        down = self._down.get(backend)
        if down is None:
            return
        links, since = down
        links.discard(link_url)
        if links:
            return
        del self._down[backend]
        if recovered:
            self._log.info(
                "The OCPP backend {backend} is reachable again after {seconds:.0f} s",
                backend=backend,
                seconds=self._clock.seconds() - since,
            )


@implementer(IBackendLink)
class BackendLink:
    """One WebSocket connection to an OCPP backend, kept up by reconnecting.

    @ivar state: C{"stopped"}, C{"connecting"}, C{"connected"}, C{"refused"}
        (the last attempt was refused with an HTTP status) or C{"failed"}
        (the last attempt failed otherwise).
    @ivar last_error: why the last attempt failed or the last link closed,
        human-readable, or L{None}; never holds the password.
    @ivar url: the backend URL, with the client id.
    @ivar client_id: the id this link presents to the backend.
    @ivar call_timeout: seconds the gateway waits for the backend's answer
        to a call (kept here with the link's other settings; the link itself
        does not use it).
    """

    _log = Logger()

    def __init__(
        self,
        *,
        url,
        client_id,
        password,
        ca,
        certificate,
        private_key,
        handler,
        reactor,
        call_timeout=30,
        open_timeout=10,
        ping_interval=60,
        min_delay=1.0,
        max_delay=60.0,
        refused_delay=300.0,
        max_message_size=65536,
        tls_options=None,
        outages=None,
        fast_path=True,
    ):
        """
        @param url: the full C{ws://} or C{wss://} URL (see L{backend_url}).
        @param password: Basic auth password, or empty for none.
        @param ca: PEM file of the CAs that may sign the backend's
            certificate; empty: the system's trusted roots.
        @param certificate: PEM client certificate (its chain may follow),
            or empty for none.
        @param private_key: PEM key of C{certificate}; empty: the key is in
            the C{certificate} file.
        @param tls_options: for C{wss://}, the client TLS options already
            made from C{ca}, C{certificate} and C{private_key} with
            L{cfosproxy.ws.tls.client_tls_options} (the daemon makes them when
            it reads its configuration); None: made here.
        @param outages: the L{BackendOutages} this link reports to, shared
            by the links of a daemon; None: one of its own.
        @param fast_path: whether frames take the fast path
            (L{cfosproxy.ws.relaypath}), C{[server] fast_path}.
        @raise TLSConfigError: a certificate, key or CA file cannot be used.
        """
        self.url = url
        self.client_id = client_id
        # The backend, for the outage log: the URL without the client id.
        self._backend = url.rsplit("/", 1)[0] + "/"
        self._outages = outages or BackendOutages(reactor)
        self.call_timeout = call_timeout
        self.state = STOPPED
        self.last_error = None
        self._handler = handler
        self._min_delay = min_delay
        self._max_delay = max_delay
        self._refused_delay = refused_delay
        self._failures = 0  # attempts in a row that did not open a WebSocket
        self._protocol = None  # the open WebSocket
        self._stopping = False
        self._close_waiters = []

        parts = urlsplit(url)
        host = parts.hostname
        secure = parts.scheme == "wss"
        port = parts.port or (443 if secure else 80)

        headers = {}
        if password:
            token = base64.b64encode(
                "{}:{}".format(client_id, password).encode("utf-8")
            ).decode("ascii")
            headers["Authorization"] = "Basic " + token
        factory = _BackendFactory(
            url=url,
            protocols=[SUBPROTOCOL],
            headers=headers,
            useragent="cfosproxy",
            reactor=reactor,
            fast_path=fast_path,
        )
        factory.link = self
        factory.tls_without_certificate = secure and not certificate
        factory.setProtocolOptions(
            **protocol_options(
                max_message_size=max_message_size,
                ping_interval=ping_interval,
                open_timeout=open_timeout,
            )
        )

        endpoint = HostnameEndpoint(reactor, host, port, timeout=open_timeout)
        if secure:
            if tls_options is None:
                tls_options = client_tls_options(
                    host, ca=ca, certificate=certificate, private_key=private_key
                )
            endpoint = wrapClientTLS(tls_options, endpoint)
        self._service = QuietClientService(
            _ReportingEndpoint(endpoint, self),
            factory,
            retryPolicy=self._retry_delay,
            clock=reactor,
        )

    # -- public API ----------------------------------------------------------

    @property
    def peer(self):
        """The backend's URL, for the backend leg's log lines."""
        return self.url

    @property
    def connected(self):
        """Whether the WebSocket is open and frames can be sent."""
        protocol = self._protocol
        return protocol is not None and protocol.state == protocol.STATE_OPEN

    def start(self):
        """Start connecting, and keep reconnecting until L{stop}. Idempotent.

        During a L{stop} (its close handshake) this calls the stop off: the
        link connects again once the closing connection is gone."""
        if self._service.running:
            if self._stopping:
                # A wallbox that dropped and came back at once: without this
                # the stop would finish and leave its link stopped while it
                # is connected.
                self._stopping = False
                self.state = CONNECTING
                self._log.info(
                    "Connecting to the OCPP backend {url} again", url=self.url
                )
            return
        self._stopping = False
        self.state = CONNECTING
        self._log.info("Connecting to the OCPP backend {url}", url=self.url)
        self._service.startService()

    def stop(self):
        """Close the WebSocket with 1001 ("going away") and stop reconnecting.

        @return: a L{Deferred} that fires when the connection is closed.
        """
        self._stopping = True
        protocol = self._protocol
        if protocol is None:
            closed = defer.succeed(None)
        else:
            closed = defer.Deferred()
            self._close_waiters.append(closed)
            protocol.close(CLOSE_GOING_AWAY, "going away")

        def stop_service(_):
            # Only now: ClientService would drop TCP without a close frame.
            # Unless start() called the stop off in the meantime.
            if self._stopping and self._service.running:
                return self._service.stopService()

        def stopped(_):
            if self._stopping:
                self.state = STOPPED
                self._outages.stopped(self._backend, self.url)

        return closed.addCallback(stop_service).addCallback(stopped)

    def send_text(self, text):
        """Send C{text} as one text frame.

        When the link is not open, nothing is sent. If it is closing (the
        wallbox left and came straight back, say), the handler hears at once
        that the link closed: what is sent now would wait a whole call
        timeout for an answer that cannot come.

        @return: C{False} when nothing was sent.
        """
        if not self.connected:
            if self._protocol is not None:
                self._call_handler("link_closed", "the link to the backend is closing")
            return False
        self._protocol.sendMessage(text.encode("utf-8"), isBinary=False)
        return True

    def pause_reading(self):
        """Stop reading from the backend for now (it sends CALLs faster than
        the wallbox answers them); a new connection reads again."""
        if self._protocol is not None:
            self._protocol.pause_reading()

    def resume_reading(self):
        """Read from the backend again (unless what waits to be sent to it
        still holds reading back)."""
        if self._protocol is not None:
            self._protocol.resume_reading()

    def close(self, code=1000, reason=""):
        """Drop the current connection (the link reconnects), e.g. after the
        backend broke the protocol.

        @param code: the WebSocket close code; 1000, 1001-1003, 1007-1011 or
            3000-4999.
        """
        if self._protocol is not None:
            self._protocol.close(code, reason)

    # -- from the protocol, the endpoint and ClientService -------------------

    def _opened(self, protocol):
        self._protocol = protocol
        self._failures = 0
        self.state = CONNECTED
        self.last_error = None
        self._log.info("Connected to the OCPP backend {url}", url=self.url)
        self._outages.connected(self._backend, self.url)
        self._call_handler("link_opened", self)

    def _closed(self, reason):
        self._protocol = None
        self.state = STOPPED if self._stopping else CONNECTING
        self.last_error = reason
        self._log.info(
            "The connection to the OCPP backend {url} closed: {reason}",
            url=self.url,
            reason=reason,
        )
        self._call_handler("link_closed", reason)
        waiters, self._close_waiters = self._close_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _attempt_failed(self, state, message):
        if self._stopping:
            # The attempt was cancelled by stop(); nothing went wrong.
            return
        self._failures += 1
        changed = state != self.state
        self.state = state
        self.last_error = message
        if not changed:
            # A backend down for a day must not fill the log: one line per
            # change of state.
            self._log.debug(
                "OCPP backend {url}: {error} (again)", url=self.url, error=message
            )
        elif state == REFUSED:
            self._log.warn(
                "The OCPP backend {url} refused the connection: {error}; "
                "trying again every {delay} seconds",
                url=self.url,
                error=message,
                delay=self._refused_delay,
            )
        else:
            # Logged once per backend, whatever the number of its links.
            self._log.debug(
                "Cannot connect to the OCPP backend {url}: {error}; retrying",
                url=self.url,
                error=message,
            )
            self._outages.failed(self._backend, self.url, message)

    def _text_received(self, text):
        self._call_handler("text_received", text)

    def _call_handler(self, name, *args):
        try:
            getattr(self._handler, name)(*args)
        except Exception:
            self._log.failure(
                "OCPP backend {url}: the handler's {name} failed",
                url=self.url,
                name=name,
            )

    def _retry_delay(self, attempt):
        # ClientService's own counter restarts whenever TCP connects, even
        # if the WebSocket handshake is refused each time; the link counts
        # attempts that did not open a WebSocket.
        if self.state == REFUSED:
            return self._refused_delay
        # Full jitter: many wallboxes reconnecting after a backend restart
        # must not all come back in the same second.
        cap = min(self._max_delay, self._min_delay * 2 ** min(self._failures + 1, 30))
        return random.uniform(self._min_delay, cap)


class _BackendConnection(PeerProtocol):
    """The WebSocket to the backend, whichever path its frames take (the
    two classes below add it and Autobahn's client protocol); reports to
    C{factory.link}."""

    _log = Logger()
    _opened = False
    _failure = None  # why this connection is not used, if it opened anyway
    _lost = None  # the Failure the transport was lost with

    def flow_name(self):
        return "OCPP backend {}".format(self.factory.link.url)

    def onOpen(self):
        if self.websocket_protocol_in_use != SUBPROTOCOL:
            self._failure = "the backend did not agree to subprotocol ocpp1.6"
            self.close(CLOSE_PROTOCOL_ERROR, "subprotocol ocpp1.6 required")
            return
        self._opened = True
        self.factory.link._opened(self)

    # -- messages (PeerProtocol) -------------------------------------------

    def open_for_messages(self):
        return self._opened

    def binary_message(self, payload):
        self._log.warn(
            "The OCPP backend {url} sent a binary frame ({size} bytes); "
            "OCPP-J uses text frames only, ignored",
            url=self.factory.link.url,
            size=len(payload),
        )

    def text_not_utf8(self):
        self._log.warn(
            "The OCPP backend {url} sent a text frame that is not UTF-8; "
            "closing with 1007",
            url=self.factory.link.url,
        )

    def text_message(self, text):
        self.factory.link._text_received(text)

    def connectionLost(self, reason):
        # Autobahn's onClose gets a string only; TLS failures need the
        # exception itself.
        self._lost = reason
        super().connectionLost(reason)

    def onClose(self, wasClean, code, reason):
        link = self.factory.link
        if self._opened:
            link._closed(self._describe_close(wasClean, code, reason))
        else:
            link._attempt_failed(*self._why_not_opened())

    def _describe_close(self, was_clean, code, reason):
        if not was_clean:
            # Autobahn's reason reads 'connection was closed uncleanly ("...")'.
            return printable(reason) if reason else "connection lost"
        if self.closedByMe:
            who, code = "cfosproxy", self.localCloseCode
            reason = (self.localCloseReason or b"").decode("utf-8", "replace")
        else:
            who = "the backend"
        if code is None:
            return "closed by {} without a status code".format(who)
        # The backend chooses its close reason: escaped, it can forge no
        # log line (it goes into the log and the status API).
        return "closed by {} with {}{}".format(
            who, code, " " + printable(reason) if reason else ""
        )

    def _why_not_opened(self):
        status_line = getattr(self, "http_status_line", None)
        if status_line:
            parts = status_line.split(None, 1)
            if len(parts) == 2 and parts[1][:3] != "101":
                # A 4xx is the backend saying no (a wrong password, an
                # unknown charge point): asking again soon changes nothing.
                # A 5xx is a backend that is restarting or down behind its
                # proxy: back off as after a failed connection.
                kind = REFUSED if parts[1][:1] == "4" else FAILED
                return kind, "HTTP " + printable(parts[1].strip())
        if self._failure is not None:
            return FAILED, self._failure
        lost = self._lost.value if self._lost is not None else None
        if isinstance(lost, (HostVerificationError, VerificationError, SSL.Error)):
            return FAILED, _describe_tls_error(lost, self.factory.host)
        if getattr(self, "wasOpenHandshakeTimeout", False):
            return FAILED, (
                "no answer to the WebSocket handshake within {} seconds".format(
                    self.openHandshakeTimeout
                )
            )
        if not status_line:
            message = (
                "the backend closed the connection before answering the "
                "WebSocket handshake"
            )
            if self.factory.tls_without_certificate:
                # With TLS 1.3 a missing client certificate shows up only
                # like this: the server checks it after the client is done.
                message += " (does it require a client certificate?)"
            return FAILED, message
        return FAILED, "no WebSocket: {}".format(
            self.wasNotCleanReason or "connection lost"
        )


class _BackendProtocol(_BackendConnection, RelayPathMixin, WebSocketClientProtocol):
    """The WebSocket to the backend on the fast path (the default)."""


class _PlainBackendProtocol(_BackendConnection, WebSocketClientProtocol):
    """The WebSocket to the backend with every frame through Autobahn alone
    (C{[server] fast_path = no}, or the fast path cannot be used)."""


class _BackendFactory(PeerFactoryMixin, WebSocketClientFactory):
    """Builds the protocol of a L{BackendLink}.

    @ivar link: the L{BackendLink} (on its own attribute: Autobahn owns
        C{self.log} and C{self.server}).
    @ivar tls_without_certificate: wss:// without a client certificate, for
        a hint in the error message when the backend hangs up.
    """

    protocol = _BackendProtocol
    plain_protocol = _PlainBackendProtocol
    link = None
    tls_without_certificate = False
    # ClientService starts and stops the factory on every attempt.
    noisy = False

    def __init__(self, *args, fast_path=True, **kwargs):
        """Autobahn's arguments, and C{fast_path}: whether frames take the
        fast path (L{cfosproxy.ws.relaypath})."""
        super().__init__(*args, **kwargs)
        self.use_fast_path(fast_path)


@implementer(IStreamClientEndpoint)
class _ReportingEndpoint:
    """An endpoint that tells the link why a connection attempt failed
    (ClientService only logs it)."""

    def __init__(self, endpoint, link):
        self._endpoint = endpoint
        self._link = link

    def connect(self, factory):
        def failed(failure):
            self._link._attempt_failed(FAILED, _describe_connect_error(failure.value))
            return failure

        return self._endpoint.connect(factory).addErrback(failed)

    def __repr__(self):
        return repr(self._endpoint)


def _describe_tls_error(exception, host):
    if isinstance(exception, HostVerificationError):
        return "certificate verify failed: {}".format(exception)
    if isinstance(exception, VerificationError):
        return (
            "certificate verify failed: hostname mismatch (the certificate "
            "is not for {})".format(host)
        )
    try:
        reasons = [entry[2] for entry in exception.args[0] if entry[2]]
    except (IndexError, TypeError):
        reasons = []
    return "TLS handshake failed: " + ("; ".join(reasons) or str(exception))


def _describe_connect_error(exception):
    if isinstance(exception, error.ConnectionRefusedError):
        return "connection refused"
    if isinstance(exception, error.DNSLookupError):
        return "host name not found"
    if isinstance(exception, (error.TimeoutError, error.TCPTimedOutError)):
        return "connection timed out"
    if isinstance(exception, error.NoRouteError):
        return "no route to host"
    return str(exception) or type(exception).__name__
