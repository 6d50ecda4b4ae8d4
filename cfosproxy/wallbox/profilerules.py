"""Which charging profiles the virtual wallbox takes (sans-IO).

Real wallboxes differ in the OCPP 1.6 charging profiles they take: some take
stack level 0 only, some limits in W only, some reject every
C{TxDefaultProfile}, some hold few profiles or few periods, and some answer
no GetConfiguration at all. L{ProfileRules} holds the switches of
C{[ocpp]} in C{cfoswallbox.ini} that make the virtual wallbox behave like
one of them, so that cfosproxy's way of sending limits to each wallbox
(DESIGN.md §8) can be tried against it. The defaults are the rules the
virtual wallbox always had.
"""

from dataclasses import dataclass

# ChargingScheduleAllowedChargingRateUnit's names, each with the
# chargingRateUnit it allows.
RATE_UNITS = {"Current": "A", "Power": "W"}

# The spellings of rate_unit, as OCPP writes ChargingScheduleAllowedChargingRateUnit.
RATE_UNIT_CHOICES = ("Current", "Power", "Current,Power")

# The configuration keys (OCPP 1.6 §9.4, Smart Charging) that report the rules.
PROFILE_KEYS = (
    "ChargeProfileMaxStackLevel",
    "ChargingScheduleAllowedChargingRateUnit",
    "ChargingScheduleMaxPeriods",
    "MaxChargingProfilesInstalled",
)


def spell_rate_unit(text):
    """C{text} as OCPP spells ChargingScheduleAllowedChargingRateUnit (one
    of L{RATE_UNIT_CHOICES}), in any case and either order; None if it is
    not one of them."""
    names = [part.strip().lower() for part in text.split(",")]
    known = {name.lower(): name for name in RATE_UNITS}
    if not names or len(set(names)) != len(names) or not all(n in known for n in names):
        return None
    given = {known[n] for n in names}
    return ",".join(name for name in RATE_UNITS if name in given)


@dataclass(frozen=True)
class ProfileRules:
    """What the virtual wallbox takes of a SetChargingProfile.

    @ivar max_stack_level: the highest stackLevel taken
        (ChargeProfileMaxStackLevel).
    @ivar rate_unit: one of L{RATE_UNIT_CHOICES}
        (ChargingScheduleAllowedChargingRateUnit).
    @ivar tx_default_profile: whether a C{TxDefaultProfile} is taken at all.
    @ivar max_periods: the most periods one schedule may have
        (ChargingScheduleMaxPeriods).
    @ivar max_profiles: the most profiles held at once
        (MaxChargingProfilesInstalled).
    @ivar configuration: whether GetConfiguration is answered; without it
        the wallbox tells nothing about itself.
    """

    max_stack_level: int = 8
    rate_unit: str = "Current"
    tx_default_profile: bool = True
    max_periods: int = 24
    max_profiles: int = 8
    configuration: bool = True

    @property
    def units(self):
        """The chargingRateUnit values taken: a set of C{"A"} and C{"W"}."""
        return frozenset(RATE_UNITS[name] for name in self.rate_unit.split(","))

    def configuration_keys(self):
        """The values of L{PROFILE_KEYS}, as GetConfiguration reports them."""
        values = (self.max_stack_level, self.rate_unit, self.max_periods, self.max_profiles)
        return dict(zip(PROFILE_KEYS, (str(v) for v in values)))

    def refusal(self, profile, held):
        """Why a profile is answered C{Rejected}, or None if the rules take it.

        @param profile: the C{csChargingProfiles} object of a
            SetChargingProfile that passed the OCPP schema.
        @param held: how many profiles the wallbox would hold with it (those
            it replaces not counted).
        @return: a reason, for the log.
        """
        purpose = profile["chargingProfilePurpose"]
        schedule = profile["chargingSchedule"]
        unit = schedule["chargingRateUnit"]
        periods = len(schedule["chargingSchedulePeriod"])
        if purpose == "TxDefaultProfile" and not self.tx_default_profile:
            return "it takes no TxDefaultProfile (tx_default_profile = reject)"
        if profile["stackLevel"] > self.max_stack_level:
            return "stack level {} is above {} (max_stack_level)".format(
                profile["stackLevel"], self.max_stack_level
            )
        if unit not in self.units:
            return "chargingRateUnit {} is not allowed (rate_unit = {})".format(unit, self.rate_unit)
        if periods > self.max_periods:
            return "{} periods are more than {} (max_periods)".format(periods, self.max_periods)
        if held > self.max_profiles:
            return "it would hold {} profiles, more than {} (max_profiles)".format(
                held, self.max_profiles
            )
        return None
