"""The virtual wallbox's charge point keeps the profiles it is sent."""

from twisted.internet import task

from cfosproxy.config import WallboxConfig
from cfosproxy.core.devices import Device
from cfosproxy.ocpp.frames import Call, CallResult
from cfosproxy.wallbox.chargepoint import VirtualChargePoint


class NoGateway:
    """Swallows the charge point's own CALLs (not under test here)."""

    def answer(self, call):
        return {}

    def chargepoint_online(self, chargepoint):
        pass

    def chargepoint_offline(self, chargepoint):
        pass


def charge_point():
    clock = task.Clock()
    clock.advance(1_795_428_000)  # 2026-11-23T10:00Z
    device = Device(name="CB-1", type="modbus", address="CB-1", connector_id=1,
                    config=WallboxConfig(name="CB-1", type="modbus", address="v", id_tag="T"))
    changes = []
    cp = VirtualChargePoint(device, NoGateway(), clock, lambda: changes.append(1), 32.0)
    return cp, changes


def profile(limit, purpose="TxDefaultProfile", profile_id=1, stack=0):
    return {"connectorId": 1, "csChargingProfiles": {
        "chargingProfileId": profile_id, "stackLevel": stack, "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Absolute",
        "chargingSchedule": {"startSchedule": "2026-11-23T00:00:00Z", "chargingRateUnit": "A",
                             "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}]}}}


def send(cp, action, payload):
    answer = cp.send_call(Call("1", action, payload)).result
    assert isinstance(answer, CallResult), answer
    return answer.payload


def test_profile_limits_and_clears():
    """A TxDefaultProfile limits the wallbox (its composite now); clearing it
    lifts the limit; each change tells the device side."""
    cp, changes = charge_point()
    assert cp.ocpp_limit() is None
    assert send(cp, "SetChargingProfile", profile(10.0)) == {"status": "Accepted"}
    assert cp.ocpp_limit() == 10.0 and changes == [1]
    assert send(cp, "ClearChargingProfile", {"id": 1}) == {"status": "Accepted"}
    assert cp.ocpp_limit() is None
    assert send(cp, "ClearChargingProfile", {"id": 1}) == {"status": "Unknown"}


def test_tx_profile_needs_transaction():
    """A TxProfile without a running transaction is rejected (OCPP 1.6)."""
    cp, _ = charge_point()
    assert send(cp, "SetChargingProfile", profile(8.0, purpose="TxProfile")) == {"status": "Rejected"}


def test_composite_schedule_reported():
    """GetCompositeSchedule answers the schedule the wallbox limits itself
    by; with no profile it is Rejected."""
    cp, _ = charge_point()
    assert send(cp, "GetCompositeSchedule", {"connectorId": 1, "duration": 600})["status"] == "Rejected"
    send(cp, "SetChargingProfile", profile(12.0))
    answer = send(cp, "GetCompositeSchedule", {"connectorId": 1, "duration": 600})
    assert answer["status"] == "Accepted"
    assert answer["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] == 12.0
