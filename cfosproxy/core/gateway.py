"""One wallbox leg and one backend leg: the OCPP gateway, free of I/O.

A L{Gateway} stands between a wallbox and an external backend (billing). It
owns both legs: the wallbox's session (or the OCPP charge point a Modbus
wallbox is made to look like), attached when it opens, and the backend
leg's session over an L{IBackendLink}, whose handler it is. The life of a
queued message is L{cfosproxy.core.replayqueue}'s, transaction ids are
L{cfosproxy.core.transactionids}'s, offline answers to id tags are
L{cfosproxy.core.offlineauth}'s, the boot toward the backend is
L{cfosproxy.core.backendboot}'s. What it does, per message:

- Transaction messages from the wallbox (StartTransaction, StopTransaction,
  MeterValues, DataTransfer) go into the store first (on disk before the
  wallbox hears anything). When the backend is up and nothing older waits,
  the message is delivered at once and the backend's answer reaches the
  wallbox byte for byte. Otherwise cfosproxy answers the wallbox itself and
  the queue is delivered later, in order, one message at a time, after a
  fresh BootNotification (OCPP 1.6 §3.7: transaction messages keep their
  order; new ones wait behind the queue).
- Other messages from the wallbox pass through byte for byte while the link
  is open; when it is not, or the backend stays silent, cfosproxy answers.
- A StartTransaction answered locally carries a local transaction id. Once
  the queued StartTransaction reached the backend, its id replaces the local
  one in every later queued and live message of that transaction, and in a
  RemoteStopTransaction coming back.
- CALLs from the backend reach the wallbox through its one call queue, and
  the wallbox's answers go back byte for byte.
- A queued message the backend keeps refusing (CALLERROR) is tried
  C{MAX_ATTEMPTS} times, then kept aside as a dead letter and reported.
- Once the backend has answered a queued message, that message is never
  sent again: what the answer means (the message gone from the queue, a
  StartTransaction's transaction id) is kept in memory until it is on disk,
  and written again while the disk refuses it. Meanwhile the queue waits.
- The wallbox's BootNotification waits a few seconds (C{boot_wait}) for a
  backend link that is still connecting, so that the first boot reaches the
  backend and the wallbox gets the backend's answer. A boot the backend
  does not answer is sent again with growing delays and timeouts. Once the
  backend accepted a boot, the gateway tells it what it missed and
  delivers the queue.
- Each connector's latest StatusNotification that only cfosproxy heard (the
  backend was away) is sent to the backend once it accepted the boot.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, cast

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from cfosproxy.core.backendboot import BOOT_WAIT, BackendBoot, is_boot_error
from cfosproxy.core.errors import CallTimeout, PeerGone, StoreError
from cfosproxy.core.interfaces import IBackendHandler, IWallboxHandler
from cfosproxy.core.offlineauth import OfflineAuthorization
from cfosproxy.core.replayqueue import Hold, MessageState, ReplayQueue
from cfosproxy.core.session import OcppSession
from cfosproxy.core.transactionids import LOCAL_TRANSACTION_IDS, TransactionIds
from cfosproxy.ocpp.errors import ErrorCode, OcppError
from cfosproxy.ocpp.frames import Call, CallError, CallResult, parse_frame

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime
    from twisted.python.failure import Failure

    from cfosproxy.core.backendboot import BootState
    from cfosproxy.core.backendprofiles import BackendProfiles
    from cfosproxy.core.interfaces import (
        Answer,
        IBackendLink,
        ICallTarget,
        IIdTagCache,
        IOutboundQueue,
        ITransactionIds,
        Payload,
        Reply,
        StoredMessage,
    )
    from cfosproxy.core.localcs import LocalCentralSystem

__all__ = ["Gateway", "LOCAL_TRANSACTION_IDS", "TRANSACTION_ACTIONS"]

# The messages OCPP 1.6 §3.7 asks a charge point to deliver reliably, in
# order; DataTransfer joins them because payment terminals bill with it.
TRANSACTION_ACTIONS = frozenset(
    {"StartTransaction", "StopTransaction", "MeterValues", "DataTransfer"}
)

# A queued message refused this many times by the backend is set aside.
MAX_ATTEMPTS = 5

# After a refusal or a silent backend, the queue is tried again this late.
RETRY_DELAY = 30.0

# After a write that the store refused (a full disk), the answers the
# backend gave are written again this late, then twice as late each time.
MIN_RECORD_RETRY = 1.0
MAX_RECORD_RETRY = 30.0


class CountMessages(Protocol):
    """Counts the messages on a backend link, for the metrics (the
    gateway's C{count}); called without C{outcome} for a CALL from the
    backend, which a C{Callable} type cannot say."""

    def __call__(self, action: str, direction: str, outcome: str = "") -> object: ...


class EmulatedChargePoint(Protocol):
    """The OCPP charge point a Modbus wallbox is made to look like
    (L{cfosproxy.modbus.chargepoint.ModbusChargePoint}, an L{ICallTarget}),
    as the gateway drives it.

    A protocol, not an import: the core imports no adapter."""

    @property
    def closed(self) -> bool: ...

    def send_call(
        self, call: Call, timeout: float | None = None
    ) -> defer.Deferred[CallResult | CallError]: ...

    def backend_booted(self) -> None:
        """The backend accepted a boot: report the status to it."""


@implementer(IWallboxHandler, IBackendHandler)
class Gateway:
    """Relays one wallbox (ChargeBox-ID) to one backend.

    @param chargebox_id: the wallbox's ChargeBox-ID.
    @param link_id: the client id presented to the backend; also the name of
        this gateway's queue in the store.
    @param store: a callable returning the store (L{IOutboundQueue},
        L{ITransactionIds}, L{IIdTagCache}); the daemon's opens when it
        starts.
    @param local: the L{cfosproxy.core.localcs.LocalCentralSystem}, for answers
        given while the backend is away.
    @param clock: L{IReactorTime}.
    @param call_timeout: seconds a CALL to the backend may stay unanswered.
    @param offline_authorize: C{"cache"}, C{"accept"} or C{"reject"}.
    @param link: C{link(handler)} makes the L{IBackendLink} to the backend
        that reports to C{handler} (this gateway).
    @param profiles: the L{BackendProfiles} that handle a backend's charging
        profiles, or None to pass them to the wallbox.
    @param count: C{count(action, direction, outcome)} for each CALL to the
        backend answered (C{"to_backend"}, C{"result"} or C{"error"}) and
        each CALL from it (C{"from_backend"}), or None.
    @param connector_ids: the wallbox's configured connectors, asked for
        their status (TriggerMessage) when a backend was away.
    @param boot_wait: seconds the wallbox's BootNotification waits for a
        link that is still connecting; 0: answered locally at once.
    """

    _log = Logger()

    def __init__(
        self,
        chargebox_id: str,
        link_id: str,
        store: Callable[[], IOutboundQueue],
        local: LocalCentralSystem,
        clock: IReactorTime,
        call_timeout: float,
        offline_authorize: str,
        link: Callable[[IBackendHandler], IBackendLink],
        profiles: BackendProfiles | None = None,
        count: CountMessages | None = None,
        connector_ids: Iterable[int] = (1,),
        boot_wait: float = BOOT_WAIT,
    ) -> None:
        self.chargebox_id = chargebox_id
        self.link_id = link_id
        self._store = store
        self._local = local
        self._clock = clock
        self._call_timeout = call_timeout
        self._profiles = profiles
        # count(action, direction, outcome): messages on the backend link,
        # for the metrics.
        self._count: CountMessages = count or (lambda action, direction, outcome="": None)
        self._connector_ids = tuple(connector_ids)
        # The store is the link's queue, its transaction ids and its id
        # tags at once (see the class): no type says that an object
        # provides three interfaces.
        self._ids = TransactionIds(
            cast("Callable[[], ITransactionIds]", store), link_id, chargebox_id
        )
        self._offline = OfflineAuthorization(
            cast("Callable[[], IIdTagCache]", store), link_id, clock, offline_authorize
        )
        self._queue = ReplayQueue(clock)
        # The wallbox leg: its session (an ICallTarget), and what the
        # backend is told after it accepted a boot.
        self._wallbox: ICallTarget | EmulatedChargePoint | None = None
        self._after_backend_boot: Callable[[bool], object] | None = None
        # The backend leg: the session over the link while it is open.
        self.backend: OcppSession | None = None
        self._boot = BackendBoot(
            chargebox_id, store, link_id, clock, call_timeout, boot_wait,
            forward=self._forward,
            answer_locally=self._answer_locally,
            report_error=self._boot_trouble,
            ready=self._backend_ready,
        )
        self.last_error: str | None = None
        # Why the store refused the last write, until one succeeds again.
        self.store_error: str | None = None
        # The wallbox's CALLs the backend may still answer: {message id:
        # (deferred of the wallbox's answer, call)}.
        self._waiters: dict[int, tuple[defer.Deferred[Reply], Call]] = {}
        # Each connector's latest StatusNotification text, and whether the
        # backend has it: {connector id: (text, forwarded)}.
        self._statuses: dict[int, tuple[str, bool]] = {}
        self._record_failures = 0
        self.link = link(self)

    @property
    def store(self) -> IOutboundQueue:
        return self._store()

    # -- status --------------------------------------------------------------

    @property
    def booted(self) -> bool:
        """Whether the backend may take the queue: it accepted a boot since
        the link opened (or there was no boot to send)."""
        return self._boot.booted

    @property
    def boot_state(self) -> BootState:
        """The L{cfosproxy.core.backendboot.BootState} of the last boot the
        backend got."""
        return self._boot.state

    def status(self) -> dict[str, object]:
        """The gateway as the status API shows it."""
        return {
            "url": self.link.url,
            "link": self.link.state,
            "booted": self.booted,
            "boot": str(self.boot_state),
            "queue_length": self.store.queue_length(self.link_id),
            "dead_letters": len(self.store.dead_letters(self.link_id)),
            "last_error": self.store_error or self.last_error or self.link.last_error,
        }

    # -- the wallbox leg -------------------------------------------------------

    def session_opened(self, session: ICallTarget) -> None:
        """An OCPP wallbox's session is open: the backend link is wanted."""
        # The hub opens an OcppSession (L{_ask_for_status} sends it CALLs
        # of the gateway's own); the interface names what every wallbox
        # handler gets.
        ocpp_session = cast(OcppSession, session)
        self._attach(
            session, functools.partial(self._tell_backend_what_it_missed, ocpp_session)
        )

    def session_closed(self, session: ICallTarget) -> None:
        """The wallbox's session is gone: the link stays only while
        messages wait."""
        self._detach()

    def chargepoint_online(self, chargepoint: EmulatedChargePoint) -> None:
        """The OCPP charge point of a Modbus wallbox is up (an
        L{ICallTarget}); after a backend's boot it reports its status
        itself."""
        self._attach(chargepoint, lambda again: chargepoint.backend_booted())

    def chargepoint_offline(self, chargepoint: EmulatedChargePoint) -> None:
        """The Modbus wallbox stopped answering."""
        self._detach()

    def _attach(
        self,
        wallbox: ICallTarget | EmulatedChargePoint,
        after_backend_boot: Callable[[bool], object],
    ) -> None:
        self._wallbox = wallbox
        self._after_backend_boot = after_backend_boot
        self.link.start()

    def _detach(self) -> None:
        self._wallbox = None
        self._after_backend_boot = None
        self._stop_link_if_idle()

    def answer(self, call: Call) -> Answer:
        """Answer a CALL from the wallbox.

        @return: a frame, a payload, or a Deferred of either.
        """
        if call.action in TRANSACTION_ACTIONS:
            return self._transaction_message(call)
        if call.action == "BootNotification":
            try:
                self.store.save_boot(self.link_id, call.to_text())
            except StoreError as e:
                # Only the boot after a backend outage needs it; the boot
                # itself goes on.
                self._store_failed(e)
            if (
                self.backend is None
                and self._boot.waits_for_link
                and self.link.state == "connecting"
            ):
                return self._boot.hold(call)
        elif call.action == "StatusNotification":
            self._status_heard(call)
        if self.backend is None:
            return self._answer_locally(call)
        return self._forward(call)

    def _forward(self, call: Call) -> defer.Deferred[Reply]:
        """Send a wallbox CALL to the backend; its answer, or a local one if
        the backend stays silent."""
        # Called only with the backend leg open: by L{answer}, and by the
        # boot when the link opened.
        assert self.backend is not None
        # The callbacks below turn the backend's frame into the wallbox's
        # answer, a local payload if the backend is silent: a Deferred of a
        # Reply, which the type the Deferred was made with cannot follow.
        # Any, not a cast(): this runs for every message.
        d: defer.Deferred[Any] = self.backend.send_call(call)
        d.addCallbacks(
            self._backend_answered, self._backend_silent,
            callbackArgs=(call,), errbackArgs=(call,),
        )
        return d

    def _backend_answered(self, answer: CallResult | CallError, call: Call) -> Reply:
        """The backend answered a wallbox CALL: learn from it, relay it."""
        self._count_answer(call, answer)
        if call.action == "BootNotification":
            self._boot.answered(answer)
        elif isinstance(answer, CallResult):
            if call.action in ("Authorize", "StartTransaction"):
                self._remember_id_tag(call, answer)
            elif call.action == "StatusNotification":
                self._status_forwarded(call)
        return answer

    def _backend_silent(self, failure: Failure, call: Call) -> Reply:
        failure.trap(CallTimeout, PeerGone)
        self.last_error = "no answer to {}".format(call.action)
        if call.action == "BootNotification" and failure.check(CallTimeout):
            self._boot.unanswered(self._call_timeout)
        return self._answer_locally(call)

    # -- the connectors' status ----------------------------------------------

    def _status_heard(self, call: Call) -> None:
        connector_id = call.payload.get("connectorId")
        if isinstance(connector_id, int) and not isinstance(connector_id, bool):
            self._statuses[connector_id] = (call.to_text(), False)

    def _status_forwarded(self, call: Call) -> None:
        # Whatever the wallbox sent: only an int one was kept
        # (L{_status_heard}), any other finds nothing.
        connector_id: Any = call.payload.get("connectorId")
        text = call.to_text()
        if self._statuses.get(connector_id, (None,))[0] == text:
            self._statuses[connector_id] = (text, True)

    def _forward_unheard_statuses(self) -> None:
        """Send the backend each connector's latest StatusNotification that
        only cfosproxy answered (the link was not up), as the wallbox sent
        it."""
        for connector_id in sorted(self._statuses):
            text, forwarded = self._statuses[connector_id]
            if not forwarded:
                call = parse_frame(text)
                # The text of a StatusNotification the wallbox sent.
                assert isinstance(call, Call)
                # Called once the backend accepted a boot over the open
                # link, before anything else runs.
                assert self.backend is not None
                d = self.backend.send_call(call)
                d.addCallbacks(
                    self._backend_answered,
                    lambda f: f.trap(CallTimeout, PeerGone),
                    callbackArgs=(call,),
                )

    # -- transaction messages ------------------------------------------------

    def _transaction_message(self, call: Call) -> Answer:
        call = self._ids.to_backend(call)
        message: StoredMessage | None
        try:
            message = self.store.enqueue(
                self.link_id, call.action, call.to_text(), self._clock.seconds()
            )
        except StoreError:
            message = None
            d = defer.fail()
        else:
            # Nothing goes on, to the backend or to the wallbox, before the
            # message is on disk (the store commits its writes in groups).
            self._queue.storing(message.id)
            d = self.store.durable()
            d.addCallback(lambda _: self._stored(call, message))
        d.addErrback(self._not_stored, call, message)
        return d

    def _not_stored(
        self, failure: Failure, call: Call, message: StoredMessage | None
    ) -> NoReturn:
        """The store could not keep the message (a full disk, a broken
        file): the wallbox gets an error and keeps the message itself, to
        send it again (OCPP 1.6 §3.7 lets it retry)."""
        failure.trap(StoreError)
        if message is not None and self._queue.state(message.id) is MessageState.STORING:
            self._queue.not_stored(message.id)
            # Messages behind it may wait for the queue.
            self._pump()
        self._store_failed(failure.value)
        self._log.error(
            "{cbid}: {action} could not be stored, answered with an error: "
            "{error}",
            cbid=self.chargebox_id,
            action=call.action,
            error=failure.value,
        )
        raise OcppError(
            ErrorCode.InternalError, "cfosproxy cannot store the message now"
        )

    def _stored(self, call: Call, message: StoredMessage) -> Reply | defer.Deferred[Reply]:
        """The message is on disk: deliver it now if nothing older waits,
        else answer the wallbox locally and deliver it later."""
        self._queue.stored(message.id)
        self._store_works()
        if self._can_deliver():
            first = self._next_queued()
            if first is not None and first.id == message.id:
                waiter: defer.Deferred[Reply] = defer.Deferred()
                self._waiters[message.id] = (waiter, call)
                self._deliver(message, call)
                return waiter
        answer = self._answer_queued_locally(call, message)
        # An older message the queue left to its own commit may be free now.
        self._pump()
        return answer

    def _answer_queued_locally(self, call: Call, message: StoredMessage) -> Payload:
        """Answer a queued message locally. Should that fail (no transaction
        id can be kept on a full disk), the wallbox gets an error and sends
        the message again: the queued copy must then never reach the
        backend, or it would start the transaction twice there."""
        try:
            return self._answer_locally(call, message)
        except (OcppError, StoreError) as e:
            self._log.error(
                "{cbid}: {action} cannot be answered now ({error}); the "
                "wallbox will send it again, the queued copy is withdrawn",
                cbid=self.chargebox_id,
                action=call.action,
                error=e,
            )
            self._queue.withdrawn(message.id, functools.partial(self.store.delivered, message.id))
            self._record(message.id)
            if isinstance(e, OcppError):
                raise
            raise OcppError(
                ErrorCode.InternalError, "cfosproxy cannot store the transaction now"
            ) from e

    def _answer_locally(self, call: Call, message: StoredMessage | None = None) -> Payload:
        """Answer as the central system, while the backend is away."""
        if call.action == "Authorize":
            return {"idTagInfo": self._offline.id_tag_info(call.payload.get("idTag"))}
        payload = self._local.answer(call)
        if call.action == "StartTransaction":
            local_id = self._ids.start_locally(payload, message)
            payload["idTagInfo"] = self._offline.id_tag_info(call.payload.get("idTag"))
            self._log.info(
                "{cbid}: backend unreachable; transaction started with local "
                "id {local_id}, queued for the backend",
                cbid=self.chargebox_id,
                local_id=local_id,
            )
        return payload

    def _remember_id_tag(self, call: Call, answer: CallResult) -> None:
        try:
            self._offline.remember(call, answer)
        except StoreError as e:
            # Only offline authorization misses it; the answer goes on.
            self._store_failed(e)

    # -- the store's health --------------------------------------------------

    def _store_failed(self, error: object) -> None:
        if self.store_error is None:
            self._log.error(
                "{cbid}: the store refused a write: {error}",
                cbid=self.chargebox_id,
                error=error,
            )
        self.store_error = str(error)

    def _store_works(self) -> None:
        if self.store_error is not None and not self._queue.held(Hold.RECORD):
            self._log.info(
                "{cbid}: the store takes writes again", cbid=self.chargebox_id
            )
            self.store_error = None

    # -- delivering the queue ------------------------------------------------

    def _can_deliver(self) -> bool:
        """Whether a message can go to the backend now: a booted backend,
        and a queue that may send (see L{ReplayQueue.may_send})."""
        return self.backend is not None and self._boot.booted and self._queue.may_send()

    def _next_queued(self) -> StoredMessage | None:
        """The oldest queued message the backend has not answered yet."""
        answered = self._queue.answered_count
        if not answered:
            return self.store.first_queued(self.link_id)
        for message in self.store.queued(self.link_id, limit=answered + 1):
            if not self._queue.skipped(message.id):
                return message
        return None

    def _pump(self) -> None:
        """Deliver the oldest queued message, if the backend can take it."""
        if not self._can_deliver():
            return
        message = self._next_queued()
        if message is None:
            self._stop_link_if_idle()
            return
        if self._queue.state(message.id) is MessageState.STORING:
            # Its wallbox waits to hear that it is on disk: L{_stored}
            # delivers it then, with the wallbox waiting for the backend's
            # answer. Sent now, it could reach the backend before its commit
            # (and, should that fail, twice), or be answered before the
            # wallbox is told and so be answered locally as well.
            return
        call = parse_frame(message.text)
        # The queue holds the wallbox's transaction messages: CALLs.
        assert isinstance(call, Call)
        self._deliver(message, call)

    def _deliver(self, message: StoredMessage, call: Call) -> None:
        """Send the queued C{message} (as C{call}) to the backend, with the
        backend's transaction id if it got one since it was queued."""
        rewritten = self._ids.to_backend(call)
        if rewritten is not call:
            try:
                self.store.replace_text(message.id, rewritten.to_text())
            except StoreError as e:
                # The id map is on disk: the rewrite is made again from it
                # whenever the message is sent.
                self._store_failed(e)
            call = rewritten
        self._queue.sent(message.id)
        # Called only when L{_can_deliver} found the backend leg open.
        assert self.backend is not None
        d = self.backend.send_call(call)
        d.addCallbacks(
            self._delivered,
            self._not_delivered,
            callbackArgs=(message, call),
            errbackArgs=(message, call),
        )
        d.addErrback(
            lambda f: self._log.failure("{cbid}: delivering the queue", f, cbid=self.chargebox_id)
        )

    def _count_answer(self, call: Call, answer: CallResult | CallError) -> None:
        outcome = "result" if isinstance(answer, CallResult) else "error"
        self._count(call.action, "to_backend", outcome)

    def _delivered(
        self, answer: CallResult | CallError, message: StoredMessage, call: Call
    ) -> None:
        self._count_answer(call, answer)
        waiter = self._waiters.pop(message.id, None)
        if isinstance(answer, CallError) and waiter is None:
            self._refused(answer, message, call)
            return
        # The wallbox waiting for this very message gets the backend's
        # answer (a refusal too: it decides itself whether to send the
        # message again).
        if isinstance(answer, CallResult):
            self.last_error = None
            if call.action == "StartTransaction":
                self._remember_id_tag(call, answer)
        self._queue.answered(message.id, functools.partial(self._record_answer, message, answer))
        self._record(message.id)
        if waiter is not None:
            waiter[0].callback(answer)

    def _record_answer(self, message: StoredMessage, answer: CallResult | CallError) -> None:
        """Write what the backend's C{answer} to C{message} means: the
        message leaves the queue, and a StartTransaction answered locally
        gets its backend id mapped."""
        self._ids.learn(message, answer)
        self.store.delivered(message.id)

    def _record(self, message_id: int) -> None:
        """The backend answered queued message C{message_id} (or it must
        never reach it): keep that on disk. The message is not sent again,
        whether or not the write succeeds; until it does, it is tried
        again and the queue waits."""
        if not self._queue.held(Hold.RECORD):
            self._write_records([message_id])

    def _write_records(self, message_ids: list[int]) -> None:
        # Plain callables, not a Deferred: this runs for every message
        # the backend answers.
        try:
            for message_id in message_ids:
                self._queue.write(message_id)
        except StoreError as e:
            self._not_recorded(e)
            return
        self.store.when_durable(
            lambda _: self._recorded(message_ids), self._not_recorded
        )

    def _recorded(self, message_ids: list[int]) -> None:
        for message_id in message_ids:
            self._queue.recorded(message_id)
        if not self._queue.held(Hold.RECORD):
            self._record_failures = 0
            self._store_works()
        self._pump()

    def _not_recorded(self, error: StoreError) -> None:
        self._store_failed(error)
        if self._queue.held(Hold.RECORD):
            return
        delay = min(MIN_RECORD_RETRY * 2**self._record_failures, MAX_RECORD_RETRY)
        self._record_failures += 1
        self._log.warn(
            "{cbid}: the backend's answers to {count} message(s) cannot be "
            "written ({error}); kept in memory, written again in {delay:g} s, "
            "the queue waits",
            cbid=self.chargebox_id,
            count=self._queue.answered_count,
            error=error,
            delay=delay,
        )
        self._queue.hold(Hold.RECORD, delay, self._retry_records)

    def _retry_records(self) -> None:
        unrecorded = self._queue.unrecorded()
        if unrecorded:
            self._write_records(unrecorded)

    def _refused(self, answer: CallError, message: StoredMessage, call: Call) -> None:
        """The backend refused a queued message nobody waits for."""
        reason = "{} {}".format(answer.error_code, answer.error_description).strip()
        self.last_error = "{} refused: {}".format(call.action, reason)
        try:
            attempts = self.store.attempt_failed(message.id, reason)
            if attempts >= MAX_ATTEMPTS:
                self.store.dead_letter(message.id, reason, self._clock.seconds())
        except StoreError as e:
            # Sending a refused message again does no harm at the backend.
            self._queue.refused(message.id)
            self._store_failed(e)
            self._retry_later()
            return
        if attempts >= MAX_ATTEMPTS:
            self._queue.dead_lettered(message.id)
            self._log.error(
                "{cbid}: the backend refused {action} {attempts} times ({reason}); "
                "kept aside as a dead letter",
                cbid=self.chargebox_id,
                action=call.action,
                attempts=attempts,
                reason=reason,
            )
            self._pump()
            return
        self._queue.refused(message.id)
        self._log.warn(
            "{cbid}: the backend refused {action} ({reason}); trying again in "
            "{delay:.0f}s",
            cbid=self.chargebox_id,
            action=call.action,
            reason=reason,
            delay=RETRY_DELAY,
        )
        self._retry_later()

    def _not_delivered(self, failure: Failure, message: StoredMessage, call: Call) -> None:
        failure.trap(CallTimeout, PeerGone)
        self._queue.unanswered(message.id)
        self.last_error = "no answer to {}".format(call.action)
        waiter = self._waiters.pop(message.id, None)
        if waiter is not None:
            try:
                answer = self._answer_queued_locally(waiter[1], message)
            except OcppError as e:
                waiter[0].callback(e.to_call_error(waiter[1].unique_id))
            else:
                waiter[0].callback(answer)
        if failure.check(CallTimeout):
            self._retry_later()

    def _retry_later(self) -> None:
        self._queue.hold(Hold.RETRY, RETRY_DELAY, self._pump)

    # -- the backend leg -------------------------------------------------------

    def link_opened(self, link: IBackendLink) -> None:
        """The backend link is open: boot, then deliver the queue."""
        self.backend = OcppSession(
            self.link_id, link, self.backend_call, (), self._clock, self._call_timeout
        )
        self._log.info("{cbid}: backend link open to {url}", cbid=self.chargebox_id, url=link.url)
        self._boot.link_opened(self.backend)

    def link_closed(self, reason: str) -> None:
        """The backend link closed; messages wait in the store."""
        backend, self.backend = self.backend, None
        self._boot.link_closed()
        self.last_error = reason
        self._queue.cancel(Hold.RETRY)
        if backend is not None:
            backend.connection_lost()

    def text_received(self, text: str) -> None:
        """One frame from the backend."""
        if self.backend is not None:
            self.backend.text_received(text)

    # -- the boot toward the backend ------------------------------------------

    def _backend_ready(self, newly_accepted: bool, again: bool) -> None:
        """The backend may take the queue (L{BackendBoot}'s C{ready}). Once
        it has just accepted a boot, it is first told what it missed (the
        wallbox's own boot: C{again} is false)."""
        wallbox = self._wallbox
        if newly_accepted and wallbox is not None and not wallbox.closed:
            # L{_attach} sets it with the wallbox, L{_detach} clears both.
            assert self._after_backend_boot is not None
            self._after_backend_boot(again)
        self._pump()

    def _boot_trouble(self, text: str | None) -> None:
        """L{BackendBoot}'s trouble, for the status API. C{None}: a boot was
        accepted; a boot's trouble shown goes, another error stays."""
        if text is not None:
            self.last_error = text
        elif is_boot_error(self.last_error):
            self.last_error = None

    def _tell_backend_what_it_missed(self, session: OcppSession, again: bool) -> None:
        """A backend that was away knows nothing of the time between: the
        statuses only cfosproxy heard go to it, and (C{again}: it was away
        or restarted) the wallbox is asked for its status."""
        self._forward_unheard_statuses()
        if again:
            self._ask_for_status(session)

    def _ask_for_status(self, session: OcppSession) -> None:
        """Ask an OCPP wallbox to send its StatusNotifications again (OCPP
        1.6 TriggerMessage, one per configured connector), for a backend that
        was away or restarted and knows nothing of its connectors since. A
        wallbox that cannot do this is left alone: the backend learns at its
        next change."""
        for connector_id in self._connector_ids:
            d = session.call(
                "TriggerMessage",
                {"requestedMessage": "StatusNotification", "connectorId": connector_id},
            )
            d.addCallbacks(
                self._trigger_answered,
                self._trigger_failed,
                callbackArgs=(connector_id,),
                errbackArgs=(connector_id,),
            )

    def _trigger_answered(self, payload: Payload, connector_id: int) -> None:
        if payload.get("status") != "Accepted":
            self._log.info(
                "{cbid}: TriggerMessage StatusNotification for connector "
                "{connector} answered {status}",
                cbid=self.chargebox_id,
                connector=connector_id,
                status=payload.get("status"),
            )

    def _trigger_failed(self, failure: Failure, connector_id: int) -> None:
        self._log.info(
            "{cbid}: TriggerMessage StatusNotification for connector "
            "{connector}: {error}",
            cbid=self.chargebox_id,
            connector=connector_id,
            error=failure.getErrorMessage(),
        )

    def backend_call(self, call: Call) -> Answer:
        """A CALL from the backend, for the wallbox (the backend leg's
        answers)."""
        self._count(call.action, "from_backend")
        if call.action in _CARRY_TRANSACTION_IDS:
            # A transaction started while the backend was away has the
            # local id in the wallbox (and in the registry).
            call = self._ids.to_local(call)
        if self._profiles is not None and call.action in self._profiles.ACTIONS:
            return self._profiles.handle(self, call)
        d = self.pass_to_wallbox(call)
        d.addErrback(_unanswered_by_wallbox)
        return d

    def pass_to_wallbox(self, call: Call) -> defer.Deferred[CallResult | CallError]:
        """Send a backend's CALL to the wallbox as it is.

        @return: a Deferred of the wallbox's answer frame.
        @raise OcppError: the wallbox is not connected.
        """
        wallbox = self._wallbox
        if wallbox is None or wallbox.closed:
            raise OcppError(ErrorCode.GenericError, "the charge point is not connected")
        return wallbox.send_call(call)

    def _stop_link_if_idle(self) -> None:
        if self._wallbox is None and self.store.queue_length(self.link_id) == 0:
            self.link.stop()

    def stop(self) -> None:
        """Cancel timers (the daemon stops). A boot held for the link stays
        unanswered: its wallbox is being disconnected."""
        self._boot.stop()
        self._queue.cancel(Hold.RETRY)
        self._queue.cancel(Hold.RECORD)


# Backend CALLs that may name a transaction by the backend's id.
_CARRY_TRANSACTION_IDS = frozenset({"RemoteStopTransaction", "SetChargingProfile"})


def _unanswered_by_wallbox(failure: Failure) -> NoReturn:
    failure.trap(CallTimeout, PeerGone)
    raise OcppError(ErrorCode.GenericError, "the charge point did not answer")
