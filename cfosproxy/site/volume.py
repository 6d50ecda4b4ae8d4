"""Fewer limits: which small changes of a share are not worth a profile
(DESIGN §7, "Profile volume"). A pure function, no state, no I/O.

Wallboxes write every charging profile to flash, and some choke on many of
them. When the shares move by less than L{MIN_STEP} (a deci-ampere that
cannot be split evenly moves to another device, a device joins a circuit
that had room anyway), each device may keep the limit it holds, as long as
the fuse and the balance of the phases allow it with everybody else's new
share. How often a device may be raised (L{RAISE_INTERVAL}) is for the
manager, which knows the time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cfosproxy.site.circuits import Limit
from cfosproxy.site.sharing import to_deciamps

# A raise or re-share smaller than this (amperes) is not sent.
MIN_STEP = 0.5

# A wallbox is raised at most once in this many seconds, except for the
# first grant of a transaction.
RAISE_INTERVAL = 10.0


def steady_targets(
    grants: Mapping[str, float],
    held: Mapping[str, float | None],
    bounds: Mapping[str, tuple[float, float]],
    limits: Mapping[str, Sequence[Limit]],
    available: Mapping[Limit, int],
    max_imbalance: float = 0,
) -> dict[str, float]:
    """The limit each device is to have: its grant, or the limit it holds
    when that is less than L{MIN_STEP} away from the grant.

    A held limit is kept only within the device's own bounds and while it
    is above 0 (a device that stops gets 0, one that starts its grant).
    Keeping a held limit that is I{above} the grant takes room that the
    grants gave to others: it is kept only where every limit the device is
    counted on still has room for all targets; otherwise the device gets
    its grant. With C{max_imbalance}, if the targets would unbalance the
    site's phases more than that, every device gets its grant.

    @param grants: C{{name: amperes}} as shared.
    @param held: C{{name: amperes}} each device holds (or has in flight),
        L{None} when it holds no limit of the manager's.
    @param bounds: C{{name: (min_current, max_current)}}.
    @param limits: C{{name: limits}} each device is counted on (circuit or
        site, phase), as L{cfosproxy.site.circuits.share_circuits} counts.
    @param available: deci-amperes available per limit.
    @param max_imbalance: amperes, 0 for no limit.
    @return: C{{name: amperes}} for every grant. With every grant within the
        available current, so are the targets, on every limit.
    """
    targets = dict(grants)
    kept: set[str] = set()
    step = to_deciamps(MIN_STEP)
    for name, grant in grants.items():
        holding = held.get(name)
        low, high = bounds[name]
        if holding is None or holding <= 0 or grant <= 0 or not low <= holding <= high:
            continue
        if abs(to_deciamps(grant) - to_deciamps(holding)) < step:
            targets[name] = holding
            kept.add(name)
    if not kept:
        return targets
    sums: dict[Limit, int] = {}
    for name, amps in targets.items():
        for limit in limits[name]:
            sums[limit] = sums.get(limit, 0) + to_deciamps(amps)
    overflowing = {limit for limit, total in sums.items() if total > available[limit]}
    for name in list(kept):
        # Only a device kept above its grant can have made a sum overflow;
        # with its grant again, no sum is above the grants' sum.
        if targets[name] > grants[name] and overflowing.intersection(limits[name]):
            targets[name] = grants[name]
            kept.discard(name)
    if max_imbalance > 0 and kept:
        site = [0, 0, 0]
        for name, amps in targets.items():
            for circuit, phase in limits[name]:
                if circuit is None:
                    site[phase] += to_deciamps(amps)
        if max(site) - min(site) > to_deciamps(max_imbalance):
            for name in kept:
                targets[name] = grants[name]
    return targets
