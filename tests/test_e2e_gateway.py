"""End-to-end gateway: a wallbox, cfosproxy and a billing backend, on real
loopback sockets."""

import asyncio
import json

from ocpp.v16 import call
from twisted.trial import unittest

from tests.backendpeer import BackendPeer
from tests.harness import RunningDaemon, asyncio_test, eventually, free_port
from tests.wallboxes import connect, exchange, http_get, start_wallbox, stop_wallbox


def gateway_config(backend_port, extra="", path="/ocpp/"):
    return (
        "[wallbox:garage-1]\ntype = ocpp\naddress = CB-0001\n"
        "gateway_url = ws://127.0.0.1:{}{}\n{}".format(backend_port, path, extra)
    )


SIGNED_METER_VALUES = (
    '[2, "mv-1" ,"MeterValues",{ "connectorId":1,"transactionId":1000,'
    '"meterValue":[{"timestamp":"2026-11-23T10:05:00Z","sampledValue":[{"value":'
    '"OCMF|{\\"FV\\":\\"1.0\\",\\"GI\\":\\"cFos\\",\\"RD\\":[{\\"TM\\":\\"2026-11-23T10:05:00,000+0000 S\\",'
    '\\"RV\\":1.5,\\"RI\\":\\"1-b:1.8.0\\",\\"RU\\":\\"kWh\\"}]}|{\\"SD\\":\\"30450221\\/00ab\\"}",'
    '"format":"SignedData","context":"Sample.Periodic"}]}]}]'
)


class RelayTests(unittest.TestCase):
    """While the backend is up, frames pass byte for byte."""

    async def backend(self, **kwargs):
        peer = BackendPeer(free_port(), **kwargs)
        await peer.start()
        self.addCleanup(lambda: asyncio.ensure_future(peer.stop()))
        return peer

    @asyncio_test
    async def test_byte_for_byte_both_ways(self):
        """Odd JSON spacing, a signed OCMF meter value with escaped slashes
        and a DataTransfer of an unknown vendor reach the backend exactly as
        the wallbox sent them, and the backend's answers reach the wallbox
        exactly as the backend sent them."""
        peer = await self.backend()
        daemon = RunningDaemon(self, wallboxes=gateway_config(peer.port))
        async with await connect(daemon.url("CB-0001")) as ws:
            # Frames sent before the backend link is open are answered
            # locally; wait for it.
            await peer.wait_for(lambda p: "CB-0001" in p.charge_points)
            sent = [
                '[2,"b-1","BootNotification",  {"chargePointVendor" : "cFos","chargePointModel":"Power Brain"}]',
                '[2,"s-1","StartTransaction",{"connectorId":1,"idTag":"04A1B2C3","meterStart":0,"timestamp":"2026-11-23T10:00:00Z"}]',
                SIGNED_METER_VALUES,
                '[2,"dt-1","DataTransfer",{"vendorId":"com.example.terminal","messageId":"Receipt","data":"{\\"amount\\": 12.34}"}]',
            ]
            answers = [await exchange(ws, text) for text in sent]
        received = peer.received()
        for text in sent:
            self.assertIn(text, received)
        for answer in answers:
            self.assertIn(answer, peer.sent())
        self.assertEqual(json.loads(answers[1])[2]["transactionId"], 1000)
        self.assertEqual(json.loads(answers[3])[2], {"status": "Accepted", "data": "paid"})

    @asyncio_test
    async def test_url_client_id_and_password(self):
        """The backend is reached at gateway_url + client id, with Basic auth
        client_id:gateway_password."""
        peer = await self.backend()
        peer.password = "backend-secret"
        daemon = RunningDaemon(
            self, wallboxes=gateway_config(peer.port, "gateway_password = backend-secret\n", path="/cs/v16")
        )
        async with await connect(daemon.url("CB-0001")) as ws:
            await exchange(ws, '[2,"h","Heartbeat",{}]')
            await peer.wait_for(lambda p: "CB-0001" in p.charge_points)
        path, headers = peer.requests[-1]
        self.assertEqual(path, "/cs/v16/CB-0001")
        self.assertEqual(headers["sec-websocket-protocol"], "ocpp1.6")
        self.assertTrue(headers["authorization"].startswith("Basic "))

    @asyncio_test
    async def test_backend_calls_reach_wallbox(self):
        """A CALL from the backend reaches the wallbox and its answer goes
        back to the backend."""
        peer = await self.backend()
        daemon = RunningDaemon(self, wallboxes=gateway_config(peer.port))
        box = await start_wallbox(daemon.url("CB-0001"), "CB-0001")
        self.addCleanup(lambda: asyncio.ensure_future(stop_wallbox(box)))
        await box.call(call.BootNotification(charge_point_vendor="cFos", charge_point_model="Power Brain"))
        await peer.wait_for(lambda p: "CB-0001" in p.charge_points)
        central = peer.charge_points["CB-0001"]
        result = await asyncio.wait_for(central.call(call.ClearChargingProfile(id=424242)), 15)
        self.assertEqual(result.status, "Unknown")
        result = await asyncio.wait_for(central.call(call.RemoteStartTransaction(id_tag="04A1B2C3", connector_id=1)), 15)
        self.assertEqual(result.status, "Accepted")
        self.assertEqual(box.remote_starts, [{"id_tag": "04A1B2C3", "connector_id": 1}])

    @asyncio_test
    async def test_backend_limit_combined_with_local_grant(self):
        """Under a local grant of 16 A, a backend limit of 10 A reaches the
        wallbox as 10 A, one of 32 A as 16 A; the backend gets Accepted; a
        ClearChargingProfile from the backend restores the local 16 A."""
        peer = await self.backend()
        daemon = RunningDaemon(self, manager="max_current = 32\n", wallboxes=gateway_config(peer.port))
        box = await start_wallbox(daemon.url("CB-0001"), "CB-0001")
        self.addCleanup(lambda: asyncio.ensure_future(stop_wallbox(box)))
        await box.call(call.BootNotification(charge_point_vendor="cFos", charge_point_model="Power Brain"))
        await box.call(call.StartTransaction(connector_id=1, id_tag="04A1B2C3", meter_start=0, timestamp="2026-11-23T10:00:00Z"))
        await box.wait_for_limit(16)
        await peer.wait_for(lambda p: "CB-0001" in p.charge_points)
        central = peer.charge_points["CB-0001"]

        def backend_profile(limit):
            return call.SetChargingProfile(connector_id=1, cs_charging_profiles={
                "chargingProfileId": 7, "stackLevel": 0,
                "chargingProfilePurpose": "TxDefaultProfile", "chargingProfileKind": "Relative",
                "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}]},
            })

        result = await asyncio.wait_for(central.call(backend_profile(10.0)), 15)
        self.assertEqual(result.status, "Accepted")
        self.assertEqual(box.limit(), 10)
        self.assertEqual(box.profiles[1]["charging_profile_id"], 1952001)
        result = await asyncio.wait_for(central.call(backend_profile(32.0)), 15)
        self.assertEqual(result.status, "Accepted")
        self.assertEqual(box.limit(), 16)
        await asyncio.wait_for(central.call(backend_profile(8.0)), 15)
        self.assertEqual(box.limit(), 8)
        result = await asyncio.wait_for(central.call(call.ClearChargingProfile(id=7)), 15)
        self.assertEqual(result.status, "Accepted")
        self.assertEqual(box.limit(), 16)


class FirstBootTests(unittest.TestCase):
    """Wallboxes that boot the moment they connect, while their backend
    links are still connecting."""

    @asyncio_test
    async def test_first_boots_reach_the_backend(self):
        """Twenty wallboxes connect at once and each sends its
        BootNotification and a StatusNotification straight away. Every boot
        reaches the backend and every wallbox gets the backend's answer
        (interval 300), none cfosproxy's own (interval 77); every status
        reaches the backend."""
        peer = BackendPeer(free_port())
        await peer.start()
        self.addCleanup(lambda: asyncio.ensure_future(peer.stop()))
        wallboxes = "".join(
            "[wallbox:box-{n}]\ntype = ocpp\naddress = CB-{n:02d}\n"
            "gateway_url = ws://127.0.0.1:{port}/ocpp/\n".format(n=n, port=peer.port)
            for n in range(20)
        )
        daemon = RunningDaemon(self, server="heartbeat_interval = 77\n", wallboxes=wallboxes)

        async def first_boot(n):
            async with await connect(daemon.url("CB-{:02d}".format(n))) as ws:
                boot = await exchange(ws, json.dumps(
                    [2, "b-{}".format(n), "BootNotification", {"chargePointVendor": "v", "chargePointModel": "m"}]
                ))
                await exchange(ws, json.dumps(
                    [2, "s-{}".format(n), "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Available"}]
                ))
                return json.loads(boot)[2]["interval"]

        intervals = await asyncio.gather(*(first_boot(n) for n in range(20)))
        self.assertEqual(intervals, [300] * 20)
        received = [json.loads(text) for text in peer.received()]
        for n in range(20):
            self.assertIn("b-{}".format(n), [f[1] for f in received if f[2:3] == ["BootNotification"]])
            self.assertIn("s-{}".format(n), [f[1] for f in received if f[2:3] == ["StatusNotification"]])


class OutageTests(unittest.TestCase):
    """The backend away: nothing is lost, everything arrives in order."""

    @asyncio_test
    async def test_transaction_during_outage_is_replayed_in_order(self):
        """With the backend down the wallbox runs a whole transaction on
        local answers; when the backend comes up it receives Boot, then
        Start, MeterValues and Stop in order, and the Stop carries the
        backend's own transaction id."""
        port = free_port()
        daemon = RunningDaemon(self, wallboxes=gateway_config(port))
        box = await start_wallbox(daemon.url("CB-0001"), "CB-0001")
        self.addCleanup(lambda: asyncio.ensure_future(stop_wallbox(box)))
        boot = await box.call(call.BootNotification(charge_point_vendor="cFos", charge_point_model="Power Brain"))
        self.assertEqual(boot.status, "Accepted")
        start = await box.call(call.StartTransaction(connector_id=1, id_tag="04A1B2C3", meter_start=100, timestamp="2026-11-23T10:00:00Z"))
        local_id = start.transaction_id
        await box.call(call.MeterValues(connector_id=1, transaction_id=local_id, meter_value=[{
            "timestamp": "2026-11-23T10:05:00Z", "sampledValue": [{"value": "1100"}]}]))
        await box.call(call.StopTransaction(meter_stop=2100, timestamp="2026-11-23T11:00:00Z", transaction_id=local_id))
        _, device = await http_get(daemon.status_url("/api/devices/garage-1"))
        self.assertEqual(device["gateway"]["queue_length"], 3)

        peer = BackendPeer(port)
        await peer.start()
        self.addCleanup(lambda: asyncio.ensure_future(peer.stop()))
        await peer.wait_for(lambda p: sum(1 for t in p.received() if '"StopTransaction"' in t) == 1, timeout=60)
        actions = [json.loads(t)[2] for t in peer.received() if json.loads(t)[0] == 2]
        self.assertEqual(actions[:4], ["BootNotification", "StartTransaction", "MeterValues", "StopTransaction"])
        stop = [json.loads(t)[3] for t in peer.received() if '"StopTransaction"' in t][0]
        meter = [json.loads(t)[3] for t in peer.received() if '"MeterValues"' in t][0]
        self.assertEqual(stop["transactionId"], 1000)
        self.assertEqual(meter["transactionId"], 1000)
        self.assertNotEqual(local_id, 1000)
        async def drained():
            _, device = await http_get(daemon.status_url("/api/devices/garage-1"))
            return device["gateway"]["queue_length"] == 0

        await eventually(drained)


class CrashTests(unittest.TestCase):
    """The daemon killed while the backend is away."""

    @asyncio_test
    async def test_sigkill_and_restart_lose_nothing(self):
        """A real twistd process answers a whole transaction while the
        backend is down, is killed with SIGKILL and started again; when the
        backend comes up it gets Start, MeterValues and Stop in order, each
        once, the Stop with the backend's transaction id."""
        import os
        import shutil
        import signal
        import tempfile

        from tests.harness import twistd, wait_for_port

        directory = tempfile.mkdtemp(prefix="cfosproxy-crash-")
        self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
        backend_port, port, status_port = free_port(), free_port(), free_port()
        config = os.path.join(directory, "cfosproxy.ini")
        with open(config, "w") as f:
            f.write(
                "[server]\nlisten = tcp:{}:interface=127.0.0.1\ntls = off\n"
                "[manager]\nstate_dir = {}\n"
                "[status]\nlisten = tcp:{}:interface=127.0.0.1\n{}".format(
                    port, os.path.join(directory, "var"), status_port, gateway_config(backend_port)
                )
            )
        log = open(os.path.join(directory, "twistd.log"), "w")
        self.addCleanup(log.close)

        def start():
            process = twistd("cfosproxy", "--config", config, cwd=directory, output=log)
            self.addCleanup(lambda: process.poll() is None and process.kill())
            self.assertTrue(wait_for_port(port, process), open(log.name).read())
            return process

        first = start()
        url = "ws://127.0.0.1:{}/CB-0001".format(port)
        box = await start_wallbox(url, "CB-0001")
        await box.call(call.BootNotification(charge_point_vendor="cFos", charge_point_model="Power Brain"))
        started = await box.call(call.StartTransaction(connector_id=1, id_tag="04A1B2C3", meter_start=100, timestamp="2026-11-23T10:00:00Z"))
        await box.call(call.MeterValues(connector_id=1, transaction_id=started.transaction_id, meter_value=[{
            "timestamp": "2026-11-23T10:05:00Z", "sampledValue": [{"value": "1100"}]}]))
        await box.call(call.StopTransaction(meter_stop=2100, timestamp="2026-11-23T11:00:00Z", transaction_id=started.transaction_id))
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        await stop_wallbox(box)

        second = start()
        peer = BackendPeer(backend_port)
        await peer.start()
        self.addCleanup(lambda: asyncio.ensure_future(peer.stop()))
        await peer.wait_for(lambda p: any('"StopTransaction"' in t for t in p.received()), timeout=90)
        calls = [json.loads(t) for t in peer.received() if json.loads(t)[0] == 2]
        actions = [frame[2] for frame in calls if frame[2] != "BootNotification"]
        self.assertEqual(actions, ["StartTransaction", "MeterValues", "StopTransaction"])
        self.assertEqual(calls[0][2], "BootNotification")
        self.assertEqual(calls[-1][3]["transactionId"], 1000)
        second.send_signal(signal.SIGTERM)
        second.wait(30)


class SecureBackendTests(unittest.TestCase):
    """wss:// to the backend: its certificate checked, ours presented."""

    def pki(self):
        import pathlib
        import shutil
        import tempfile

        from tests.certutil import TestPKI

        directory = tempfile.mkdtemp(prefix="cfosproxy-pki-")
        self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
        return TestPKI(pathlib.Path(directory))

    def server_ssl(self, pki, require_client=False, cert=None):
        import ssl

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert[0] if cert else pki.server_cert_path), str(cert[1] if cert else pki.server_key_path))
        if require_client:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(str(pki.ca_cert_path))
        return context

    def wss_config(self, port, host, extra):
        return (
            "[wallbox:garage-1]\ntype = ocpp\naddress = CB-0001\n"
            "gateway_url = wss://{}:{}/ocpp/\n{}".format(host, port, extra)
        )

    @asyncio_test
    async def test_wss_with_ca_and_client_certificate(self):
        """A backend that needs a client certificate: cfosproxy verifies the
        backend against gateway_ca and presents gateway_certificate; the
        wallbox's messages arrive."""
        pki = self.pki()
        cert, key = pki.client_cert_path("CB-0001")
        peer = BackendPeer(free_port(), ssl=self.server_ssl(pki, require_client=True))
        await peer.start()
        self.addCleanup(lambda: asyncio.ensure_future(peer.stop()))
        daemon = RunningDaemon(self, wallboxes=self.wss_config(peer.port, "localhost", (
            "gateway_ca = {}\ngateway_certificate = {}\ngateway_private_key = {}\n".format(pki.ca_cert_path, cert, key)
        )))
        async with await connect(daemon.url("CB-0001")) as ws:
            await peer.wait_for(lambda p: "CB-0001" in p.charge_points)
            answer = await exchange(ws, '[2,"h","Heartbeat",{}]')
        self.assertIn(answer, peer.sent())
        _, device = await http_get(daemon.status_url("/api/devices/garage-1"))
        self.assertEqual(device["gateway"]["url"], "wss://localhost:{}/ocpp/CB-0001".format(peer.port))

    @asyncio_test
    async def test_wrong_host_name_refused_and_reported(self):
        """A backend whose certificate names another host is refused; the
        status API shows the link failed and why, and the wallbox is still
        answered (locally)."""
        pki = self.pki()
        peer = BackendPeer(free_port(), ssl=self.server_ssl(pki, cert=pki.server_cert_for("elsewhere.example")))
        await peer.start()
        self.addCleanup(lambda: asyncio.ensure_future(peer.stop()))
        daemon = RunningDaemon(self, wallboxes=self.wss_config(peer.port, "localhost", "gateway_ca = {}\n".format(pki.ca_cert_path)))
        async with await connect(daemon.url("CB-0001")) as ws:
            answer = json.loads(await exchange(ws, '[2,"h","Heartbeat",{}]'))
            self.assertEqual(answer[:2], [3, "h"])

            async def failed():
                _, device = await http_get(daemon.status_url("/api/devices/garage-1"))
                gateway = device["gateway"]
                return gateway if gateway["link"] == "failed" and gateway["last_error"] else None

            gateway = await eventually(failed)
        self.assertIn("hostname", gateway["last_error"])
        self.assertEqual(peer.charge_points, {})
