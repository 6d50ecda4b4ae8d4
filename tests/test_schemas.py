"""Payload validation against the OCPP 1.6 JSON schemas (cfosproxy.ocpp.schemas)."""

import json

import pytest

from cfosproxy.ocpp.errors import ErrorCode, OcppError
from cfosproxy.ocpp.frames import Call, CallResult, parse_frame
from cfosproxy.ocpp.schemas import known_action, validate_call, validate_result

BOOT = {"chargePointVendor": "cFos", "chargePointModel": "Power Brain"}


def _profile(limit):
    return {
        "connectorId": 1,
        "csChargingProfiles": {
            "chargingProfileId": 1000,
            "stackLevel": 9,
            "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Absolute",
            "chargingSchedule": {
                "chargingRateUnit": "A",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}],
            },
        },
    }


def test_valid_boot_notification_passes():
    """A correct BootNotification is accepted."""
    validate_call(Call("1", "BootNotification", {**BOOT, "firmwareVersion": "1.2.3"}))


@pytest.mark.parametrize(
    "payload, code, path",
    [
        ({"chargePointVendor": "cFos"}, ErrorCode.ProtocolError, None),
        ({**BOOT, "chargePointModel": 42}, ErrorCode.TypeConstraintViolation, "chargePointModel"),
        ({**BOOT, "chargePointVendor": "v" * 21}, ErrorCode.TypeConstraintViolation,
         "chargePointVendor"),
        ({**BOOT, "colour": "red"}, ErrorCode.FormationViolation, None),
    ],
    ids=["missing-required", "wrong-type", "too-long", "extra-property"],
)
def test_bad_boot_notification_maps_to_ocpp_code(payload, code, path):
    """Each kind of schema violation is reported with its OCPP-J 1.6 error code."""
    with pytest.raises(OcppError) as info:
        validate_call(Call("1", "BootNotification", payload))
    assert info.value.code == code
    assert info.value.description
    assert info.value.details.get("path") == path


def test_bad_enum_is_property_constraint_violation():
    """A value outside an enumeration is a PropertyConstraintViolation naming the field."""
    status = {"connectorId": 1, "errorCode": "NoError", "status": "Sleeping"}
    with pytest.raises(OcppError) as info:
        validate_call(Call("1", "StatusNotification", status))
    assert info.value.code == ErrorCode.PropertyConstraintViolation
    assert info.value.details == {"path": "status"}


def test_unknown_action_is_not_implemented():
    """An action OCPP 1.6 does not define is answered with NotImplemented."""
    assert not known_action("FlyToTheMoon")
    assert not known_action("BootNotificationResponse")
    assert not known_action("../v16/schemas/BootNotification")
    with pytest.raises(OcppError) as info:
        validate_call(Call("1", "FlyToTheMoon", {}))
    assert info.value.code == ErrorCode.NotImplemented
    assert info.value.to_call_error("1").error_code == "NotImplemented"


def test_known_actions():
    """Core and security-extension actions are known."""
    assert known_action("BootNotification")
    assert known_action("SetChargingProfile")
    assert known_action("SignCertificate")


def test_decimal_limit_in_charging_profile_passes():
    """A limit with one decimal (21.4 A) passes the schema's multipleOf 0.1, also from the wire."""
    validate_call(Call("1", "SetChargingProfile", _profile(21.4)))
    text = json.dumps([2, "2", "SetChargingProfile", _profile(6.1)])
    assert '"limit": 6.1' in text
    validate_call(parse_frame(text))


def test_limit_with_two_decimals_is_rejected():
    """A limit that is not a multiple of 0.1 fails validation."""
    with pytest.raises(OcppError) as info:
        validate_call(Call("1", "SetChargingProfile", _profile(21.45)))
    assert info.value.code == ErrorCode.FormationViolation


def test_absurd_limit_is_rejected_not_crashing():
    """A limit too large to check against multipleOf is an OcppError, not a crash."""
    with pytest.raises(OcppError) as info:
        validate_call(Call("1", "SetChargingProfile", _profile(1e300)))
    assert info.value.code == ErrorCode.PropertyConstraintViolation


def test_long_description_is_cut():
    """Descriptions stay short even when the offending value is long."""
    with pytest.raises(OcppError) as info:
        validate_call(Call("1", "BootNotification", {**BOOT, "chargePointModel": "v" * 1000}))
    assert len(info.value.description) <= 200


def test_boot_notification_response_validates():
    """A correct BootNotification answer passes; one with a bad status does not."""
    result = {"status": "Accepted", "currentTime": "2024-01-01T00:00:00Z", "interval": 300}
    validate_result("BootNotification", CallResult("1", result))
    with pytest.raises(OcppError) as info:
        validate_result("BootNotification", CallResult("1", {**result, "status": "Maybe"}))
    assert info.value.code == ErrorCode.PropertyConstraintViolation


def test_composite_schedule_result_with_decimal_limit_validates():
    """The GetCompositeSchedule answer's float limits are checked like the request's."""
    result = {
        "status": "Accepted",
        "connectorId": 1,
        "chargingSchedule": {
            "chargingRateUnit": "A",
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 21.4}],
        },
    }
    validate_result("GetCompositeSchedule", CallResult("1", result))
