"""The contracts between the core and what surrounds it.

The core (sessions, hub, gateway) and the site's load manager talk to their
collaborators only through these interfaces: the WebSocket adapters, the
store and the Modbus wallboxes implement them, fakes in the unit tests do
too, and the tests check every implementation with C{verifyObject}.

The methods' annotations are the contracts' types: mypy (with mypy-zope)
takes an interface as the type of the objects that provide it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from cfosproxy.ocpp.frames import Call, CallError, CallResult

if TYPE_CHECKING:
    from cfosproxy.core.errors import StoreError

# A CALL's or a CALLRESULT's payload: an OCPP JSON object.
Payload = dict[str, Any]

# What answers a CALL: the result payload, or a whole CALLRESULT or CALLERROR
# frame to send as it is (a backend's answer relayed byte for byte).
Reply = Payload | CallResult | CallError

# What a handler gives for a CALL: a reply, or a Deferred of one. A Deferred
# is invariant in its result (a Deferred of payloads is no Deferred[Reply]),
# so the kinds handlers return are each named.
Answer = Reply | Deferred[Payload] | Deferred[CallResult | CallError] | Deferred[Reply]


class StoredMessage(Protocol):
    """A message in a backend link's queue, as the store keeps it
    (L{IOutboundQueue})."""

    @property
    def id(self) -> int: ...

    @property
    def action(self) -> str: ...

    @property
    def text(self) -> str:
        """The frame text to send."""

    @property
    def local_transaction_id(self) -> int | None:
        """On a StartTransaction answered locally: the id the wallbox
        got."""


class IPeerConnection(Interface):
    """One OCPP-J connection under an L{cfosproxy.core.session.OcppSession}:
    a wallbox's WebSocket, or the link to a backend."""

    peer: str = Attribute("the remote address (or URL) as text, for logs")

    def send_text(text: str) -> None:
        """Send one text frame to the peer."""

    def close(code: int, reason: str) -> None:
        """Close the connection with a WebSocket close code and reason."""

    def pause_reading() -> None:
        """Stop reading from the peer for now: too many of its CALLs wait
        for their answers (back-pressure: TCP's flow control then holds the
        peer back). The connection logs it."""

    def resume_reading() -> None:
        """Read from the peer again, as far as the session is concerned
        (the connection may hold reading back for reasons of its own)."""


class ICallTarget(Interface):
    """Where a gateway sends the backend's CALLs for a wallbox: an OCPP
    wallbox's session, or the OCPP charge point a Modbus wallbox is made to
    look like."""

    closed: bool = Attribute(
        "whether the wallbox is gone (a closed connection, a Modbus device offline)"
    )

    def send_call(call: Call, timeout: float | None = None) -> Deferred[CallResult | CallError]:
        """Send a L{cfosproxy.ocpp.frames.Call} to the wallbox.

        @return: a Deferred firing with its L{CallResult} or L{CallError}
            frame, or failing with L{cfosproxy.core.errors.CallTimeout} or
            L{cfosproxy.core.errors.PeerGone}.
        """


class IWallboxHandler(Interface):
    """Answers one wallbox's CALLs: its gateway, or the local central
    system. The hub attaches it to the wallbox's session when it opens."""

    def answer(call: Call) -> Answer:
        """Answer a CALL from the wallbox.

        @return: the result payload, a whole L{CallResult} / L{CallError}
            frame to send as it is, or a Deferred of either; or raise
            L{cfosproxy.ocpp.errors.OcppError}.
        """

    def session_opened(session: ICallTarget) -> None:
        """The wallbox's session (an L{ICallTarget}) is open."""

    def session_closed(session: ICallTarget) -> None:
        """The wallbox's session is gone."""


class IBackendHandler(Interface):
    """What a backend link reports to (the gateway)."""

    def link_opened(link: IBackendLink) -> None:
        """The WebSocket to the backend is open with subprotocol ocpp1.6.

        @param link: the link, an L{IBackendLink} (and so an
            L{IPeerConnection}).
        """

    def link_closed(reason: str) -> None:
        """The open WebSocket closed; the link reconnects unless stopped.

        Not called for attempts that never opened.

        @param reason: a human-readable C{str}.
        """

    def text_received(text: str) -> None:
        """The backend sent the text frame C{text} (a C{str})."""


class IBackendLink(IPeerConnection):
    """The gateway's view of its link to a backend."""

    url: str = Attribute("the backend's URL, for logs and the status API")
    state: str = Attribute('"stopped", "connecting", "connected", "refused" or "failed"')
    last_error: str | None = Attribute("why the last attempt failed, or None")

    def start() -> None:
        """Connect, and keep reconnecting until stopped."""

    def stop() -> Deferred[None]:
        """Close the link and stop reconnecting.

        @return: a Deferred that fires once the connection is closed.
        """


class IHubObserver(Interface):
    """Told by the hub of wallboxes that connect and go, and of every CALL
    a wallbox made with the frame that answered it."""

    def connected(chargebox_id: str, peer: str, certificate_subject: str | None) -> None:
        """C{chargebox_id} is connected from C{peer}."""

    def disconnected(chargebox_id: str) -> None:
        """C{chargebox_id}'s connection is gone."""

    def exchange(chargebox_id: str, call: Call, answer: CallResult | CallError) -> None:
        """C{chargebox_id} sent C{call} and was answered with the frame
        C{answer}."""


class IOutboundQueue(Interface):
    """The durable queue of messages for backends, one queue per link.

    A write is on disk once L{durable} fires; the wallbox is answered only
    then."""

    def enqueue(link: str, action: str, text: str, now: float) -> StoredMessage:
        """Append a message to C{link}'s queue.

        @return: the stored message (C{id}, C{action}, C{text},
            C{local_transaction_id}).
        """

    def durable() -> Deferred[None]:
        """A Deferred that fires once every write so far is on disk, or
        fails with L{cfosproxy.core.errors.StoreError}."""

    def when_durable(
        stored: Callable[[None], object], failed: Callable[[StoreError], object]
    ) -> None:
        """Like L{durable}, with two plain callables: C{stored(None)} or
        C{failed(error)}."""

    def queued(link: str, limit: int | None = None) -> Sequence[StoredMessage]:
        """C{link}'s queued messages, oldest first; at most C{limit}."""

    def first_queued(link: str) -> StoredMessage | None:
        """The oldest message queued for C{link}, or None."""

    def queue_length(link: str) -> int:
        """How many messages are queued for C{link}."""

    def delivered(message_id: int) -> None:
        """Remove a message the backend has answered."""

    def attempt_failed(message_id: int, error: str) -> int:
        """Count a refused delivery; return the attempts so far."""

    def dead_letter(message_id: int, reason: str, now: float) -> object:
        """Take a message out of its queue for good, as a dead letter."""

    def dead_letters(link: str | None = None) -> Sequence[object]:
        """The dead letters, of one link or of all."""

    def replace_text(message_id: int, text: str) -> None:
        """Replace a queued message's frame text (a rewritten id)."""

    def set_local_transaction(message_id: int, local_id: int) -> None:
        """Note the local transaction id a queued StartTransaction was
        answered with."""

    def save_boot(link: str, text: str) -> None:
        """Keep the frame text of C{link}'s latest BootNotification."""

    def last_boot(link: str) -> str | None:
        """The frame text of C{link}'s latest BootNotification, or None."""


class ITransactionIds(Interface):
    """Which transaction ids a gateway gave out locally, and the backend's
    id for each once the backend has heard of it."""

    def next_transaction_id() -> int:
        """A transaction id never given out before."""

    def mark_local_transaction(link: str, local_id: int) -> None:
        """Note that C{local_id} was given out locally on C{link}."""

    def map_transaction(link: str, local_id: int, backend_id: int) -> None:
        """Keep the backend's id for a local one."""

    def backend_transaction_id(link: str, local_id: int) -> int | None:
        """The backend's id for C{local_id}, or None while unmapped."""

    def local_transaction_id(link: str, backend_id: int) -> int | None:
        """The local id mapped to C{backend_id}, or None."""


class IIdTagCache(Interface):
    """The backend's latest answers for id tags, for offline
    authorization."""

    def remember_id_tag(link: str, id_tag: str, id_tag_info: Payload, now: float) -> None:
        """Keep the backend's latest C{idTagInfo} for C{id_tag}."""

    def cached_id_tag(link: str, id_tag: str, now: float) -> Payload | None:
        """The cached C{idTagInfo} if it was Accepted and has not expired,
        else None."""


# What L{ILimitActuator.set_limit} fires with when the device, rather than
# the limit, holds no limit of the manager's at all: nothing could be sent
# now (a wallbox that takes limits only for a running transaction, while
# none runs). Anything else it fires with means the limit is held.
NO_LIMIT_HELD = "no limit held"


class ILimitActuator(Interface):
    """Sets the current limit of one kind of device.

    The device is a L{cfosproxy.core.devices.Device}. Its type is not named
    here (C{Any}, which an implementation may narrow to C{Device}): the
    devices module provides L{IHubObserver} and so imports this one, and
    the imports go one way. What the Deferreds fire with is the
    actuator's own (C{Any} too): the manager reads only whether
    C{set_limit}'s is L{NO_LIMIT_HELD}.
    """

    def prepare(device: Any) -> Deferred[Any]:
        """Learn how C{device} takes its limits and what state it is in,
        before the first limit goes to it after it connected or booted.

        @return: a Deferred that fires when done (also when the device told
            nothing: defaults are used then), with True when the device's
            state is on its way (the manager waits a moment for it).
        """

    def set_limit(device: Any, amps: float) -> Deferred[Any]:
        """Limit C{device} to C{amps}.

        @return: a Deferred that fires once the device accepted the limit
            (or with L{NO_LIMIT_HELD}), or fails with
            L{cfosproxy.core.errors.LimitRefused} (it said no) or another
            error (no answer, connection gone).
        """

    def lift(device: Any) -> Deferred[Any]:
        """Remove every limit the manager set in C{device}.

        @return: a Deferred that fires when done.
        """
