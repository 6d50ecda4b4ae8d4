"""What a limit in watts lets a wallbox draw per phase (DESIGN §8).

A wallbox that takes limits only in W gets W = A × voltage × the number of
phases it is counted on. A three-phase car then draws A on each phase; a
single-phase car could draw the whole power on one. So, until the device's
phases are known from its reports, a limit in W counts on each of its
phases at the smaller of W ÷ voltage and the device's C{max_current}; once
they are known, at W ÷ voltage shared over them.

Limits are kept in amperes per phase, as the manager decides them, with the
unit and the number of phases they were sent with (L{SentAs}): the watts the
wallbox holds follow from those, whatever the manager learns later.
"""

from __future__ import annotations

from typing import NamedTuple


class SentAs(NamedTuple):
    """How a limit went to a wallbox: its unit (C{"A"} or C{"W"}) and, in
    W, the number of phases its amperes were multiplied by."""

    unit: str
    phases: int


IN_AMPERES = SentAs("A", 1)


def counted_current(
    amps: float, sent: SentAs, phases_now: int, phases_known: bool, max_current: float
) -> float:
    """The amperes a limit of C{amps} sent as C{sent} counts for on each
    phase the device is counted on now (C{phases_now} of them; whether the
    device's reports have told them: C{phases_known})."""
    if sent.unit != "W":
        return amps
    total = amps * sent.phases
    if phases_known:
        total /= max(1, phases_now)
    return min(total, max_current)


def limit_within(
    room: float, unit: str, phases_now: int, phases_known: bool, max_current: float
) -> float:
    """The highest limit in amperes per phase, sent in C{unit} with the
    phases counted now, that counts for no more than C{room} amperes on
    each phase (see L{counted_current}); rounded down to 0.1 A."""
    if unit != "W" or phases_known or room >= max_current:
        return room
    return int(room * 10 / max(1, phases_now) + 1e-6) / 10
