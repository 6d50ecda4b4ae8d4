"""How one OCPP wallbox takes its limits (DESIGN §8).

Wallboxes differ in the charging profiles they take: some take stack level
0 only, some limits in W only, some reject a C{TxDefaultProfile} and take a
C{TxProfile} for the running transaction. A L{LimitStrategy} keeps, per
device, the ways of sending a limit that are left to try (L{Way}, best
first), which one works, and the last refusal with its reason:

- C{stack_level = auto}: the manager's stack level, but never above the
  wallbox's C{ChargeProfileMaxStackLevel}; stack level 0 after a refusal
  (some wallboxes refuse levels they report as allowed).
- C{rate_unit = auto}: A, unless the wallbox allows only Power (W); when it
  did not say, W is tried after A was refused.
- C{charging_profile = auto}: C{TxDefaultProfile}; after every way of it
  was refused, a C{TxProfile} with the transaction's id (only while a
  transaction runs), and no default limit.
- An explicit value of a key is the only one tried.

Once every way was refused the strategy is I{refused}: the manager counts
the device at its C{max_current}, reports it, and tries again from the
first way later. Sans-IO: the actuator (L{cfosproxy.site.ocpplimits}) sends,
this module decides.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from cfosproxy.ocpp.profiles import MANAGER_STACK_LEVEL

# The configuration keys a wallbox is asked for (GetConfiguration).
PROBED_KEYS = (
    "ChargeProfileMaxStackLevel",
    "ChargingScheduleAllowedChargingRateUnit",
    "ChargingScheduleMaxPeriods",
    "MaxChargingProfilesInstalled",
)

DEFAULT_PROFILE = "TxDefaultProfile"
TRANSACTION_PROFILE = "TxProfile"

# OCPP's names of the units in ChargingScheduleAllowedChargingRateUnit.
_UNIT_NAMES = {"current": "A", "power": "W"}


class ProfileSettings(Protocol):
    """What a strategy reads of a device's L{cfosproxy.config.WallboxConfig}."""

    @property
    def charging_profile(self) -> str: ...

    @property
    def rate_unit(self) -> str: ...

    @property
    def explicit_stack_level(self) -> int | None: ...

    @property
    def voltage(self) -> float: ...


@dataclass(frozen=True)
class Way:
    """One way of sending a limit: the profile's purpose, its stack level and
    its unit."""

    purpose: str
    stack_level: int
    rate_unit: str

    def __str__(self) -> str:
        return f"{self.purpose}, stack level {self.stack_level}, {self.rate_unit}"

    @property
    def needs_transaction(self) -> bool:
        """Whether a limit this way needs a running transaction (TxProfile)."""
        return self.purpose == TRANSACTION_PROFILE


@dataclass(frozen=True)
class WallboxFacts:
    """What a wallbox said of itself in its GetConfiguration answer; None
    where it said nothing (or nothing that reads)."""

    max_stack_level: int | None = None
    rate_units: frozenset[str] | None = None
    max_periods: int | None = None
    max_profiles: int | None = None

    @classmethod
    def from_configuration(cls, result: Mapping[str, Any]) -> WallboxFacts:
        """Read a GetConfiguration answer: the keys of L{PROBED_KEYS} that it
        has with a value that reads; anything else is left out."""
        values: dict[str, str] = {}
        entries = result.get("configurationKey")
        # A wallbox's answer is not checked against the schema: anything
        # that is no list of keys reads as nothing said.
        for entry in entries if isinstance(entries, list) else ():
            if isinstance(entry, Mapping) and isinstance(entry.get("value"), str):
                values[str(entry.get("key"))] = entry["value"]
        units = None
        if "ChargingScheduleAllowedChargingRateUnit" in values:
            names = values["ChargingScheduleAllowedChargingRateUnit"].replace(";", ",")
            read = {_UNIT_NAMES.get(n.strip().lower()) for n in names.split(",")}
            units = frozenset(u for u in read if u is not None) or None
        return cls(
            max_stack_level=_count(values.get("ChargeProfileMaxStackLevel")),
            rate_units=units,
            max_periods=_positive(values.get("ChargingScheduleMaxPeriods")),
            max_profiles=_positive(values.get("MaxChargingProfilesInstalled")),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "max_stack_level": self.max_stack_level,
            "rate_units": sorted(self.rate_units) if self.rate_units else None,
            "max_periods": self.max_periods,
            "max_profiles": self.max_profiles,
        }


def _count(text: str | None) -> int | None:
    try:
        value = int(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and value >= 0 else None


def _positive(text: str | None) -> int | None:
    value = _count(text)
    return value if value else None


def ways(settings: ProfileSettings, facts: WallboxFacts | None) -> list[Way]:
    """Every way to try, best first, from the configuration and what the
    wallbox said of itself (None: it said nothing)."""
    facts = facts or WallboxFacts()
    if settings.charging_profile == "auto":
        purposes = [DEFAULT_PROFILE, TRANSACTION_PROFILE]
    else:
        purposes = [settings.charging_profile]
    if settings.rate_unit != "auto":
        units = [settings.rate_unit]
    elif facts.rate_units is None:
        units = ["A", "W"]
    elif "A" in facts.rate_units:
        units = ["A"]
    else:
        units = ["W"]
    level = settings.explicit_stack_level
    if level is not None:
        levels = [level]
    elif facts.max_stack_level is not None:
        # Some wallboxes refuse levels they report as allowed (ABB Terra
        # AC reports 3 and takes 0 only): 0 is tried after a refusal.
        levels = _unique([min(MANAGER_STACK_LEVEL, facts.max_stack_level), 0])
    else:
        levels = _unique([MANAGER_STACK_LEVEL, 0])
    return [Way(p, s, u) for p in purposes for u in units for s in levels]


def _unique(values: Iterable[int]) -> list[int]:
    return list(dict.fromkeys(values))


def probes(settings: ProfileSettings) -> bool:
    """Whether the wallbox is asked for its configuration: unless every key
    of DESIGN §8 is given explicitly."""
    return (
        settings.charging_profile == "auto"
        or settings.rate_unit == "auto"
        or settings.explicit_stack_level is None
    )


@dataclass(frozen=True)
class Refusal:
    """A limit the wallbox did not take."""

    at: float
    way: Way
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {"at": self.at, "way": str(self.way), "reason": self.reason}


class LimitStrategy:
    """How limits go to one device, and what was learnt of it.

    @ivar state: C{"probing"} (its configuration is being asked for),
        C{"ready"} (a way is known or being tried), C{"refused"} (every way
        was refused; tried again from the first later).
    @ivar default_limit: whether the wallbox holds a default limit of the
        manager's while no transaction runs: True once a TxDefaultProfile was
        accepted, False once every way of it was refused, None while unknown.
    @ivar last_refusal: the latest L{Refusal}, or None.
    """

    def __init__(self, settings: ProfileSettings) -> None:
        self.settings = settings
        self.voltage = settings.voltage
        self.facts: WallboxFacts | None = None
        self.source = "configuration" if not probes(settings) else "defaults"
        self.state = "ready"
        self.default_limit: bool | None = None
        self.last_refusal: Refusal | None = None
        self._ways = ways(settings, None)
        self._index = 0

    def probing(self) -> None:
        """The wallbox is being asked for its configuration."""
        self.state = "probing"

    def learn(self, facts: WallboxFacts | None) -> None:
        """Take what the wallbox said of itself (None: nothing) and start
        again from the first way that fits it."""
        self.facts = facts
        if probes(self.settings):
            said = facts is not None and facts != WallboxFacts()
            self.source = "wallbox" if said else "defaults"
        self._ways = ways(self.settings, facts)
        self._index = 0
        self.state = "ready"

    @property
    def way(self) -> Way:
        """The way limits go now (the one to try next while refused)."""
        return self._ways[self._index]

    @property
    def rate_unit(self) -> str:
        return self.way.rate_unit

    @property
    def in_watts(self) -> bool:
        return self.way.rate_unit == "W"

    @property
    def needs_transaction(self) -> bool:
        """Whether limits go as TxProfiles, for a running transaction only."""
        return self.way.needs_transaction

    def way_for(self, transaction: bool) -> Way | None:
        """The way to send a limit now: the current one, or with no
        transaction running the default's (a TxDefaultProfile of the
        current stack level and unit, unless the wallbox refused those);
        None when nothing can be sent without a transaction."""
        way = self.way
        if transaction or not way.needs_transaction:
            return way
        if self.default_limit is False:
            return None
        return Way(DEFAULT_PROFILE, way.stack_level, way.rate_unit)

    def accepted(self, way: Way) -> None:
        """The wallbox took a limit sent C{way}."""
        if way.purpose == DEFAULT_PROFILE:
            self.default_limit = True
        self.state = "ready"

    def refused(self, way: Way, reason: str, now: float) -> Way | None:
        """The wallbox refused a limit sent C{way} (for C{reason}).

        @return: the next way to try, or None when every way was refused
            (the strategy is then refused, and starts again from the first
            way at the next limit)."""
        self.last_refusal = Refusal(now, way, reason)
        if way not in self._ways:
            if way.purpose == DEFAULT_PROFILE and self.way.needs_transaction:
                # The default of a TxProfile strategy: the wallbox takes none.
                self.default_limit = False
                return None
            # A way from before the wallbox said what it takes: go on with
            # the first way that fits what it said.
            return self.way
        index = self._ways.index(way)
        if index + 1 < len(self._ways):
            self._index = index + 1
            if all(w.purpose != DEFAULT_PROFILE for w in self._ways[self._index :]):
                if any(w.purpose == DEFAULT_PROFILE for w in self._ways[: self._index]):
                    # Every way of a default limit was refused.
                    self.default_limit = False
            return self.way
        self.state = "refused"
        self._index = 0
        return None

    def as_json(self) -> dict[str, Any]:
        """The strategy as the status API shows it."""
        return {
            "state": self.state,
            "purpose": self.way.purpose,
            "stack_level": self.way.stack_level,
            "rate_unit": self.way.rate_unit,
            "voltage": self.voltage if self.way.rate_unit == "W" else None,
            "default_limit": self.default_limit,
            "source": self.source,
            "wallbox": self.facts.as_json() if self.facts is not None else None,
            "last_refusal": self.last_refusal.as_json() if self.last_refusal else None,
        }


def strategy_of(device: Any) -> LimitStrategy:
    """The L{LimitStrategy} of an OCPP device (a
    L{cfosproxy.core.devices.Device}), made from its configuration the
    first time it is asked for: by the manager when it takes the device
    in, by the actuator when it sends."""
    strategy = device.strategy
    if not isinstance(strategy, LimitStrategy):
        strategy = device.strategy = LimitStrategy(device.config)
    return strategy
