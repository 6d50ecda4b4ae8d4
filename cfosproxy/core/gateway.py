"""One wallbox leg and one backend leg: the OCPP gateway, free of I/O.

A L{Gateway} stands between a wallbox's L{OcppSession} and an external
backend (billing), reached through a link (L{cfosproxy.ws.backend.BackendLink}
in the daemon). What it does, per message:

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
  does not answer is sent again with growing delays and timeouts.
- Each connector's latest StatusNotification that only cfosproxy heard (the
  backend was away) is sent to the backend once it accepted the boot.
"""

import functools

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from cfosproxy.core.errors import StoreError
from cfosproxy.ocpp.errors import ErrorCode, OcppError
from cfosproxy.ocpp.frames import Call, CallError, CallResult, parse_frame
from cfosproxy.ocpp.ids import new_unique_id
from cfosproxy.core.errors import CallTimeout, PeerGone
from cfosproxy.core.interfaces import IPeerConnection
from cfosproxy.core.session import OcppSession

# The messages OCPP 1.6 §3.7 asks a charge point to deliver reliably, in
# order; DataTransfer joins them because payment terminals bill with it.
TRANSACTION_ACTIONS = frozenset(
    {"StartTransaction", "StopTransaction", "MeterValues", "DataTransfer"}
)

# A queued message refused this many times by the backend is set aside.
MAX_ATTEMPTS = 5

# Transaction ids that a gateway hands out while its backend is away start
# here, far above the ids a backend counts up from 1: a local id must never
# equal the backend's id of a transaction still running on the same wallbox
# (another connector's), or that one's messages would be rewritten once the
# local id is mapped. Still within a signed 32-bit integer, as backends and
# wallboxes often keep them.
LOCAL_TRANSACTION_IDS = 1_000_000_000

# After a refusal or a silent backend, the queue is tried again this late.
RETRY_DELAY = 30.0

# A backend that answers a BootNotification with Pending or Rejected is asked
# again after the interval it gives, but not sooner than this. A boot that is
# not answered at all is sent again after this, then after twice as long each
# time, up to MAX_BOOT_RETRY; and each time the backend gets twice as long to
# answer it, up to MAX_BOOT_TIMEOUT (a backend that always takes 12 s would
# otherwise never be booted with call_timeout = 10).
MIN_BOOT_RETRY = 10.0
MAX_BOOT_RETRY = 300.0
MAX_BOOT_TIMEOUT = 120.0

# How long a wallbox's BootNotification waits for a backend link that is
# still connecting before cfosproxy answers it itself ([server] boot_wait).
BOOT_WAIT = 5.0

# What the backend made of the last boot the gateway sent (status API).
BOOT_NOT_SENT = "not sent"
BOOT_SENT = "sent"
BOOT_ACCEPTED = "accepted"
BOOT_PENDING = "pending"
BOOT_REJECTED = "rejected"
BOOT_REFUSED = "refused"
BOOT_UNANSWERED = "no answer"

# After a write that the store refused (a full disk), the answers the
# backend gave are written again this late, then twice as late each time.
MIN_RECORD_RETRY = 1.0
MAX_RECORD_RETRY = 30.0


@implementer(IPeerConnection)
class _LinkConnection:
    """An L{IPeerConnection} over a backend link, for the backend leg's
    L{OcppSession}."""

    def __init__(self, link, gone):
        self._link = link
        self._gone = gone
        self.peer = link.url

    def send_text(self, text):
        if self._link.send_text(text) is False:
            # The link is closing (the wallbox left and came straight back,
            # say): what is sent now would wait a whole call timeout for an
            # answer that cannot come. The backend leg ends here; the
            # wallbox is answered locally until the link opens again.
            self._gone("the link to the backend is closing")

    def close(self, code, reason):
        self._link.close()

    def pause_reading(self):
        self._link.pause_reading()

    def resume_reading(self):
        self._link.resume_reading()


class _FromBackend:
    """The backend leg's responder: the backend's CALLs go to the gateway."""

    def __init__(self, gateway):
        self._gateway = gateway

    def answer(self, call):
        return self._gateway.backend_call(call)


class Gateway:
    """Relays one wallbox (ChargeBox-ID) to one backend.

    @param chargebox_id: the wallbox's ChargeBox-ID.
    @param link_id: the client id presented to the backend; also the name of
        this gateway's queue in the store.
    @param store: the L{cfosproxy.store.database.Store} (or a callable returning it,
        for a store that opens when the daemon starts).
    @param local: the L{cfosproxy.core.localcs.LocalCentralSystem}, for answers
        given while the backend is away.
    @param clock: L{IReactorTime}.
    @param call_timeout: seconds a CALL to the backend may stay unanswered.
    @param offline_authorize: C{"cache"}, C{"accept"} or C{"reject"}.
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
        chargebox_id,
        link_id,
        store,
        local,
        clock,
        call_timeout,
        offline_authorize,
        profiles=None,
        count=None,
        connector_ids=(1,),
        boot_wait=BOOT_WAIT,
    ):
        self.chargebox_id = chargebox_id
        self.link_id = link_id
        self._store = store if callable(store) else (lambda: store)
        self._local = local
        self._clock = clock
        self._call_timeout = call_timeout
        self._offline_authorize = offline_authorize
        self._profiles = profiles
        # count(action, direction, outcome): messages on the backend link,
        # for the metrics.
        self._count = count or (lambda action, direction, outcome="": None)
        self._connector_ids = tuple(connector_ids)
        self._boot_wait = boot_wait
        self.link = None
        self.wallbox = None
        self.backend = None
        self.booted = False
        self.boot_state = BOOT_NOT_SENT
        self.last_error = None
        # Why the store refused the last write, until one succeeds again.
        self.store_error = None
        self._in_flight = None
        self._waiters = {}
        self._timer = None
        self._boot_timer = None
        self._boot_failures = 0  # boots in a row the backend did not answer
        # The wallbox's BootNotification while it waits for the link:
        # (call, deferred of its answer, timer).
        self._held_boot = None
        # Each connector's latest StatusNotification text, and whether the
        # backend has it: {connector id: (text, forwarded)}.
        self._statuses = {}
        # Queued messages whose wallbox waits for their commit to be told
        # (L{_stored}); the queue leaves them to it.
        self._unstored = set()
        # Queued messages the backend has answered (or that must never
        # reach it), whose removal from the queue is not on disk yet:
        # {message id: the write that records it}. They are never sent
        # again; while a write of theirs waits to be retried, the queue
        # waits too.
        self._unrecorded = {}
        self._record_timer = None
        self._record_failures = 0

    @property
    def store(self):
        return self._store()

    # -- status --------------------------------------------------------------

    def status(self):
        """The gateway as the status API shows it."""
        return {
            "url": self.link.url if self.link is not None else None,
            "link": self.link.state if self.link is not None else "none",
            "booted": self.booted,
            "boot": self.boot_state,
            "queue_length": self.store.queue_length(self.link_id),
            "dead_letters": len(self.store.dead_letters(self.link_id)),
            "last_error": self.store_error
            or self.last_error
            or (self.link.last_error if self.link is not None else None),
        }

    # -- the wallbox leg -------------------------------------------------------

    def wallbox_connected(self, session):
        """The wallbox is connected: the backend link is wanted."""
        self.wallbox = session
        if self.link is not None:
            self.link.start()

    def wallbox_disconnected(self):
        """The wallbox is gone: the link stays only while messages wait."""
        self.wallbox = None
        self._stop_link_if_idle()

    def answer(self, call):
        """Answer a CALL from the wallbox (the wallbox session's responder).

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
            if self.backend is None and self._link_connecting():
                return self._hold_boot(call)
        elif call.action == "StatusNotification":
            self._status_heard(call)
        if self.backend is None:
            return self._answer_locally(call)
        return self._forward(call)

    def _forward(self, call):
        """Send a wallbox CALL to the backend; its answer, or a local one if
        the backend stays silent."""
        d = self.backend.send_call(call)
        d.addCallbacks(
            self._backend_answered, self._backend_silent,
            callbackArgs=(call,), errbackArgs=(call,),
        )
        return d

    def _backend_answered(self, answer, call):
        """The backend answered a wallbox CALL: learn from it, relay it."""
        self._count_answer(call, answer)
        if call.action == "BootNotification":
            self._boot_answered(answer)
        elif isinstance(answer, CallResult):
            if call.action in ("Authorize", "StartTransaction"):
                self._remember_id_tag(call, answer)
            elif call.action == "StatusNotification":
                self._status_forwarded(call)
        return answer

    def _backend_silent(self, failure, call):
        failure.trap(CallTimeout, PeerGone)
        self.last_error = "no answer to {}".format(call.action)
        if call.action == "BootNotification" and failure.check(CallTimeout):
            self._boot_unanswered(self._call_timeout)
        return self._answer_locally(call)

    def _link_connecting(self):
        return (
            self._boot_wait > 0
            and self.link is not None
            and self.link.state == "connecting"
        )

    def _hold_boot(self, call):
        """The wallbox boots while its link is still connecting: its boot
        waits a little for the link, so that the backend, not cfosproxy,
        answers it (with the backend's own heartbeat interval)."""
        if self._held_boot is not None:
            # The wallbox gave up on the earlier one and sent it again.
            self._release_held_boot()
        d = defer.Deferred()
        timer = self._clock.callLater(self._boot_wait, self._release_held_boot)
        self._held_boot = (call, d, timer)
        return d

    def _release_held_boot(self):
        """The link did not open in time: answer the held boot locally."""
        call, d, timer = self._held_boot
        self._held_boot = None
        if timer.active():
            timer.cancel()
        else:
            self._log.info(
                "{cbid}: the backend link did not open within {wait:g} s; "
                "BootNotification answered by cfosproxy",
                cbid=self.chargebox_id,
                wait=self._boot_wait,
            )
        d.callback(self._answer_locally(call))

    # -- the connectors' status ----------------------------------------------

    def _status_heard(self, call):
        connector_id = call.payload.get("connectorId")
        if isinstance(connector_id, int) and not isinstance(connector_id, bool):
            self._statuses[connector_id] = (call.to_text(), False)

    def _status_forwarded(self, call):
        connector_id = call.payload.get("connectorId")
        text = call.to_text()
        if self._statuses.get(connector_id, (None,))[0] == text:
            self._statuses[connector_id] = (text, True)

    def _forward_unheard_statuses(self):
        """Send the backend each connector's latest StatusNotification that
        only cfosproxy answered (the link was not up), as the wallbox sent
        it."""
        for connector_id in sorted(self._statuses):
            text, forwarded = self._statuses[connector_id]
            if not forwarded:
                call = parse_frame(text)
                d = self.backend.send_call(call)
                d.addCallbacks(
                    self._backend_answered,
                    lambda f: f.trap(CallTimeout, PeerGone),
                    callbackArgs=(call,),
                )

    # -- transaction messages ------------------------------------------------

    def _transaction_message(self, call):
        call = self._to_backend_ids(call)
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
            self._unstored.add(message.id)
            d = self.store.durable()
            d.addCallback(lambda _: self._stored(call, message))
        d.addErrback(self._not_stored, call, message)
        return d

    def _not_stored(self, failure, call, message):
        """The store could not keep the message (a full disk, a broken
        file): the wallbox gets an error and keeps the message itself, to
        send it again (OCPP 1.6 §3.7 lets it retry)."""
        failure.trap(StoreError)
        if message is not None:
            self._unstored.discard(message.id)
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

    def _stored(self, call, message):
        """The message is on disk: deliver it now if nothing older waits,
        else answer the wallbox locally and deliver it later."""
        self._unstored.discard(message.id)
        self._store_works()
        if self._can_deliver():
            first = self._next_queued()
            if first is not None and first.id == message.id:
                waiter = defer.Deferred()
                self._waiters[message.id] = (waiter, call)
                self._deliver(message, call)
                return waiter
        answer = self._answer_queued_locally(call, message)
        # An older message the queue left to its own commit may be free now.
        self._pump()
        return answer

    def _answer_queued_locally(self, call, message):
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
            self._record(message.id, functools.partial(self.store.delivered, message.id))
            if isinstance(e, OcppError):
                raise
            raise OcppError(
                ErrorCode.InternalError, "cfosproxy cannot store the transaction now"
            ) from e

    def _answer_locally(self, call, message=None):
        """Answer as the central system, while the backend is away."""
        if call.action == "Authorize":
            return {"idTagInfo": self._offline_id_tag_info(call.payload.get("idTag"))}
        payload = self._local.answer(call)
        if call.action == "StartTransaction":
            local_id = payload["transactionId"] = (
                LOCAL_TRANSACTION_IDS + payload["transactionId"]
            )
            self.store.mark_local_transaction(self.link_id, local_id)
            if message is not None:
                self.store.set_local_transaction(message.id, local_id)
            payload["idTagInfo"] = self._offline_id_tag_info(call.payload.get("idTag"))
            self._log.info(
                "{cbid}: backend unreachable; transaction started with local "
                "id {local_id}, queued for the backend",
                cbid=self.chargebox_id,
                local_id=local_id,
            )
        return payload

    def _offline_id_tag_info(self, id_tag):
        if self._offline_authorize == "accept":
            return {"status": "Accepted"}
        if self._offline_authorize == "cache" and id_tag:
            cached = self.store.cached_id_tag(self.link_id, id_tag, self._clock.seconds())
            if cached is not None:
                return cached
        return {"status": "Invalid"}

    def _remember_id_tag(self, call, answer):
        info = answer.payload.get("idTagInfo")
        id_tag = call.payload.get("idTag")
        if isinstance(info, dict) and id_tag:
            try:
                self.store.remember_id_tag(
                    self.link_id, id_tag, info, self._clock.seconds()
                )
            except StoreError as e:
                # Only offline authorization misses it; the answer goes on.
                self._store_failed(e)

    # -- the store's health --------------------------------------------------

    def _store_failed(self, error):
        if self.store_error is None:
            self._log.error(
                "{cbid}: the store refused a write: {error}",
                cbid=self.chargebox_id,
                error=error,
            )
        self.store_error = str(error)

    def _store_works(self):
        if self.store_error is not None and self._record_timer is None:
            self._log.info(
                "{cbid}: the store takes writes again", cbid=self.chargebox_id
            )
            self.store_error = None

    # -- transaction ids -----------------------------------------------------

    def _to_backend_ids(self, call):
        """The call with a mapped local transaction id replaced by the
        backend's; the call itself (byte for byte) when nothing maps."""
        local_id = call.payload.get("transactionId")
        if not isinstance(local_id, int) or isinstance(local_id, bool):
            return call
        backend_id = self.store.backend_transaction_id(self.link_id, local_id)
        if backend_id is None or backend_id == local_id:
            return call
        payload = dict(call.payload, transactionId=backend_id)
        return Call(call.unique_id, call.action, payload)

    # -- delivering the queue ------------------------------------------------

    def _can_deliver(self):
        """Whether a message can go to the backend now (not while waiting to
        try again after a refusal or a silence, nor while the answer to an
        earlier one waits to be written again)."""
        return (
            self.backend is not None
            and self.booted
            and self._in_flight is None
            and self._timer is None
            and self._record_timer is None
        )

    def _next_queued(self):
        """The oldest queued message the backend has not answered yet."""
        if not self._unrecorded:
            return self.store.first_queued(self.link_id)
        for message in self.store.queued(self.link_id, limit=len(self._unrecorded) + 1):
            if message.id not in self._unrecorded:
                return message
        return None

    def _pump(self):
        """Deliver the oldest queued message, if the backend can take it."""
        if not self._can_deliver():
            return
        message = self._next_queued()
        if message is None:
            self._stop_link_if_idle()
            return
        if message.id in self._unstored:
            # Its wallbox waits to hear that it is on disk: L{_stored}
            # delivers it then, with the wallbox waiting for the backend's
            # answer. Sent now, it could reach the backend before its commit
            # (and, should that fail, twice), or be answered before the
            # wallbox is told and so be answered locally as well.
            return
        self._deliver(message, parse_frame(message.text))

    def _deliver(self, message, call):
        """Send the queued C{message} (as C{call}) to the backend, with the
        backend's transaction id if it got one since it was queued."""
        rewritten = self._to_backend_ids(call)
        if rewritten is not call:
            try:
                self.store.replace_text(message.id, rewritten.to_text())
            except StoreError as e:
                # The id map is on disk: the rewrite is made again from it
                # whenever the message is sent.
                self._store_failed(e)
            call = rewritten
        self._in_flight = message.id
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

    def _count_answer(self, call, answer):
        outcome = "result" if isinstance(answer, CallResult) else "error"
        self._count(call.action, "to_backend", outcome)

    def _delivered(self, answer, message, call):
        self._in_flight = None
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
        self._record(message.id, functools.partial(self._record_answer, message, answer))
        if waiter is not None:
            waiter[0].callback(answer)

    def _record_answer(self, message, answer):
        """Write what the backend's C{answer} to C{message} means: the
        message leaves the queue, and a StartTransaction answered locally
        gets its backend id mapped."""
        local_id = message.local_transaction_id
        backend_id = (
            answer.payload.get("transactionId")
            if isinstance(answer, CallResult) and message.action == "StartTransaction"
            else None
        )
        if local_id is not None and isinstance(backend_id, int):
            self.store.map_transaction(self.link_id, local_id, backend_id)
            self._log.info(
                "{cbid}: local transaction {local_id} is {backend_id} at "
                "the backend",
                cbid=self.chargebox_id,
                local_id=local_id,
                backend_id=backend_id,
            )
        self.store.delivered(message.id)

    def _record(self, message_id, write):
        """The backend answered queued message C{message_id} (or it must
        never reach it): C{write} keeps that on disk. The message is not
        sent again, whether or not the write succeeds; until it does, it is
        tried again and the queue waits."""
        self._unrecorded[message_id] = write
        if self._record_timer is None:
            self._write_records([message_id])

    def _write_records(self, message_ids):
        # Plain callables, not a Deferred: this runs for every message
        # the backend answers.
        try:
            for message_id in message_ids:
                self._unrecorded[message_id]()
        except StoreError as e:
            self._not_recorded(e)
            return
        self.store.when_durable(
            lambda _: self._recorded(message_ids), self._not_recorded
        )

    def _recorded(self, message_ids):
        for message_id in message_ids:
            self._unrecorded.pop(message_id, None)
        if self._record_timer is None:
            self._record_failures = 0
            self._store_works()
        self._pump()

    def _not_recorded(self, error):
        self._store_failed(error)
        if self._record_timer is not None:
            return
        delay = min(MIN_RECORD_RETRY * 2**self._record_failures, MAX_RECORD_RETRY)
        self._record_failures += 1
        self._log.warn(
            "{cbid}: the backend's answers to {count} message(s) cannot be "
            "written ({error}); kept in memory, written again in {delay:g} s, "
            "the queue waits",
            cbid=self.chargebox_id,
            count=len(self._unrecorded),
            error=error,
            delay=delay,
        )
        self._record_timer = self._clock.callLater(delay, self._retry_records)

    def _retry_records(self):
        self._record_timer = None
        if self._unrecorded:
            self._write_records(list(self._unrecorded))

    def _refused(self, answer, message, call):
        """The backend refused a queued message nobody waits for."""
        reason = "{} {}".format(answer.error_code, answer.error_description).strip()
        self.last_error = "{} refused: {}".format(call.action, reason)
        try:
            attempts = self.store.attempt_failed(message.id, reason)
            if attempts >= MAX_ATTEMPTS:
                self.store.dead_letter(message.id, reason, self._clock.seconds())
        except StoreError as e:
            # Sending a refused message again does no harm at the backend.
            self._store_failed(e)
            self._retry_later()
            return
        if attempts >= MAX_ATTEMPTS:
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
        self._log.warn(
            "{cbid}: the backend refused {action} ({reason}); trying again in "
            "{delay:.0f}s",
            cbid=self.chargebox_id,
            action=call.action,
            reason=reason,
            delay=RETRY_DELAY,
        )
        self._retry_later()

    def _not_delivered(self, failure, message, call):
        failure.trap(CallTimeout, PeerGone)
        self._in_flight = None
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

    def _retry_later(self):
        if self._timer is None:
            self._timer = self._clock.callLater(RETRY_DELAY, self._retry)

    def _retry(self):
        self._timer = None
        self._pump()

    # -- the backend leg -------------------------------------------------------

    def link_opened(self, link):
        """The backend link is open: boot, then deliver the queue."""
        self.backend = OcppSession(
            self.link_id,
            _LinkConnection(link, self.link_closed),
            _FromBackend(self),
            (),
            self._clock,
            self._call_timeout,
        )
        self.booted = False
        self._boot_failures = 0
        self._log.info("{cbid}: backend link open to {url}", cbid=self.chargebox_id, url=link.url)
        if self._held_boot is not None:
            # The wallbox's own boot waited for this link: it goes first,
            # and its answer is the backend's.
            call, d, timer = self._held_boot
            self._held_boot = None
            timer.cancel()
            self.boot_state = BOOT_SENT
            self._forward(call).chainDeferred(d)
            return
        self._boot()

    def link_closed(self, reason):
        """The backend link closed; messages wait in the store."""
        backend, self.backend = self.backend, None
        self.booted = False
        self.boot_state = BOOT_NOT_SENT
        self.last_error = reason
        self._cancel_timers()
        if backend is not None:
            backend.connection_lost()

    def text_received(self, text):
        """One frame from the backend."""
        if self.backend is not None:
            self.backend.text_received(text)

    def _boot(self):
        """Send the wallbox's last BootNotification again, so that the
        backend knows the charge point before the queue arrives."""
        if self.backend is None:
            return
        text = self.store.last_boot(self.link_id)
        if text is None:
            # The wallbox never booted through us (it reconnected without a
            # BootNotification): there is nothing to boot with, and the queue
            # must not wait for a boot that may never come. The wallbox's own
            # BootNotification is forwarded whenever it comes.
            self.booted = True
            self._pump()
            return
        boot = parse_frame(text)
        self.boot_state = BOOT_SENT
        # Each boot the backend left unanswered gives the next one longer.
        timeout = min(
            self._call_timeout * 2**self._boot_failures,
            max(self._call_timeout, MAX_BOOT_TIMEOUT),
        )
        d = self.backend.send_call(
            Call(new_unique_id(), boot.action, boot.payload), timeout=timeout
        )
        d.addCallbacks(
            self._boot_answered,
            self._boot_not_answered,
            callbackKeywords={"again": True},
            errbackArgs=(timeout,),
        )

    def _boot_not_answered(self, failure, timeout):
        failure.trap(CallTimeout, PeerGone)
        if failure.check(CallTimeout):
            self._boot_unanswered(timeout)

    def _boot_unanswered(self, timeout):
        """The backend did not answer a BootNotification: send the boot
        again later, for the queue waits for it."""
        if self.booted or self.backend is None or self._boot_timer is not None:
            return
        delay = min(MIN_BOOT_RETRY * 2**self._boot_failures, MAX_BOOT_RETRY)
        self._boot_failures += 1
        self.boot_state = BOOT_UNANSWERED
        self.last_error = (
            "no answer to BootNotification within {:g} s; sent again in {:g} s".format(
                timeout, delay
            )
        )
        self._log.warn(
            "{cbid}: the backend did not answer the BootNotification within "
            "{timeout:g} s; sending it again in {delay:g} s ({count} queued "
            "message(s) wait for it)",
            cbid=self.chargebox_id,
            timeout=timeout,
            delay=delay,
            count=self.store.queue_length(self.link_id),
        )
        self._boot_timer = self._clock.callLater(delay, self._boot_again)

    def _boot_answered(self, answer, again=False):
        """The backend answered a BootNotification: the wallbox's own, or
        (C{again}) the one the gateway sent for it when the link opened."""
        if not isinstance(answer, CallResult):
            self.boot_state = BOOT_REFUSED
            self._boot_later(
                MIN_BOOT_RETRY,
                "BootNotification refused: {} {}".format(
                    answer.error_code, answer.error_description
                ).strip(),
            )
            return answer
        status = answer.payload.get("status")
        if status == "Accepted":
            self.boot_state = BOOT_ACCEPTED
            self._boot_failures = 0
            if self._boot_timer is not None and self._boot_timer.active():
                self._boot_timer.cancel()
            self._boot_timer = None
            if not self.booted:
                self.booted = True
                if (self.last_error or "").startswith(("no answer to BootNotification", "BootNotification")):
                    self.last_error = None
                self._log.info(
                    "{cbid}: backend accepted the boot; {count} queued message(s)",
                    cbid=self.chargebox_id,
                    count=self.store.queue_length(self.link_id),
                )
                self._backend_booted(again)
            self._pump()
        else:
            self.boot_state = BOOT_REJECTED if status == "Rejected" else BOOT_PENDING
            self._boot_later(
                max(MIN_BOOT_RETRY, _whole_seconds(answer.payload.get("interval"))),
                "BootNotification {}".format(status),
            )
        return answer

    def _boot_later(self, delay, why):
        self.last_error = why
        if self._boot_timer is None and self.backend is not None:
            self._boot_timer = self._clock.callLater(delay, self._boot_again)

    def _backend_booted(self, again):
        """The backend accepted the charge point: tell it what it missed."""
        wallbox = self.wallbox
        if wallbox is None or wallbox.closed:
            return
        # A backend that was away knows nothing of the time between: the
        # charge point tells it its status again.
        backend_booted = getattr(wallbox, "backend_booted", None)
        if backend_booted is not None:
            backend_booted()
            return
        self._forward_unheard_statuses()
        if again:
            self._ask_for_status()

    def _ask_for_status(self):
        """Ask an OCPP wallbox to send its StatusNotifications again (OCPP
        1.6 TriggerMessage, one per configured connector), for a backend that
        was away or restarted and knows nothing of its connectors since. A
        wallbox that cannot do this is left alone: the backend learns at its
        next change."""
        for connector_id in self._connector_ids:
            d = self.wallbox.call(
                "TriggerMessage",
                {"requestedMessage": "StatusNotification", "connectorId": connector_id},
            )
            d.addCallbacks(
                self._trigger_answered,
                self._trigger_failed,
                callbackArgs=(connector_id,),
                errbackArgs=(connector_id,),
            )

    def _trigger_answered(self, payload, connector_id):
        if payload.get("status") != "Accepted":
            self._log.info(
                "{cbid}: TriggerMessage StatusNotification for connector "
                "{connector} answered {status}",
                cbid=self.chargebox_id,
                connector=connector_id,
                status=payload.get("status"),
            )

    def _trigger_failed(self, failure, connector_id):
        self._log.info(
            "{cbid}: TriggerMessage StatusNotification for connector "
            "{connector}: {error}",
            cbid=self.chargebox_id,
            connector=connector_id,
            error=failure.getErrorMessage(),
        )

    def _boot_again(self):
        self._boot_timer = None
        self._boot()

    def backend_call(self, call):
        """A CALL from the backend, for the wallbox."""
        self._count(call.action, "from_backend")
        if self._profiles is not None and call.action in self._profiles.ACTIONS:
            return self._profiles.handle(self, call)
        if self.wallbox is None or self.wallbox.closed:
            raise OcppError(ErrorCode.GenericError, "the charge point is not connected")
        if call.action == "RemoteStopTransaction":
            call = self._to_local_ids(call)
        d = self.wallbox.send_call(call)
        d.addErrback(_unanswered_by_wallbox)
        return d

    def _to_local_ids(self, call):
        backend_id = call.payload.get("transactionId")
        if not isinstance(backend_id, int):
            return call
        local_id = self.store.local_transaction_id(self.link_id, backend_id)
        if local_id is None:
            return call
        return Call(call.unique_id, call.action, dict(call.payload, transactionId=local_id))

    def _stop_link_if_idle(self):
        if (
            self.link is not None
            and self.wallbox is None
            and self.store.queue_length(self.link_id) == 0
        ):
            self.link.stop()

    def stop(self):
        """Cancel timers (the daemon stops). A boot held for the link stays
        unanswered: its wallbox is being disconnected."""
        if self._held_boot is not None:
            self._held_boot[2].cancel()
            self._held_boot = None
        self._cancel_timers()
        if self._record_timer is not None and self._record_timer.active():
            self._record_timer.cancel()
        self._record_timer = None

    def _cancel_timers(self):
        for timer in (self._timer, self._boot_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._timer = self._boot_timer = None


def _whole_seconds(value):
    """A heartbeat interval from a backend's answer, or 0 if it is none."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return value
    return 0


def _unanswered_by_wallbox(failure):
    failure.trap(CallTimeout, PeerGone)
    raise OcppError(ErrorCode.GenericError, "the charge point did not answer")


class GatewayObserver:
    """Tells each gateway when its wallbox connects and disconnects (a hub
    observer).

    @param session_of: C{callable(chargebox_id)} giving the wallbox's
        current L{OcppSession} (the hub's).
    @param gateways: C{{chargebox_id: Gateway}}.
    """

    def __init__(self, session_of, gateways):
        self._session_of = session_of
        self._gateways = gateways

    def connected(self, chargebox_id, peer, certificate_subject):
        gateway = self._gateways.get(chargebox_id)
        if gateway is not None:
            gateway.wallbox_connected(self._session_of(chargebox_id))

    def disconnected(self, chargebox_id):
        gateway = self._gateways.get(chargebox_id)
        if gateway is not None:
            gateway.wallbox_disconnected()

    def exchange(self, chargebox_id, call, answer):
        pass
