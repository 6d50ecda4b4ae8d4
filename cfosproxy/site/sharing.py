"""How the site current is shared: a pure function, no state, no I/O.

Currents are handled in whole deci-amperes (0.1 A, the resolution that limits
are sent with), so that no rounding can ever push the sum of grants over the
site limit.
"""

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Request:
    """A device that wants current, in the order devices started charging."""

    name: str
    min_current: float
    max_current: float


def to_deciamps(amps: float) -> int:
    """Amperes to whole deci-amperes, rounded down (never more than asked)."""
    return int(amps * 10 + 1e-9)


def share(site_limit: float, requests: Sequence[Request]) -> dict[str, float]:
    """Split C{site_limit} among C{requests}.

    First come first served: devices are admitted in the order given while
    the site can still give each admitted device its C{min_current}; the
    first device that does not fit waits with 0, and so does every device
    after it (a later small device does not overtake an earlier one).
    The admitted devices then share the site limit evenly, each at least its
    minimum and at most its maximum ("water filling"); a deci-ampere that
    cannot be split evenly goes to the earlier device.

    @param site_limit: amperes per phase for the whole site.
    @param requests: L{Request}s, earliest first.
    @return: C{{name: amperes}} for every request, each a multiple of 0.1,
        0 or between the device's minimum and maximum; the sum never exceeds
        C{site_limit}.
    """
    site = to_deciamps(site_limit)
    grants: dict[str, float] = {request.name: 0 for request in requests}
    floors: dict[str, int] = {}
    ceilings: dict[str, int] = {}
    admitted: list[str] = []
    reserved = 0
    for request in requests:
        floor = max(0, to_deciamps(request.min_current))
        ceiling = to_deciamps(request.max_current)
        if ceiling <= 0 or floor > ceiling or reserved + floor > site:
            break
        admitted.append(request.name)
        floors[request.name], ceilings[request.name] = floor, ceiling
        reserved += floor
    given = dict(floors)
    remaining = site - reserved
    open_ = [name for name in admitted if given[name] < ceilings[name]]
    while remaining > 0 and open_:
        each = remaining // len(open_)
        if each == 0:
            for name in open_[:remaining]:
                given[name] += 1
            remaining = 0
            break
        for name in open_:
            add = min(each, ceilings[name] - given[name])
            given[name] += add
            remaining -= add
        open_ = [name for name in open_ if given[name] < ceilings[name]]
    for name, deciamps in given.items():
        grants[name] = deciamps / 10
    return grants
