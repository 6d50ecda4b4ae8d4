"""The contracts between the core and what surrounds it.

The core (sessions, hub, gateway) and the site's load manager talk to their
collaborators only through these interfaces: the WebSocket adapters, the
store and the Modbus wallboxes implement them, fakes in the unit tests do
too, and the tests check every implementation with C{verifyObject}.
"""

from zope.interface import Attribute, Interface


class IPeerConnection(Interface):
    """One OCPP-J connection under an L{cfosproxy.core.session.OcppSession}:
    a wallbox's WebSocket, or the link to a backend."""

    peer = Attribute("the remote address (or URL) as text, for logs")

    def send_text(text):
        """Send one text frame to the peer."""

    def close(code, reason):
        """Close the connection with a WebSocket close code and reason."""

    def pause_reading():
        """Stop reading from the peer for now: too many of its CALLs wait
        for their answers (back-pressure: TCP's flow control then holds the
        peer back). The connection logs it."""

    def resume_reading():
        """Read from the peer again, as far as the session is concerned
        (the connection may hold reading back for reasons of its own)."""


class ICallTarget(Interface):
    """Where a gateway sends the backend's CALLs for a wallbox: an OCPP
    wallbox's session, or the OCPP charge point a Modbus wallbox is made to
    look like."""

    closed = Attribute("whether the wallbox is gone (a closed connection, a "
                       "Modbus device offline)")

    def send_call(call, timeout=None):
        """Send a L{cfosproxy.ocpp.frames.Call} to the wallbox.

        @return: a Deferred firing with its L{CallResult} or L{CallError}
            frame, or failing with L{cfosproxy.core.errors.CallTimeout} or
            L{cfosproxy.core.errors.PeerGone}.
        """

    def call(action, payload):
        """Send a CALL of the gateway's own and get the result payload.

        @return: a Deferred firing with the CALLRESULT payload, or failing
            with L{cfosproxy.ocpp.errors.OcppError} (a CALLERROR),
            L{cfosproxy.core.errors.CallTimeout} or
            L{cfosproxy.core.errors.PeerGone}.
        """


class IWallboxHandler(Interface):
    """Answers one wallbox's CALLs: its gateway, or the local central
    system. The hub attaches it to the wallbox's session when it opens."""

    def answer(call):
        """Answer a CALL from the wallbox.

        @return: the result payload, a whole L{CallResult} / L{CallError}
            frame to send as it is, or a Deferred of either; or raise
            L{cfosproxy.ocpp.errors.OcppError}.
        """

    def session_opened(session):
        """The wallbox's session (an L{ICallTarget}) is open."""

    def session_closed(session):
        """The wallbox's session is gone."""


class IBackendHandler(Interface):
    """What a backend link reports to (the gateway)."""

    def link_opened(link):
        """The WebSocket to the backend is open with subprotocol ocpp1.6.

        @param link: the link, an L{IPeerConnection}.
        """

    def link_closed(reason):
        """The open WebSocket closed; the link reconnects unless stopped.

        Not called for attempts that never opened.

        @param reason: a human-readable C{str}.
        """

    def text_received(text):
        """The backend sent the text frame C{text} (a C{str})."""


class IBackendLink(IPeerConnection):
    """The gateway's view of its link to a backend."""

    url = Attribute("the backend's URL, for logs and the status API")
    state = Attribute('"connecting", "open", "closing" or "stopped"')
    last_error = Attribute("why the last attempt failed, or None")

    def start():
        """Connect, and keep reconnecting until stopped."""

    def stop():
        """Close the link and stop reconnecting."""


class IHubObserver(Interface):
    """Told by the hub of wallboxes that connect and go, and of every CALL
    a wallbox made with the frame that answered it."""

    def connected(chargebox_id, peer, certificate_subject):
        """C{chargebox_id} is connected from C{peer}."""

    def disconnected(chargebox_id):
        """C{chargebox_id}'s connection is gone."""

    def exchange(chargebox_id, call, answer):
        """C{chargebox_id} sent C{call} and was answered with the frame
        C{answer}."""


class IOutboundQueue(Interface):
    """The durable queue of messages for backends, one queue per link.

    A write is on disk once L{durable} fires; the wallbox is answered only
    then."""

    def enqueue(link, action, text, now):
        """Append a message to C{link}'s queue.

        @return: the stored message (C{id}, C{action}, C{text},
            C{local_transaction_id}).
        """

    def durable():
        """A Deferred that fires once every write so far is on disk, or
        fails with L{cfosproxy.core.errors.StoreError}."""

    def when_durable(stored, failed):
        """Like L{durable}, with two plain callables: C{stored(None)} or
        C{failed(error)}."""

    def queued(link, limit=None):
        """C{link}'s queued messages, oldest first; at most C{limit}."""

    def first_queued(link):
        """The oldest message queued for C{link}, or None."""

    def queue_length(link):
        """How many messages are queued for C{link}."""

    def delivered(message_id):
        """Remove a message the backend has answered."""

    def attempt_failed(message_id, error):
        """Count a refused delivery; return the attempts so far."""

    def dead_letter(message_id, reason, now):
        """Take a message out of its queue for good, as a dead letter."""

    def dead_letters(link=None):
        """The dead letters, of one link or of all."""

    def replace_text(message_id, text):
        """Replace a queued message's frame text (a rewritten id)."""

    def set_local_transaction(message_id, local_id):
        """Note the local transaction id a queued StartTransaction was
        answered with."""

    def save_boot(link, text):
        """Keep the frame text of C{link}'s latest BootNotification."""

    def last_boot(link):
        """The frame text of C{link}'s latest BootNotification, or None."""


class ITransactionIds(Interface):
    """Which transaction ids a gateway gave out locally, and the backend's
    id for each once the backend has heard of it."""

    def next_transaction_id():
        """A transaction id never given out before."""

    def mark_local_transaction(link, local_id):
        """Note that C{local_id} was given out locally on C{link}."""

    def map_transaction(link, local_id, backend_id):
        """Keep the backend's id for a local one."""

    def backend_transaction_id(link, local_id):
        """The backend's id for C{local_id}, or None while unmapped."""

    def local_transaction_id(link, backend_id):
        """The local id mapped to C{backend_id}, or None."""


class IIdTagCache(Interface):
    """The backend's latest answers for id tags, for offline
    authorization."""

    def remember_id_tag(link, id_tag, id_tag_info, now):
        """Keep the backend's latest C{idTagInfo} for C{id_tag}."""

    def cached_id_tag(link, id_tag, now):
        """The cached C{idTagInfo} if it was Accepted and has not expired,
        else None."""


class ILimitActuator(Interface):
    """Sets the current limit of one kind of device."""

    def set_limit(device, amps):
        """Limit C{device} to C{amps}.

        @return: a Deferred that fires once the device accepted the limit, or
            fails with L{cfosproxy.core.errors.LimitRefused} (it said no) or
            another error (no answer, connection gone).
        """

    def lift(device):
        """Remove every limit the manager set in C{device}.

        @return: a Deferred that fires when done.
        """
