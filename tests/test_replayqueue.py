"""The replay queue's states and holds, alone (a fake clock)."""

import pytest
from twisted.internet import task

from cfosproxy.core.replayqueue import (
    TRANSITIONS,
    Hold,
    IllegalTransition,
    MessageState,
    ReplayQueue,
)


def queue():
    return ReplayQueue(task.Clock())


def test_a_message_goes_from_storing_to_answered_and_leaves():
    """The usual life: storing, queued, in flight, answered, recorded; the
    queue sends nothing else while one is in flight, and forgets the
    message once its answer is on disk."""
    q = queue()
    q.storing(1)
    assert q.state(1) is MessageState.STORING
    q.stored(1)
    assert q.state(1) is MessageState.QUEUED and q.may_send()
    q.sent(1)
    assert q.state(1) is MessageState.IN_FLIGHT and q.in_flight == 1
    assert not q.may_send()
    writes = []
    q.answered(1, lambda: writes.append(1))
    assert q.state(1) is MessageState.ANSWERED and q.in_flight is None
    assert q.skipped(1) and q.answered_count == 1
    assert q.unrecorded() == [1]
    q.write(1)
    q.recorded(1)
    assert writes == [1]
    assert q.state(1) is MessageState.QUEUED and not q.skipped(1)
    assert q.unrecorded() == [] and q.may_send()


@pytest.mark.parametrize("event", ["refused", "unanswered"])
def test_a_refused_or_unanswered_message_is_queued_again(event):
    """A refusal or a silent backend puts the message back in the queue,
    to be sent again."""
    q = queue()
    q.sent(7)
    getattr(q, event)(7)
    assert q.state(7) is MessageState.QUEUED and q.in_flight is None


def test_a_dead_letter_leaves_the_queue():
    """A message refused too often leaves the queue's memory."""
    q = queue()
    q.sent(3)
    q.dead_lettered(3)
    assert q.in_flight is None and q.may_send()


def test_a_withdrawn_message_is_never_sent_again():
    """A queued message that must never reach the backend (its wallbox got
    an error) is passed by until its removal is on disk."""
    q = queue()
    q.withdrawn(5, lambda: None)
    assert q.skipped(5)
    with pytest.raises(IllegalTransition):
        q.sent(5)


def test_a_message_not_stored_is_forgotten():
    """A message whose commit failed leaves no trace."""
    q = queue()
    q.storing(2)
    q.not_stored(2)
    assert q.state(2) is MessageState.QUEUED and q.may_send()


@pytest.mark.parametrize(
    "prepare, event",
    [
        (lambda q: q.storing(1), "sent"),
        (lambda q: q.sent(1), "stored"),
        (lambda q: None, "refused"),
        (lambda q: (q.storing(1), q.stored(1), q.sent(1)), "sent"),
        (lambda q: q.storing(1), "storing"),
    ],
)
def test_what_a_state_does_not_allow_is_refused(prepare, event):
    """A message sent before its commit, stored while in flight, refused
    while not in flight, stored twice or sent twice is a bug: it raises
    instead of corrupting the queue."""
    q = queue()
    prepare(q)
    with pytest.raises(IllegalTransition):
        getattr(q, event)(1)


def test_a_late_second_record_notice_is_harmless():
    """Two writes of the same answer may both be told they are on disk (a
    retried write and the first one's commit): the second notice changes
    nothing."""
    q = queue()
    q.sent(1)
    q.answered(1, lambda: None)
    q.recorded(1)
    q.recorded(1)
    assert q.state(1) is MessageState.QUEUED and q.answered_count == 0


def test_holds_stop_sending_until_released():
    """A hold keeps the queue from sending until its timer calls back; a
    second hold for the same reason keeps the first timer; a cancelled hold
    calls nothing."""
    clock = task.Clock()
    q = ReplayQueue(clock)
    released = []
    q.hold(Hold.RETRY, 30, lambda: released.append("retry"))
    q.hold(Hold.RETRY, 5, lambda: released.append("too early"))
    q.hold(Hold.RECORD, 1, lambda: released.append("record"))
    assert not q.may_send() and q.held(Hold.RETRY) and q.held(Hold.RECORD)
    clock.advance(1)
    assert released == ["record"] and not q.held(Hold.RECORD)
    assert not q.may_send()
    clock.advance(29)
    assert released == ["record", "retry"] and q.may_send()
    q.hold(Hold.RETRY, 30, lambda: released.append("cancelled"))
    q.cancel(Hold.RETRY, Hold.RECORD)
    clock.advance(60)
    assert released == ["record", "retry"] and q.may_send()
    assert clock.getDelayedCalls() == []


# How to bring a fresh message (id 1) into each state.
_INTO = {
    MessageState.STORING: lambda q: q.storing(1),
    MessageState.QUEUED: lambda q: None,
    MessageState.IN_FLIGHT: lambda q: q.sent(1),
    MessageState.ANSWERED: lambda q: (q.sent(1), q.answered(1, lambda: None)),
}

_EVENTS = {
    "stored": lambda q: q.stored(1),
    "not_stored": lambda q: q.not_stored(1),
    "sent": lambda q: q.sent(1),
    "withdrawn": lambda q: q.withdrawn(1, lambda: None),
    "answered": lambda q: q.answered(1, lambda: None),
    "refused": lambda q: q.refused(1),
    "unanswered": lambda q: q.unanswered(1),
    "dead_lettered": lambda q: q.dead_lettered(1),
}


@pytest.mark.parametrize("state", list(MessageState))
@pytest.mark.parametrize("event", sorted(_EVENTS))
def test_the_methods_are_the_table(state, event):
    """Every event in every state does what TRANSITIONS says: it moves the
    message to the state the table names (a message that leaves the
    queue's memory reads as QUEUED, as the store keeps it or not), or,
    where the table has no entry, raises IllegalTransition and leaves the
    message where it was."""
    q = queue()
    _INTO[state](q)
    if (state, event) not in TRANSITIONS:
        with pytest.raises(IllegalTransition):
            _EVENTS[event](q)
        assert q.state(1) is state
        return
    _EVENTS[event](q)
    following = TRANSITIONS[state, event]
    assert q.state(1) is (following or MessageState.QUEUED)
    assert (q.in_flight == 1) == (following is MessageState.IN_FLIGHT)
