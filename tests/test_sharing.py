"""Sharing the site current: examples and properties."""

from hypothesis import given, settings
from hypothesis import strategies as st

from cfosproxy.site.sharing import Request, share, to_deciamps


def test_two_devices_share_evenly():
    """Two 6-16 A devices under 20 A get 10 A each."""
    assert share(20, [Request("a", 6, 16), Request("b", 6, 16)]) == {"a": 10.0, "b": 10.0}


def test_third_waits_when_rest_below_min():
    """Under 16 A two 6-16 A devices get 8 A each; a third would leave less
    than 6 A for someone, so it waits with 0."""
    grants = share(16, [Request("a", 6, 16), Request("b", 6, 16), Request("c", 6, 16)])
    assert grants == {"a": 8.0, "b": 8.0, "c": 0}


def test_three_fit_at_minimum():
    """Under 20 A three 6-16 A devices all fit: 6.7 + 6.7 + 6.6."""
    grants = share(20, [Request("a", 6, 16), Request("b", 6, 16), Request("c", 6, 16)])
    assert grants == {"a": 6.7, "b": 6.7, "c": 6.6}


def test_caps_at_device_max_and_gives_rest_to_others():
    """A device capped at its maximum leaves the rest to the others."""
    grants = share(32, [Request("small", 6, 10), Request("big", 6, 32)])
    assert grants == {"small": 10.0, "big": 22.0}


def test_strict_first_come_first_served():
    """A device that does not fit blocks the ones after it, even smaller ones."""
    grants = share(20, [Request("a", 6, 16), Request("big", 16, 16), Request("tiny", 1, 4)])
    assert grants == {"a": 16.0, "big": 0, "tiny": 0}


def test_nothing_to_share():
    """No site current: everyone waits."""
    assert share(0, [Request("a", 6, 16)]) == {"a": 0}


requests = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=40, allow_nan=False),
        st.floats(min_value=0, max_value=80, allow_nan=False),
    ),
    max_size=12,
).map(lambda pairs: [Request("d{}".format(i), lo, hi) for i, (lo, hi) in enumerate(pairs)])


@settings(max_examples=500)
@given(site=st.floats(min_value=0, max_value=500, allow_nan=False), requests=requests)
def test_properties(site, requests):
    """For any site limit and devices: the sum of grants never exceeds the
    site limit; every grant is 0 or within the device's limits; grants are
    whole deci-amperes; once a device waits (0 although its minimum is not
    0), every later one waits too; and when every minimum fits, everyone
    gets at least their minimum."""
    grants = share(site, requests)
    assert set(grants) == {r.name for r in requests}
    total = sum(to_deciamps(g) for g in grants.values())
    assert total <= to_deciamps(site)
    assert sum(grants.values()) <= site + 1e-9
    waiting = False
    for r in requests:
        g = grants[r.name]
        assert abs(g * 10 - round(g * 10)) < 1e-9
        if g == 0 and to_deciamps(r.min_current) > 0:
            # Waiting: not admitted (an admitted device gets its minimum).
            waiting = True
        elif g > 0:
            assert not waiting, "a later device was served before an earlier one"
            assert to_deciamps(r.min_current) <= to_deciamps(g) <= to_deciamps(r.max_current)
    valid = all(to_deciamps(r.min_current) <= to_deciamps(r.max_current) and to_deciamps(r.max_current) > 0 for r in requests)
    if valid and sum(to_deciamps(r.min_current) for r in requests) <= to_deciamps(site):
        assert all(to_deciamps(grants[r.name]) >= to_deciamps(r.min_current) for r in requests)


@given(site=st.integers(min_value=0, max_value=5000), requests=requests)
def test_uses_the_site_when_demand_exceeds_it(site, requests):
    """When the admitted devices could take more than the site has, the
    whole site limit is handed out (nothing is left on the table)."""
    site_amps = site / 10
    grants = share(site_amps, requests)
    served = [r for r in requests if grants[r.name] > 0]
    if served and sum(to_deciamps(r.max_current) for r in served) >= site:
        assert sum(to_deciamps(grants[r.name]) for r in served) == site
