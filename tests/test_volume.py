"""Fewer limits: small changes of the shares keep what the wallboxes hold,
as long as the fuses and the balance of the phases allow it."""

from hypothesis import given
from hypothesis import strategies as st

from cfosproxy.site.sharing import to_deciamps
from cfosproxy.site.volume import steady_targets

SITE = [(None, 0), (None, 1), (None, 2)]


def targets(grants, held, available=(200, 200, 200), max_imbalance=0, limits=None):
    """steady_targets for devices 6-16 A on every site phase."""
    return steady_targets(
        grants,
        held,
        {name: (6, 16) for name in grants},
        limits or {name: SITE for name in grants},
        dict(zip(SITE, available)),
        max_imbalance,
    )


def test_a_change_below_half_an_ampere_keeps_the_held_limit():
    """Grants that moved by less than 0.5 A (either way) keep what the
    wallboxes hold; 0.5 A or more goes to the grant."""
    assert targets({"A": 8.3, "B": 8.0}, {"A": 8.0, "B": 8.5}) == {"A": 8.0, "B": 8.0}
    assert targets({"A": 8.3, "B": 8.0}, {"A": 7.8, "B": 7.6}) == {"A": 8.3, "B": 7.6}


def test_start_stop_and_bounds_always_take_the_grant():
    """A device that stops gets 0, one without a held limit (or with 0,
    or one outside its bounds) gets its grant."""
    assert targets({"A": 0.0, "B": 6.2, "C": 6.0, "D": 6.3}, {"A": 0.3, "B": None, "C": 0.0, "D": 5.9}) == {
        "A": 0.0, "B": 6.2, "C": 6.0, "D": 6.3,
    }


def test_a_held_limit_above_the_grant_gives_way_to_the_fuse():
    """Keeping 8.4 A where the grant is 8.0 A would take the room the
    grants gave to another device: on a full site it goes to the grant,
    while a device held below its grant keeps its limit."""
    assert targets({"A": 8.0, "B": 8.0}, {"A": 8.4, "B": 7.7}, available=(160, 160, 160)) == {
        "A": 8.0, "B": 7.7,
    }
    assert targets({"A": 8.0, "B": 8.0}, {"A": 8.4, "B": 7.7}, available=(165, 165, 165)) == {
        "A": 8.4, "B": 7.7,
    }


def test_kept_limits_give_way_to_max_imbalance():
    """If the limits kept would pull the site's phases further apart than
    max_imbalance, every device gets its grant."""
    limits = {"A": [(None, 0)], "B": [(None, 1)]}
    assert steady_targets(
        {"A": 10.0, "B": 10.0}, {"A": 10.4, "B": 9.6}, {"A": (6, 16), "B": (6, 16)},
        limits, dict(zip(SITE, (200, 200, 200))), 0.5,
    ) == {"A": 10.0, "B": 10.0}


@given(
    data=st.data(),
    count=st.integers(1, 6),
)
def test_targets_keep_every_fuse_the_grants_keep(data, count):
    """Whatever the devices hold, if the grants are within what is
    available on every limit, so are the targets; each target is the grant
    or within 0.5 A of it."""
    names = [f"D{i}" for i in range(count)]
    limits = {
        name: data.draw(st.sets(st.sampled_from(SITE + [("c", 0), ("c", 1)]), min_size=1).map(lambda s: sorted(s, key=str)))
        for name in names
    }
    amps = st.integers(0, 160).map(lambda d: d / 10)
    grants = {name: data.draw(amps) for name in names}
    held = {name: data.draw(st.none() | amps) for name in names}
    available = {}
    for limit in SITE + [("c", 0), ("c", 1)]:
        used = sum(to_deciamps(grants[n]) for n in names if limit in limits[n])
        available[limit] = used + data.draw(st.integers(0, 10))
    bounds = {name: (0.0, 16.0) for name in names}
    result = steady_targets(grants, held, bounds, limits, available, data.draw(st.sampled_from([0, 3])))
    for limit, room in available.items():
        assert sum(to_deciamps(result[n]) for n in names if limit in limits[n]) <= room
    for name in names:
        assert result[name] == grants[name] or abs(to_deciamps(result[name]) - to_deciamps(grants[name])) < 5
