"""Where each queued message is in its life, and when the queue may send.

A transaction message of a wallbox with a gateway goes through these
states (the store's queue on disk is the truth for L{QUEUED}; the others
live here, in memory):

    STORING --stored--> QUEUED --sent--> IN_FLIGHT --answered--> ANSWERED
       |                  ^  |               |  |                   |
       |                  |  |  refused,     |  +--dead_lettered--> (dead letter)
       |                  |  |  unanswered   |                      |
       |                  +--|---------------+                   recorded
       |                     |                                      |
       +--not_stored-->      +--withdrawn--> ANSWERED            (gone)
     (gone: the wallbox
      got an error)

- B{STORING}: written, its commit not yet on disk; its wallbox waits to be
  told. Nothing is sent before the commit.
- B{QUEUED}: on disk, waiting its turn (oldest first, one at a time).
- B{IN_FLIGHT}: sent to the backend, its answer awaited.
- B{ANSWERED}: the backend answered it (or it must never reach the backend:
  I{withdrawn}), but what that means is not on disk yet. It is never sent
  again; while its write waits to be retried, the queue waits too.

The queue sends only when nothing is in flight and nothing holds it: a
L{Hold.RETRY} after a refusal or a silent backend, a L{Hold.RECORD} while
answers wait for their write.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime


class MessageState(enum.Enum):
    """The life of one queued message."""

    STORING = "storing"
    QUEUED = "queued"
    IN_FLIGHT = "in flight"
    ANSWERED = "answered"

    # Members are singletons compared by identity: hashing them so is
    # right, and cheaper than Enum's hash of the name (this runs for every
    # message).
    __hash__ = object.__hash__


class Hold(enum.Enum):
    """Why the queue waits although nothing is in flight."""

    RETRY = "trying again later"
    RECORD = "writing the backend's answers again"

    __hash__ = object.__hash__


_STORING = MessageState.STORING
_QUEUED = MessageState.QUEUED
_IN_FLIGHT = MessageState.IN_FLIGHT
_ANSWERED = MessageState.ANSWERED

# (state, event) -> next state; None: the message leaves the queue's memory
# (delivered, dead-lettered, or never stored). The methods of L{ReplayQueue}
# below are this table, written out (tests/test_replayqueue.py holds them to
# it).
TRANSITIONS: dict[tuple[MessageState, str], MessageState | None] = {
    (_STORING, "stored"): _QUEUED,
    (_STORING, "not_stored"): None,
    (_QUEUED, "sent"): _IN_FLIGHT,
    (_QUEUED, "withdrawn"): _ANSWERED,
    (_IN_FLIGHT, "answered"): _ANSWERED,
    (_IN_FLIGHT, "refused"): _QUEUED,
    (_IN_FLIGHT, "unanswered"): _QUEUED,
    (_IN_FLIGHT, "dead_lettered"): None,
    (_ANSWERED, "recorded"): None,
}


class IllegalTransition(Exception):
    """A message was asked to do what its state does not allow: a bug."""


class ReplayQueue:
    """The in-memory half of one link's queue.

    @param clock: L{IReactorTime}, for the holds' timers.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        # Messages in any state but QUEUED; QUEUED is the store's.
        self._states: dict[int, MessageState] = {}
        # The writes that record the backend's answers: {message id: write}.
        self._writes: dict[int, Callable[[], object]] = {}
        self._holds: dict[Hold, IDelayedCall] = {}
        self.in_flight: int | None = None

    # -- states ------------------------------------------------------------

    def state(self, message_id: int) -> MessageState:
        """The L{MessageState} of C{message_id} (QUEUED when this queue
        keeps nothing about it)."""
        return self._states.get(message_id, _QUEUED)

    def _expect(self, message_id: int, state: MessageState, event: str) -> None:
        # Every event checks the one state it may happen in: a mistake in
        # the gateway shows here, not as a message sent twice.
        current = self._states.get(message_id, _QUEUED)
        if current is not state:
            raise IllegalTransition(
                "message {}: {} while {}".format(message_id, event, current.value)
            )

    def storing(self, message_id: int) -> None:
        """C{message_id} is written; its commit is not on disk yet."""
        if message_id in self._states:
            raise IllegalTransition("message {} is stored twice".format(message_id))
        self._states[message_id] = _STORING

    def stored(self, message_id: int) -> None:
        """Its commit is on disk: it waits its turn."""
        self._expect(message_id, _STORING, "stored")
        del self._states[message_id]

    def not_stored(self, message_id: int) -> None:
        """Its commit failed: it is gone, the wallbox got an error."""
        self._expect(message_id, _STORING, "not_stored")
        del self._states[message_id]

    def sent(self, message_id: int) -> None:
        """It went to the backend."""
        self._expect(message_id, _QUEUED, "sent")
        self._states[message_id] = _IN_FLIGHT
        self.in_flight = message_id

    def answered(self, message_id: int, write: Callable[[], object]) -> None:
        """The backend answered it; C{write()} records what that means."""
        self._expect(message_id, _IN_FLIGHT, "answered")
        self._states[message_id] = _ANSWERED
        self._writes[message_id] = write
        self.in_flight = None

    def withdrawn(self, message_id: int, write: Callable[[], object]) -> None:
        """It must never reach the backend; C{write()} takes it out of the
        store's queue."""
        self._expect(message_id, _QUEUED, "withdrawn")
        self._states[message_id] = _ANSWERED
        self._writes[message_id] = write

    def refused(self, message_id: int) -> None:
        """The backend refused it: it is tried again later."""
        self._land(message_id, "refused")

    def unanswered(self, message_id: int) -> None:
        """The backend did not answer (silent, or the link closed)."""
        self._land(message_id, "unanswered")

    def dead_lettered(self, message_id: int) -> None:
        """The backend refused it too often: it is kept aside."""
        self._land(message_id, "dead_lettered")

    def _land(self, message_id: int, event: str) -> None:
        # In flight, then queued again or gone: this queue forgets it.
        self._expect(message_id, _IN_FLIGHT, event)
        del self._states[message_id]
        self.in_flight = None

    def recorded(self, message_id: int) -> None:
        """The answer to C{message_id} is on disk (a second notice for the
        same answer changes nothing)."""
        if self._states.get(message_id) is _ANSWERED:
            del self._states[message_id]
            del self._writes[message_id]

    def write(self, message_id: int) -> None:
        """Run the write that records the answer to C{message_id}.

        @raise StoreError: the store refused it.
        """
        self._writes[message_id]()

    def unrecorded(self) -> list[int]:
        """The ids of the answered messages whose write is not on disk yet,
        oldest first."""
        return list(self._writes)

    @property
    def answered_count(self) -> int:
        """How many answered messages wait for their write."""
        return len(self._writes)

    def skipped(self, message_id: int) -> bool:
        """Whether the queue must pass C{message_id} by: it was answered
        (its removal from the store waits for a write)."""
        return self._states.get(message_id) is _ANSWERED

    # -- holds -------------------------------------------------------------

    def hold(self, reason: Hold, delay: float, then: Callable[[], object]) -> None:
        """Hold the queue for C{delay} seconds, then call C{then()}; a hold
        already set for C{reason} stays as it is."""
        if reason not in self._holds:
            self._holds[reason] = self._clock.callLater(delay, self._released, reason, then)

    def _released(self, reason: Hold, then: Callable[[], object]) -> None:
        del self._holds[reason]
        then()

    def held(self, reason: Hold) -> bool:
        """Whether C{reason} holds the queue."""
        return reason in self._holds

    def cancel(self, *reasons: Hold) -> None:
        """Drop the holds for C{reasons} without calling them back."""
        for reason in reasons:
            timer = self._holds.pop(reason, None)
            if timer is not None and timer.active():
                timer.cancel()

    def may_send(self) -> bool:
        """Whether the next message may go: nothing in flight, no hold."""
        return self.in_flight is None and not self._holds
