"""The charging profiles one connector holds, by the rules of OCPP 1.6
§3.13 (sans-IO): a new profile replaces one with the same id, or with the
same purpose and stack level; ClearChargingProfile removes by criteria."""

from collections.abc import Mapping

from cfosproxy.ocpp.schedules import ChargingProfile, Period, composite


class ProfileSet:
    """The profiles of one connector (or of a device)."""

    def __init__(self) -> None:
        self._profiles: dict[int, ChargingProfile] = {}

    def set(self, profile: ChargingProfile) -> None:
        """Keep C{profile}, replacing what it replaces."""
        for key, old in list(self._profiles.items()):
            if old.id == profile.id or (
                old.purpose == profile.purpose and old.stack_level == profile.stack_level
            ):
                del self._profiles[key]
        self._profiles[profile.id] = profile

    def clear(self, criteria: Mapping[str, object]) -> bool:
        """Remove the profiles a ClearChargingProfile payload selects (id,
        chargingProfilePurpose, stackLevel; none given: all).

        @return: whether anything was removed.
        """
        removed = [key for key, p in self._profiles.items() if _matches(p, criteria)]
        for key in removed:
            del self._profiles[key]
        return bool(removed)

    def composite(
        self,
        start: float,
        end: float,
        *,
        transaction_id: int | None = None,
        transaction_start: float | None = None,
    ) -> list[Period] | None:
        """The composite schedule over C{[start, end)}, or None when no
        profile is held."""
        if not self._profiles:
            return None
        return composite(
            list(self._profiles.values()),
            start,
            end,
            transaction_id=transaction_id,
            transaction_start=transaction_start,
        )


def _matches(profile: ChargingProfile, criteria: Mapping[str, object]) -> bool:
    if "id" in criteria and criteria["id"] != profile.id:
        return False
    if "chargingProfilePurpose" in criteria and criteria["chargingProfilePurpose"] != profile.purpose:
        return False
    if "stackLevel" in criteria and criteria["stackLevel"] != profile.stack_level:
        return False
    return True
