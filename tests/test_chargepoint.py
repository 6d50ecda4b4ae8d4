"""A Modbus wallbox as an OCPP charge point toward its backend: the
messages it sends and how it answers the backend, through a real gateway
with a fake link."""

import json

from twisted.internet import task

from cfosproxy.modbus.chargepoint import ModbusChargePoint
from cfosproxy.config import config_from_string
from cfosproxy.core.devices import DeviceRegistry
from cfosproxy.core.gateway import Gateway
from cfosproxy.core.localcs import LocalCentralSystem
from cfosproxy.modbus.powerbrain import Reading
from cfosproxy.store import Store
from tests.test_gateway import FakeLink

CONFIG = """
[wallbox:pb]
type = modbus
address = 127.0.0.1:4701
id_tag = 04A1B2C3D4
gateway_url = ws://backend.example/ocpp/
"""


def reading(state, energy=1000, power=0, currents=(0.0, 0.0, 0.0)):
    return Reading(state=state, enabled=True, energy_wh=energy, power_w=power, currents=currents)


class Rig:
    """A charge point in front of a gateway whose link is open."""

    def __init__(self, tmp_path):
        self.clock = task.Clock()
        self.clock.advance(1_700_000_000)
        config = config_from_string(CONFIG)
        self.registry = DeviceRegistry(config, self.clock)
        self.device = self.registry.get("pb")
        self.store = Store(str(tmp_path / "s.sqlite"))
        ids = iter(range(1, 1000))
        local = LocalCentralSystem(self.clock, 300, lambda: next(ids))
        self.link = FakeLink()
        self.gateway = Gateway(
            "pb", "pb", lambda: self.store, local, self.clock, 30, "cache",
            link=lambda handler: self.link,
        )
        self.device.gateway = self.gateway
        self.allowed_changes = 0
        self.answers = []
        self.cp = ModbusChargePoint(self.device, self.gateway, self.clock, self.allowed_changed)
        self.gateway.link_opened(self.link)

    def allowed_changed(self):
        self.allowed_changes += 1

    def backend_calls(self):
        return [json.loads(t) for t in self.link.sent if json.loads(t)[0] == 2]

    def outstanding(self):
        """The CALL the backend has not answered yet (there is at most one
        toward a backend); None when all are answered."""
        answered = {json.loads(t)[1] for t in self.answers}
        waiting = [c for c in self.backend_calls() if c[1] not in answered]
        assert len(waiting) <= 1, waiting
        return waiting[0] if waiting else None

    def answer_last(self, payload):
        """Answer the outstanding CALL; return it."""
        call = self.outstanding()
        text = json.dumps([3, call[1], payload])
        self.answers.append(text)
        self.gateway.text_received(text)
        return call

    def answer_all(self, payloads):
        """Answer outstanding CALLs by action until none is left."""
        while (call := self.outstanding()) is not None:
            self.answer_last(payloads.get(call[2], {}))

    def backend_sends(self, action, payload):
        self.gateway.text_received(json.dumps([2, "bk-" + action, action, payload]))
        return json.loads(self.link.sent[-1])


def boot(rig):
    """Bring the charge point online and answer its boot and first status."""
    rig.cp.online("PB-12345")
    boot = rig.answer_last({"status": "Accepted", "currentTime": "2026-11-23T10:00:00Z", "interval": 120})
    rig.answer_all({})
    return boot


ACCEPTED = {
    "Authorize": {"idTagInfo": {"status": "Accepted"}},
    "StartTransaction": {"transactionId": 77, "idTagInfo": {"status": "Accepted"}},
}


def test_boot_identifies_power_brain(tmp_path):
    """Online → BootNotification with vendor cFos, model Power Brain and the
    serial from register 8008; then the heartbeat follows the backend's
    interval."""
    rig = Rig(tmp_path)
    sent = boot(rig)
    assert sent[2] == "BootNotification"
    assert sent[3] == {"chargePointVendor": "cFos", "chargePointModel": "Power Brain", "chargePointSerialNumber": "PB-12345"}
    rig.clock.advance(120)
    assert rig.backend_calls()[-1][2] == "Heartbeat"


def test_a_boot_answered_after_stop_starts_nothing(tmp_path):
    """The daemon stops while the backend has not answered the boot yet;
    the answer that still arrives starts no heartbeat (nothing is left on
    the clock once the gateway's timers are gone too)."""
    rig = Rig(tmp_path)
    rig.cp.online("PB-12345")
    rig.cp.stop()
    rig.answer_last({"status": "Accepted", "currentTime": "2026-11-23T10:00:00Z", "interval": 120})
    rig.gateway.stop()
    rig.gateway.link_closed("stopped")
    assert rig.clock.getDelayedCalls() == []


def test_plug_in_charge_unplug(tmp_path):
    """State B → StatusNotification Preparing, Authorize with the id tag,
    StartTransaction with meterStart from the energy register; samples as
    MeterValues; state A → StopTransaction with meterStop, EVDisconnected."""
    rig = Rig(tmp_path)
    boot(rig)
    rig.cp.reading_changed(reading("A"))
    rig.cp.reading_changed(reading("B", energy=5000))
    rig.answer_all(ACCEPTED)
    calls = [c[2:] for c in rig.backend_calls()]
    assert ["StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Preparing"}] in calls
    assert ["Authorize", {"idTag": "04A1B2C3D4"}] in calls
    [start] = [c for c in rig.backend_calls() if c[2] == "StartTransaction"]
    assert start[3]["meterStart"] == 5000 and start[3]["idTag"] == "04A1B2C3D4"
    assert rig.cp.allows_charging and rig.device.transaction_id == 77 and rig.allowed_changes == 1

    rig.cp.reading_changed(reading("C", energy=5200, power=11000, currents=(16.0, 16.0, 15.9)))
    rig.answer_all({})
    rig.clock.advance(60)
    meter = rig.backend_calls()[-1]
    assert meter[2] == "MeterValues" and meter[3]["transactionId"] == 77
    samples = {(s["measurand"], s.get("phase")): s["value"] for s in meter[3]["meterValue"][0]["sampledValue"]}
    assert samples[("Energy.Active.Import.Register", None)] == "5200"
    assert samples[("Power.Active.Import", None)] == "11000"
    assert samples[("Current.Import", "L3")] == "15.9"
    rig.answer_last({})

    rig.cp.reading_changed(reading("A", energy=9000))
    rig.answer_all({})
    stop = [c for c in rig.backend_calls() if c[2] == "StopTransaction"]
    assert stop and stop[0][3]["meterStop"] == 9000 and stop[0][3]["reason"] == "EVDisconnected"
    assert stop[0][3]["transactionId"] == 77
    assert not rig.cp.allows_charging


def test_rejected_id_tag_keeps_it_disabled(tmp_path):
    """An Authorize the backend rejects starts no transaction and does not
    allow charging."""
    rig = Rig(tmp_path)
    boot(rig)
    rig.cp.reading_changed(reading("B"))
    rig.answer_all({"Authorize": {"idTagInfo": {"status": "Blocked"}}})
    assert not any(c[2] == "StartTransaction" for c in rig.backend_calls())
    assert not rig.cp.allows_charging and rig.allowed_changes == 0


def test_remote_start_and_stop(tmp_path):
    """RemoteStartTransaction with a car plugged starts a transaction
    without Authorize; RemoteStopTransaction stops it (reason Remote)."""
    rig = Rig(tmp_path)
    boot(rig)
    rig.cp.available = False  # no automatic start on plug-in
    rig.cp.reading_changed(reading("B"))
    rig.answer_all({})
    rig.cp.available = True
    answer = rig.backend_sends("RemoteStartTransaction", {"idTag": "REMOTE1"})
    assert answer == [3, "bk-RemoteStartTransaction", {"status": "Accepted"}]
    start = rig.backend_calls()[-1]
    assert start[2] == "StartTransaction" and start[3]["idTag"] == "REMOTE1"
    assert not any(c[2] == "Authorize" for c in rig.backend_calls())
    rig.answer_last({"transactionId": 5, "idTagInfo": {"status": "Accepted"}})
    assert rig.backend_sends("RemoteStopTransaction", {"transactionId": 99})[2] == {"status": "Rejected"}
    assert rig.backend_sends("RemoteStopTransaction", {"transactionId": 5})[2] == {"status": "Accepted"}
    stop = [c for c in rig.backend_calls() if c[2] == "StopTransaction"][0]
    assert stop[3]["reason"] == "Remote" and not rig.cp.allows_charging


def test_configuration_and_triggers(tmp_path):
    """GetConfiguration reports the keys (unknown ones listed),
    ChangeConfiguration sets the intervals and refuses fixed keys,
    TriggerMessage sends what is asked, anything else is NotSupported."""
    rig = Rig(tmp_path)
    boot(rig)
    config = rig.backend_sends("GetConfiguration", {"key": ["HeartbeatInterval", "Nope"]})[2]
    assert config["configurationKey"] == [{"key": "HeartbeatInterval", "readonly": False, "value": "120"}]
    assert config["unknownKey"] == ["Nope"]
    assert rig.backend_sends("ChangeConfiguration", {"key": "MeterValueSampleInterval", "value": "15"})[2] == {"status": "Accepted"}
    assert rig.backend_sends("ChangeConfiguration", {"key": "NumberOfConnectors", "value": "2"})[2] == {"status": "Rejected"}
    assert rig.backend_sends("ChangeConfiguration", {"key": "Colour", "value": "red"})[2] == {"status": "NotSupported"}
    assert rig.backend_sends("TriggerMessage", {"requestedMessage": "Heartbeat"})[2] == {"status": "Accepted"}
    rig.clock.advance(0)
    assert rig.backend_calls()[-1][2] == "Heartbeat"
    assert rig.backend_sends("UnlockConnector", {"connectorId": 1})[:3] == [4, "bk-UnlockConnector", "NotSupported"]


def test_change_availability(tmp_path):
    """ChangeAvailability Inoperative reports Unavailable and disallows
    charging; Operative brings it back."""
    rig = Rig(tmp_path)
    boot(rig)
    assert rig.backend_sends("ChangeAvailability", {"connectorId": 1, "type": "Inoperative"})[2] == {"status": "Accepted"}
    assert rig.backend_calls()[-1][3]["status"] == "Unavailable"
    assert rig.allowed_changes == 1
    rig.answer_all({})
    rig.backend_sends("ChangeAvailability", {"connectorId": 1, "type": "Operative"})
    assert rig.backend_calls()[-1][3]["status"] == "Available"


def test_backend_down_transaction_is_queued(tmp_path):
    """With the backend link down the charge point still runs its
    transaction on local answers; the messages wait in the queue."""
    rig = Rig(tmp_path)
    rig.gateway.link_closed("down")
    rig.store.remember_id_tag("pb", "04A1B2C3D4", {"status": "Accepted"}, 0)
    rig.cp.online("PB-1")
    rig.cp.reading_changed(reading("B", energy=100))
    assert rig.cp.allows_charging
    rig.cp.reading_changed(reading("A", energy=900))
    assert [m.action for m in rig.store.queued("pb")] == ["StartTransaction", "StopTransaction"]


def test_status_again_when_backend_boots(tmp_path):
    """When the backend accepts the gateway's boot after an outage, the
    charge point reports its status again."""
    rig = Rig(tmp_path)
    boot(rig)
    rig.gateway.link_closed("outage")
    rig.gateway.link_opened(rig.link)
    rig.answer_last({"status": "Accepted", "currentTime": "t", "interval": 120})
    assert rig.backend_calls()[-1][2:] == ["StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Available"}]
