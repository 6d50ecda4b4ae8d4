"""cfosproxy's own central-system answers."""

import itertools

import pytest

from cfosproxy.core.localcs import LocalCentralSystem
from cfosproxy.ocpp.times import ocpp_time
from cfosproxy.ocpp.errors import ErrorCode, OcppError
from cfosproxy.ocpp.frames import Call
from cfosproxy.ocpp.schemas import validate_result
from cfosproxy.ocpp.frames import CallResult


class FixedClock:
    def seconds(self):
        return 1_700_000_000.25


@pytest.fixture
def local():
    ids = itertools.count(41)
    return LocalCentralSystem(FixedClock(), 300, lambda: next(ids))


def answer(local, action, payload):
    return local.answer(Call("id", action, payload))


def test_boot_accepted_with_interval_and_time(local):
    """BootNotification is accepted with the configured heartbeat interval
    and the current time in UTC."""
    result = answer(local, "BootNotification", {"chargePointVendor": "v", "chargePointModel": "m"})
    assert result == {"status": "Accepted", "currentTime": "2023-11-14T22:13:20.250Z", "interval": 300}


def test_transaction_ids_come_from_the_allocator(local):
    """Each StartTransaction gets the next id from the site-wide counter."""
    start = {"connectorId": 1, "idTag": "ABC", "meterStart": 0, "timestamp": "2023-01-01T00:00:00Z"}
    assert answer(local, "StartTransaction", start)["transactionId"] == 41
    assert answer(local, "StartTransaction", start)["transactionId"] == 42


@pytest.mark.parametrize(
    "action,payload",
    [
        ("BootNotification", {"chargePointVendor": "v", "chargePointModel": "m"}),
        ("Heartbeat", {}),
        ("Authorize", {"idTag": "04A1B2C3"}),
        ("StartTransaction", {"connectorId": 1, "idTag": "A", "meterStart": 5, "timestamp": "2023-01-01T00:00:00Z"}),
        ("StopTransaction", {"transactionId": 1, "meterStop": 9, "timestamp": "2023-01-01T01:00:00Z", "idTag": "A"}),
        ("StopTransaction", {"transactionId": 1, "meterStop": 9, "timestamp": "2023-01-01T01:00:00Z"}),
        ("StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Available"}),
        ("MeterValues", {"connectorId": 1, "meterValue": [{"timestamp": "2023-01-01T00:00:00Z", "sampledValue": [{"value": "12"}]}]}),
        ("DataTransfer", {"vendorId": "x"}),
        ("DiagnosticsStatusNotification", {"status": "Idle"}),
        ("FirmwareStatusNotification", {"status": "Idle"}),
    ],
)
def test_answers_are_schema_valid(local, action, payload):
    """Every local answer is valid against the official OCPP 1.6 response
    schema, so a strict wallbox accepts it."""
    result = answer(local, action, payload)
    validate_result(action, CallResult("id", result))


def test_datatransfer_unknown_vendor(local):
    """DataTransfer is answered UnknownVendorId: the site knows no vendor."""
    assert answer(local, "DataTransfer", {"vendorId": "com.example"}) == {"status": "UnknownVendorId"}


def test_central_system_action_from_wallbox_is_not_supported(local):
    """A wallbox that sends a central-system message gets NotSupported."""
    with pytest.raises(OcppError) as e:
        answer(local, "Reset", {"type": "Soft"})
    assert e.value.code == ErrorCode.NotSupported


def test_invalid_payload_is_refused(local):
    """A StartTransaction without idTag is refused with a CALLERROR code,
    and no transaction id is spent on it."""
    with pytest.raises(OcppError):
        answer(local, "StartTransaction", {"connectorId": 1, "meterStart": 0, "timestamp": "x"})
    assert answer(local, "StartTransaction", {"connectorId": 1, "idTag": "A", "meterStart": 0, "timestamp": "2023-01-01T00:00:00Z"})["transactionId"] == 41


def test_ocpp_time_is_utc_with_z():
    """OCPP times end in Z and carry milliseconds."""
    assert ocpp_time(0) == "1970-01-01T00:00:00.000Z"


def test_start_transaction_without_a_store_is_an_error():
    """When no transaction id can be kept (a full disk), StartTransaction
    is answered InternalError, so that the wallbox sends it again later,
    instead of an id that might be handed out twice."""
    from cfosproxy.store import StoreError

    def no_room():
        raise StoreError("cannot write store /var/lib/cfosproxy/cfosproxy.sqlite: database or disk is full")

    local = LocalCentralSystem(FixedClock(), 300, no_room)
    with pytest.raises(OcppError) as error:
        answer(local, "StartTransaction", {"connectorId": 1, "idTag": "T", "meterStart": 0, "timestamp": "2026-11-23T10:00:00Z"})
    assert error.value.code == ErrorCode.InternalError
