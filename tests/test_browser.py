"""The status page in a real headless browser: tiles appear, a wallbox
connecting changes its tile, disable/enable with the token works."""

import asyncio

from twisted.internet import defer
from twisted.trial import unittest

from tests.browser import CHROMIUM_ARGS, ensure_chromium
from tests.harness import RunningDaemon, asyncio_test
from tests.wallboxes import connect, exchange, http_get

WALLBOXES = """
[wallbox:garage-1]
type = ocpp
address = CB-0001
[wallbox:garage-2]
type = ocpp
address = CB-0002
"""


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
