"""The OCPP side of the virtual Power Brain (sans-IO).

The same charge point as a Modbus wallbox shown to a backend
(L{cfosproxy.modbus.chargepoint.ModbusChargePoint}), here driven by the simulated
device, plus what a real wallbox does that cfosproxy's emulation leaves to
cfosproxy: it holds the charging profiles it is sent and limits itself by
their composite schedule.
"""

from cfosproxy.modbus.chargepoint import CONNECTOR_ID, ModbusChargePoint
from cfosproxy.ocpp.errors import ErrorCode, OcppError
from cfosproxy.ocpp.frames import Call
from cfosproxy.ocpp.profileset import ProfileSet
from cfosproxy.ocpp.schedules import ChargingProfile, limit_at, to_charging_schedule
from cfosproxy.ocpp.schemas import validate_call
from cfosproxy.ocpp.times import ocpp_time


DEMO_SAMPLE_INTERVAL = 10


class VirtualChargePoint(ModbusChargePoint):
    """A charge point that keeps its own charging profiles.

    @param car_max_current: amperes, for GetCompositeSchedule where no
        profile limits.
    """

    def __init__(self, device, gateway, clock, on_allowed_changed, car_max_current, connector_id=CONNECTOR_ID):
        super().__init__(device, gateway, clock, on_allowed_changed, connector_id=connector_id)
        self.profiles = ProfileSet()
        self._car_max_current = car_max_current
        # A demo should show energy and power moving on the status page
        # soon; a backend can change it (MeterValueSampleInterval).
        self._sample_interval = DEMO_SAMPLE_INTERVAL
        self._transaction_start = None

    def _start_transaction(self, remote_id_tag):
        self._transaction_start = self._clock.seconds()
        return super()._start_transaction(remote_id_tag)

    def ocpp_limit(self):
        """The limit of the composite schedule now, or None (no limit)."""
        now = self._clock.seconds()
        periods = self.profiles.composite(
            now, now + 1, transaction_id=self.transaction_id, transaction_start=self._transaction_start
        )
        return None if periods is None else limit_at(periods, now)

    def _on_SetChargingProfile(self, payload):
        validate_call(Call("-", "SetChargingProfile", payload))
        if payload["connectorId"] not in (0, self.connector_id):
            return {"status": "Rejected"}
        try:
            profile = ChargingProfile.from_json(payload["csChargingProfiles"])
        except ValueError as e:
            raise OcppError(ErrorCode.PropertyConstraintViolation, str(e)) from e
        if profile.purpose == "TxProfile" and self.transaction_id is None:
            # OCPP 1.6 §5.16: a TxProfile needs a running transaction.
            return {"status": "Rejected"}
        self.profiles.set(profile)
        self._on_allowed_changed()
        return {"status": "Accepted"}

    def _on_ClearChargingProfile(self, payload):
        if not self.profiles.clear(payload):
            return {"status": "Unknown"}
        self._on_allowed_changed()
        return {"status": "Accepted"}

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
