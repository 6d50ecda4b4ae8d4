"""The back-off after wrong passwords, per client address, on a fake clock."""

from twisted.internet import task

from cfosproxy.core.passwordbackoff import PasswordBackoff, address_key


def backoff(allowed=3, max_backoff=60, **kwargs):
    clock = task.Clock()
    return clock, PasswordBackoff(clock, allowed, max_backoff, **kwargs)


def test_burst_within_allowance_is_never_refused():
    """Fewer wrong passwords than the allowance: no back-off at all."""
    clock, b = backoff()
    for _ in range(2):
        b.failed("192.0.2.1")
    assert b.retry_after("192.0.2.1") is None


def test_allowance_used_up_starts_backoff():
    """The third of three allowed wrong passwords starts a back-off of one
    second; then the address may try again."""
    clock, b = backoff()
    for _ in range(3):
        b.failed("192.0.2.1")
    assert b.retry_after("192.0.2.1") == 1
    clock.advance(1)
    assert b.retry_after("192.0.2.1") is None


def test_backoff_doubles_up_to_the_cap():
    """Each wrong password after the allowance doubles the back-off, up to
    the cap, however long guessing goes on."""
    clock, b = backoff(max_backoff=30)
    waits = []
    for _ in range(3 + 8):
        b.failed("192.0.2.1")
        wait = b.retry_after("192.0.2.1")
        if wait:
            waits.append(wait)
            clock.advance(wait)
    assert waits == [1, 2, 4, 8, 16, 30, 30, 30, 30]


def test_slow_wrong_retries_never_refused():
    """A wallbox with a wrong password that retries every 30 s (the
    allowance of 3 comes back within a minute) is never refused: it sees
    401, not 429, and so do wallboxes behind the same address."""
    clock, b = backoff()
    for _ in range(100):
        b.failed("192.0.2.1")
        assert b.retry_after("192.0.2.1") is None
        clock.advance(30)


def test_success_clears_address():
    """The right password clears the record: a full allowance again."""
    clock, b = backoff()
    for _ in range(3):
        b.failed("192.0.2.1")
    clock.advance(1)
    b.succeeded("192.0.2.1")
    for _ in range(2):
        b.failed("192.0.2.1")
    assert b.retry_after("192.0.2.1") is None


def test_addresses_are_separate():
    """One address's back-off does not touch another's."""
    clock, b = backoff()
    for _ in range(3):
        b.failed("192.0.2.1")
    assert b.retry_after("192.0.2.1") == 1
    assert b.retry_after("192.0.2.2") is None


def test_ipv6_counted_per_64():
    """Addresses of one IPv6 /64 share their back-off (one host can pick
    any of them); an IPv4-mapped address counts as the IPv4 address."""
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert address_key("not an address") == "not an address"


def test_quiet_addresses_are_forgotten():
    """An address that stops guessing is forgotten once its allowance is
    full again (a minute after its back-off ended); the back-off then
    starts again from one second."""
    clock, b = backoff(max_backoff=8)
    for _ in range(3 + 4):
        b.failed("192.0.2.1")
        clock.advance(b.retry_after("192.0.2.1") or 0)
    clock.advance(61)
    b.failed("192.0.2.9")  # any activity tidies up
    assert len(b) == 1
    for _ in range(3):
        b.failed("192.0.2.1")
    assert b.retry_after("192.0.2.1") == 1


def test_memory_is_bounded():
    """However many addresses guess, at most max_addresses are remembered;
    the least recently active are forgotten first."""
    clock, b = backoff(max_addresses=100)
    for n in range(5000):
        b.failed("10.0.{}.{}".format(n // 256, n % 256))
    assert len(b) == 100
    for _ in range(3):
        b.failed("192.0.2.1")
    assert b.retry_after("192.0.2.1") == 1
    assert len(b) == 100
