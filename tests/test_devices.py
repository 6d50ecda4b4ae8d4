"""The device registry reads wallbox messages into per-device state."""

import json

import pytest

from cfosproxy.config import ConfigError, config_from_string
from cfosproxy.core.devices import (
    MAX_OBSERVED_CONNECTORS,
    UNKNOWN_PREFIX,
    DeviceRegistry,
    mask_id_tag,
)
from cfosproxy.ocpp.frames import Call, CallError, CallResult

TWO_CONNECTORS = """
[wallbox:left]
type = ocpp
address = CB-2
id = 1
[wallbox:right]
type = ocpp
address = CB-2
id = 2
"""


class Clock:
    now = 1000.0

    def seconds(self):
        return self.now


def registry(text=TWO_CONNECTORS):
    return DeviceRegistry(config_from_string(text), Clock())


def exchange(reg, action, payload, result, cbid="CB-2"):
    reg.exchange(cbid, Call("1", action, payload), CallResult("1", result))


def test_two_connectors_are_two_devices():
    """StatusNotification and StartTransaction land on the device of their
    connector; connection state is shared by both."""
    reg = registry()
    reg.connected("CB-2", "tcp4:192.0.2.1:5000", None)
    exchange(reg, "StatusNotification", {"connectorId": 2, "errorCode": "NoError", "status": "Charging"}, {})
    exchange(reg, "StartTransaction", {"connectorId": 2, "idTag": "ABCDEF", "meterStart": 10, "timestamp": "t"}, {"transactionId": 7, "idTagInfo": {"status": "Accepted"}})
    left, right = reg.get("left").as_json(), reg.get("right").as_json()
    assert left["connected"] and right["connected"]
    assert left["status"] is None and left["transaction_id"] is None
    assert right["status"] == "Charging" and right["transaction_id"] == 7
    assert right["id_tag"] == "**CDEF"


def test_meter_values_units_and_signed_data():
    """Energy in kWh is shown in Wh, power in kW in W; per-phase and signed
    samples do not overwrite the totals."""
    reg = registry()
    exchange(reg, "MeterValues", {"connectorId": 1, "meterValue": [{"timestamp": "t", "sampledValue": [
        {"value": "2.5", "unit": "kWh"},
        {"value": "11", "measurand": "Power.Active.Import", "unit": "kW"},
        {"value": "3000", "measurand": "Power.Active.Import", "unit": "W", "phase": "L1"},
        {"value": "OCMF|{}", "format": "SignedData"},
        {"value": "not a number", "measurand": "Energy.Active.Import.Register"},
    ]}]}, {})
    device = reg.get("left").as_json()
    assert device["energy_wh"] == 2500.0
    assert device["power_w"] == 11000.0


def test_stop_transaction_clears():
    """StopTransaction ends the device's transaction and takes the final
    meter reading."""
    reg = registry()
    exchange(reg, "StartTransaction", {"connectorId": 1, "idTag": "A", "meterStart": 10, "timestamp": "t"}, {"transactionId": 3, "idTagInfo": {"status": "Accepted"}})
    exchange(reg, "StopTransaction", {"transactionId": 3, "meterStop": 99, "timestamp": "t"}, {})
    device = reg.get("left").as_json()
    assert device["transaction_id"] is None and device["energy_wh"] == 99


def test_refused_call_changes_nothing():
    """A CALL answered with a CALLERROR is not taken as fact."""
    reg = registry()
    reg.exchange("CB-2", Call("1", "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Charging"}), CallError("1", "FormationViolation"))
    assert reg.get("left").status is None


def test_unconfigured_connector_of_known_wallbox_is_ignored():
    """A connector the operator did not configure creates no device."""
    reg = registry()
    exchange(reg, "StatusNotification", {"connectorId": 3, "errorCode": "NoError", "status": "Charging"}, {})
    assert sorted(d.name for d in reg) == ["left", "right"]


def test_connector_zero_fault_marks_all():
    """A fault on connector 0 (the whole charge point) shows on every device."""
    reg = registry()
    exchange(reg, "StatusNotification", {"connectorId": 0, "errorCode": "GroundFailure", "status": "Faulted"}, {})
    assert reg.get("left").error_code == reg.get("right").error_code == "GroundFailure"


def test_accept_unknown_observes_new_wallbox():
    """With accept_unknown an unknown wallbox gets an observed device that is
    not configured and not enabled; without it, it may not connect."""
    reg = registry("[server]\naccept_unknown = yes\n")
    assert reg.may_connect("CB-NEW")
    reg.connected("CB-NEW", "tcp4:192.0.2.2:1", None)
    [device] = list(reg)
    assert device.as_json()["configured"] is False and device.as_json()["enabled"] is False
    assert not registry().may_connect("CB-NEW")


def test_disconnect():
    """A lost connection shows as not connected."""
    reg = registry()
    reg.connected("CB-2", "p", "CN=CB-2")
    reg.disconnected("CB-2")
    assert not reg.get("left").connected
    assert reg.get("left").certificate_subject == "CN=CB-2"


def test_mask_id_tag():
    """Only the last four characters of an id tag are shown."""
    assert mask_id_tag("04A1B2C3D4") == "******C3D4"
    assert mask_id_tag("AB") == "AB"
    assert mask_id_tag(None) is None


def test_meter_values_that_are_not_finite_are_ignored():
    """"NaN" and "inf" read as numbers but are no meter reading: the last
    real reading stays, and the status API's JSON stays valid."""
    reg = registry()
    exchange(reg, "MeterValues", {"connectorId": 1, "meterValue": [{"timestamp": "t", "sampledValue": [{"value": "1200"}]}]}, {})
    for text in ("NaN", "inf", "-Infinity"):
        exchange(reg, "MeterValues", {"connectorId": 1, "meterValue": [{"timestamp": "t", "sampledValue": [
            {"value": text}, {"value": text, "measurand": "Power.Active.Import"}]}]}, {})
    device = reg.get("left").as_json()
    assert device["energy_wh"] == 1200.0 and device["power_w"] is None
    json.dumps(device, allow_nan=False)


def test_unknown_wallbox_cannot_grow_the_registry_without_bound():
    """An unknown wallbox (accept_unknown) gets a device per connector it
    shows, for connector ids 1 to MAX_OBSERVED_CONNECTORS only: a wallbox
    that names a new connector in every message does not fill memory."""
    reg = registry("[server]\naccept_unknown = yes\n")
    reg.connected("CB-NEW", "tcp4:192.0.2.2:1", None)
    for connector in [2, 3, 0, -1, "1", None, 10**9, *range(4, 100)]:
        exchange(reg, "StatusNotification", {"connectorId": connector, "errorCode": "NoError", "status": "Available"}, {}, cbid="CB-NEW")
    names = sorted(d.name for d in reg)
    assert len(names) == MAX_OBSERVED_CONNECTORS
    assert names[0] == "unknown:CB-NEW:1" and "unknown:CB-NEW:8" in names


GARAGE = """
[server]
accept_unknown = yes
[wallbox:garage-1]
type = ocpp
address = CB-0001
"""


def test_unknown_wallbox_cannot_take_a_configured_device_name():
    """An unknown wallbox whose ChargeBox-ID is the name of a configured
    device is shown beside that device, under a name of its own marked
    unknown: the configured device keeps its name, its state and its place
    in the status API."""
    reg = registry(GARAGE)
    reg.connected("CB-0001", "tcp4:192.0.2.1:5000", None)
    exchange(reg, "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Charging"}, {}, cbid="CB-0001")
    reg.connected("garage-1", "tcp4:192.0.2.66:5000", None)
    exchange(reg, "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Available"}, {}, cbid="garage-1")
    devices = {d["name"]: d for d in (device.as_json() for device in reg)}
    assert sorted(devices) == ["garage-1", "unknown:garage-1:1"]
    assert devices["garage-1"]["address"] == "CB-0001"
    assert devices["garage-1"]["configured"] is True
    assert devices["garage-1"]["status"] == "Charging"
    assert devices["garage-1"]["peer"] == "tcp4:192.0.2.1:5000"
    assert devices["unknown:garage-1:1"]["address"] == "garage-1"
    assert devices["unknown:garage-1:1"]["configured"] is False
    assert reg.get("garage-1").address == "CB-0001"


def test_unknown_wallboxes_never_share_a_name():
    """ChargeBox-IDs that look like another wallbox's connector, or like
    an unknown name, still give every connector a name of its own."""
    reg = registry(GARAGE)
    for cbid, connector in [("X", 2), ("X:2", 1), ("X/2", 1), ("X", 1), ("unknown:X:1", 1), ("garage-1", 1)]:
        reg.connected(cbid, "p", None)
        exchange(reg, "StatusNotification", {"connectorId": connector, "errorCode": "NoError", "status": "Available"}, {}, cbid=cbid)
    observed = [d for d in reg if not d.configured]
    assert len({d.name for d in observed}) == len(observed) == 6
    assert all(d.name.startswith(UNKNOWN_PREFIX) for d in observed)
    assert {(d.address, d.connector_id) for d in observed} == {
        ("X", 2), ("X:2", 1), ("X/2", 1), ("X", 1), ("unknown:X:1", 1), ("garage-1", 1)
    }


@pytest.mark.parametrize("name", ["unknown:CB-0001:1", "unknown:", "CB:1"])
def test_configuration_refuses_names_of_unknown_wallboxes(name):
    """No [wallbox:NAME] may take the form of an unknown wallbox's name: the
    configuration refuses it, naming the section."""
    with pytest.raises(ConfigError) as caught:
        config_from_string("[wallbox:{}]\ntype = ocpp\naddress = CB-0001\n".format(name))
    assert caught.value.section == "wallbox:" + name


def test_devices_are_made_with_their_gateways():
    """A configured device given a gateway has it from the start, and its
    status shows the gateway's; a device given none has none."""

    class FakeGateway:
        def status(self):
            return {"link": "connected"}

    reg = DeviceRegistry(config_from_string(TWO_CONNECTORS), Clock(), gateways={"left": FakeGateway()})
    assert reg.get("left").as_json()["gateway"] == {"link": "connected"}
    assert reg.get("right").as_json()["gateway"] is None


def test_per_phase_currents_are_kept_and_reset_by_a_new_transaction():
    """Current.Import samples of a phase (L1, L2, L3, or L1-N..) are kept per
    wallbox phase, in A only; a total current, other units, negative and
    unreadable values change nothing; a new transaction starts with none."""
    reg = registry()
    exchange(reg, "MeterValues", {"connectorId": 1, "meterValue": [{"timestamp": "t", "sampledValue": [
        {"value": "16.1", "measurand": "Current.Import", "phase": "L1", "unit": "A"},
        {"value": "0.3", "measurand": "Current.Import", "phase": "L2-N"},
        {"value": "30", "measurand": "Current.Import"},
        {"value": "1600", "measurand": "Current.Import", "phase": "L3", "unit": "mA"},
        {"value": "-2", "measurand": "Current.Import", "phase": "L3"},
        {"value": "x", "measurand": "Current.Import", "phase": "L3"},
    ]}]}, {})
    assert reg.get("left").as_json()["currents"] == [16.1, 0.3, None]
    exchange(reg, "StartTransaction", {"connectorId": 1, "idTag": "A", "meterStart": 10, "timestamp": "t"},
             {"transactionId": 3, "idTagInfo": {"status": "Accepted"}})
    assert reg.get("left").as_json()["currents"] == [None, None, None]
