"""One OCPP-J connection, free of I/O: a wallbox's, or a backend link.

An L{OcppSession} takes the text frames its peer sends and produces the
frames to send back through an L{IPeerConnection}; the Autobahn adapters
in L{cfosproxy.ws.server} and L{cfosproxy.ws.backend} are implementations, a list in
a test is another. A wallbox's session is an L{ICallTarget}: the gateway
sends it the backend's CALLs.

Toward the peer there is at most one outstanding CALL: toward a wallbox, the
local manager's calls and a backend's calls wait in one queue, each with a
timeout, so that a wallbox never sees two CALLs at once (OCPP-J 1.6 §4.1.1);
toward a backend, the wallbox's calls and the replayed queue do the same.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, cast

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python import failure

from zope.interface import implementer

from cfosproxy.core.errors import CallTimeout, PeerGone
from cfosproxy.core.interfaces import ICallTarget
from cfosproxy.core.logtext import printable
from cfosproxy.ocpp.errors import ErrorCode, OcppError
from cfosproxy.ocpp.frames import (
    Call,
    CallError,
    CallResult,
    FrameError,
    MessageType,
    parse_frame,
)
from cfosproxy.ocpp.ids import new_unique_id

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime
    from twisted.python.failure import Failure

    from cfosproxy.core.interfaces import (
        Answer,
        IHubObserver,
        IPeerConnection,
        Payload,
        Reply,
    )

# A peer may have this many of its CALLs waiting for their answers (a
# wallbox's waiting for a slow backend, say) before the session stops reading
# from it; it reads again once half of them are answered. OCPP-J allows one
# at a time, so only a misbehaving peer gets here, and then it is held back
# by TCP instead of filling memory. Eight leaves room for the odd wallbox
# that sends a StatusNotification while its BootNotification is unanswered.
MAX_UNANSWERED = 8

# WebSocket close codes (RFC 6455 §7.4.1).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001


@implementer(ICallTarget)
class OcppSession:
    """The OCPP side of one connection.

    @param chargebox_id: the wallbox's ChargeBox-ID (for a backend link: the
        client id), for logs and observers.
    @param connection: an L{IPeerConnection}.
    @param answer: answers the peer's CALLs: C{answer(call)} returns the
        result payload, or a whole L{CallResult} / L{CallError} frame to send
        as it is (a backend's answer relayed byte for byte), or a Deferred of
        either; or raises L{OcppError}. For a wallbox: its
        L{IWallboxHandler}'s C{answer}; for a backend link: the gateway's
        C{backend_call}.
    @param observers: L{IHubObserver}s, whose C{exchange(chargebox_id, call,
        answer)} is told of every CALL from the wallbox and the frame that
        answered it.
    @param clock: L{IReactorTime}; C{callLater} runs the call timeouts.
    @param call_timeout: seconds a CALL to the wallbox may stay unanswered.
    """

    _log = Logger()

    def __init__(
        self,
        chargebox_id: str,
        connection: IPeerConnection,
        answer: Callable[[Call], Answer],
        observers: Iterable[IHubObserver],
        clock: IReactorTime,
        call_timeout: float,
    ) -> None:
        self.chargebox_id = chargebox_id
        self.connection = connection
        self._answer = answer
        self._observers = tuple(observers)
        self._clock = clock
        self._call_timeout = call_timeout
        self._queue: deque[_PendingCall] = deque()
        self._outstanding: _PendingCall | None = None
        self._timer: IDelayedCall | None = None
        self._unanswered = 0
        self.reading_paused = False
        self.closed = False

    # -- frames from the wallbox -------------------------------------------

    def text_received(self, text: str) -> None:
        """Handle one text frame from the wallbox."""
        try:
            frame = parse_frame(text)
        except FrameError as e:
            self._malformed(e)
            return
        if isinstance(frame, Call):
            self._call_received(frame)
        else:
            self._answer_received(frame)

    def _malformed(self, error: FrameError) -> None:
        if error.unique_id is None:
            self._log.warn(
                "{cbid}: dropped a malformed frame without a readable id: "
                "{description}",
                cbid=self.chargebox_id,
                description=error.description,
            )
            return
        self._log.warn(
            "{cbid}: malformed frame {unique_id!r}: {code} {description}",
            cbid=self.chargebox_id,
            unique_id=_short(error.unique_id),
            code=error.code,
            description=error.description,
        )
        if error.message_type not in (MessageType.CALLRESULT, MessageType.CALLERROR):
            # A broken CALLRESULT or CALLERROR is not answered: a CALLERROR
            # for it would be a second answer to our own CALL.
            self._send(error.to_call_error())

    def _call_received(self, call: Call) -> None:
        self._unanswered += 1
        if self._unanswered >= MAX_UNANSWERED and not self.reading_paused:
            # The connection logs its pauses, at most a line a minute: a peer
            # can come here thousands of times in a few seconds.
            self._log.debug(
                "{cbid}: {count} CALLs wait for their answers; reading paused "
                "until half of them are answered",
                cbid=self.chargebox_id,
                count=self._unanswered,
            )
            self.reading_paused = True
            self.connection.pause_reading()
        # The answer is handled at once when there is one, and
        # through a single callback pair when it returns a Deferred: this
        # runs for every message a wallbox sends.
        try:
            answer = self._answer(call)
        except Exception:
            self._respond(self._call_failed(call, failure.Failure()), call)
            return
        if isinstance(answer, defer.Deferred):
            answer.addCallbacks(
                self._respond,
                lambda f: self._respond(self._call_failed(call, f), call),
                callbackArgs=(call,),
            )
        else:
            self._respond(answer, call)

    def _respond(self, answer: Reply, call: Call) -> None:
        """Send the answer to a CALL of the peer's (a payload or a frame)."""
        try:
            if not isinstance(answer, (CallResult, CallError)):
                answer = CallResult(call.unique_id, answer)
            self._answer_call(answer, call)
        except Exception:
            self._log.failure(
                "{cbid}: answering {action}", cbid=self.chargebox_id,
                action=printable(call.action),
            )
        self._call_answered(None)

    def _call_answered(self, _: None) -> None:
        self._unanswered -= 1
        if (
            self.reading_paused
            and self._unanswered <= MAX_UNANSWERED // 2
            and not self.closed
        ):
            self.reading_paused = False
            self.connection.resume_reading()

    def _call_failed(self, call: Call, failure: Failure) -> CallError:
        if failure.check(OcppError):
            # check() said what the value is; a Failure's type does not.
            return cast(OcppError, failure.value).to_call_error(call.unique_id)
        self._log.failure(
            "{cbid}: internal error answering {action}",
            failure,
            cbid=self.chargebox_id,
            action=printable(call.action),
        )
        return CallError(
            call.unique_id, ErrorCode.InternalError, "internal error", {}
        )

    def _answer_call(self, answer: CallResult | CallError, call: Call) -> None:
        if isinstance(answer, CallError):
            self._log.info(
                "{cbid}: {action} answered with {code}: {description}",
                cbid=self.chargebox_id,
                # The action is the wallbox's; the answer may be a backend's.
                action=printable(call.action),
                code=printable(answer.error_code),
                description=printable(answer.error_description),
            )
        self._send(answer)
        for observer in self._observers:
            observer.exchange(self.chargebox_id, call, answer)

    def _answer_received(self, frame: CallResult | CallError) -> None:
        pending = self._outstanding
        if pending is None or pending.call.unique_id != frame.unique_id:
            self._log.warn(
                "{cbid}: dropped an answer to unknown message id {unique_id!r}",
                cbid=self.chargebox_id,
                unique_id=_short(frame.unique_id),
            )
            return
        self._finish_outstanding(lambda d: d.callback(frame))

    # -- CALLs to the wallbox ----------------------------------------------

    def send_call(
        self, call: Call, timeout: float | None = None
    ) -> defer.Deferred[CallResult | CallError]:
        """Queue a CALL for the wallbox.

        @param timeout: seconds this CALL may stay unanswered, if longer
            than the session's call timeout (a backend slow to accept a
            boot, say); None: the call timeout.
        @return: a Deferred that fires with the wallbox's L{CallResult} or
            L{CallError} frame, or fails with L{CallTimeout} or
            L{PeerGone}.
        """
        if self.closed:
            return defer.fail(PeerGone(self.chargebox_id))
        d: defer.Deferred[CallResult | CallError] = defer.Deferred()
        pending = _PendingCall(call, d)
        if timeout is not None and timeout > self._call_timeout:
            pending.timeout = timeout
        self._queue.append(pending)
        self._send_next()
        return d

    def call(
        self, action: str, payload: Payload, timeout: float | None = None
    ) -> defer.Deferred[Payload]:
        """Send a CALL of our own and get the result payload.

        @param timeout: seconds to wait for the answer; None: the session's
            call timeout.
        @return: a Deferred firing with the CALLRESULT payload, or failing
            with L{OcppError} (the wallbox's CALLERROR), L{CallTimeout} or
            L{PeerGone}.
        """
        d = self.send_call(Call(new_unique_id(), action, payload), timeout)
        return d.addCallback(_result_payload)

    @property
    def queue_length(self) -> int:
        """CALLs waiting for the wallbox, the outstanding one included."""
        return len(self._queue) + (self._outstanding is not None)

    def _send_next(self) -> None:
        if self._outstanding is not None or not self._queue or self.closed:
            return
        pending = self._queue.popleft()
        self._outstanding = pending
        pending.deadline = self._clock.seconds() + (pending.timeout or self._call_timeout)
        # One timer per session, not one per CALL: it is set for the
        # outstanding CALL's deadline and, should that CALL have been
        # answered meanwhile, moves on to the next one's. Setting and
        # cancelling a timer for every message was a tenth of the relay's
        # cost.
        if self._timer is None:
            self._timer = self._clock.callLater(self._call_timeout, self._check_deadline)
        self._send(pending.call)

    def _check_deadline(self) -> None:
        self._timer = None
        pending = self._outstanding
        if pending is None:
            return
        # _send_next set it when the CALL went out, before it was outstanding.
        assert pending.deadline is not None
        left = pending.deadline - self._clock.seconds()
        if left > 0:
            self._timer = self._clock.callLater(left, self._check_deadline)
            return
        self._log.warn(
            "{cbid}: no answer to {action} within {timeout}s",
            cbid=self.chargebox_id,
            action=pending.call.action,
            timeout=pending.timeout or self._call_timeout,
        )
        self._finish_outstanding(
            lambda d: d.errback(CallTimeout(pending.call.action))
        )

    def _finish_outstanding(
        self, fire: Callable[[defer.Deferred[CallResult | CallError]], object]
    ) -> None:
        pending, self._outstanding = self._outstanding, None
        # Only an answer to the outstanding CALL, or its timeout, comes here.
        assert pending is not None
        # Send the next CALL before running callbacks, so that a callback
        # that queues another CALL keeps the order of the queue.
        self._send_next()
        fire(pending.deferred)

    # -- the connection ------------------------------------------------------

    def _send(self, frame: Call | CallResult | CallError) -> None:
        if not self.closed:
            self.connection.send_text(frame.to_text())

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Close the connection; what is queued fails when it is gone."""
        if not self.closed:
            self.connection.close(code, reason)

    def connection_lost(self) -> None:
        """The connection is gone: fail every CALL still waiting."""
        self.closed = True
        waiting = list(self._queue)
        self._queue.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._outstanding is not None:
            waiting.insert(0, self._outstanding)
            self._outstanding = None
        for pending in waiting:
            pending.deferred.errback(PeerGone(self.chargebox_id))


class _PendingCall:
    __slots__ = ("call", "deferred", "deadline", "timeout")

    def __init__(self, call: Call, deferred: defer.Deferred[CallResult | CallError]) -> None:
        self.call = call
        self.deferred = deferred
        self.deadline: float | None = None
        self.timeout: float | None = None


def _short(unique_id: str, limit: int = 40) -> str:
    """A message id for a log line: a peer may send one of 60,000
    characters, which would make every line about it unreadable."""
    if len(unique_id) <= limit:
        return unique_id
    return "{}... ({} characters)".format(unique_id[:limit], len(unique_id))


def _result_payload(frame: CallResult | CallError) -> Payload:
    if isinstance(frame, CallError):
        raise OcppError(
            frame.error_code, frame.error_description, frame.error_details
        )
    return frame.payload
