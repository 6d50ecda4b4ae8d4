"""The OCPP side of the virtual Power Brain (sans-IO).

The same charge point as a Modbus wallbox shown to a backend
(L{cfosproxy.modbus.chargepoint.ModbusChargePoint}), here driven by the simulated
device, plus what a real wallbox does that cfosproxy's emulation leaves to
cfosproxy: it holds the charging profiles it is sent and limits itself by
their composite schedule. Which profiles it takes, and what it tells of
itself in GetConfiguration, follow its L{ProfileRules}.
"""

from cfosproxy.modbus.chargepoint import CONNECTOR_ID, ModbusChargePoint
from cfosproxy.ocpp.errors import ErrorCode, OcppError
from cfosproxy.ocpp.frames import Call
from cfosproxy.ocpp.profileset import ProfileSet
from cfosproxy.ocpp.schedules import ChargingProfile, limit_at, to_charging_schedule
from cfosproxy.ocpp.schemas import validate_call
from cfosproxy.ocpp.times import ocpp_time
from cfosproxy.wallbox.model import PHASES, VOLTS_PER_PHASE
from cfosproxy.wallbox.profilerules import PROFILE_KEYS, ProfileRules


DEMO_SAMPLE_INTERVAL = 10


class HeldProfiles(ProfileSet):
    """The profiles the wallbox holds, which it can count."""

    def count_with(self, profile):
        """How many profiles would be held with C{profile} set: those it
        replaces (same id, or same purpose and stack level) not counted."""
        trial = ProfileSet()
        trial._profiles = dict(self._profiles)
        trial.set(profile)
        return len(trial._profiles)


def in_amperes(profile, volts_per_phase, phases):
    """C{profile} (a C{csChargingProfiles} object) with a schedule in W
    written in A per phase of a car that draws on C{phases} phases: the
    power a wallbox may let the car draw, shared over the phases it draws
    on, whatever numberPhases says. A schedule in A comes back as it is.

    Limits that are not numbers are left for
    L{ChargingProfile.from_json} to refuse.
    """
    schedule = profile["chargingSchedule"]
    if schedule.get("chargingRateUnit") != "W":
        return profile
    watts_per_ampere = volts_per_phase * phases
    periods = [
        {**period, "limit": period["limit"] / watts_per_ampere}
        if _is_number(period.get("limit")) else period
        for period in schedule["chargingSchedulePeriod"]
    ]
    schedule = {**schedule, "chargingRateUnit": "A", "chargingSchedulePeriod": periods}
    return {**profile, "chargingSchedule": schedule}


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class VirtualChargePoint(ModbusChargePoint):
    """A charge point that keeps its own charging profiles.

    @param car_max_current: amperes, for GetCompositeSchedule where no
        profile limits.
    @param rules: the L{ProfileRules}: which profiles it takes, what its
        GetConfiguration tells.
    @param volts_per_phase: the car's voltage, to turn a limit in W into
        amperes.
    @param car_phases: the phases the car draws on.
    """

    def __init__(
        self, device, gateway, clock, on_allowed_changed, car_max_current, connector_id=CONNECTOR_ID,
        *, rules=ProfileRules(), volts_per_phase=VOLTS_PER_PHASE, car_phases=PHASES,
    ):
        super().__init__(device, gateway, clock, on_allowed_changed, connector_id=connector_id)
        self.profiles = HeldProfiles()
        self.rules = rules
        self._car_max_current = car_max_current
        self._volts_per_phase = volts_per_phase
        self._car_phases = car_phases
        # A demo should show energy and power moving on the status page
        # soon; a backend can change it (MeterValueSampleInterval).
        self._sample_interval = DEMO_SAMPLE_INTERVAL
        self._transaction_start = None

    def _start_transaction(self, remote_id_tag):
        self._transaction_start = self._clock.seconds()
        return super()._start_transaction(remote_id_tag)

    def ocpp_limit(self):
        """The limit of the composite schedule now, A per phase, or None (no limit)."""
        now = self._clock.seconds()
        periods = self.profiles.composite(
            now, now + 1, transaction_id=self.transaction_id, transaction_start=self._transaction_start
        )
        return None if periods is None else limit_at(periods, now)

    def _on_SetChargingProfile(self, payload):
        validate_call(Call("-", "SetChargingProfile", payload))
        if payload["connectorId"] not in (0, self.connector_id):
            return {"status": "Rejected"}
        data = payload["csChargingProfiles"]
        try:
            profile = ChargingProfile.from_json(
                in_amperes(data, self._volts_per_phase, self._car_phases)
            )
        except ValueError as e:
            raise OcppError(ErrorCode.PropertyConstraintViolation, str(e)) from e
        reason = self._transaction_refusal(profile) or self.rules.refusal(
            data, self.profiles.count_with(profile)
        )
        if reason is not None:
            self._log.info(
                "{name}: SetChargingProfile {id} rejected: {reason}",
                name=self.device.name, id=profile.id, reason=reason,
            )
            return {"status": "Rejected"}
        self.profiles.set(profile)
        self._on_allowed_changed()
        return {"status": "Accepted"}

    def _transaction_refusal(self, profile):
        """Why a TxProfile cannot be taken now, or None."""
        if profile.purpose != "TxProfile":
            return None
        # OCPP 1.6 §5.16: a TxProfile needs a running transaction, and
        # one that names a transaction must name that one.
        if self.transaction_id is None:
            return "a TxProfile needs a running transaction"
        if profile.transaction_id not in (None, self.transaction_id):
            return "the TxProfile is for transaction {}, not the running {}".format(
                profile.transaction_id, self.transaction_id
            )
        return None

    def _on_ClearChargingProfile(self, payload):
        if not self.profiles.clear(payload):
            return {"status": "Unknown"}
        self._on_allowed_changed()
        return {"status": "Accepted"}

    def _on_GetConfiguration(self, payload):
        if not self.rules.configuration:
            raise OcppError(ErrorCode.NotSupported, "GetConfiguration is not supported")
        # All the keys of a Modbus wallbox's charge point, with those the
        # rules set told as they are.
        values = {
            entry["key"]: entry for entry in super()._on_GetConfiguration({})["configurationKey"]
        }
        for key, value in self.rules.configuration_keys().items():
            values[key] = {"key": key, "readonly": True, "value": value}
        asked = payload.get("key") or list(values)
        result = {"configurationKey": [values[k] for k in asked if k in values]}
        unknown = [k for k in asked if k not in values]
        if unknown:
            result["unknownKey"] = unknown
        return result

    def _on_ChangeConfiguration(self, payload):
        if payload.get("key") in PROFILE_KEYS:
            return {"status": "Rejected"}
        return super()._on_ChangeConfiguration(payload)

    def _on_GetCompositeSchedule(self, payload):
        now = self._clock.seconds()
        duration = payload.get("duration", 0)
        periods = self.profiles.composite(
            now, now + duration, transaction_id=self.transaction_id,
            transaction_start=self._transaction_start,
        )
        if not periods:
            return {"status": "Rejected"}
        return {
            "status": "Accepted",
            "connectorId": payload.get("connectorId", self.connector_id),
            "scheduleStart": ocpp_time(now),
            "chargingSchedule": to_charging_schedule(periods, now, unlimited=self._car_max_current),
        }
