"""The status page in a real headless browser: tiles appear, a wallbox
connecting changes its tile, disable/enable with the token works, the
site view shows the circuits per phase, the meters and the site limit, and
a tile shows how limits go to its wallbox and what it refused.

With C{STATUS_PAGE_SCREENSHOTS} naming a directory, the test of the limits
lines saves the page there at 1280 and 390 pixels wide, to look at."""

import asyncio
import contextlib
import json
import os
import time

from twisted.internet import defer
from twisted.trial import unittest

from tests.browser import CHROMIUM_ARGS, ensure_chromium
from tests.harness import RunningDaemon, asyncio_test
from tests.test_status import http_json
from tests.wallboxes import connect, exchange, http_get

WALLBOXES = """
[wallbox:garage-1]
type = ocpp
address = CB-0001
[wallbox:garage-2]
type = ocpp
address = CB-0002
"""

# The site (16 A) with the carport (10 A) below it and the bay (8 A) below
# that; garage-3 is a single-phase wallbox on L3 in the bay.
CIRCUITS = """
[circuit:carport]
max_current = 10
[circuit:bay]
max_current = 8
parent = carport
[wallbox:garage-3]
type = ocpp
address = CB-0003
circuit = bay
wiring = L3
priority = 1
"""


# The grid meter (on the site, given with [manager] meter) and the
# carport's, which never reads; both take their readings over the API.
METERS = """
[meter:grid]
type = api
[meter:carport-meter]
type = api
[circuit:carport]
max_current = 16
meter = carport-meter
"""


def takes_transaction_profiles_only(action, payload):
    """The answer of a wallbox that allows stack levels up to 8 and limits
    in A, and rejects every TxDefaultProfile, to a CALL from cfosproxy."""
    if action == "GetConfiguration":
        return {
            "configurationKey": [
                {"key": "ChargeProfileMaxStackLevel", "readonly": True, "value": "8"},
                {"key": "ChargingScheduleAllowedChargingRateUnit", "readonly": True, "value": "Current"},
            ]
        }
    if action == "SetChargingProfile":
        purpose = payload["csChargingProfiles"]["chargingProfilePurpose"]
        return {"status": "Rejected" if purpose == "TxDefaultProfile" else "Accepted"}
    return {"status": "Accepted"}


class ScriptedWallbox:
    """A wallbox on a raw WebSocket: it sends the test's frames, and answers
    every CALL from cfosproxy at once, also while the test waits for the
    page, with C{answer(action, payload)}."""

    def __init__(self, ws, answer):
        self._ws = ws
        self._answer = answer
        self._waiting = {}
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self):
        async for text in self._ws:
            frame = json.loads(text)
            if frame[0] == 2:
                await self._ws.send(json.dumps([3, frame[1], self._answer(frame[2], frame[3])]))
            elif frame[1] in self._waiting:
                self._waiting.pop(frame[1]).set_result(frame)

    async def call(self, unique_id, action, payload):
        """Send a CALL; return cfosproxy's answer frame."""
        answered = asyncio.get_running_loop().create_future()
        self._waiting[unique_id] = answered
        await self._ws.send(json.dumps([2, unique_id, action, payload]))
        return await asyncio.wait_for(answered, 15)

    async def stop(self):
        """Stop answering (before the WebSocket closes)."""
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


def limits_json(state="ready", purpose="TxDefaultProfile", stack_level=1, rate_unit="A",
                voltage=None, default_limit=True, source="wallbox", last_refusal=None):
    """The C{limits} of a device in C{/api/devices}."""
    return {
        "state": state, "purpose": purpose, "stack_level": stack_level, "rate_unit": rate_unit,
        "voltage": voltage, "default_limit": default_limit, "source": source,
        "wallbox": {"max_stack_level": 8, "rate_units": ["A"], "max_periods": 24, "max_profiles": 4}
        if source == "wallbox" else None,
        "last_refusal": last_refusal,
    }


def device_json(name, kind="ocpp", **values):
    """A device of C{/api/devices}: connected, idle, on the site's three
    phases; C{values} replace what the API would say."""
    document = {
        "name": name, "type": kind, "configured": True, "enabled": True, "connected": True,
        "status": "Available", "charging": False, "granted_current": 0.0, "accepted_limit": 0.0,
        "power_w": 0.0, "currents": [None, None, None], "energy_wh": 120000.0,
        "session_energy_wh": None, "transaction_id": None, "id_tag": None, "profile_error": None,
        "circuit": None, "wiring": "L1L2L3", "priority": 0, "phases": ["L1", "L2", "L3"],
        "limits": None, "gateway": None,
    }
    document.update(values)
    return document


def devices_with_every_kind_of_limits():
    """Devices as C{/api/devices} would show them now: one charging with
    limits configured in W that the wallbox refused 185 s ago (its reason
    with markup in it), one being probed, one that refuses every way, and
    a Modbus wallbox."""
    refused_at = time.time() - 185
    return {
        "devices": [
            device_json(
                "garage", status="Charging", charging=True, granted_current=16.0,
                accepted_limit=16.0, power_w=11040.0, currents=[16.0, 16.0, 16.0],
                transaction_id=7, id_tag="0451***", energy_wh=123456.0,
                session_energy_wh=8765.4,
                limits=limits_json(
                    purpose="TxProfile", rate_unit="W", voltage=230.0, default_limit=False,
                    source="configuration",
                    last_refusal={
                        "at": refused_at, "way": "TxDefaultProfile, stack level 1, W",
                        "reason": "SetChargingProfile answered <b>NotSupported</b>",
                    },
                ),
            ),
            device_json(
                "carport", limits=limits_json(state="probing", default_limit=None, source="defaults")
            ),
            device_json(
                "barn", status="SuspendedEVSE",
                profile_error="every way refused; the last, TxProfile, stack level 0, A: "
                "SetChargingProfile answered Rejected",
                limits=limits_json(
                    state="refused", stack_level=0, source="wallbox",
                    last_refusal={
                        "at": refused_at, "way": "TxProfile, stack level 0, A",
                        "reason": "SetChargingProfile answered Rejected",
                    },
                ),
            ),
            device_json("shed", kind="modbus"),
        ]
    }


def phase_text(circuit, phase):
    """A JavaScript expression: the text of a phase row of a circuit's
    own block (not of one nested in it)."""
    return (
        "document.querySelector('.circuit[data-circuit=\"{}\"] > .phases > .phase[data-phase=\"{}\"]')"
        ".textContent".format(circuit, phase)
    )


class StatusPageBrowserTests(unittest.TestCase):
    def setUp(self):
        self.chromium, reason = ensure_chromium()
        if self.chromium is None:
            raise unittest.SkipTest("no browser for the status page test: " + reason)

    async def page(self, url):
        from playwright.async_api import async_playwright

        playwright = await async_playwright().start()
        # Cleanups return Deferreds, so trial waits until the browser and its
        # connections are really gone before it checks the reactor.
        self.addCleanup(lambda: defer.Deferred.fromFuture(asyncio.ensure_future(playwright.stop())))
        browser = await playwright.chromium.launch(executable_path=self.chromium, args=CHROMIUM_ARGS)
        self.addCleanup(lambda: defer.Deferred.fromFuture(asyncio.ensure_future(browser.close())))
        page = await browser.new_page()
        await page.goto(url)
        return page

    @asyncio_test
    async def test_tiles_connection_and_toggle(self):
        """Both configured devices get a tile; when CB-0001 connects its tile
        turns online; with the token typed in, its button disables and then
        enables it again (the API agrees), and without the token the page
        shows the refusal."""
        daemon = RunningDaemon(self, status="token = tile-token", wallboxes=WALLBOXES)
        page = await self.page(daemon.status_url("/"))
        await page.wait_for_function("document.querySelectorAll('.tile').length === 2", timeout=15000)
        tile = '.tile[data-device="garage-1"]'
        self.assertIn("offline", await page.get_attribute(tile, "class"))

        async with await connect(daemon.url("CB-0001")) as ws:
            await ws.send('[2,"b","BootNotification",{"chargePointVendor":"cFos","chargePointModel":"Power Brain"}]')
            await ws.recv()
            await page.wait_for_selector(tile + ".online", timeout=15000)

            await page.click(tile + " button")
            await page.wait_for_selector("#error:not([hidden])", timeout=15000)
            self.assertIn("401", await page.text_content("#error"))

            await page.fill("#token", "tile-token")
            await page.dispatch_event("#token", "change")
            await page.click(tile + " button")
            await page.wait_for_function(
                "document.querySelector('.tile[data-device=\"garage-1\"] button').textContent === 'enable'",
                timeout=15000,
            )
            _, device = await http_get(daemon.status_url("/api/devices/garage-1"))
            self.assertFalse(device["enabled"])
            await page.click(tile + " button")
            await page.wait_for_function(
                "document.querySelector('.tile[data-device=\"garage-1\"] button').textContent === 'disable'",
                timeout=15000,
            )
            _, device = await http_get(daemon.status_url("/api/devices/garage-1"))
            self.assertTrue(device["enabled"])
        # Close the page's keep-alive connections before the daemon stops.
        await page.context.close()

    @asyncio_test
    async def test_a_tile_shows_the_current_on_each_phase(self):
        """The per-phase currents a wallbox reports in its MeterValues show
        on its tile, one figure per phase, and in the API."""
        daemon = RunningDaemon(self, wallboxes=WALLBOXES)
        page = await self.page(daemon.status_url("/"))
        tile = '.tile[data-device="garage-1"]'
        async with await connect(daemon.url("CB-0001")) as ws:
            await exchange(ws, '[2,"b","BootNotification",{"chargePointVendor":"cFos","chargePointModel":"Power Brain"}]')
            await exchange(
                ws,
                '[2,"m","MeterValues",{"connectorId":1,"meterValue":[{"timestamp":"2026-12-05T10:00:00Z",'
                '"sampledValue":[{"value":"15.9","measurand":"Current.Import","phase":"L1","unit":"A"},'
                '{"value":"0.2","measurand":"Current.Import","phase":"L2","unit":"A"}]}]}]',
            )
            await page.wait_for_function(
                "document.querySelector('.tile[data-device=\"garage-1\"]').textContent"
                ".includes('L1 15.9 · L2 0.2 · L3 – A')",
                timeout=15000,
            )
            _, device = await http_get(daemon.status_url("/api/devices/garage-1"))
            self.assertEqual(device["currents"], [15.9, 0.2, None])
        self.assertIn("currents", await page.text_content(tile))
        await page.context.close()

    @asyncio_test
    async def test_the_site_view_shows_the_circuits_per_phase(self):
        """Above the tiles, the site holds its circuits nested by parent,
        each with rows L1, L2, L3 of bars and figures for what is counted,
        available and the limit; once the single-phase wallbox in the bay
        charges, the page's refresh shows it counted on L3 of the site and
        the unbalanced load near max_imbalance. Its tile says where it is
        wired."""
        daemon = RunningDaemon(
            self, manager="max_current = 16\nmax_imbalance = 9\n", wallboxes=WALLBOXES + CIRCUITS
        )
        page = await self.page(daemon.status_url("/"))
        nested = '#site > .circuit[data-circuit="site"] .circuit[data-circuit="carport"] .circuit[data-circuit="bay"]'
        await page.wait_for_selector(nested, timeout=15000)
        # The site view comes before the tiles.
        self.assertTrue(await page.evaluate(
            "Boolean(document.getElementById('site').compareDocumentPosition("
            "document.getElementById('tiles')) & Node.DOCUMENT_POSITION_FOLLOWING)"
        ))
        for circuit in ("site", "carport", "bay"):
            phases = await page.eval_on_selector_all(
                '.circuit[data-circuit="{}"] > .phases > .phase'.format(circuit),
                "rows => rows.map(row => row.dataset.phase)",
            )
            self.assertEqual(phases, ["L1", "L2", "L3"], circuit)
            bars = await page.eval_on_selector_all(
                '.circuit[data-circuit="{}"] > .phases .track > span'.format(circuit),
                "bars => bars.map(bar => bar.className)",
            )
            self.assertEqual(bars, ["limit", "available", "counted"] * 3, circuit)
        self.assertEqual(
            await page.evaluate(phase_text("bay", "L2")),
            "L2counted 0.0 · available 8.0 · limit 8.0 A",
        )
        self.assertIsNone(await page.query_selector(".hint.imbalance"))

        async with await connect(daemon.url("CB-0003")) as ws:
            await exchange(ws, '[2,"b","BootNotification",{"chargePointVendor":"cFos","chargePointModel":"Power Brain"}]')
            await exchange(
                ws,
                '[2,"s","StartTransaction",{"connectorId":1,"idTag":"T","meterStart":0,"timestamp":"2026-12-05T10:00:00Z"}]',
            )
            await exchange(
                ws, '[2,"n","StatusNotification",{"connectorId":1,"errorCode":"NoError","status":"Charging"}]'
            )
            # Answers the limits the manager sends meanwhile.
            await exchange(ws, '[2,"h","Heartbeat",{}]')
            # 8 A for the single-phase car, held there by the bay's fuse.
            await page.wait_for_function(
                phase_text("site", "L3") + " === 'L3counted 8.0 · available 16.0 · limit 16.0 A'",
                timeout=15000,
            )
            self.assertEqual(
                await page.evaluate(phase_text("site", "L1")),
                "L1counted 0.0 · available 16.0 · limit 16.0 A",
            )
            hint = await page.text_content('.circuit[data-circuit="site"] > .hint.imbalance')
            self.assertEqual(hint, "unbalanced load 8.0 A: near the limit of 9.0 A")
            _, state = await http_get(daemon.status_url("/api/site"))
            self.assertEqual(state["site"]["counted"], [0.0, 0.0, 8.0])
            wired = await page.text_content('.tile[data-device="garage-3"] .wired')
            self.assertEqual(wired, "circuit bay · wiring L3 · counted on L3 · priority 1")
            self.assertEqual(
                await page.text_content('.tile[data-device="garage-1"] .wired'),
                "circuit site · wiring L1L2L3 · counted on L1 L2 L3",
            )
        await page.context.close()

    @asyncio_test
    async def test_the_site_view_shows_meters_and_the_site_limit(self):
        """With a grid meter on the site and a meter on the carport that
        never read: once the grid's reading is pushed, the site's rows
        show it and the other load per phase, with what that leaves
        available; the carport wears the fail-safe badge; the list of
        meters shows both with their state; and a site limit set over the
        API shows with its source."""
        daemon = RunningDaemon(
            self,
            manager="max_current = 32\nmeter = grid\nfailsafe_current = 6\n",
            status="token = tile-token",
            wallboxes=WALLBOXES + METERS,
        )
        page = await self.page(daemon.status_url("/"))
        await page.wait_for_selector('.circuit[data-circuit="carport"]', timeout=15000)
        self.assertEqual(
            await page.text_content('.circuit[data-circuit="site"] > .site-limit'),
            "site limit 32.0 A per phase · from the config",
        )
        answer = await http_json(
            daemon.status_url("/api/meters/grid"), {"currents": [12.5, 3, -4]}, "tile-token"
        )
        self.assertEqual(answer, (204, None))
        # 32 A less the reserve (2 A) and the other load; export leaves 32 A.
        await page.wait_for_function(
            phase_text("site", "L1")
            + " === 'L1meter 12.5 · other 12.5 · counted 0.0 · available 17.5 · limit 32.0 A'",
            timeout=15000,
        )
        self.assertEqual(
            await page.evaluate(phase_text("site", "L3")),
            "L3meter -4.0 · other -4.0 · counted 0.0 · available 32.0 · limit 32.0 A",
        )
        self.assertTrue(
            (await page.text_content('.circuit[data-circuit="site"] > .meter')).startswith(
                "meter grid · api · "
            )
        )
        self.assertIsNone(await page.query_selector('.circuit[data-circuit="site"] > .silent'))
        self.assertEqual(
            await page.text_content('.circuit[data-circuit="carport"] > .hint.silent'),
            "meter silent: fail-safe 6.0 A",
        )
        self.assertEqual(
            await page.evaluate(phase_text("carport", "L2")),
            "L2meter – · other – · counted 0.0 · available 6.0 · limit 16.0 A",
        )
        rows = await page.eval_on_selector_all(
            "#site .meters tbody tr",
            "rows => rows.map(row => [...row.cells].map(cell => cell.textContent))",
        )
        self.assertEqual(rows[1], ["carport-meter", "api", "–", "–", "–", "no reading yet", "silent"])
        self.assertEqual(rows[0][:5] + rows[0][6:], ["grid", "api", "12.5 A", "3.0 A", "-4.0 A", "ok"])
        self.assertRegex(rows[0][5], r"^\d+\.\d s ago$")

        answer = await http_json(daemon.status_url("/api/site"), {"max_current": 30}, "tile-token")
        self.assertEqual(answer, (204, None))
        await page.wait_for_function(
            "document.querySelector('.circuit[data-circuit=\"site\"] > .site-limit')"
            ".textContent.startsWith('site limit 30.0 A per phase · set over the API 20')",
            timeout=15000,
        )
        self.assertTrue(
            (await page.text_content('.circuit[data-circuit="site"] > .site-limit')).endswith(
                " UTC · config 32.0 A"
            )
        )
        self.assertEqual(
            await page.evaluate(phase_text("site", "L1")),
            "L1meter 12.5 · other 12.5 · counted 0.0 · available 15.5 · limit 30.0 A",
        )
        await page.context.close()

    @asyncio_test
    async def test_a_tile_shows_how_limits_go_to_its_wallbox(self):
        """A wallbox that rejects every TxDefaultProfile gets its limits as
        TxProfiles, learnt from its GetConfiguration: its tile says so in
        one line, with the refusal that led there and its reason, and the
        energy of the session; the API agrees."""
        daemon = RunningDaemon(self, wallboxes=WALLBOXES)
        page = await self.page(daemon.status_url("/"))
        tile = '.tile[data-device="garage-1"]'
        async with await connect(daemon.url("CB-0001")) as ws:
            wallbox = ScriptedWallbox(ws, takes_transaction_profiles_only)
            await wallbox.call(
                "b", "BootNotification", {"chargePointVendor": "cFos", "chargePointModel": "Power Brain"}
            )
            await wallbox.call(
                "a", "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Preparing"}
            )
            await wallbox.call(
                "s", "StartTransaction",
                {"connectorId": 1, "idTag": "T", "meterStart": 1000, "timestamp": "2026-12-05T10:00:00Z"},
            )
            await wallbox.call(
                "c", "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Charging"}
            )
            await wallbox.call(
                "m", "MeterValues",
                {"connectorId": 1, "meterValue": [{"timestamp": "2026-12-05T10:05:00Z", "sampledValue": [
                    {"value": "2500", "measurand": "Energy.Active.Import.Register", "unit": "Wh"}]}]},
            )
            # The session's 1.5 kWh since meterStart, once the page shows it.
            await page.wait_for_function(
                "(document.querySelector('.tile[data-device=\"garage-1\"] .limits') || {}).textContent"
                " === 'limits: TxProfile · stack 1 · A · no default limit (from the wallbox)'"
                " && document.querySelector('.tile[data-device=\"garage-1\"] dl').textContent"
                ".includes('session1.50 kWh')",
                timeout=15000,
            )
            self.assertRegex(
                await page.text_content(tile + " .refusal"),
                r"^last refused \d+ s ago: TxDefaultProfile, stack level 0, A — "
                r"SetChargingProfile answered Rejected$",
            )
            self.assertIsNone(await page.query_selector(tile + " .badge"))
            self.assertEqual(
                await page.get_attribute(tile + " .limits", "title"),
                "max stack level 8, units A, max periods –, max profiles –",
            )
            _, shown = await http_get(daemon.status_url("/api/devices/garage-1"))
            self.assertEqual(
                (shown["limits"]["purpose"], shown["limits"]["source"], shown["session_energy_wh"]),
                ("TxProfile", "wallbox", 1500.0),
            )
            self.assertEqual(
                shown["limits"]["last_refusal"]["reason"], "SetChargingProfile answered Rejected"
            )
            # A wallbox that never connected: the defaults, nothing refused.
            self.assertEqual(
                await page.text_content('.tile[data-device="garage-2"] .limits'),
                "limits: TxDefaultProfile · stack 1 · A (defaults)",
            )
            await wallbox.stop()
        await page.context.close()

    @asyncio_test
    async def test_the_limits_lines_at_desktop_and_phone_width(self):
        """With devices in every state of their limits (the devices JSON
        made here): the way in one line per OCPP wallbox, in W with the
        voltage; a badge for the one probed and for the one that refuses
        every way; the last refusal with its age, the reason's markup shown
        as text; the session energy; nothing of limits on the Modbus tile.
        At 390 pixels wide nothing runs off the page or out of a tile."""
        daemon = RunningDaemon(self, wallboxes=WALLBOXES)
        page = await self.page("about:blank")

        async def devices(route):
            await route.fulfill(
                status=200, content_type="application/json",
                body=json.dumps(devices_with_every_kind_of_limits()),
            )

        async def no_site(route):
            # The daemon's site would name its own devices: no site view.
            await route.fulfill(status=404, content_type="application/json", body="{}")

        await page.route("**/api/devices", devices)
        await page.route("**/api/site", no_site)
        await page.goto(daemon.status_url("/"))
        await page.wait_for_selector('.tile[data-device="shed"]', timeout=15000)

        def of(name, part):
            return '.tile[data-device="{}"] {}'.format(name, part)

        self.assertEqual(
            await page.text_content(of("garage", ".limits")),
            "limits: TxProfile · stack 1 · W at 230 V · no default limit (configured)",
        )
        self.assertEqual(
            await page.text_content(of("garage", ".refusal")),
            "last refused 3 min ago: TxDefaultProfile, stack level 1, W — "
            "SetChargingProfile answered <b>NotSupported</b>",
        )
        self.assertIsNone(await page.query_selector(of("garage", ".refusal b")))
        self.assertIsNone(await page.query_selector(of("garage", ".badge")))
        self.assertIn("session8.77 kWh", await page.text_content(of("garage", "dl")))
        self.assertEqual(
            await page.text_content(of("carport", ".badge.probing")),
            "probing: asking the wallbox how it takes limits",
        )
        self.assertEqual(
            await page.text_content(of("carport", ".limits")),
            "limits: TxDefaultProfile · stack 1 · A (defaults)",
        )
        self.assertNotIn("session", await page.text_content(of("carport", "dl")))
        self.assertEqual(
            await page.text_content(of("barn", ".badge.refused")),
            "refuses every limit: counted at max current",
        )
        self.assertEqual(
            await page.text_content(of("barn", ".refusal")),
            "last refused 3 min ago: TxProfile, stack level 0, A — SetChargingProfile answered Rejected",
        )
        self.assertIsNone(await page.query_selector(of("shed", ".limits")))
        self.assertIsNone(await page.query_selector(of("shed", ".refusal")))

        screenshots = os.environ.get("STATUS_PAGE_SCREENSHOTS")
        for width in (1280, 390):
            await page.set_viewport_size({"width": width, "height": 900})
            overflowing = await page.evaluate(
                "[document.documentElement, ...document.querySelectorAll('.tile, .tile > *')]"
                ".filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.className || e.tagName)"
            )
            self.assertEqual(overflowing, [], width)
            if screenshots:
                await page.screenshot(
                    path=os.path.join(screenshots, "status-limits-{}.png".format(width)), full_page=True
                )
        await page.context.close()
