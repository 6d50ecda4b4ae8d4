"""End-to-end: the daemon with a Modbus wallbox (a real pymodbus server with
the Power Brain register map), alone and behind a billing backend."""

import asyncio
import json

from ocpp.v16 import call
from twisted.trial import unittest

from cfosproxy.modbus import powerbrain
from tests.backendpeer import BackendPeer
from tests.harness import RunningDaemon, asyncio_test, eventually, free_port
from tests.modbusserver import PowerBrainServer
from tests.wallboxes import http_get


def modbus_config(server, extra=""):
    return (
        "[wallbox:pb]\ntype = modbus\naddress = {}\nid = 1\npoll_interval = 0.2\n"
        "min_current = 6\nmax_current = 16\nid_tag = 04A1B2C3D4\n{}".format(server.address, extra)
    )


async def until(predicate, timeout=30):
    async def check():
        return predicate()

    return await eventually(check, timeout=timeout)


class ModbusManagedTests(unittest.TestCase):
    """A Power Brain under load management, without a backend."""

    async def server(self):
        server = PowerBrainServer()
        server.set_serial("PB-0042")
        server.set_energy(12345)
        await server.start()
        self.addCleanup(lambda: asyncio.ensure_future(server.stop()))
        return server

    @asyncio_test
    async def test_grant_written_to_registers(self):
        """Car detected (B) → the grant goes to 8093 in 0.1 A with 8094 = 1;
        car gone (A) → 8094 = 0; only 8093 and 8094 are ever written, and a
        value only when it changes. The status API shows the device."""
        server = await self.server()
        daemon = RunningDaemon(self, manager="max_current = 32\n", wallboxes=modbus_config(server))
        await until(lambda: server.enable == 0 and (powerbrain.CURRENT_LIMIT, [0]) in server.writes)
        server.set_state("B")
        await until(lambda: server.limit == 160 and server.enable == 1)
        _, device = await http_get(daemon.status_url("/api/devices/pb"))
        self.assertEqual((device["connected"], device["status"], device["granted_current"]), (True, "Preparing", 16.0))
        self.assertEqual((device["energy_wh"], device["serial"]), (12345, "PB-0042"))
        server.set_state("C")
        server.set_state("A")
        await until(lambda: server.enable == 0)
        written = {register for register, _ in server.writes}
        self.assertEqual(written, {powerbrain.CURRENT_LIMIT, powerbrain.ENABLE})
        for register in written:
            values = [v for r, v in server.writes if r == register]
            self.assertTrue(all(a != b for a, b in zip(values, values[1:])), values)

    @asyncio_test
    async def test_offline_and_back(self):
        """The device stops answering → shown offline; it answers again →
        online, and its registers are written again."""
        server = await self.server()
        server.set_state("B")
        daemon = RunningDaemon(self, wallboxes=modbus_config(server))
        await until(lambda: server.limit == 160)

        async def connected(value):
            _, device = await http_get(daemon.status_url("/api/devices/pb"))
            return device["connected"] is value

        await server.stop()
        await eventually(lambda: connected(False))
        writes = len(server.writes)
        await server.start()
        await eventually(lambda: connected(True))
        await until(lambda: len(server.writes) > writes)

    @asyncio_test
    async def test_observe_writes_nothing(self):
        """mode = observe: the device is read and shown, never written."""
        server = await self.server()
        server.set_state("B")
        daemon = RunningDaemon(self, manager="mode = observe\n", wallboxes=modbus_config(server))

        async def shown():
            _, device = await http_get(daemon.status_url("/api/devices/pb"))
            return device["status"] == "Preparing" and device["granted_current"] == 16.0

        await eventually(shown)
        self.assertEqual(server.writes, [])


class ModbusBackendTests(unittest.TestCase):
    """A Power Brain shown to a backend as an OCPP charge point."""

    @asyncio_test
    async def test_charge_point_toward_backend(self):
        """Boot (cFos Power Brain, serial) and status reach the backend; B
        then C → Authorize with the id tag and StartTransaction with
        meterStart = the energy register; growing energy → MeterValues; a
        backend profile of 8 A → 8093 = 80; A → StopTransaction with
        meterStop; plugged again, RemoteStopTransaction → 8094 = 0 and a
        StopTransaction."""
        server = PowerBrainServer()
        server.set_serial("PB-0042")
        server.set_energy(5000)
        await server.start()
        self.addCleanup(lambda: asyncio.ensure_future(server.stop()))
        peer = BackendPeer(free_port())
        await peer.start()
        self.addCleanup(lambda: asyncio.ensure_future(peer.stop()))
        RunningDaemon(
            self,
            manager="max_current = 32\n",
            wallboxes=modbus_config(server, "gateway_url = ws://127.0.0.1:{}/ocpp/\n".format(peer.port)),
        )

        def calls(action):
            return [json.loads(t)[3] for t in peer.received() if json.loads(t)[0] == 2 and json.loads(t)[2] == action]

        await peer.wait_for(lambda p: "pb" in p.charge_points and calls("BootNotification"))
        boot = calls("BootNotification")[-1]
        self.assertEqual(boot, {"chargePointVendor": "cFos", "chargePointModel": "Power Brain", "chargePointSerialNumber": "PB-0042"})
        await peer.wait_for(lambda p: calls("StatusNotification"))
        central = peer.charge_points["pb"]
        result = await asyncio.wait_for(central.call(call.ChangeConfiguration(key="MeterValueSampleInterval", value="1")), 15)
        self.assertEqual(result.status, "Accepted")

        server.set_state("B")
        await peer.wait_for(lambda p: calls("StartTransaction"))
        self.assertEqual(calls("Authorize")[-1], {"idTag": "04A1B2C3D4"})
        start = calls("StartTransaction")[-1]
        self.assertEqual((start["meterStart"], start["idTag"]), (5000, "04A1B2C3D4"))
        await until(lambda: server.enable == 1 and server.limit == 160)
        server.set_state("C")
        server.set_energy(5600)
        server.set_power(11000)
        await peer.wait_for(lambda p: any(
            s["value"] == "5600" for m in calls("MeterValues") for s in m["meterValue"][0]["sampledValue"]))

        profile = call.SetChargingProfile(connector_id=1, cs_charging_profiles={
            "chargingProfileId": 3, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Relative",
            "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 8.0}]},
        })
        result = await asyncio.wait_for(central.call(profile), 15)
        self.assertEqual(result.status, "Accepted")
        self.assertEqual(server.limit, 80)

        server.set_energy(7000)
        server.set_state("A")
        await peer.wait_for(lambda p: calls("StopTransaction"))
        stop = calls("StopTransaction")[-1]
        self.assertEqual((stop["meterStop"], stop["reason"]), (7000, "EVDisconnected"))
        self.assertEqual(stop["transactionId"], start_id(peer))
        await until(lambda: server.enable == 0)

        server.set_state("B")
        await peer.wait_for(lambda p: len(calls("StartTransaction")) == 2)
        await until(lambda: server.enable == 1)
        second = json.loads([t for t in peer.sent() if '"transactionId"' in t][-1])[2]["transactionId"]
        result = await asyncio.wait_for(central.call(call.RemoteStopTransaction(transaction_id=second)), 15)
        self.assertEqual(result.status, "Accepted")
        await until(lambda: server.enable == 0)
        await peer.wait_for(lambda p: len(calls("StopTransaction")) == 2)
        self.assertEqual(calls("StopTransaction")[-1]["reason"], "Remote")


def start_id(peer):
    """The transaction id the backend gave the first StartTransaction."""
    answers = [json.loads(t) for t in peer.sent()]
    return [a[2]["transactionId"] for a in answers if a[0] == 3 and "transactionId" in a[2]][0]
