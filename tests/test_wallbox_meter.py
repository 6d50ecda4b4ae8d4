"""The virtual wallbox's grid meter (``[meter]``): its configuration, what
it measures (the other load plus the simulated car), the SDM630 and SunSpec
registers it serves on real loopback sockets, and its HTTP control."""

import asyncio
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request

from pymodbus.client import AsyncModbusTcpClient
from twisted.internet import defer, reactor, task
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial import unittest

from cfosproxy.config import ConfigError
from cfosproxy.modbus import sdm630
from cfosproxy.modbus.meter import ModbusMeter
from cfosproxy.modbus.meterserver import MeterModbusServer
from cfosproxy.services import ListenError
from cfosproxy.wallbox.config import load_wallbox_config, wallbox_config_from_string
from cfosproxy.wallbox.meter import BuildingMeter, three_phases
from cfosproxy.wallbox.model import PowerBrainModel
from tests.harness import asyncio_test, eventually, free_port, wait_deferred

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def meter_config(text):
    """The C{[meter]} of a wallbox file holding only C{text} under it."""
    return wallbox_config_from_string("[meter]\n" + text, "w.ini").meter


# -- configuration -------------------------------------------------------------


class ConfigTests(unittest.TestCase):
    def test_no_section_no_meter(self):
        """Without [meter] there is no grid meter: etc/cfoswallbox.ini has
        it commented out."""
        config = load_wallbox_config(os.path.join(ROOT, "etc", "cfoswallbox.ini"))
        self.assertIsNone(config.meter)

    def test_defaults(self):
        """An empty [meter] serves an SDM630 as unit 1 on loopback port
        5020, measuring only the car, without a control."""
        meter = meter_config("")
        self.assertEqual(
            (meter.host, meter.port, meter.type, meter.unit_id, meter.other_load, meter.control),
            ("127.0.0.1", 5020, "sdm630", 1, (0.0, 0.0, 0.0), ""),
        )

    def test_example_file(self):
        """etc/cfoswallbox-meter.ini, the README's recipe: Modbus 4701 for
        the Power Brain, an SDM630 on 5020 with 10 A of other load, the
        control on loopback port 19591."""
        config = load_wallbox_config(os.path.join(ROOT, "etc", "cfoswallbox-meter.ini"))
        self.assertEqual((config.modbus.port, config.car.plugged), (4701, False))
        meter = config.meter
        self.assertEqual(
            (meter.host, meter.port, meter.type, meter.unit_id, meter.other_load),
            ("127.0.0.1", 5020, "sdm630", 1, (10.0, 10.0, 10.0)),
        )
        self.assertEqual(meter.control, "tcp:19591:interface=127.0.0.1")

    def test_values(self):
        """Three signed numbers are L1, L2, L3; the type is read in any
        case; listen takes a port and an interface."""
        meter = meter_config(
            "listen = tcp:15020:interface=0.0.0.0\ntype = SunSpec\nunit_id = 247\n"
            "other_load = 12.5, -3 ,0\n"
        )
        self.assertEqual(
            (meter.host, meter.port, meter.type, meter.unit_id, meter.other_load),
            ("0.0.0.0", 15020, "sunspec", 247, (12.5, -3.0, 0.0)),
        )
        self.assertEqual(meter_config("other_load = -4\n").other_load, (-4.0, -4.0, -4.0))

    def test_control_on_loopback_unless_told(self):
        """The control has no password: an endpoint without an interface
        listens on loopback (IPv4 or IPv6); one that names an interface
        keeps it."""
        self.assertEqual(meter_config("control = tcp:19591\n").control, "tcp:19591:interface=127.0.0.1")
        self.assertEqual(meter_config("control = tcp6:19591\n").control, "tcp6:19591:interface=\\:\\:1")
        self.assertEqual(
            meter_config("control = tcp:19591:interface=0.0.0.0\n").control,
            "tcp:19591:interface=0.0.0.0",
        )

    def test_errors_name_file_section_and_key(self):
        """Each mistake in [meter] is a ConfigError naming the file, the
        section and the key."""
        for text, key in [
            ("listen = 5020\n", "listen"),
            ("listen = unix:/tmp/meter\n", "listen"),
            ("type = api\n", "type"),
            ("type = ocpp\n", "type"),
            ("unit_id = 0\n", "unit_id"),
            ("unit_id = 248\n", "unit_id"),
            ("unit_id = one\n", "unit_id"),
            ("other_load =\n", "other_load"),
            ("other_load = ten\n", "other_load"),
            ("other_load = 1, 2\n", "other_load"),
            ("other_load = 1, 2, 3, 4\n", "other_load"),
            ("other_load = nan\n", "other_load"),
            ("other_load = 1e3\n", "other_load"),
            ("control = bogus:19591\n", "control"),
            ("colour = red\n", "colour"),
        ]:
            with self.assertRaises(ConfigError, msg=text) as e:
                meter_config(text)
            self.assertEqual((e.exception.section, e.exception.key), ("meter", key), text)
            self.assertIn("w.ini", str(e.exception))

    def test_type_error_lists_the_meter_types(self):
        """A wrong type is told which types the meter serves (not the
        wallbox types of cfosproxy's files, ocpp and modbus)."""
        with self.assertRaises(ConfigError) as e:
            meter_config("type = ocpp\n")
        self.assertIn("sdm630, sunspec", str(e.exception))
        self.assertIn("'ocpp'", str(e.exception))


# -- the model -----------------------------------------------------------------


def charging_wallbox(clock=None):
    """A Power Brain model charging a car at 32 A (on a task.Clock)."""
    model = PowerBrainModel(clock or task.Clock(), plugged=True)
    model.set_ocpp(None, True)
    return model


class ModelTests(unittest.TestCase):
    def test_other_load_plus_car(self):
        """The meter reads the other load plus what the car draws now, per
        phase, signed; a lower Modbus limit shows at the next reading."""
        wallbox = charging_wallbox()
        meter = BuildingMeter(wallbox, (10.0, -5.0, 0.0))
        self.assertEqual(meter.currents(), (42.0, 27.0, 32.0))
        wallbox.set_modbus_limit(16)
        self.assertEqual(meter.currents(), (26.0, 11.0, 16.0))
        self.assertEqual(meter.car_currents(), (16.0, 16.0, 16.0))

    def test_feeding_into_the_grid(self):
        """Without the car charging, a negative other load (solar panels)
        is a negative reading, and negative powers at 230 V."""
        wallbox = PowerBrainModel(task.Clock())
        meter = BuildingMeter(wallbox, -8)
        self.assertEqual(meter.currents(), (-8.0, -8.0, -8.0))
        self.assertEqual(meter.powers(), (-1840.0, -1840.0, -1840.0))

    def test_snapshot(self):
        """The snapshot shows the other load, the car, the reading and the
        powers, per phase."""
        meter = BuildingMeter(charging_wallbox(), (1, 2, 3))
        self.assertEqual(
            meter.snapshot(),
            {
                "other_load": [1.0, 2.0, 3.0],
                "car": [32.0, 32.0, 32.0],
                "currents": [33.0, 34.0, 35.0],
                "powers": [7590.0, 7820.0, 8050.0],
            },
        )

    def test_set_other_load(self):
        """One number sets every phase, three set L1, L2, L3; anything else
        is a ValueError and changes nothing."""
        meter = BuildingMeter(PowerBrainModel(task.Clock()))
        self.assertEqual(meter.other_load, (0.0, 0.0, 0.0))
        meter.set_other_load(20)
        self.assertEqual(meter.other_load, (20.0, 20.0, 20.0))
        meter.set_other_load([1, -2.5, 3])
        self.assertEqual(meter.currents(), (1.0, -2.5, 3.0))
        for bad in ([1, 2], [1, 2, 3, 4], "5", True, [1, None, 3], float("inf"), [float("nan")] * 3):
            with self.assertRaises(ValueError, msg=repr(bad)):
                meter.set_other_load(bad)
            self.assertEqual(meter.other_load, (1.0, -2.5, 3.0), repr(bad))

    def test_three_phases(self):
        """three_phases names the value in its messages."""
        with self.assertRaises(ValueError) as e:
            three_phases([1, 2], what="currents")
        self.assertIn("currents", str(e.exception))

    def test_changes_logged_at_info(self):
        """A change of the other load is one info line with the new and
        the old value and who set it; setting the same value again logs
        nothing."""
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        meter = BuildingMeter(PowerBrainModel(task.Clock()), 10)
        meter.set_other_load([20, 20, 20], source="a test")
        meter.set_other_load(20, source="a test")
        lines = [e for e in events if "other load" in e.get("log_format", "")]
        self.assertEqual(len(lines), 1)
        self.assertEqual(lines[0]["log_level"], LogLevel.info)
        text = formatEvent(lines[0])
        self.assertIn("[20, 20, 20]", text)
        self.assertIn("[10, 10, 10]", text)
        self.assertIn("a test", text)


# -- the registers served ------------------------------------------------------


def run(coro):
    """An awaitable as a Deferred, for addCleanup."""
    return defer.Deferred.fromFuture(asyncio.ensure_future(coro))


class ServedTests(unittest.TestCase):
    async def served(self, kind, other_load):
        """A started meter server of C{kind} for a wallbox charging at
        32 A, stopped after the test."""
        self.wallbox = charging_wallbox()
        meter = BuildingMeter(self.wallbox, other_load)
        server = MeterModbusServer(meter, kind=kind, host="127.0.0.1", port=free_port())
        await server.start()
        self.addCleanup(lambda: run(server.stop()))
        return meter, server

    @asyncio_test
    async def test_sdm630_input_registers(self):
        """The SDM630's input registers 6..17, read by a Modbus client,
        hold the currents (unsigned) and the powers (signed) of other load
        plus car: decoded, the signed currents."""
        meter, server = await self.served("sdm630", (10.0, -40.0, 0.0))
        client = AsyncModbusTcpClient("127.0.0.1", port=server.port, timeout=2, retries=0)
        self.addCleanup(client.close)
        self.assertTrue(await client.connect())
        first, count = sdm630.BLOCK
        response = await client.read_input_registers(first, count=count, device_id=1)
        self.assertFalse(response.isError(), response)
        self.assertEqual(sdm630.decode(response.registers), (42.0, -8.0, 32.0))
        l2_current = sdm630.decode_float(*response.registers[2:4])
        self.assertEqual(l2_current, 8.0)  # the SDM630's currents have no sign

    async def polled(self, server):
        """The first reading cfosproxy's own meter poller gets from C{server}."""
        readings = []
        poller = ModbusMeter(
            name="grid", host="127.0.0.1", port=server.port, unit_id=1, kind=server.kind,
            poll_interval=0.1, reactor=reactor,
            on_reading=lambda name, currents: readings.append(currents),
            on_failure=lambda name, reason: None, timeout=1, retries=0,
        )
        poller.start()
        self.addCleanup(poller.stop)

        async def got():
            return readings

        await eventually(got, timeout=10, interval=0.01)
        return readings[-1]

    @asyncio_test
    async def test_sunspec_read_by_cfosproxy(self):
        """cfosproxy's meter poller finds the SunSpec meter model and reads
        other load plus car, signed."""
        meter, server = await self.served("sunspec", (-40.0, 5.5, 0.0))
        self.assertEqual(tuple(await self.polled(server)), (-8.0, 37.5, 32.0))

    @asyncio_test
    async def test_sdm630_read_by_cfosproxy(self):
        """cfosproxy's meter poller reads the SDM630 as the same currents."""
        meter, server = await self.served("sdm630", (-40.0, 5.5, 0.0))
        self.assertEqual(tuple(await self.polled(server)), (-8.0, 37.5, 32.0))


# -- the virtual wallbox with its meter, as twistd builds it --------------------


async def http(method, url, body=None):
    """An HTTP request (in a thread: the servers run on this thread's
    loop): the status and the body, JSON decoded when there is one."""

    def send():
        data = None if body is None else body.encode("utf-8")
        request = urllib.request.Request(url, data=data, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, text = response.status, response.read()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read()
        return status, json.loads(text) if text.strip() else None

    return await asyncio.get_running_loop().run_in_executor(None, send)


class WallboxWithMeterTests(unittest.TestCase):
    def start(self, meter_section):
        """cfoswallbox built from a file with C{meter_section} under
        [meter] and a car charging at 32 A (its OCPP server away: it
        authorizes locally); stopped after the test."""
        from cfosproxy.wallbox.tap import Options, makeService

        directory = tempfile.mkdtemp(prefix="cfoswallbox-meter-test-")
        self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
        path = os.path.join(directory, "cfoswallbox.ini")
        with open(path, "w", encoding="utf-8") as f:
            f.write(
                "[ocpp]\nurl = ws://127.0.0.1:{}/\n[modbus]\nlisten = tcp:{}:interface=127.0.0.1\n"
                "[car]\nplugged = yes\n[meter]\n{}".format(free_port(), free_port(), meter_section)
            )
        options = Options()
        options.parseOptions(["--config", path])
        self.service = makeService(options)
        self.addCleanup(self.stop_started)
        self.service.startService()
        return [s for s in self.service if hasattr(s, "_virtual")][0]._virtual.model

    @defer.inlineCallbacks
    def stop_started(self):
        """Stop the services that started, last first (a start that failed
        part way has left the later ones unstarted)."""
        for child in reversed(list(self.service)):
            if child.running:
                yield child.stopService()

    async def read_meter(self, port):
        """The SDM630's signed currents as a Modbus client reads them now."""
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
        try:
            self.assertTrue(await client.connect())
            first, count = sdm630.BLOCK
            response = await client.read_input_registers(first, count=count, device_id=1)
            self.assertFalse(response.isError(), response)
            return sdm630.decode(response.registers)
        finally:
            client.close()

    async def charging(self, model, port):
        """Wait until the car charges at 32 A and the meter, open, shows it."""

        async def check():
            return model.current == 32.0

        await eventually(check, timeout=10, interval=0.02)

        async def listening():
            try:
                return await self.read_meter(port)
            except AssertionError:
                return None

        return await eventually(listening, timeout=10, interval=0.05)

    @asyncio_test
    async def test_control_changes_the_reading(self):
        """GET / shows the other load and the reading; POST /other_load
        with three currents, or one number, answers 204 and the next Modbus
        read shows the new other load plus the car."""
        meter_port, control_port = free_port(), free_port()
        model = self.start(
            "listen = tcp:{}:interface=127.0.0.1\nother_load = 10\ncontrol = tcp:{}\n".format(
                meter_port, control_port
            )
        )
        self.assertEqual(await self.charging(model, meter_port), (42.0, 42.0, 42.0))
        base = "http://127.0.0.1:{}".format(control_port)

        status, shown = await http("GET", base + "/")
        self.assertEqual(status, 200)
        self.assertEqual(shown["other_load"], [10.0, 10.0, 10.0])
        self.assertEqual(shown["currents"], [42.0, 42.0, 42.0])

        status, body = await http("POST", base + "/other_load", '{"currents": [20, 20, -35.5]}')
        self.assertEqual((status, body), (204, None))
        self.assertEqual(await self.read_meter(meter_port), (52.0, 52.0, -3.5))

        status, _ = await http("POST", base + "/other_load", '{"currents": 5}')
        self.assertEqual(status, 204)
        self.assertEqual(await self.read_meter(meter_port), (37.0, 37.0, 37.0))
        status, shown = await http("GET", base + "/")
        self.assertEqual(shown["other_load"], [5.0, 5.0, 5.0])

    @asyncio_test
    async def test_control_refuses_malformed_bodies(self):
        """A body that is not C{{"currents": ...}} with one number or three
        is answered 400 with the reason, and the reading stays as it was."""
        meter_port, control_port = free_port(), free_port()
        model = self.start(
            "listen = tcp:{}:interface=127.0.0.1\nother_load = 1, 2, 3\ncontrol = tcp:{}\n".format(
                meter_port, control_port
            )
        )
        await self.charging(model, meter_port)
        url = "http://127.0.0.1:{}/other_load".format(control_port)
        for body, reason in [
            ("", "no body"),
            ("[20, 20, 20]", "JSON object"),
            ("{currents: 20}", "not JSON"),
            ('{"current": [20, 20, 20]}', "unknown key"),
            ("{}", "currents is missing"),
            ('{"currents": [20, 20]}', "one number or three"),
            ('{"currents": ["20", 20, 20]}', "numbers of amperes"),
            ('{"currents": true}', "numbers of amperes"),
            ('{"currents": [1e400, 0, 0]}', "finite"),
        ]:
            status, answer = await http("POST", url, body)
            self.assertEqual(status, 400, body)
            self.assertIn(reason, answer["detail"], body)
        self.assertEqual(await self.read_meter(meter_port), (33.0, 34.0, 35.0))

    @asyncio_test
    async def test_meter_port_in_use_fails_the_start(self):
        """A [meter] listen port that is taken fails the start with one
        line naming the file, [meter] listen and the address."""
        taken = MeterModbusServer(BuildingMeter(charging_wallbox()), kind="sdm630", port=free_port())
        await taken.start()
        self.addCleanup(lambda: run(taken.stop()))
        with self.assertRaises(ListenError) as raised:
            self.start("listen = tcp:{}:interface=127.0.0.1\n".format(taken.port))
        self.assertIn("[meter] listen", str(raised.exception))
        self.assertIn("127.0.0.1:{}".format(taken.port), str(raised.exception))

    @asyncio_test
    async def test_stop_closes_the_meter(self):
        """Stopping the wallbox closes the meter's Modbus port and its
        control."""
        meter_port, control_port = free_port(), free_port()
        model = self.start(
            "listen = tcp:{}:interface=127.0.0.1\ncontrol = tcp:{}\n".format(meter_port, control_port)
        )
        await self.charging(model, meter_port)
        await wait_deferred(self.stop_started())
        for port in (meter_port, control_port):
            client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0)
            self.addCleanup(client.close)
            self.assertFalse(await client.connect(), port)
