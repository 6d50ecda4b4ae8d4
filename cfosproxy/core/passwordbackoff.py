"""Back-off for wrong passwords at the OCPP server, per client address.

Sans-IO: the hub asks before it checks a password and reports the outcome;
time comes from a clock (C{reactor} in production, C{task.Clock} in tests).

Each address has an allowance of wrong passwords that refills over a
minute. While the allowance lasts, every password is checked as usual.
Once it is used up, the address is refused (HTTP 429) for a back-off that
starts at one second and doubles with each further wrong password, up to a
cap; during the back-off no password from that address is checked at all,
so guessing on is no faster than one guess per back-off. A right password
clears the address. The cap bounds how long the right password can be
locked out; the allowance keeps a wallbox that retries a wrong password
every half minute, or the odd typing error, from ever being refused.
"""

from __future__ import annotations

import ipaddress
import math
from typing import TYPE_CHECKING

from twisted.logger import Logger

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

# Seconds in which a spent allowance comes back in full.
REFILL_SECONDS = 60.0
FIRST_BACKOFF = 1.0
# Addresses remembered at most; beyond that the least recently active are
# forgotten first. Each costs about 200 bytes.
MAX_ADDRESSES = 10000


class PasswordBackoff:
    """Wrong passwords per client address, and who must wait.

    @param clock: L{IReactorTime}.
    @param allowed_failures: wrong passwords an address may send in a
        burst before its back-off starts; refilled within
        L{REFILL_SECONDS}.
    @param max_backoff: the longest back-off, in seconds.
    @param max_addresses: how many addresses are remembered at most.
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        allowed_failures: int,
        max_backoff: float,
        *,
        max_addresses: int = MAX_ADDRESSES,
    ) -> None:
        if allowed_failures < 1:
            raise ValueError("allowed_failures must be at least 1")
        self._clock = clock
        self._allowed = float(allowed_failures)
        self._refill_rate = allowed_failures / REFILL_SECONDS
        self._max_backoff = float(max_backoff)
        self._max_addresses = max_addresses
        # address key -> _Record, least recently active first
        self._records: dict[str, _Record] = {}

    def __len__(self) -> int:
        """How many addresses are remembered now."""
        return len(self._records)

    def retry_after(self, address: str) -> int | None:
        """Whether C{address} is in its back-off.

        @return: the whole seconds it still has to wait (at least 1), or
            None when its password may be checked.
        """
        now = self._clock.seconds()
        key = address_key(address)
        record = self._records.get(key)
        if record is None:
            return None
        if record.forgotten_at(self._allowed, self._refill_rate) <= now:
            del self._records[key]
            return None
        if now < record.blocked_until:
            return max(1, math.ceil(record.blocked_until - now))
        return None

    def failed(self, address: str) -> None:
        """C{address} sent a wrong password (it was checked)."""
        now = self._clock.seconds()
        key = address_key(address)
        record = self._records.pop(key, None)
        if record is None or record.forgotten_at(self._allowed, self._refill_rate) <= now:
            record = _Record(self._allowed, now)
        record.refill(now, self._allowed, self._refill_rate)
        record.failures += 1
        record.allowance = max(0.0, record.allowance - 1.0)
        if record.allowance < 1.0:
            backoff = min(self._max_backoff, FIRST_BACKOFF * 2**record.strikes)
            record.strikes += 1
            record.blocked_until = now + backoff
            self._log.warn(
                "{address}: {failures} wrong passwords; its connections are "
                "refused with 429 for {backoff:.0f} s",
                address=key,
                failures=record.failures,
                backoff=backoff,
            )
        # Re-inserted last: the dict stays ordered by last activity.
        self._records[key] = record
        self._forget_old(now)

    def succeeded(self, address: str) -> None:
        """C{address} sent the right password: its record is cleared."""
        self._records.pop(address_key(address), None)

    def _forget_old(self, now: float) -> None:
        records = self._records
        while records:
            key, record = next(iter(records.items()))
            if record.forgotten_at(self._allowed, self._refill_rate) > now:
                break
            del records[key]
        while len(records) > self._max_addresses:
            del records[next(iter(records))]


class _Record:
    """One address: its allowance (at C{updated}) and its back-off."""

    __slots__ = ("allowance", "updated", "blocked_until", "strikes", "failures")

    def __init__(self, allowance: float, now: float) -> None:
        self.allowance = allowance
        self.updated = now
        self.blocked_until = now
        self.strikes = 0
        self.failures = 0

    def refill(self, now: float, allowed: float, rate: float) -> None:
        # Nothing comes back during a back-off: otherwise each long
        # back-off would end with a fresh burst of guesses.
        since = max(self.updated, self.blocked_until)
        if now > since:
            self.allowance = min(allowed, self.allowance + (now - since) * rate)
        self.updated = now

    def forgotten_at(self, allowed: float, rate: float) -> float:
        """When the allowance is full again and the back-off over: from
        then on the record says nothing and is dropped."""
        since = max(self.updated, self.blocked_until)
        return since + (allowed - self.allowance) / rate


def address_key(address: str) -> str:
    """What the back-off counts per: the IP address, or its /64 network for
    IPv6 (one host usually has a whole /64 to pick addresses from)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network((ip, 64), strict=False))
    return str(ip)
