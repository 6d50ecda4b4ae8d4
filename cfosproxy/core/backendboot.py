"""The boot of one wallbox toward its backend, over the backend link.

A backend takes a charge point's transaction messages only after it has
accepted the charge point's BootNotification (OCPP 1.6 §4.2). A
L{BackendBoot} sees to that for one L{cfosproxy.core.gateway.Gateway}:
each time the link opens it sends the wallbox's last BootNotification again
(from the store), and it sends it again until the backend accepts it. Its
L{BootState} says what the backend made of the last boot sent:

    NOT_SENT --link opened--> SENT --Accepted--> ACCEPTED (booted)
       ^                      ^  |
       |                      |  +--Pending, Rejected--> PENDING, REJECTED
       |                      |  +--CALLERROR--------> REFUSED
       |                      |  +--no answer--------> UNANSWERED
       |                      |                            |
       |                      +------ the retry timer -----+
       |
       +--link closed-- (from any state)

- B{Accepted}: the backend may take the queue (C{booted}); the gateway is
  told (C{ready}) and decides what follows.
- B{Pending}, B{Rejected}: sent again after the interval the backend gave,
  but not sooner than C{MIN_BOOT_RETRY}.
- B{CALLERROR}: sent again after C{MIN_BOOT_RETRY}.
- B{No answer}: sent again after C{MIN_BOOT_RETRY}, then twice as late each
  time up to C{MAX_BOOT_RETRY}; and each time the backend gets twice as long
  to answer, up to C{MAX_BOOT_TIMEOUT}.

A wallbox that has never booted through cfosproxy leaves no boot to send:
the backend is then taken as booted when the link opens (state NOT_SENT),
for the queue must not wait for a boot that may never come.

B{The held boot.} The wallbox's own BootNotification, arriving while the
link is still connecting (the wallbox and its link have just come up), is
held for up to C{boot_wait} seconds so that the backend, not cfosproxy,
answers it. If the link opens meanwhile, it goes to the backend first (state
SENT) and replaces the boot the link would send; otherwise cfosproxy answers
it itself. The state stays NOT_SENT while it is held (L{holding}).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple, Protocol

from twisted.internet import defer
from twisted.logger import Logger

from cfosproxy.core.errors import CallTimeout, PeerGone
from cfosproxy.ocpp.frames import Call, CallResult, parse_frame
from cfosproxy.ocpp.ids import new_unique_id

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime
    from twisted.python.failure import Failure

    from cfosproxy.core.interfaces import IOutboundQueue, Payload, Reply
    from cfosproxy.core.session import OcppSession
    from cfosproxy.ocpp.frames import CallError

__all__ = [
    "BackendBoot",
    "BootState",
    "BOOT_WAIT",
    "MIN_BOOT_RETRY",
    "MAX_BOOT_RETRY",
    "MAX_BOOT_TIMEOUT",
    "is_boot_error",
]

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

# How the texts that report a boot's trouble begin (L{is_boot_error}).
_BOOT_ERRORS = ("no answer to BootNotification", "BootNotification")


class BootState(enum.StrEnum):
    """What the backend made of the last boot the gateway sent (the status
    API shows the value)."""

    NOT_SENT = "not sent"
    SENT = "sent"
    ACCEPTED = "accepted"
    PENDING = "pending"
    REJECTED = "rejected"
    REFUSED = "refused"
    UNANSWERED = "no answer"


class HeldBoot(NamedTuple):
    """The wallbox's BootNotification while it waits for the link."""

    call: Call
    # Fires with the answer the wallbox gets: the backend's or cfosproxy's.
    answer: defer.Deferred[Reply]
    # Answers it locally when boot_wait has passed.
    timer: IDelayedCall


class Ready(Protocol):
    """What L{BackendBoot} calls when the backend may take the queue (its
    C{ready}); called with keywords, which a C{Callable} type cannot
    say."""

    def __call__(self, newly_accepted: bool, again: bool) -> object: ...


def is_boot_error(text: str | None) -> bool:
    """Whether C{text} (a gateway's C{last_error}) reports a boot's trouble,
    which the backend's acceptance of a boot ends."""
    return (text or "").startswith(_BOOT_ERRORS)


class BackendBoot:
    """The boot toward one backend; its gateway drives it with
    L{hold}, L{link_opened}, L{link_closed}, L{answered}, L{unanswered} and
    L{stop}.

    @ivar state: the L{BootState}.
    @ivar booted: whether the backend may take the queue: it accepted a boot
        since the link opened, or there was no boot to send.

    @param chargebox_id: the wallbox's ChargeBox-ID, for logs.
    @param store: a callable returning the store (L{IOutboundQueue}): the
        wallbox's last BootNotification, and the queue's length for logs.
    @param link_id: the link's name in the store.
    @param clock: L{IReactorTime}.
    @param call_timeout: seconds the backend has to answer the first boot
        sent after the link opened.
    @param boot_wait: seconds the wallbox's own BootNotification waits for a
        link that is still connecting; 0: it does not wait.
    @param forward: C{forward(call)} relays the wallbox's own BootNotification
        to the backend as the gateway relays the wallbox's CALLs: a Deferred
        of the answer the wallbox gets. The gateway reports the backend's
        answer with L{answered} and its silence with L{unanswered}.
    @param answer_locally: C{answer_locally(call)}: cfosproxy's own answer to
        a BootNotification.
    @param report_error: C{report_error(text)}: the boot's trouble, for the
        status API; C{report_error(None)}: the backend accepted a boot, the
        trouble (see L{is_boot_error}) is over.
    @param ready: C{ready(newly_accepted, again)}: the backend may take the
        queue now. C{newly_accepted}: it has just accepted its first boot
        since the link opened (it is to be told what it missed); C{again}:
        that boot was the one sent for the wallbox, not the wallbox's own.
    """

    _log = Logger()

    def __init__(
        self,
        chargebox_id: str,
        store: Callable[[], IOutboundQueue],
        link_id: str,
        clock: IReactorTime,
        call_timeout: float,
        boot_wait: float,
        forward: Callable[[Call], defer.Deferred[Reply]],
        answer_locally: Callable[[Call], Payload],
        report_error: Callable[[str | None], object],
        ready: Ready,
    ) -> None:
        self._chargebox_id = chargebox_id
        self._store = store
        self._link_id = link_id
        self._clock = clock
        self._call_timeout = call_timeout
        self._boot_wait = boot_wait
        self._forward = forward
        self._answer_locally = answer_locally
        self._report_error = report_error
        self._ready = ready
        self.state = BootState.NOT_SENT
        self.booted = False
        # The backend leg's session while the link is open.
        self._session: OcppSession | None = None
        self._held: HeldBoot | None = None
        # Sends the boot again (after a refusal, Pending, Rejected, silence).
        self._retry: IDelayedCall | None = None
        self._failures = 0  # boots in a row the backend did not answer

    @property
    def waits_for_link(self) -> bool:
        """Whether the wallbox's own BootNotification may wait for a link
        that is still connecting (C{boot_wait} is not 0)."""
        return self._boot_wait > 0

    @property
    def holding(self) -> bool:
        """Whether a BootNotification of the wallbox waits for the link."""
        return self._held is not None

    # -- the wallbox's own boot ----------------------------------------------

    def hold(self, call: Call) -> defer.Deferred[Reply]:
        """The wallbox boots while its link is still connecting: its boot
        waits a little for the link, so that the backend, not cfosproxy,
        answers it (with the backend's own heartbeat interval).

        @param call: the wallbox's BootNotification.
        @return: a Deferred of the answer the wallbox gets.
        """
        if self._held is not None:
            # The wallbox gave up on the earlier one and sent it again.
            self._release_held()
        answer: defer.Deferred[Reply] = defer.Deferred()
        timer = self._clock.callLater(self._boot_wait, self._release_held)
        self._held = HeldBoot(call, answer, timer)
        return answer

    def _release_held(self) -> None:
        """The link did not open in time: answer the held boot locally."""
        # Its callers (the timer L{hold} set, L{hold} itself) come only
        # while a boot is held: L{link_opened} and L{stop} cancel the timer.
        assert self._held is not None
        call, answer, timer = self._held
        self._held = None
        if timer.active():
            timer.cancel()
        else:
            self._log.info(
                "{cbid}: the backend link did not open within {wait:g} s; "
                "BootNotification answered by cfosproxy",
                cbid=self._chargebox_id,
                wait=self._boot_wait,
            )
        answer.callback(self._answer_locally(call))

    # -- the link ------------------------------------------------------------

    def link_opened(self, session: OcppSession) -> None:
        """The backend link is open: boot over C{session} (the backend leg's
        L{cfosproxy.core.session.OcppSession}), with the held boot if one
        waits."""
        self._session = session
        self.booted = False
        self._failures = 0
        if self._held is not None:
            # The wallbox's own boot waited for this link: it goes first,
            # and its answer is the backend's.
            call, answer, timer = self._held
            self._held = None
            timer.cancel()
            self.state = BootState.SENT
            self._forward(call).chainDeferred(answer)
            return
        self._send()

    def link_closed(self) -> None:
        """The backend link closed: the next one boots afresh."""
        self._session = None
        self.booted = False
        self.state = BootState.NOT_SENT
        self._cancel_retry()

    def stop(self) -> None:
        """Cancel the timers (the daemon stops). A boot held for the link
        stays unanswered: its wallbox is being disconnected."""
        if self._held is not None:
            self._held.timer.cancel()
            self._held = None
        self._cancel_retry()

    # -- sending the boot ----------------------------------------------------

    def _send(self) -> None:
        """Send the wallbox's last BootNotification again, so that the
        backend knows the charge point before the queue arrives."""
        if self._session is None:
            return
        text = self._store().last_boot(self._link_id)
        if text is None:
            # The wallbox never booted through us (it reconnected without a
            # BootNotification): there is nothing to boot with, and the queue
            # must not wait for a boot that may never come. The wallbox's own
            # BootNotification is forwarded whenever it comes.
            self.booted = True
            self._ready(newly_accepted=False, again=False)
            return
        boot = parse_frame(text)
        # The store keeps the text of the wallbox's BootNotification, a
        # CALL; parse_frame's type is any frame.
        assert isinstance(boot, Call)
        self.state = BootState.SENT
        # Each boot the backend left unanswered gives the next one longer.
        timeout = min(
            self._call_timeout * 2**self._failures,
            max(self._call_timeout, MAX_BOOT_TIMEOUT),
        )
        d = self._session.send_call(
            Call(new_unique_id(), boot.action, boot.payload), timeout=timeout
        )
        d.addCallbacks(
            self.answered,
            self._not_answered,
            callbackKeywords={"again": True},
            errbackArgs=(timeout,),
        )

    def _not_answered(self, failure: Failure, timeout: float) -> None:
        failure.trap(CallTimeout, PeerGone)
        if failure.check(CallTimeout):
            self.unanswered(timeout)

    def _send_again(self) -> None:
        self._retry = None
        self._send()

    def _later(self, delay: float, why: str) -> None:
        self._report_error(why)
        if self._retry is None and self._session is not None:
            self._retry = self._clock.callLater(delay, self._send_again)

    def _cancel_retry(self) -> None:
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None

    # -- the backend's answers -----------------------------------------------

    def answered(self, answer: CallResult | CallError, again: bool = False) -> None:
        """The backend answered a BootNotification: the wallbox's own, or
        (C{again}) the one sent for it when the link opened.

        @param answer: the backend's L{CallResult} or L{CallError} frame.
        """
        if not isinstance(answer, CallResult):
            self.state = BootState.REFUSED
            self._later(
                MIN_BOOT_RETRY,
                "BootNotification refused: {} {}".format(
                    answer.error_code, answer.error_description
                ).strip(),
            )
            return
        status = answer.payload.get("status")
        if status == "Accepted":
            self.state = BootState.ACCEPTED
            self._failures = 0
            self._cancel_retry()
            newly_accepted = not self.booted
            if newly_accepted:
                self.booted = True
                self._report_error(None)
                self._log.info(
                    "{cbid}: backend accepted the boot; {count} queued message(s)",
                    cbid=self._chargebox_id,
                    count=self._store().queue_length(self._link_id),
                )
            self._ready(newly_accepted=newly_accepted, again=again)
        else:
            self.state = BootState.REJECTED if status == "Rejected" else BootState.PENDING
            self._later(
                max(MIN_BOOT_RETRY, _whole_seconds(answer.payload.get("interval"))),
                "BootNotification {}".format(status),
            )

    def unanswered(self, timeout: float) -> None:
        """The backend did not answer a BootNotification within C{timeout}
        seconds: send the boot again later, for the queue waits for it."""
        if self.booted or self._session is None or self._retry is not None:
            return
        delay = min(MIN_BOOT_RETRY * 2**self._failures, MAX_BOOT_RETRY)
        self._failures += 1
        self.state = BootState.UNANSWERED
        self._report_error(
            "no answer to BootNotification within {:g} s; sent again in {:g} s".format(
                timeout, delay
            )
        )
        self._log.warn(
            "{cbid}: the backend did not answer the BootNotification within "
            "{timeout:g} s; sending it again in {delay:g} s ({count} queued "
            "message(s) wait for it)",
            cbid=self._chargebox_id,
            timeout=timeout,
            delay=delay,
            count=self._store().queue_length(self._link_id),
        )
        self._retry = self._clock.callLater(delay, self._send_again)


def _whole_seconds(value: object) -> float:
    """A heartbeat interval from a backend's answer, or 0 if it is none."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return value
    return 0
