"""End-to-end load management: wallbox clients on real sockets get the
manager's charging profiles."""

import asyncio

from ocpp.v16 import call
from twisted.trial import unittest

from tests.harness import RunningDaemon, asyncio_test, wait_deferred
from tests.wallboxes import http_get, http_post, start_wallbox, stop_wallbox


def wallboxes(*names, lo=6, hi=16):
    return "".join(
        "[wallbox:{0}]\ntype = ocpp\naddress = {0}\nmin_current = {1}\nmax_current = {2}\n".format(n, lo, hi)
        for n in names
    )


async def boot(wallbox):
    await wallbox.call(call.BootNotification(charge_point_vendor="cFos", charge_point_model="Power Brain"))


async def start_charging(wallbox, connector_id=1):
    await wallbox.call(call.StatusNotification(connector_id=connector_id, error_code="NoError", status="Preparing"))
    await wallbox.call(call.StartTransaction(connector_id=connector_id, id_tag="04A1B2C3", meter_start=0, timestamp="2026-11-23T10:00:00Z"))


async def round_trip(wallbox):
    """A Heartbeat round trip: whatever the daemon sent before its answer
    has arrived by then."""
    await wallbox.call(call.Heartbeat())


class LoadManagementTests(unittest.TestCase):
    async def fleet(self, daemon, names):
        boxes = []
        for name in names:
            box = await start_wallbox(daemon.url(name), name)
            self.addCleanup(lambda b=box: asyncio.ensure_future(stop_wallbox(b)))
            boxes.append(box)
        return boxes

    @asyncio_test
    async def test_default_profile_then_grant(self):
        """After boot the wallbox holds the manager's 0 A TxDefaultProfile
        (id 1952001, stack level 1); after StartTransaction the limit rises
        to the device's max_current, not above; after the stop it is 0."""
        daemon = RunningDaemon(self, manager="max_current = 32\n", wallboxes=wallboxes("CB-1"))
        [box] = await self.fleet(daemon, ["CB-1"])
        await boot(box)
        await box.wait_for_limit(0)
        profile = box.profiles[1]
        self.assertEqual(profile["charging_profile_id"], 1952001)
        self.assertEqual(profile["stack_level"], 1)
        self.assertEqual(profile["charging_profile_purpose"], "TxDefaultProfile")
        self.assertEqual(profile["charging_schedule"]["charging_rate_unit"], "A")
        await start_charging(box)
        await box.wait_for_limit(16)
        await round_trip(box)
        _, device = await http_get(daemon.status_url("/api/devices/CB-1"))
        self.assertEqual((device["granted_current"], device["accepted_limit"]), (16.0, 16.0))
        await box.call(call.StopTransaction(meter_stop=100, timestamp="2026-11-23T11:00:00Z", transaction_id=device["transaction_id"]))
        await box.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Available"))
        await box.wait_for_limit(0)

    @asyncio_test
    async def test_two_share_twenty_amps(self):
        """Two 6-16 A wallboxes under a 20 A site: each ends at 10 A, and
        the sum of limits they hold never exceeds 20 A on the way."""
        daemon = RunningDaemon(self, manager="max_current = 20\n", wallboxes=wallboxes("CB-1", "CB-2"))
        a, b = await self.fleet(daemon, ["CB-1", "CB-2"])
        seen = []

        def watch():
            total = sum(box.limit() or 0 for box in (a, b))
            seen.append(total)

        for box in (a, b):
            original = box.on_set_charging_profile

            def record(connector_id, cs_charging_profiles, _original=original):
                result = _original(connector_id, cs_charging_profiles)
                watch()
                return result

            box.route_map["SetChargingProfile"]["_on_action"] = record
        await boot(a)
        await boot(b)
        await start_charging(a)
        await a.wait_for_limit(16)
        await start_charging(b)
        await b.wait_for_limit(10)
        await a.wait_for_limit(10)
        self.assertLessEqual(max(seen), 20)

    @asyncio_test
    async def test_third_waits(self):
        """Under 16 A two 6-16 A wallboxes get 8 A each; a third, for which
        less than 6 A would be left, waits with 0 A."""
        daemon = RunningDaemon(self, manager="max_current = 16\n", wallboxes=wallboxes("CB-1", "CB-2", "CB-3"))
        boxes = await self.fleet(daemon, ["CB-1", "CB-2", "CB-3"])
        for box in boxes:
            await boot(box)
        for box in boxes:
            await start_charging(box)
        await boxes[0].wait_for_limit(8)
        await boxes[1].wait_for_limit(8)
        await round_trip(boxes[2])
        self.assertEqual(boxes[2].limit(), 0)
        _, devices = await http_get(daemon.status_url("/api/devices"))
        grants = {d["name"]: d["granted_current"] for d in devices["devices"]}
        self.assertEqual(grants, {"CB-1": 8.0, "CB-2": 8.0, "CB-3": 0.0})

    @asyncio_test
    async def test_observe_mode_sends_nothing(self):
        """mode = observe: no profile ever reaches the wallbox, while the
        status API still shows the grant."""
        daemon = RunningDaemon(self, manager="mode = observe\n", wallboxes=wallboxes("CB-1"))
        [box] = await self.fleet(daemon, ["CB-1"])
        await boot(box)
        await start_charging(box)
        await round_trip(box)
        self.assertEqual(box.profiles, {})
        _, device = await http_get(daemon.status_url("/api/devices/CB-1"))
        self.assertEqual(device["granted_current"], 16.0)
        self.assertIsNone(device["accepted_limit"])

    @asyncio_test
    async def test_disable_lifts_limit_and_survives_restart(self):
        """POST disable with the token: the wallbox gets ClearChargingProfile
        for the manager's profile; the device shows disabled, also after a
        restart; POST enable brings the 0 A default back."""
        daemon_token = "s3cret-token"
        daemon = RunningDaemon(self, status="token = " + daemon_token, wallboxes=wallboxes("CB-1"))
        [box] = await self.fleet(daemon, ["CB-1"])
        await boot(box)
        await box.wait_for_limit(0)
        status, device, _ = await http_post(daemon.status_url("/api/devices/CB-1/disable"), daemon_token)
        self.assertEqual(status, 200)
        self.assertFalse(device["enabled"])
        self.assertEqual(box.profiles, {})
        await stop_wallbox(box)
        await wait_deferred(daemon.restart())
        _, device = await http_get(daemon.status_url("/api/devices/CB-1"))
        self.assertFalse(device["enabled"])
        [box] = await self.fleet(daemon, ["CB-1"])
        await boot(box)
        await round_trip(box)
        self.assertEqual(box.profiles, {})
        status, device, _ = await http_post(daemon.status_url("/api/devices/CB-1/enable"), daemon_token)
        self.assertTrue(device["enabled"])
        await box.wait_for_limit(0)

    @asyncio_test
    async def test_api_refusals(self):
        """POST without a configured token is refused with 403; with a token
        configured, a missing or wrong one gets 401 with WWW-Authenticate;
        an unknown device 404."""
        daemon = RunningDaemon(self, wallboxes=wallboxes("CB-1"))
        status, body, _ = await http_post(daemon.status_url("/api/devices/CB-1/disable"), "anything")
        self.assertEqual(status, 403)
        daemon = RunningDaemon(self, status="token = right", wallboxes=wallboxes("CB-1"))
        for token in (None, "wrong"):
            status, _, headers = await http_post(daemon.status_url("/api/devices/CB-1/disable"), token)
            self.assertEqual(status, 401)
            self.assertIn("Bearer", headers["WWW-Authenticate"])
        status, _, _ = await http_post(daemon.status_url("/api/devices/nope/disable"), "right")
        self.assertEqual(status, 404)
        _, device = await http_get(daemon.status_url("/api/devices/CB-1"))
        self.assertTrue(device["enabled"])


class SiteChangesTests(unittest.TestCase):
    """One wallbox with two connectors; a changed configuration."""

    @asyncio_test
    async def test_two_connectors_share_one_connection(self):
        """Two devices on one ChargeBox-ID (connectors 1 and 2) get their own
        profiles over the one connection and share the site: 10 + 10 A."""
        config = (
            "[wallbox:left]\ntype = ocpp\naddress = CB-D\nid = 1\n"
            "[wallbox:right]\ntype = ocpp\naddress = CB-D\nid = 2\n"
        )
        daemon = RunningDaemon(self, manager="max_current = 20\n", wallboxes=config)
        box = await start_wallbox(daemon.url("CB-D"), "CB-D")
        self.addCleanup(lambda: asyncio.ensure_future(stop_wallbox(box)))
        await boot(box)
        await box.wait_for_limit(0, connector_id=1)
        await box.wait_for_limit(0, connector_id=2)
        self.assertEqual(box.profiles[2]["charging_profile_id"], 1952002)
        await start_charging(box, connector_id=1)
        await box.wait_for_limit(16, connector_id=1)
        await start_charging(box, connector_id=2)
        await box.wait_for_limit(10, connector_id=1)
        await box.wait_for_limit(10, connector_id=2)
        await round_trip(box)
        _, devices = await http_get(daemon.status_url("/api/devices"))
        self.assertEqual({d["name"]: d["accepted_limit"] for d in devices["devices"]}, {"left": 10.0, "right": 10.0})

    @asyncio_test
    async def test_new_site_limit_after_restart(self):
        """After a restart with a lower site limit, the reconnecting wallbox
        in the middle of its transaction gets the new limit, even without a
        BootNotification (after the boot grace)."""
        daemon = RunningDaemon(self, manager="max_current = 32\n", wallboxes=wallboxes("CB-1"))
        box = await start_wallbox(daemon.url("CB-1"), "CB-1")
        await boot(box)
        await start_charging(box)
        await box.wait_for_limit(16)
        await stop_wallbox(box)
        text = open(daemon.config_path).read().replace("max_current = 32", "max_current = 12")
        open(daemon.config_path, "w").write(text)
        await wait_deferred(daemon.restart())
        box2 = await start_wallbox(daemon.url("CB-1"), "CB-1")
        self.addCleanup(lambda: asyncio.ensure_future(stop_wallbox(box2)))
        # No boot: the wallbox just goes on with its transaction.
        await box2.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Charging"))
        await box2.wait_for_limit(12, timeout=15)


class UnknownWallboxTests(unittest.TestCase):
    """accept_unknown = yes: wallboxes that are not configured beside those
    that are."""

    @asyncio_test
    async def test_unknown_wallbox_named_like_a_device_changes_nothing(self):
        """An unknown wallbox connecting as "garage-1" (the name of the
        device whose ChargeBox-ID is CB-0001), and one more after it, are
        shown as unknown devices of their own; garage-1 keeps its name and
        its grant, goes back to 0 A when it stops, and garage-2, which starts
        then, gets the site's 16 A."""
        devices = (
            "[wallbox:garage-1]\ntype = ocpp\naddress = CB-0001\n"
            "[wallbox:garage-2]\ntype = ocpp\naddress = CB-0002\n"
        )
        daemon = RunningDaemon(
            self, server="accept_unknown = yes\n", manager="max_current = 16\n", wallboxes=devices
        )
        boxes = {}
        for cbid in ("CB-0001", "CB-0002", "garage-1", "CB-X"):
            boxes[cbid] = await start_wallbox(daemon.url(cbid), cbid)
            self.addCleanup(lambda b=boxes[cbid]: asyncio.ensure_future(stop_wallbox(b)))
        await boot(boxes["CB-0001"])
        await boot(boxes["CB-0002"])
        await start_charging(boxes["CB-0001"])
        await boxes["CB-0001"].wait_for_limit(16)
        for cbid in ("garage-1", "CB-X"):
            await boot(boxes[cbid])
            await start_charging(boxes[cbid])
        _, listed = await http_get(daemon.status_url("/api/devices"))
        shown = {d["name"]: d for d in listed["devices"]}
        self.assertEqual(
            sorted(shown), ["garage-1", "garage-2", "unknown:CB-X:1", "unknown:garage-1:1"]
        )
        self.assertEqual(shown["garage-1"]["address"], "CB-0001")
        self.assertEqual(shown["garage-1"]["granted_current"], 16.0)
        status, unknown = await http_get(daemon.status_url("/api/devices/unknown:garage-1:1"))
        self.assertEqual(status, 200)
        self.assertEqual((unknown["address"], unknown["configured"]), ("garage-1", False))
        self.assertEqual(boxes["garage-1"].profiles, {})
        first = boxes["CB-0001"]
        _, device = await http_get(daemon.status_url("/api/devices/garage-1"))
        await first.call(call.StopTransaction(meter_stop=100, timestamp="2026-11-23T11:00:00Z", transaction_id=device["transaction_id"]))
        await first.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Available"))
        await first.wait_for_limit(0)
        await start_charging(boxes["CB-0002"])
        await boxes["CB-0002"].wait_for_limit(16)
        await round_trip(boxes["CB-0002"])
        _, listed = await http_get(daemon.status_url("/api/devices"))
        grants = {d["name"]: d["granted_current"] for d in listed["devices"]}
        self.assertEqual((grants["garage-1"], grants["garage-2"]), (0.0, 16.0))
