"""Which site phases a device is counted on: its wiring, and what its car
draws (DESIGN §7). Pure functions, no state, no I/O.

A wallbox's phases L1, L2, L3 are connected to the site's phases as its
C{wiring} says (three-phase wallboxes may be rotated on their terminals; a
single-phase wallbox has only its L1). A car may draw on fewer of them than
are wired: L{phases_in_use} learns that from the currents the wallbox
reports, and L{site_phases} turns it into the site phases the device is
counted on.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Literal

Phase = Literal["L1", "L2", "L3"]

PHASES: tuple[Phase, Phase, Phase] = ("L1", "L2", "L3")

# Per C{wiring} value: the site phase of the wallbox's L1, L2, L3 (a
# single-phase wallbox has only its L1).
WIRINGS: Mapping[str, tuple[Phase, ...]] = {
    "L1L2L3": ("L1", "L2", "L3"),
    "L2L3L1": ("L2", "L3", "L1"),
    "L3L1L2": ("L3", "L1", "L2"),
    "L1": ("L1",),
    "L2": ("L2",),
    "L3": ("L3",),
}

# A phase counts as unused once a reading shows it below UNUSED_BELOW while
# another phase of the same wallbox draws DRAWING or more: a car that draws
# 4 A on one phase and less than 1 A on another is not charging on it
# (what flows there is the car's electronics or measuring noise).
UNUSED_BELOW = 1.0
DRAWING = 4.0


def site_phases(wiring: str, used: Collection[Phase] | None = None) -> frozenset[Phase]:
    """The site phases a wallbox is counted on.

    @param wiring: the wallbox's C{wiring} setting (L{WIRINGS}).
    @param used: the wallbox's own phases its car draws on, as the wallbox
        reports them (L{phases_in_use}); L{None} while that is not known.
        Every wired phase counts while nothing is known, and also when
        C{used} names none of the wallbox's phases: a device is never
        counted on no phase at all.
    @return: the site phases, never empty.
    @raise ValueError: C{wiring} is not one of L{WIRINGS}.
    """
    try:
        wired = WIRINGS[wiring]
    except KeyError:
        raise ValueError(f"unknown wiring {wiring!r}; expected one of {', '.join(WIRINGS)}")
    if used is None:
        return frozenset(wired)
    picked = frozenset(site for own, site in zip(PHASES, wired) if own in used)
    return picked or frozenset(wired)


def phases_in_use(
    known: frozenset[Phase] | None, currents: Sequence[float | None]
) -> frozenset[Phase] | None:
    """The wallbox's own phases its car draws on, after one more reading.

    A reading in which some phase draws L{DRAWING} or more says it all: the
    phases at L{UNUSED_BELOW} or more are in use, and so is a phase the
    reading says nothing about. A weaker reading (the car is paused, or
    ramps up) forgets nothing that is known, but a phase that draws
    L{UNUSED_BELOW} or more again counts again at once: counting a phase
    too many costs current, one too few could cost the fuse.

    @param known: what was learnt before, L{None} when nothing was (no
        reading yet in this transaction).
    @param currents: the wallbox's L1, L2, L3 in amperes, None where the
        wallbox did not report one.
    @return: the phases in use, or L{None} while nothing is known.
    """
    if any(amps is not None and amps >= DRAWING for amps in currents):
        return frozenset(
            phase
            for phase, amps in zip(PHASES, currents)
            if amps is None or amps >= UNUSED_BELOW
        )
    if known is None:
        return None
    drawing = {
        phase for phase, amps in zip(PHASES, currents) if amps is not None and amps >= UNUSED_BELOW
    }
    return known | drawing
