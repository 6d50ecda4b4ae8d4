"""End-to-end: meters and dynamic limits (DESIGN §7) over real sockets.

The real daemon polls a real Modbus TCP meter on loopback (an SDM630 or a
SunSpec meter, L{tests.meterserver.MeterServer}) or takes readings pushed
over its status API, and shares what the meter leaves among OCPP wallboxes
that are real WebSocket clients (L{tests.test_e2e_site.SiteWallbox}: each
records every limit it receives and when, and answers after
L{tests.test_e2e_site.ANSWER_DELAY}).

What a meter serves is consistent with what the wallboxes hold
(L{MeteredLoad}): the rest of the building, which a test sets, plus what
the cars below the meter may draw now on the phases they draw on. So the
daemon's reckoning of the other load (the reading less what the managed
devices draw) must come back to what the test set.
"""

import asyncio
import json
import math
import urllib.error
import urllib.request

from twisted.logger import LogLevel

import cfosproxy.site.available
from tests.harness import RunningDaemon, asyncio_test, eventually
from tests.meterserver import MeterServer
from tests.test_e2e_flapping import LogCapture
from tests.test_e2e_site import (
    ANSWER_DELAY,
    PHASES,
    SHORT_RAISE_INTERVAL,
    FuseWatch,
    Site,
    SiteTestCase,
    Spec,
    start_charging,
)
from tests.test_modbus import stop_server
from tests.wallboxes import http_get

# Seconds between two polls of a Modbus meter: DESIGN's default is 1 s;
# shorter keeps the tests short and still leaves the meter time to answer.
POLL = 0.25

# A meter with no reading for this long is silent (DESIGN's default 10 s).
TIMEOUT = 2.0

# What loopback, two shared cores and the daemon's own work may add to a
# bound of DESIGN §7 that counts meter polls and profile round trips only.
MARGIN = 1.0

# The bearer token of the status API, for POST /api/meters.
TOKEN = "meter-secret"

# The log namespace of the daemon's meter board (what it says of silence
# and of readings it does not believe).
METER_LOG = "cfosproxy.site.meters"


class MeteredLoad:
    """What a meter measures, as the model of a L{MeterServer}: the other
    load a test sets, plus what the cars of the wallboxes below the meter
    may draw now, on the site phases they draw on.

    A car draws what its wallbox may let it draw (L{SiteWallbox.exposure}):
    a raised limit as soon as the wallbox has it, the old higher limit
    until the wallbox has answered a lower one.

    @param fuse: where the meter sits: C{"site"} or a circuit's name.
    @ivar other: the rest of the building, signed amperes on L1, L2, L3
        (negative: fed into the grid).
    @ivar boxes: the wallboxes of the site (those below C{fuse} count).
    """

    def __init__(self, fuse, other):
        self.fuse = fuse
        self.other = tuple(other)
        self.boxes = []

    def cars(self):
        """C{[L1, L2, L3]}: what the cars below the meter may draw now."""
        amps = [0.0, 0.0, 0.0]
        for box in self.boxes:
            if self.fuse in box.fuses:
                for phase in box.site_phases():
                    amps[PHASES.index(phase)] += box.exposure()
        return amps

    def currents(self):
        return tuple(other + car for other, car in zip(self.other, self.cars()))

    def powers(self):
        # Each current times the nominal voltage: the server's default.
        return None


def meter_section(name, server=None, poll_interval=POLL, timeout=TIMEOUT):
    """A C{[meter:NAME]} section: polled from C{server}, or C{type = api}
    without one."""
    if server is None:
        return "[meter:{}]\ntype = api\ntimeout = {:g}\n".format(name, timeout)
    return (
        "[meter:{}]\ntype = {}\naddress = {}\nid = {}\npoll_interval = {:g}\ntimeout = {:g}\n"
    ).format(name, server.kind, server.address, server.unit_id, poll_interval, timeout)


class MeteredSite(Site):
    """A L{Site} whose site or circuits are measured by meters.

    @param meters: the C{[meter:*]} sections (L{meter_section}).
    @param site_meter: C{[manager] meter}, empty for a static site limit.
    @param circuits: C{{name: (max_current, parent)}}.
    @param circuit_meters: C{{circuit name: meter name}}.
    @param loads: the L{MeteredLoad}s the meter servers serve: they learn
        the wallboxes as they connect.
    """

    def __init__(
        self,
        testcase,
        max_current,
        specs,
        meters,
        site_meter="",
        circuits=None,
        circuit_meters=None,
        reserve=2,
        failsafe_current=0,
        loads=(),
    ):
        circuits = circuits or {}
        circuit_meters = circuit_meters or {}
        self.testcase = testcase
        self.specs = {spec.name: spec for spec in specs}
        self.circuits = circuits
        manager = (
            "max_current = {:g}\nmeter = {}\nreserve = {:g}\nfailsafe_current = {:g}\n"
        ).format(max_current, site_meter, reserve, failsafe_current)
        sections = "".join(
            "[circuit:{}]\nmax_current = {:g}\nparent = {}\nmeter = {}\n".format(
                name, amps, parent, circuit_meters.get(name, "")
            )
            for name, (amps, parent) in circuits.items()
        )
        sections += "".join(meters)
        sections += "".join(spec.section() for spec in specs)
        self.daemon = RunningDaemon(
            testcase, manager=manager, status="token = {}\n".format(TOKEN), wallboxes=sections
        )
        # The fuses themselves hold whatever a meter says: what a meter
        # makes available is never more than max_current.
        fuses = {"site": max_current}
        fuses.update((name, amps) for name, (amps, _) in circuits.items())
        self.watch = FuseWatch(fuses)
        self.boxes = {}
        for load in loads:
            load.boxes = self.watch.boxes

    async def site_state(self):
        """C{GET /api/site}."""
        status, state = await http_get(self.daemon.status_url("/api/site"))
        self.testcase.assertEqual(status, 200)
        return state

    async def meter_state(self, name):
        """The meter C{name} as C{GET /api/site} shows it."""
        state = await self.site_state()
        [meter] = [m for m in state["meters"] if m["name"] == name]
        return meter

    async def heard(self, name, timeout=10):
        """Wait until the daemon believes a reading of meter C{name}."""

        async def check():
            return not (await self.meter_state(name))["silent"]

        await eventually(check, timeout=timeout)

    def held(self):
        """C{{name: limit held}} of every wallbox."""
        return {name: box.held for name, box in self.boxes.items()}


async def post_json(url, body, token=None):
    """POST C{body} (bytes) as JSON; return the status and the decoded
    answer (None for an empty one)."""

    def send():
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        if token is not None:
            request.add_header("Authorization", "Bearer " + token)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    return await asyncio.get_running_loop().run_in_executor(None, send)


def first_receipt(box, after, predicate):
    """The loop time of the first limit C{box} received at or after
    C{after} for which C{predicate(limit)} holds, or None."""
    for at, limit in box.received:
        if at >= after and predicate(limit):
            return at
    return None


async def more_polls(server, count=4):
    """Wait until the daemon has read C{server} C{count} more times."""
    polls = len(server.reads)

    async def check():
        return len(server.reads) >= polls + count

    await eventually(check, timeout=10)


class MeterTestCase(SiteTestCase):
    """Meter servers, stopped after the test (after the daemon, which was
    started later), and the raise interval of the site's meters."""

    async def meter_server(self, kind, other=(0, 0, 0), fuse="site", **kwargs):
        """A started L{MeterServer} serving a L{MeteredLoad} below C{fuse}
        with C{other} amperes of other load."""
        server = MeterServer(kind, **kwargs)
        server.model = MeteredLoad(fuse, other)
        await server.start()
        self.addCleanup(lambda: stop_server(server))
        return server

    def shorten_raise_interval(self):
        # Both the raise of a wallbox (the manager) and the raise of what a
        # meter makes available (SiteLimits) wait 10 s; each module took
        # the constant by name, so each is patched.
        super().shorten_raise_interval()
        self.patch(cfosproxy.site.available, "RAISE_INTERVAL", SHORT_RAISE_INTERVAL)

    def assertSumAtMost(self, boxes, amps):
        """The limits the wallboxes hold and have in flight add up to at
        most C{amps}."""
        total = sum(box.exposure() for box in boxes)
        self.assertLessEqual(total, amps + 1e-6, {b.spec.name: (b.held, b.in_flight) for b in boxes})


class OtherLoadTests(MeterTestCase):
    """A site meter with 10 A of other load on a 32 A site (reserve 2):
    the same scenario against the SDM630 and SunSpec meters."""

    async def check_other_load(self, kind, **server_options):
        server = await self.meter_server(kind, other=(10, 10, 10), **server_options)
        site = MeteredSite(
            self, 32, [Spec("CB-1", max_current=32)], [meter_section("grid", server)],
            site_meter="grid", loads=[server.model],
        )
        boxes = await site.connect()
        await site.heard("grid")
        await start_charging(boxes["CB-1"])
        await site.settled({"CB-1": 20})
        # Several polls with the car drawing 20 A: the daemon must keep
        # telling its own 20 A from the other 10 A.
        await more_polls(server)
        state = await site.site_state()
        self.assertEqual(boxes["CB-1"].held, 20)
        self.assertTrue(all(limit <= 20 for limit in boxes["CB-1"].limits()), boxes["CB-1"].limits())
        self.assertEqual(state["site"]["meter"], "grid")
        self.assertFalse(state["site"]["silent"])
        self.assertEqual(state["site"]["other"], [10.0, 10.0, 10.0])
        self.assertEqual(state["site"]["available"], [20.0, 20.0, 20.0])
        [meter] = state["meters"]
        self.assertEqual((meter["name"], meter["type"], meter["silent"]), ("grid", kind, False))
        for amps in meter["currents"]:
            self.assertAlmostEqual(amps, 30.0, places=1)
        self.assertFusesHeld(site, at_least=2)
        return server

    @asyncio_test
    async def test_sdm630(self):
        """SDM630: with 10 A of other load on each phase, a wallbox of
        6-32 A ends at 32 - 2 - 10 = 20 A, never above, and stays there
        while the meter sees its car draw 20 A on top; GET /api/site shows
        the other load (10 A), what is available (20 A) and the reading
        (30 A)."""
        server = await self.check_other_load("sdm630")
        self.assertIn((4, 6, 12), server.reads)

    @asyncio_test
    async def test_sunspec(self):
        """SunSpec meter (model 203) at base 40000: the same as for the
        SDM630, 20 A."""
        server = await self.check_other_load("sunspec")
        self.assertIn((3, server.meter_body[0], server.meter_body[1]), server.reads)

    @asyncio_test
    async def test_sunspec_at_50000(self):
        """SunSpec meter (model 204) at base 50000, found after 40000 and 0
        answered "illegal address": the same, 20 A."""
        server = await self.check_other_load("sunspec", base=50000, model_id=204)
        self.assertIn((3, 50000, 2), server.reads)
        self.assertIn((3, server.meter_body[0], server.meter_body[1]), server.reads)


class RiseTests(MeterTestCase):
    """The other load rises: DESIGN §7's bound on how soon the wallboxes
    come down, measured from the change of what the meter measures to the
    wallbox receiving its lower limit."""

    async def check_rise(self, kind):
        server = await self.meter_server(kind, other=(10, 10, 10))
        site = MeteredSite(
            self, 32, [Spec("CB-1", max_current=32)], [meter_section("grid", server)],
            site_meter="grid", loads=[server.model],
        )
        boxes = await site.connect()
        box = boxes["CB-1"]
        await site.heard("grid")
        await start_charging(box)
        await site.settled({"CB-1": 20})
        loop = asyncio.get_running_loop()
        bound = 2 * POLL + ANSWER_DELAY + MARGIN
        latencies = []
        # Each change comes at another moment between two polls: the
        # previous lowering's answer would otherwise fix the phase.
        for step, (other, limit) in enumerate(((13, 17), (16, 14), (19, 11), (22, 8))):
            await asyncio.sleep(step * POLL / 4)
            changed = loop.time()
            server.model.other = (other, other, other)
            await box.wait_for_limit(limit, timeout=10)
            latencies.append(first_receipt(box, changed, lambda amps, limit=limit: amps == limit) - changed)
        print(
            "{}: other load up by 3 A, lower limit received after {} s (bound {:.2f} s)".format(
                kind, ", ".join("{:.3f}".format(s) for s in latencies), bound
            )
        )
        for latency in latencies:
            self.assertLess(latency, bound, latencies)
        # One lowering per rise, and nothing else sent.
        self.assertEqual(box.limits()[box.limits().index(20) :], [20, 17, 14, 11, 8])
        self.assertFusesHeld(site, at_least=4)

    @asyncio_test
    async def test_sdm630(self):
        """SDM630 polled every 0.25 s: the other load rises four times by
        3 A (10 -> 13 -> 16 -> 19 -> 22 A); each time the wallbox (20 A)
        receives its lower limit (17, 14, 11, 8 A) within 2 polls + the
        answer delay + 1 s for loopback and the shared machine, one
        lowering per rise."""
        await self.check_rise("sdm630")

    @asyncio_test
    async def test_sunspec(self):
        """SunSpec meter polled every 0.25 s: the same bound."""
        await self.check_rise("sunspec")


class SilenceTests(MeterTestCase):
    """A meter that stops answering: the fail-safe after C{timeout}, and
    the site back to its shares once the meter answers again."""

    @asyncio_test
    async def test_silent_meter_failsafe_and_back(self):
        """Site 32 A, reserve 2, failsafe_current 6, SDM630 (timeout 2 s)
        with 4 A of other load: two wallboxes of 6-16 A share 26 A (13 +
        13). The meter's server stops: no sooner than timeout after the
        last reading, the limits the wallboxes hold add up to at most 6 A,
        GET /api/site shows the meter silent and the log says so. The
        server runs again: the meter is heard, the wallboxes are back at 13
        A each, and the log says it is back."""
        self.shorten_raise_interval()
        log = LogCapture(self)
        server = await self.meter_server("sdm630", other=(4, 4, 4))
        site = MeteredSite(
            self, 32, [Spec("CB-1"), Spec("CB-2")], [meter_section("grid", server)],
            site_meter="grid", failsafe_current=6, loads=[server.model],
        )
        boxes = await site.connect()
        await site.heard("grid")
        for box in boxes.values():
            await start_charging(box)
        await site.settled({"CB-1": 13, "CB-2": 13})

        loop = asyncio.get_running_loop()
        stopped = loop.time()
        await server.stop()

        async def failsafe():
            return sum(box.held or 0 for box in boxes.values()) <= 6

        await eventually(failsafe, timeout=TIMEOUT + 2 * POLL + MARGIN + 5)
        # When the last lowering that brought the sum to 6 A arrived.
        reached = max(
            first_receipt(box, stopped, lambda amps: amps <= 6) or stopped for box in boxes.values()
        )
        print("meter stopped: limits at failsafe_current after {:.2f} s (timeout {:g} s)".format(
            reached - stopped, TIMEOUT))
        # The last reading came at most a poll (and its answer) before the
        # stop: the silence, and the fail-safe with it, not before timeout.
        self.assertGreaterEqual(reached - stopped, TIMEOUT - POLL - 0.1)
        self.assertSumAtMost(boxes.values(), 6)
        meter = await site.meter_state("grid")
        self.assertTrue(meter["silent"])
        state = await site.site_state()
        self.assertTrue(state["site"]["silent"])
        self.assertEqual(state["site"]["available"], [6.0, 6.0, 6.0])
        self.assertEqual(state["failsafe_current"], 6)
        silence = [text for _, text in log.at_least(LogLevel.warn, METER_LOG) if " is silent:" in text]
        self.assertEqual(len(silence), 1, silence)
        self.assertIn("grid", silence[0])

        await server.start()
        back = loop.time()
        await site.heard("grid")
        await site.settled({"CB-1": 13, "CB-2": 13}, timeout=10)
        print("meter back: shares restored after {:.2f} s".format(loop.time() - back))
        state = await site.site_state()
        self.assertFalse(state["site"]["silent"])
        self.assertEqual(state["site"]["other"], [4.0, 4.0, 4.0])
        self.assertTrue(any("is back" in text for _, text in log.at_least(LogLevel.info, METER_LOG)))
        self.assertFusesHeld(site, at_least=6)


class ExportTests(MeterTestCase):
    """Feeding into the grid does not make a fuse any stronger."""

    @asyncio_test
    async def test_export_not_above_max_current(self):
        """SunSpec site meter showing -40 A (export) of other load on a 32
        A site: wallboxes of 6-16 A and 6-32 A get 16 A each, no wallbox
        above its max_current and their sum within the site's 32 A, where
        32 - 2 + 40 = 70 A would let them take 48 A; GET /api/site shows
        32 A available."""
        self.shorten_raise_interval()
        server = await self.meter_server("sunspec", other=(-40, -40, -40))
        specs = [Spec("CB-S", max_current=16), Spec("CB-L", max_current=32)]
        site = MeteredSite(
            self, 32, specs, [meter_section("grid", server)], site_meter="grid",
            loads=[server.model],
        )
        boxes = await site.connect()
        await site.heard("grid")
        for box in boxes.values():
            await start_charging(box)
        await site.settled({"CB-S": 16, "CB-L": 16})
        # The readings with both cars drawing (-40 + 32 = -8 A) change
        # nothing.
        await more_polls(server)
        self.assertEqual(site.held(), {"CB-S": 16, "CB-L": 16})
        for box in boxes.values():
            self.assertTrue(all(limit <= box.spec.max_current for limit in box.limits()), box.limits())
        state = await site.site_state()
        self.assertEqual(state["site"]["other"], [-40.0, -40.0, -40.0])
        self.assertEqual(state["site"]["available"], [32.0, 32.0, 32.0])
        self.assertFusesHeld(site, at_least=4)


class CircuitMeterTests(MeterTestCase):
    """A meter on a sub-circuit measures that circuit only."""

    @asyncio_test
    async def test_carport_meter_lowers_carport_only(self):
        """Site 40 A without a meter; [circuit:carport] 16 A with an SDM630
        showing 2 A of other load (reserve 2): the carport's wallbox gets
        12 A, the one outside (6-16 A) 16 A. The carport's other load
        rises to 8 A on L1 (1 A on L2 and L3): the carport's wallbox comes
        down to 16 - 2 - 8 = 6 A; the one outside receives nothing more."""
        server = await self.meter_server("sdm630", other=(2, 2, 2), fuse="carport")
        specs = [Spec("CB-C", circuit="carport"), Spec("CB-O")]
        site = MeteredSite(
            self, 40, specs, [meter_section("carport", server)],
            circuits={"carport": (16, "")}, circuit_meters={"carport": "carport"},
            loads=[server.model],
        )
        boxes = await site.connect()
        await site.heard("carport")
        for box in boxes.values():
            await start_charging(box)
        await site.settled({"CB-C": 12, "CB-O": 16})
        outside = list(boxes["CB-O"].limits())

        server.model.other = (8, 1, 1)
        await site.settled({"CB-C": 6})
        await more_polls(server)
        self.assertEqual(site.held(), {"CB-C": 6, "CB-O": 16})
        self.assertEqual(boxes["CB-O"].limits(), outside)
        state = await site.site_state()
        self.assertIsNone(state["site"]["meter"])
        self.assertEqual(state["site"]["available"], [40.0, 40.0, 40.0])
        [carport] = state["circuits"]
        self.assertEqual(
            (carport["name"], carport["meter"], carport["silent"]), ("carport", "carport", False)
        )
        self.assertEqual(carport["other"], [8.0, 1.0, 1.0])
        # L2 and L3 would have 13 A now; that raise of 1 A waits 10 s
        # after their last change.
        self.assertEqual(carport["available"], [6.0, 12.0, 12.0])
        self.assertFusesHeld(site, at_least=4)


class NonsenseTests(MeterTestCase):
    """A meter that answers, but with readings no meter can give: not
    believed, said once in the log, and the fail-safe after C{timeout}."""

    async def check_nonsense(self, kind, serve_nonsense, said):
        log = LogCapture(self)
        server = await self.meter_server(kind, other=(10, 10, 10))
        site = MeteredSite(
            self, 32, [Spec("CB-1", max_current=32)], [meter_section("grid", server)],
            site_meter="grid", failsafe_current=6, loads=[server.model],
        )
        boxes = await site.connect()
        box = boxes["CB-1"]
        await site.heard("grid")
        await start_charging(box)
        await site.settled({"CB-1": 20})
        received = len(box.received)

        loop = asyncio.get_running_loop()
        started = loop.time()
        polls = len(server.reads)
        serve_nonsense(server)
        await box.wait_for_limit(6, timeout=TIMEOUT + MARGIN + 5)
        print("{}: nonsense served, fail-safe limit received after {:.2f} s".format(
            kind, box.received[-1][0] - started))
        # Nonsense moved nothing: the only limit since is the fail-safe's.
        self.assertEqual(box.limits()[received:], [6])
        self.assertGreaterEqual(box.received[-1][0] - started, TIMEOUT - POLL - 0.1)
        meter = await site.meter_state("grid")
        self.assertTrue(meter["silent"])
        self.assertIn(said, meter["problem"])
        # Polled all along, said once.
        self.assertGreaterEqual(len(server.reads) - polls, 4)
        warnings = [text for _, text in log.at_least(LogLevel.warn, METER_LOG)]
        no_reading = [text for text in warnings if "no reading:" in text]
        self.assertEqual(len(no_reading), 1, warnings)
        self.assertIn(said, no_reading[0])
        self.assertEqual(len([text for text in warnings if " is silent:" in text]), 1, warnings)
        self.assertFusesHeld(site, at_least=3)

    @asyncio_test
    async def test_sdm630_nan(self):
        """SDM630 serving NaN on L1: not believed ("L1 is nan" in the log,
        once), the wallbox keeps 20 A until the meter is silent after 2 s,
        then gets failsafe_current (6 A) and nothing else."""

        def nan(server):
            server.model.other = (math.nan, 10, 10)

        await self.check_nonsense("sdm630", nan, "L1 is nan")

    @asyncio_test
    async def test_sdm630_ten_thousand_amperes(self):
        """SDM630 serving 10,000 A on L2: not believed (beyond any real
        meter), said once; failsafe_current after the timeout."""

        def huge(server):
            server.model.other = (10, 10000, 10)

        await self.check_nonsense("sdm630", huge, "beyond any real meter")

    @asyncio_test
    async def test_sunspec_bad_scale_factor(self):
        """SunSpec meter serving A_SF = 11 (outside -10..10): no reading,
        said once; failsafe_current after the timeout."""

        def bad_scale(server):
            server.set_scale_factor("A_SF", 11)

        await self.check_nonsense("sunspec", bad_scale, "A_SF")


class ApiMeterTests(MeterTestCase):
    """A C{type = api} meter: readings pushed with C{POST /api/meters/<name>}
    to the running daemon."""

    @asyncio_test
    async def test_push_readings(self):
        """POST /api/meters/home: 401 without the token or with a wrong
        one, 404 for an unknown meter, 409 for the carport's SDM630, 400
        naming what is wrong for malformed bodies, 204 for a reading with
        the token. A pushed reading of 4 A of other load (plus the car's
        draw) gives the 6-32 A wallbox 32 - 2 - 4 = 26 A; one of 14 A
        lowers it to 16 A."""
        self.shorten_raise_interval()
        carport = await self.meter_server("sdm630", fuse="carport")
        site = MeteredSite(
            self, 32, [Spec("CB-1", max_current=32)],
            [meter_section("home", timeout=30), meter_section("carport", carport)],
            site_meter="home", circuits={"carport": (16, "")},
            circuit_meters={"carport": "carport"}, loads=[carport.model],
        )
        boxes = await site.connect()
        box = boxes["CB-1"]
        url = site.daemon.status_url("/api/meters/home")
        # What the home automation reads off the grid meter and pushes.
        grid = MeteredLoad("site", (0, 0, 0))
        grid.boxes = site.watch.boxes

        def reading(other):
            grid.other = other
            return json.dumps({"currents": list(grid.currents())}).encode()

        status, _ = await post_json(url, reading((4, 4, 4)))
        self.assertEqual(status, 401)
        status, _ = await post_json(url, reading((4, 4, 4)), token="wrong")
        self.assertEqual(status, 401)
        attic = site.daemon.status_url("/api/meters/attic")
        status, answer = await post_json(attic, reading((4, 4, 4)), TOKEN)
        self.assertEqual(status, 404, answer)
        polled = site.daemon.status_url("/api/meters/carport")
        status, answer = await post_json(polled, reading((4, 4, 4)), TOKEN)
        self.assertEqual((status, answer["error"]), (409, "conflict"))
        for body, named in (
            (b"not json", "not JSON"),
            (b'{"currents": [1, 2]}', "three numbers"),
            (b'{"currents": [1, "2", 3]}', "L2"),
            (b'{"amps": [1, 2, 3]}', "amps"),
        ):
            status, answer = await post_json(url, body, TOKEN)
            self.assertEqual(status, 400, (body, answer))
            self.assertIn(named, answer["detail"], body)
        # None of the refused ones was taken.
        self.assertTrue((await site.meter_state("home"))["silent"])

        status, answer = await post_json(url, reading((4, 4, 4)), TOKEN)
        self.assertEqual(status, 204, answer)
        meter = await site.meter_state("home")
        self.assertEqual((meter["silent"], meter["currents"]), (False, [4.0, 4.0, 4.0]))
        await start_charging(box)
        await site.settled({"CB-1": 26})

        status, _ = await post_json(url, reading((14, 14, 14)), TOKEN)
        self.assertEqual(status, 204)
        await site.settled({"CB-1": 16})
        state = await site.site_state()
        self.assertEqual(state["site"]["other"], [14.0, 14.0, 14.0])
        self.assertEqual(state["site"]["available"], [16.0, 16.0, 16.0])
        self.assertEqual(box.limits()[box.limits().index(26) :], [26, 16])
        self.assertFusesHeld(site, at_least=3)
