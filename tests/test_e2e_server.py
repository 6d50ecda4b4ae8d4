"""End-to-end: real wallbox clients against the real service on loopback."""

import asyncio
import base64
import json

import websockets
from ocpp.v16 import call
from twisted.trial import unittest

from tests.harness import RunningDaemon, asyncio_test, wait_deferred
from tests.wallboxes import Wallbox, connect, http_get, refused_status


class ChargingSessionTests(unittest.TestCase):
    """A whole charging session against the local central system."""

    @asyncio_test
    async def test_whole_charging_session(self):
        """Boot, Authorize, StartTransaction, MeterValues, StatusNotification,
        StopTransaction all get valid answers; the status API shows the
        wallbox connected, charging and then idle with its energy."""
        daemon = RunningDaemon(self)
        ws = await connect(daemon.url("CB-0001"))
        cp = Wallbox("CB-0001", ws)
        runner = asyncio.ensure_future(cp.start())
        try:
            boot = await cp.call(call.BootNotification(charge_point_vendor="cFos", charge_point_model="Power Brain"))
            self.assertEqual(boot.status, "Accepted")
            self.assertEqual(boot.interval, 300)
            beat = await cp.call(call.Heartbeat())
            self.assertTrue(beat.current_time.endswith("Z"))
            auth = await cp.call(call.Authorize(id_tag="04A1B2C3D4"))
            self.assertEqual(auth.id_tag_info["status"], "Accepted")
            await cp.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Charging"))
            start = await cp.call(call.StartTransaction(connector_id=1, id_tag="04A1B2C3D4", meter_start=1000, timestamp="2026-11-23T10:00:00Z"))
            self.assertEqual(start.id_tag_info["status"], "Accepted")
            second = await cp.call(call.StartTransaction(connector_id=1, id_tag="04A1B2C3D4", meter_start=1000, timestamp="2026-11-23T10:00:00Z"))
            self.assertNotEqual(start.transaction_id, second.transaction_id)

            await cp.call(call.MeterValues(connector_id=1, transaction_id=second.transaction_id, meter_value=[{
                "timestamp": "2026-11-23T10:05:00Z",
                "sampledValue": [
                    {"value": "1.5", "measurand": "Energy.Active.Import.Register", "unit": "kWh"},
                    {"value": "7200", "measurand": "Power.Active.Import", "unit": "W"},
                ],
            }]))
            status, device = await http_get(daemon.status_url("/api/devices/garage-1"))
            self.assertEqual(status, 200)
            self.assertEqual(device["connected"], True)
            self.assertEqual(device["status"], "Charging")
            self.assertEqual(device["transaction_id"], second.transaction_id)
            self.assertEqual(device["energy_wh"], 1500.0)
            self.assertEqual(device["power_w"], 7200.0)
            self.assertEqual(device["id_tag"], "******C3D4")
            self.assertEqual(device["vendor"], "cFos")

            await cp.call(call.StopTransaction(meter_stop=2500, timestamp="2026-11-23T11:00:00Z", transaction_id=second.transaction_id, id_tag="04A1B2C3D4"))
            data = await cp.call(call.DataTransfer(vendor_id="com.example.terminal", data="x"))
            self.assertEqual(data.status, "UnknownVendorId")
            status, device = await http_get(daemon.status_url("/api/devices/garage-1"))
            self.assertIsNone(device["transaction_id"])
            self.assertEqual(device["energy_wh"], 2500)
        finally:
            runner.cancel()
            await ws.close()

    @asyncio_test
    async def test_transaction_ids_unique_across_restart(self):
        """Transaction ids stay unique after the daemon restarts on the same
        state directory (the counter is on disk)."""
        daemon = RunningDaemon(self)
        ids = []
        for _ in range(2):
            ws = await connect(daemon.url())
            await ws.send(json.dumps([2, "s1", "StartTransaction", {"connectorId": 1, "idTag": "A", "meterStart": 0, "timestamp": "2026-11-23T10:00:00Z"}]))
            ids.append(json.loads(await ws.recv())[2]["transactionId"])
            await ws.close()
            await wait_deferred(daemon.restart())
        self.assertEqual(len(set(ids)), 2)

    @asyncio_test
    async def test_malformed_frame_gets_callerror_and_connection_stays(self):
        """A CALL with a payload that is not an object gets a CALLERROR;
        text that is not JSON gets nothing; the same connection then still
        gets answers."""
        daemon = RunningDaemon(self)
        async with await connect(daemon.url()) as ws:
            await ws.send('[2,"bad-1","Heartbeat","not an object"]')
            answer = json.loads(await ws.recv())
            self.assertEqual(answer[:3], [4, "bad-1", "FormationViolation"])
            await ws.send("{{{ not json")
            await ws.send('[2,"bad-2","BootNotification",{"chargePointVendor":1,"chargePointModel":"m"}]')
            answer = json.loads(await ws.recv())
            self.assertEqual(answer[:3], [4, "bad-2", "TypeConstraintViolation"])
            await ws.send('[2,"ok-1","Heartbeat",{}]')
            answer = json.loads(await ws.recv())
            self.assertEqual(answer[:2], [3, "ok-1"])

    @asyncio_test
    async def test_binary_frame_closes_with_1003(self):
        """A binary frame closes the connection with 1003 (unsupported
        data): OCPP-J is text only."""
        daemon = RunningDaemon(self)
        ws = await connect(daemon.url())
        await ws.send(b"\x00\x01")
        with self.assertRaises(websockets.exceptions.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        self.assertEqual(ws.close_code, 1003)

    @asyncio_test
    async def test_text_frame_not_utf8_closes_with_1007(self):
        """A text frame whose bytes are not UTF-8 closes the connection with
        1007 (invalid payload, RFC 6455 §8.1), and the wallbox's session
        never sees it; cfosproxy checks this itself, not Autobahn."""
        daemon = RunningDaemon(self)
        ws = await connect(daemon.url())
        await ws.send('[2,"ok-1","Heartbeat",{}]')
        self.assertEqual(json.loads(await ws.recv())[:2], [3, "ok-1"])
        await ws.send(b'[2,"bad-1","Heartbeat",{"x":"\xff"}]', text=True)
        with self.assertRaises(websockets.exceptions.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        self.assertEqual(ws.close_code, 1007)

    @asyncio_test
    async def test_oversized_frame_closes_with_1009(self):
        """A frame over max_message_size closes the connection with 1009."""
        daemon = RunningDaemon(self, server="max_message_size = 2048\n")
        ws = await connect(daemon.url())
        await ws.send('[2,"big","DataTransfer",{"vendorId":"x","data":"' + "a" * 4000 + '"}]')
        with self.assertRaises(websockets.exceptions.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        self.assertEqual(ws.close_code, 1009)

    @asyncio_test
    async def test_second_connection_replaces_first(self):
        """A second connection with the same ChargeBox-ID is served and the
        first one is closed."""
        daemon = RunningDaemon(self)
        first = await connect(daemon.url())
        second = await connect(daemon.url())
        with self.assertRaises(websockets.exceptions.ConnectionClosed):
            await asyncio.wait_for(first.recv(), 10)
        await second.send('[2,"h","Heartbeat",{}]')
        self.assertEqual(json.loads(await second.recv())[:2], [3, "h"])
        status, device = await http_get(daemon.status_url("/api/devices/garage-1"))
        self.assertTrue(device["connected"])
        await second.close()

    @asyncio_test
    async def test_percent_encoded_id_and_path_prefix(self):
        """The ChargeBox-ID is the last path segment, percent-decoded, under
        any path prefix."""
        daemon = RunningDaemon(self, wallboxes="[wallbox:w]\ntype = ocpp\naddress = CB 1\n")
        async with await connect(daemon.url("CB%201", path="/ocpp/v16/")) as ws:
            await ws.send('[2,"h","Heartbeat",{}]')
            self.assertEqual(json.loads(await ws.recv())[:2], [3, "h"])
        status, devices = await http_get(daemon.status_url("/api/devices"))
        self.assertEqual([d["address"] for d in devices["devices"]], ["CB 1"])

    @asyncio_test
    async def test_shutdown_closes_with_1001(self):
        """Stopping the daemon closes every wallbox connection with 1001."""
        daemon = RunningDaemon(self)
        ws = await connect(daemon.url())
        stopping = asyncio.ensure_future(wait_deferred(daemon.stop()))
        with self.assertRaises(websockets.exceptions.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        self.assertEqual(ws.close_code, 1001)
        await stopping


def basic(user, password):
    token = base64.b64encode("{}:{}".format(user, password).encode()).decode()
    return {"Authorization": "Basic " + token}


class RefusalTests(unittest.TestCase):
    """The HTTP answers that refuse an upgrade, before any OCPP is spoken."""

    @asyncio_test
    async def test_unknown_id_404(self):
        """An unknown ChargeBox-ID is refused with 404."""
        daemon = RunningDaemon(self)
        code, _ = await refused_status(daemon.url("CB-9999"))
        self.assertEqual(code, 404)

    @asyncio_test
    async def test_accept_unknown(self):
        """With accept_unknown, an unknown wallbox is served and observed."""
        daemon = RunningDaemon(self, server="accept_unknown = yes\n")
        async with await connect(daemon.url("CB-NEW")) as ws:
            await ws.send('[2,"b","BootNotification",{"chargePointVendor":"X","chargePointModel":"Y"}]')
            self.assertEqual(json.loads(await ws.recv())[2]["status"], "Accepted")
            status, devices = await http_get(daemon.status_url("/api/devices"))
            observed = [d for d in devices["devices"] if d["address"] == "CB-NEW"]
            self.assertEqual(len(observed), 1)
            self.assertFalse(observed[0]["configured"])
            self.assertTrue(observed[0]["connected"])

    @asyncio_test
    async def test_missing_subprotocol_400(self):
        """A client that does not offer ocpp1.6 is refused with 400."""
        daemon = RunningDaemon(self)
        code, _ = await refused_status(daemon.url(), subprotocols=["ocpp2.0.1"])
        self.assertEqual(code, 400)

    @asyncio_test
    async def test_no_id_400(self):
        """A URL without a ChargeBox-ID is refused with 400."""
        daemon = RunningDaemon(self)
        code, _ = await refused_status(daemon.url(""))
        self.assertEqual(code, 400)

    @asyncio_test
    async def test_password(self):
        """With a password: none, wrong, or another wallbox's user name get
        401 with WWW-Authenticate; the right one is admitted, as text and,
        for a 40-hex-digit key, as its raw bytes."""
        key = "00112233445566778899aabbccddeeff00112233"
        daemon = RunningDaemon(self, server="password = {}\n".format(key))
        code, response = await refused_status(daemon.url())
        self.assertEqual(code, 401)
        self.assertIn("Basic", response.headers["WWW-Authenticate"])
        for headers in (basic("CB-0001", "wrong"), basic("CB-0002", key)):
            code, _ = await refused_status(daemon.url(), additional_headers=headers)
            self.assertEqual(code, 401)
        async with await connect(daemon.url(), additional_headers=basic("CB-0001", key)) as ws:
            await ws.send('[2,"h","Heartbeat",{}]')
            self.assertEqual(json.loads(await ws.recv())[:2], [3, "h"])
        raw = base64.b64encode(b"CB-0001:" + bytes.fromhex(key)).decode()
        async with await connect(daemon.url(), additional_headers={"Authorization": "Basic " + raw}) as ws:
            await ws.send('[2,"h","Heartbeat",{}]')
            self.assertEqual(json.loads(await ws.recv())[:2], [3, "h"])

    @asyncio_test
    async def test_wrong_password_burst_backs_off(self):
        """A burst of 50 wrong passwords from one address: the first three
        get 401, then the address is answered 429 with Retry-After (its
        passwords no longer checked, the right one neither); after waiting
        as long as Retry-After says, at most password_backoff_max, the
        right password is admitted again."""
        daemon = RunningDaemon(
            self,
            server="password = geheim\npassword_failures = 3\npassword_backoff_max = 2\n",
        )
        statuses = []
        for _ in range(50):
            code, response = await refused_status(
                daemon.url(), additional_headers=basic("CB-0001", "falsch")
            )
            statuses.append(code)
            if code == 429:
                self.assertLessEqual(int(response.headers["Retry-After"]), 2)
        self.assertEqual(statuses[:4], [401, 401, 401, 429])
        self.assertEqual(set(statuses), {401, 429})
        right = basic("CB-0001", "geheim")
        try:
            ws = await connect(daemon.url(), additional_headers=right)
        except websockets.exceptions.InvalidStatus as refused:
            self.assertEqual(refused.response.status_code, 429)
            wait = int(refused.response.headers["Retry-After"])
            self.assertLessEqual(wait, 2)
            await asyncio.sleep(wait)
            ws = await connect(daemon.url(), additional_headers=right)
        async with ws:
            await ws.send('[2,"h","Heartbeat",{}]')
            self.assertEqual(json.loads(await ws.recv())[:2], [3, "h"])

    @asyncio_test
    async def test_health(self):
        """/api/health answers 200 with both listeners listening."""
        daemon = RunningDaemon(self)
        status, health = await http_get(daemon.status_url("/api/health"))
        self.assertEqual(status, 200)
        self.assertEqual(health["listeners"], {"ocpp": "listening", "status": "listening"})

    @asyncio_test
    async def test_unknown_device_404(self):
        """/api/devices/<unknown> answers 404 in JSON."""
        daemon = RunningDaemon(self)
        status, body = await http_get(daemon.status_url("/api/devices/nope"))
        self.assertEqual(status, 404)
        self.assertEqual(body["error"], "not found")


class StatusPageTests(unittest.TestCase):
    @asyncio_test
    async def test_page_and_assets_served(self):
        """GET / serves the status page; its script and style come from the
        daemon itself (no external assets), and the script reads the API."""
        import urllib.request

        daemon = RunningDaemon(self)

        def fetch(path):
            with urllib.request.urlopen(daemon.status_url(path), timeout=10) as r:
                return r.headers["Content-Type"], r.read().decode()

        loop = asyncio.get_running_loop()
        kind, page = await loop.run_in_executor(None, fetch, "/")
        self.assertTrue(kind.startswith("text/html"))
        self.assertIn('src="/static/status.js"', page)
        self.assertNotIn("http://", page.replace("http://127.0.0.1", ""))
        kind, script = await loop.run_in_executor(None, fetch, "/static/status.js")
        self.assertIn("/api/devices", script)
        self.assertIn("Bearer", script)
        kind, _ = await loop.run_in_executor(None, fetch, "/static/status.css")
        self.assertTrue(kind.startswith("text/css"))


class MetricsTests(unittest.TestCase):
    @asyncio_test
    async def test_metrics_endpoint(self):
        """GET /metrics on the status listener answers in the Prometheus text
        format: the connected wallbox and its BootNotification counted."""
        import urllib.request

        from prometheus_client.parser import text_string_to_metric_families

        daemon = RunningDaemon(self)
        async with await connect(daemon.url()) as ws:
            await ws.send('[2,"b","BootNotification",{"chargePointVendor":"v","chargePointModel":"m"}]')
            await ws.recv()

            def fetch():
                with urllib.request.urlopen(daemon.status_url("/metrics"), timeout=10) as r:
                    return r.headers["Content-Type"], r.read().decode()

            kind, body = await asyncio.get_running_loop().run_in_executor(None, fetch)
        self.assertTrue(kind.startswith("text/plain"))
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(body) for s in family.samples}
        self.assertEqual(samples[("cfosproxy_wallbox_connections", ())], 1)
        boots = [v for (name, labels), v in samples.items()
                 if name == "cfosproxy_messages_total" and ("action", "BootNotification") in labels]
        self.assertEqual(boots, [1.0])


class NotFoundTests(unittest.TestCase):
    @asyncio_test
    async def test_unknown_paths_404(self):
        """Unknown paths on the status listener answer 404, the path not
        echoed back."""
        import urllib.error
        import urllib.request

        daemon = RunningDaemon(self)

        def status(path):
            try:
                urllib.request.urlopen(daemon.status_url(path), timeout=10)
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode()
            return 200, ""

        loop = asyncio.get_running_loop()
        for path in ("/favicon.ico", "/api/nothing", "/static/%3Cscript%3E"):
            code, body = await loop.run_in_executor(None, status, path)
            self.assertEqual(code, 404, path)
            self.assertNotIn("<script>", body)
