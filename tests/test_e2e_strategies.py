"""End-to-end: how limits reach wallboxes that take different charging
profiles (DESIGN.md §8), and a restart of cfosproxy while a car charges.

The daemon and the virtual Power Brains (cfoswallbox) run in this process
on real loopback sockets; each cfoswallbox takes the profiles its
C{[ocpp]} rules let it take, and its car draws exactly what the profile it
holds allows (C{wallbox.model.current})."""

import asyncio

from ocpp.routing import on
from ocpp.v16 import call_result
from twisted.trial import unittest

from cfosproxy.site.manager import BOOT_GRACE
from cfosproxy.site.strategy import PROBED_KEYS
from tests.harness import RunningDaemon, RunningWallbox, asyncio_test, eventually, wait_deferred
from tests.wallboxes import Wallbox, connect, http_get

SITE_LIMIT = 32.0
VOLTS = 230.0
PHASES = 3

# Unless a test says otherwise, each car draws at most what its wallbox is
# configured for, as a wallbox installed for 16 A lets no car draw more: a
# wallbox that takes no default limit lets its car draw that much until its
# TxProfile is accepted.
CAR_MAX = 16


def ocpp_device(name, extra=""):
    """A C{[wallbox:NAME]} section for the cfoswallbox with ChargeBox-ID NAME."""
    return "[wallbox:{0}]\ntype = ocpp\naddress = {0}\nmin_current = 6\nmax_current = 16\n{1}".format(name, extra)


class CallLog:
    """Every CALL a cfoswallbox's charge point gets from cfosproxy, in order,
    as C{(action, payload)}: its C{send_call} is wrapped, the answers are
    the charge point's own."""

    def __init__(self, wallbox):
        self.calls = []
        chargepoint = wallbox.virtual.chargepoint
        original = chargepoint.send_call

        def send_call(message, timeout=None):
            self.calls.append((message.action, message.payload))
            return original(message, timeout)

        chargepoint.send_call = send_call

    def payloads(self, action):
        return [payload for name, payload in self.calls if name == action]


def start_cfoswallbox(testcase, daemon, name, plugged=True, ocpp="", car_max=CAR_MAX):
    """A cfoswallbox with client id C{name} at C{daemon}, its calls logged
    from the start (before it connects: the reactor has not run yet)."""
    wallbox = RunningWallbox(
        testcase,
        ocpp="url = ws://127.0.0.1:{}/\nclient_id = {}\n{}".format(daemon.port, name, ocpp),
        car="plugged = {}\nmax_current = {}\n".format("yes" if plugged else "no", car_max),
    )
    wallbox.log = CallLog(wallbox)
    return wallbox


async def device(daemon, name):
    status, document = await http_get(daemon.status_url("/api/devices/" + name))
    assert status == 200, (status, document)
    return document


async def charging_at_grant(daemon, wallbox, name, timeout=40):
    """Wait until the car of C{wallbox} draws the grant the API shows for
    C{name} (within 0.1 A), the grant more than 0; return the device.

    A wallbox limited in W is sent the grant x voltage x the 3 phases it
    is counted on, and its car, which draws on 3 phases, takes W / (230 V x
    3): the grant again."""
    last = {}

    async def check():
        shown = last["device"] = await device(daemon, name)
        grant = shown["granted_current"]
        return grant > 0 and abs(wallbox.model.current - grant) <= 0.1 and shown

    try:
        return await eventually(check, timeout=timeout)
    except AssertionError as e:
        raise AssertionError(
            "{}: the car draws {} A; the API shows {}".format(name, wallbox.model.current, last.get("device"))
        ) from e


async def limits_known(daemon, name):
    """Wait until C{name} is connected and cfosproxy knows how it takes
    limits: it holds the 0 A default, or it was found to take none."""

    async def check():
        shown = await device(daemon, name)
        limits = shown["limits"]
        known = shown["accepted_limit"] == 0.0 or limits["default_limit"] is False
        return shown["connected"] and limits["state"] == "ready" and known and shown

    return await eventually(check)


async def phases_reported(daemon, name):
    """Wait until C{name} reported drawing on all three phases (4 A or
    more: the manager then knows the phases its car uses)."""

    async def check():
        shown = await device(daemon, name)
        return all(amps is not None and amps >= 4 for amps in shown["currents"])

    await eventually(check)


async def stopped(daemon, name):
    """Wait until the API shows C{name} without a transaction, drawing and
    granted nothing; return the device."""

    async def check():
        shown = await device(daemon, name)
        idle = (
            shown["transaction_id"] is None
            and shown["id_tag"] is None
            and shown["granted_current"] == 0.0
            and shown["power_w"] == 0
            and all(amps in (0, None) for amps in shown["currents"])
        )
        return idle and shown

    return await eventually(check, timeout=30)


class Sampler:
    """Reads the cars' currents every C{interval} seconds while it runs:
    C{samples} is a list of C{(loop time, (A of each car, ...))}."""

    def __init__(self, wallboxes, interval):
        self.samples = []
        self._wallboxes = wallboxes
        self._interval = interval
        self._task = asyncio.ensure_future(self._run())

    async def _run(self):
        loop = asyncio.get_running_loop()
        while True:
            self.samples.append((loop.time(), tuple(w.model.current for w in self._wallboxes)))
            await asyncio.sleep(self._interval)

    async def stop(self):
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass


class StrategyTests(unittest.TestCase):
    """Wallboxes that take limits differently each end up charging at
    their grant, in the way that works for them."""

    @asyncio_test
    async def test_three_kinds_of_wallbox_share_the_site(self):
        """Three cfoswallboxes under a 32 A site (each device 6-16 A, each
        car 16 A at most): one rejects TxDefaultProfile, one limits in
        Power (W) only, one takes stack level 0 only. Each car ends up
        drawing its grant from the status API within 0.1 A (the W one:
        the watts it was sent / (230 V x 3 phases)); the API and the
        profiles each wallbox was sent show the way it takes (TxProfile
        with the transaction's id; W; stack level 0); sampled every 50 ms
        from before the first car, the cars together never draw more than
        the site's 32 A. Unplugging each car takes its grant, power,
        currents, transaction and id tag to 0 / null.

        The order is the one in which the site can take them (DESIGN §8):
        the wallbox without a default limit lets its car draw its maximum
        until its TxProfile is accepted, so it starts while nothing else
        draws; the W one's first limit counts at its max_current per phase
        until its car's phases are known (here, 16 A beside the other's
        16 A); the stack level 0 one comes last."""
        names = ("CB-TXPROFILE", "CB-WATTS", "CB-STACK0")
        daemon = RunningDaemon(
            self,
            manager="max_current = {}\n".format(SITE_LIMIT),
            wallboxes="".join(ocpp_device(n) for n in names),
        )
        txprofile = start_cfoswallbox(self, daemon, names[0], plugged=False, ocpp="tx_default_profile = reject\n")
        watts = start_cfoswallbox(self, daemon, names[1], plugged=False, ocpp="rate_unit = Power\n")
        stack0 = start_cfoswallbox(self, daemon, names[2], plugged=False, ocpp="max_stack_level = 0\n")
        boxes = dict(zip(names, (txprofile, watts, stack0)))
        sampler = Sampler([txprofile, watts, stack0], 0.05)
        try:
            # Plugged once connected: a transaction a wallbox started
            # before it reached cfosproxy is another case (see below).
            for name in names:
                await limits_known(daemon, name)
            for name in names:
                boxes[name].model.plug()
                await charging_at_grant(daemon, boxes[name], name)
                # The next one can start beside the W one once its car's
                # phases are known: its MeterValues come every 10 s.
                if name == names[1]:
                    await phases_reported(daemon, name)
            shown = {name: await charging_at_grant(daemon, boxes[name], name) for name in names}
        finally:
            await sampler.stop()

        # Rounded to the 0.1 A limits are sent in: 10.6 + 10.7 + 10.7 is
        # not 32.0 in binary floating point.
        most = max(round(sum(currents), 1) for _, currents in sampler.samples)
        self.assertLessEqual(most, SITE_LIMIT, "the cars drew more than the site limit together")
        self.assertLessEqual(round(sum(d["granted_current"] for d in shown.values()), 1), SITE_LIMIT)

        limits = {name: shown[name]["limits"] for name in names}
        for name in names:
            self.assertEqual((limits[name]["state"], limits[name]["source"]), ("ready", "wallbox"))
        self.assertEqual((limits[names[0]]["purpose"], limits[names[0]]["rate_unit"]), ("TxProfile", "A"))
        self.assertEqual((limits[names[1]]["rate_unit"], limits[names[1]]["voltage"]), ("W", VOLTS))
        self.assertEqual(
            (limits[names[2]]["purpose"], limits[names[2]]["stack_level"], limits[names[2]]["rate_unit"]),
            ("TxDefaultProfile", 0, "A"),
        )

        def last_profile(name):
            return boxes[name].log.payloads("SetChargingProfile")[-1]["csChargingProfiles"]

        self.assertEqual(
            (last_profile(names[0])["chargingProfilePurpose"], last_profile(names[0])["transactionId"]),
            ("TxProfile", shown[names[0]]["transaction_id"]),
        )
        schedule = last_profile(names[1])["chargingSchedule"]
        sent_watts = schedule["chargingSchedulePeriod"][0]["limit"]
        self.assertEqual(schedule["chargingRateUnit"], "W")
        self.assertAlmostEqual(sent_watts, shown[names[1]]["granted_current"] * VOLTS * PHASES, delta=1)
        self.assertAlmostEqual(watts.model.current, sent_watts / (VOLTS * PHASES), delta=0.01)
        self.assertEqual(last_profile(names[2])["stackLevel"], 0)

        for name in names:
            boxes[name].model.unplug()
            await stopped(daemon, name)
            self.assertEqual(boxes[name].model.current, 0.0)

    @asyncio_test
    async def test_watts_wallbox_starts_beside_a_charging_one(self):
        """Under a 26 A site a wallbox in A charges at 16 A; then a car is
        plugged at a wallbox that takes limits in W only. Until its car's
        phases are known, the W wallbox is shared what its limit counts for
        (a single-phase car could draw the whole power on one phase), not
        held at 0 beside a grant: both cars end up drawing their grants,
        within the site limit."""
        daemon = RunningDaemon(
            self,
            manager="max_current = 26\n",
            wallboxes=ocpp_device("CB-AMPS") + ocpp_device("CB-WATTS"),
        )
        amps = start_cfoswallbox(self, daemon, "CB-AMPS", plugged=False)
        watts = start_cfoswallbox(self, daemon, "CB-WATTS", plugged=False, ocpp="rate_unit = Power\n")
        await limits_known(daemon, "CB-AMPS")
        await limits_known(daemon, "CB-WATTS")
        amps.model.plug()
        await charging_at_grant(daemon, amps, "CB-AMPS")
        watts.model.plug()
        shown = await charging_at_grant(daemon, watts, "CB-WATTS", timeout=25)
        self.assertGreater(shown["granted_current"], 0)
        await charging_at_grant(daemon, amps, "CB-AMPS")
        self.assertLessEqual(amps.model.current + watts.model.current, 26.05)

    @asyncio_test
    async def test_txprofile_for_transaction_started_before_the_link(self):
        """A wallbox that takes no TxDefaultProfile, its car plugged when it
        starts: its transaction starts before it reached cfosproxy (its
        gateway gives it a local id, mapped to cfosproxy's once delivered).
        Its TxProfile still reaches the right transaction: the car draws the
        10 A of the site, and the API shows the TxProfile way, not
        refused."""
        daemon = RunningDaemon(self, manager="max_current = 10\n", wallboxes=ocpp_device("CB-TXPROFILE"))
        wallbox = start_cfoswallbox(
            self, daemon, "CB-TXPROFILE", plugged=True, ocpp="tx_default_profile = reject\n"
        )

        async def decided():
            shown = await device(daemon, "CB-TXPROFILE")
            limits = shown["limits"]
            taken = shown["accepted_limit"] and limits["purpose"] == "TxProfile"
            return (taken or limits["state"] == "refused") and shown

        shown = await eventually(decided)
        self.assertEqual((shown["limits"]["state"], shown["limits"]["purpose"]), ("ready", "TxProfile"))
        self.assertEqual(shown["accepted_limit"], 10.0)
        self.assertEqual(wallbox.model.current, 10.0)

    @asyncio_test
    async def test_explicit_configuration_is_not_probed(self):
        """A device whose configuration gives charging_profile, stack_level
        and rate_unit (TxDefaultProfile, 0, A) is used that way without a
        GetConfiguration ever reaching its wallbox; the API says the way
        came from the configuration. A second wallbox on the same site,
        left on auto, is asked for the four keys of §8 (so the log of
        calls would have caught one), and both are asked for their
        connector's state."""
        explicit = "charging_profile = TxDefaultProfile\nstack_level = 0\nrate_unit = A\n"
        daemon = RunningDaemon(
            self,
            manager="max_current = 32\n",
            wallboxes=ocpp_device("CB-EXPLICIT", explicit) + ocpp_device("CB-AUTO"),
        )
        given = start_cfoswallbox(self, daemon, "CB-EXPLICIT")
        auto = start_cfoswallbox(self, daemon, "CB-AUTO")
        shown = await charging_at_grant(daemon, given, "CB-EXPLICIT")
        await charging_at_grant(daemon, auto, "CB-AUTO")

        self.assertEqual(shown["granted_current"], 16.0)
        limits = shown["limits"]
        self.assertEqual(
            (limits["source"], limits["purpose"], limits["stack_level"], limits["rate_unit"], limits["wallbox"]),
            ("configuration", "TxDefaultProfile", 0, "A", None),
        )
        self.assertEqual(given.log.payloads("GetConfiguration"), [])
        self.assertEqual(
            [p["csChargingProfiles"]["stackLevel"] for p in given.log.payloads("SetChargingProfile")][-1], 0
        )
        self.assertIn(
            {"requestedMessage": "StatusNotification", "connectorId": 1},
            given.log.payloads("TriggerMessage"),
        )
        asked = [key for p in auto.log.payloads("GetConfiguration") for key in p.get("key", [])]
        self.assertEqual(sorted(set(asked)), sorted(PROBED_KEYS))
        self.assertEqual((await device(daemon, "CB-AUTO"))["limits"]["source"], "wallbox")


class SilentWallbox(Wallbox):
    """A wallbox that answers TriggerMessage and GetConfiguration and
    records them: C{triggers} holds C{(loop time, payload)}."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.triggers = []

    @on("TriggerMessage")
    def on_trigger_message(self, requested_message, connector_id=None, **kwargs):
        payload = {"requested_message": requested_message, "connector_id": connector_id}
        self.triggers.append((asyncio.get_running_loop().time(), payload))
        return call_result.TriggerMessage(status="Accepted")

    @on("GetConfiguration")
    def on_get_configuration(self, key=None, **kwargs):
        return call_result.GetConfiguration(unknown_key=key or [])


class ReconnectTests(unittest.TestCase):
    @asyncio_test
    async def test_reconnect_without_boot_is_asked_for_its_state(self):
        """A wallbox that connects and never sends a BootNotification (as
        after a reconnect) gets TriggerMessage StatusNotification for its
        connector 1 once the boot grace of 5 s has passed, not before."""
        daemon = RunningDaemon(self, manager="max_current = 32\n", wallboxes=ocpp_device("CB-QUIET"))
        ws = await connect(daemon.url("CB-QUIET"))
        wallbox = SilentWallbox("CB-QUIET", ws)
        runner = asyncio.ensure_future(wallbox.start())
        self.addCleanup(lambda: asyncio.ensure_future(ws.close()))
        self.addCleanup(runner.cancel)
        connected_at = asyncio.get_running_loop().time()
        wanted = {"requested_message": "StatusNotification", "connector_id": 1}

        async def triggered():
            return [at for at, payload in wallbox.triggers if payload == wanted]

        [at, *_] = await eventually(triggered, timeout=20)
        self.assertGreaterEqual(at - connected_at, BOOT_GRACE - 0.5)


class RestartTests(unittest.TestCase):
    """A restart of cfosproxy (RunningDaemon.restart: stop, then start on
    the same state directory) while a car charges."""

    def setUp(self):
        self.daemon = RunningDaemon(self, manager="max_current = 32\n", wallboxes=ocpp_device("CB-0001"))

    async def charging_car(self):
        """A cfoswallbox whose car (32 A at most) charges at the 16 A its
        profile allows; it and the device as the API shows it."""
        # Plugged once connected, so that the transaction is cfosproxy's
        # from its start.
        wallbox = start_cfoswallbox(self, self.daemon, "CB-0001", plugged=False, car_max=32)
        await limits_known(self.daemon, "CB-0001")
        wallbox.model.plug()
        shown = await charging_at_grant(self.daemon, wallbox, "CB-0001")
        self.assertEqual(shown["granted_current"], 16.0)
        return wallbox, shown

    @asyncio_test
    async def test_car_keeps_charging_through_a_restart(self):
        """A car charging at its grant of 16 A: cfosproxy restarts. Its
        current, read every 20 ms from before the restart until 15 s
        after it (and at every change the wallbox made), never falls below
        16 A; afterwards the API shows the same transaction, power above 0
        and the energy."""
        daemon = self.daemon
        wallbox, before = await self.charging_car()
        grant = before["granted_current"]
        changes = watch_changes(wallbox.model)

        sampler = Sampler([wallbox], 0.02)
        try:
            await wait_deferred(daemon.restart())
            await asyncio.sleep(15)
        finally:
            await sampler.stop()

        below = time_below(sampler.samples, grant)
        self.assertEqual(below, 0.0, "the car drew less than its grant for {:.2f} s".format(below))
        self.assertGreaterEqual(min(changes), grant, "the wallbox lowered the car at some point")

        async def reported():
            shown = await device(daemon, "CB-0001")
            return shown["connected"] and shown["power_w"] and shown

        after = await eventually(reported)
        self.assertEqual(after["transaction_id"], before["transaction_id"])
        self.assertGreater(after["power_w"], 0)
        self.assertIsNotNone(after["energy_wh"])
        self.assertEqual(after["granted_current"], grant)
        self.assertEqual(wallbox.model.current, grant)

    @asyncio_test
    async def test_car_unplugged_while_cfosproxy_is_down(self):
        """The car charges; cfosproxy stops; the car is unplugged (its
        wallbox ends the transaction and keeps the StopTransaction until
        cfosproxy is back); cfosproxy starts again. The API ends with no
        transaction, no id tag, power 0 and no grant."""
        daemon = self.daemon
        wallbox, before = await self.charging_car()
        self.assertIsNotNone(before["transaction_id"])

        await wait_deferred(daemon.stop())
        wallbox.model.unplug()

        async def ended():
            return wallbox.virtual.chargepoint.transaction_id is None

        await eventually(ended)
        # A stopped daemon started again: restart() stops what is not
        # running, then starts.
        await wait_deferred(daemon.restart())
        after = await stopped(daemon, "CB-0001")
        self.assertEqual(after["status"], "Available")
        self.assertEqual(wallbox.model.current, 0.0)


def watch_changes(model):
    """Every current C{model} (a PowerBrainModel) works out from now on,
    in a list: its C{update}, through which every change goes, is
    wrapped."""
    seen = []
    original = model.update

    def update():
        original()
        seen.append(model.current)

    model.update = update
    return seen


def time_below(samples, grant):
    """Seconds in C{samples} (of one car) during which the car drew less
    than C{grant}: each sample below it counts until the next one."""
    below = 0.0
    for (at, (amps,)), (following, _) in zip(samples, samples[1:]):
        if amps < grant - 0.05:
            below += following - at
    return below
