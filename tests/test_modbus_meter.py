"""Meters over Modbus TCP: an SDM630 and SunSpec meters polled by
L{cfosproxy.modbus.meter.ModbusMeter}, against real pymodbus servers on
loopback (tests/meterserver.py)."""

import asyncio
import math

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from twisted.internet import reactor
from twisted.trial import unittest

from cfosproxy.config import MeterConfig
from cfosproxy.modbus.meter import ModbusMeter
from cfosproxy.modbus.meterserver import CannotListen
from tests.harness import asyncio_test, wait_deferred
from tests.meterserver import MeterServer
from tests.modbusserver import free_port
from tests.test_modbus import stop_server, until

POLL = 0.1
NAN = float("nan")
INPUT = 4
HOLDING = 3


class Listener:
    """Records what a meter reports, in order."""

    def __init__(self):
        self.events = []

    def on_reading(self, name, currents):
        self.events.append(("reading", name, currents))

    def on_failure(self, name, reason):
        self.events.append(("failure", name, reason))

    @property
    def readings(self):
        return [currents for kind, _, currents in self.events if kind == "reading"]

    @property
    def failures(self):
        return [reason for kind, _, reason in self.events if kind == "failure"]

    @property
    def last(self):
        return self.events[-1] if self.events else None


class MeterTestCase(unittest.TestCase):
    async def server(self, kind, **kwargs):
        """A started meter server, stopped after the test."""
        server = MeterServer(kind, **kwargs)
        await server.start()
        self.addCleanup(lambda: stop_server(server))
        return server

    def meter(self, port, kind, poll_interval=POLL, **kwargs):
        """A started ModbusMeter polling 127.0.0.1:port, stopped after the
        test."""
        listener = Listener()
        options = dict(timeout=0.5, retries=0)
        options.update(kwargs)
        meter = ModbusMeter(
            name="grid",
            host="127.0.0.1",
            port=port,
            unit_id=1,
            kind=kind,
            poll_interval=poll_interval,
            reactor=reactor,
            on_reading=listener.on_reading,
            on_failure=listener.on_failure,
            **options,
        )
        meter.start()
        self.addCleanup(meter.stop)
        return meter, listener

    async def first_reading(self, server, kind=None, **kwargs):
        """A meter polling C{server}, once it has reported a reading."""
        meter, listener = self.meter(server.port, kind or server.kind, **kwargs)
        await until(lambda: listener.readings)
        return meter, listener

    async def failure(self, listener, text):
        """Wait for a failure whose reason contains C{text}; return it."""
        await until(lambda: any(text in reason for reason in listener.failures))
        return next(reason for reason in listener.failures if text in reason)


class SDM630Tests(MeterTestCase):
    @asyncio_test
    async def test_readings_with_signs(self):
        """Currents come signed by the phase powers: import on L1, export on
        L2, and they follow what the meter measures from poll to poll."""
        server = await self.server("sdm630")
        server.set_currents(16.0, -5.5, 0.25)
        meter, listener = await self.first_reading(server)
        self.assertEqual(listener.readings[0], (16.0, -5.5, 0.25))
        self.assertEqual(listener.events[0][:2], ("reading", "grid"))
        self.assertEqual(meter.currents, (16.0, -5.5, 0.25))
        self.assertIsNone(meter.last_error)
        server.set_currents(1.0, 2.0, 3.0, powers=(230.0, -460.0, 0.0))
        await until(lambda: listener.readings[-1] == (1.0, -2.0, 3.0))
        self.assertEqual(listener.failures, [])

    @asyncio_test
    async def test_one_read_of_input_registers_per_poll(self):
        """Each poll is one read of input registers (function code 4) 6..17."""
        server = await self.server("sdm630")
        meter, listener = await self.first_reading(server)
        await until(lambda: len(listener.readings) >= 3)
        self.assertEqual(set(server.reads), {(INPUT, 6, 12)})

    @asyncio_test
    async def test_nan_and_10000_amperes_are_passed_on(self):
        """NaN and 10,000 A are reported as read: the caller judges them."""
        server = await self.server("sdm630")
        server.set_currents(NAN, 10000.0, -10000.0)
        meter, listener = await self.first_reading(server)
        l1, l2, l3 = listener.readings[0]
        self.assertTrue(math.isnan(l1))
        self.assertEqual((l2, l3), (10000.0, -10000.0))

    @asyncio_test
    async def test_not_a_sunspec_device(self):
        """An SDM630 polled as a SunSpec meter: no marker at any base (each
        answered "illegal address"), said so; nothing is reported read."""
        server = await self.server("sdm630")
        meter, listener = self.meter(server.port, "sunspec")
        reason = await self.failure(listener, "no SunSpec marker")
        self.assertEqual(reason, "no SunSpec marker (SunS) at holding register 40000, 0, 50000")
        self.assertEqual(listener.readings, [])
        self.assertEqual(
            [(address, count) for _, address, count in server.reads[:3]],
            [(40000, 2), (0, 2), (50000, 2)],
        )


class SunSpecTests(MeterTestCase):
    async def check_found(self, base, model_id, expected):
        """A meter of C{model_id} at C{base}, measuring 16, -5.5 and 0.25 A,
        is read as C{expected}."""
        server = await self.server("sunspec", base=base, model_id=model_id)
        server.set_currents(16.0, -5.5, 0.25)
        meter, listener = await self.first_reading(server)
        self.assertEqual(listener.readings[0], expected)
        return server, listener

    @asyncio_test
    async def test_wye_meter_at_40000(self):
        """Model 203 at the usual base: three signed phase currents."""
        await self.check_found(40000, 203, (16.0, -5.5, 0.25))

    @asyncio_test
    async def test_meter_at_0(self):
        """A device whose registers start at 0: 40000 is answered "illegal
        address", and 0 is tried next."""
        server, _ = await self.check_found(0, 203, (16.0, -5.5, 0.25))
        self.assertEqual(server.reads[:2], [(HOLDING, 40000, 2), (HOLDING, 0, 2)])

    @asyncio_test
    async def test_meter_at_50000(self):
        """A device at 50000 is found after 40000 and 0; model 204 (delta)."""
        server, _ = await self.check_found(50000, 204, (16.0, -5.5, 0.25))
        self.assertEqual(
            server.reads[:3], [(HOLDING, 40000, 2), (HOLDING, 0, 2), (HOLDING, 50000, 2)]
        )

    @asyncio_test
    async def test_single_phase_meter(self):
        """Model 201 shows one phase: L2 and L3 read 0 A."""
        await self.check_found(40000, 201, (16.0, 0.0, 0.0))

    @asyncio_test
    async def test_discovery_once_per_connection(self):
        """The marker and the chain are read once; every poll after that
        reads only the meter model's 105 registers (function code 3)."""
        server = await self.server("sunspec")
        meter, listener = await self.first_reading(server)
        await until(lambda: len(listener.readings) >= 4)
        body = (HOLDING,) + server.meter_body
        self.assertEqual(
            server.reads[:4],
            [(HOLDING, 40000, 2), (HOLDING, 40002, 2), (HOLDING, server.meter_header, 2), body],
        )
        self.assertEqual(set(server.reads[4:]), {body})

    @asyncio_test
    async def test_10000_amperes_are_passed_on(self):
        """10,000 A needs a coarser scale factor and is read all the same."""
        server = await self.server("sunspec")
        server.set_currents(10000.0, -10000.0, 0.0)
        meter, listener = await self.first_reading(server)
        self.assertEqual(listener.readings[0], (10000.0, -10000.0, 0.0))

    @asyncio_test
    async def test_wrong_model_length(self):
        """A meter model with L = 100 fails every poll, naming model,
        register and length; once right again, it is read (looked for
        anew)."""
        server = await self.server("sunspec")
        server.set_model_length(100)
        meter, listener = self.meter(server.port, "sunspec")
        reason = await self.failure(listener, "length")
        self.assertEqual(reason, "SunSpec model 203 at 40070: length 100 instead of 105")
        self.assertEqual(meter.last_error, reason)
        self.assertEqual(listener.readings, [])
        server.set_model_length(None)
        await until(lambda: listener.readings)

    @asyncio_test
    async def test_scale_factor_out_of_range(self):
        """A_SF = 11 fails the poll, naming the registers read and the scale
        factor; the model is looked for again on the next poll; W_SF not
        implemented fails likewise."""
        server = await self.server("sunspec")
        meter, listener = await self.first_reading(server)
        server.set_scale_factor("A_SF", 11)
        reason = await self.failure(listener, "A_SF")
        self.assertEqual(
            reason,
            "reading holding registers 40072..40176: SunSpec model 203: "
            "A_SF = 11 is outside -10..10",
        )
        markers = server.reads.count((HOLDING, 40000, 2))
        await until(lambda: server.reads.count((HOLDING, 40000, 2)) > markers)
        server.set_scale_factor("A_SF", 0)
        server.set_scale_factor("W_SF", -32768)
        await self.failure(listener, "W_SF = 0x8000 (not implemented) is outside -10..10")


class FailureTests(MeterTestCase):
    @asyncio_test
    async def test_server_goes_away_and_comes_back(self):
        """A meter that stops answering is reported failed after each poll,
        with the reason; when it is back it is connected to again and read
        (a SunSpec meter is looked for anew)."""
        server = await self.server("sunspec")
        meter, listener = await self.first_reading(server)
        await server.stop()
        await until(lambda: len(listener.failures) >= 3)
        self.assertEqual(listener.last[0], "failure")
        self.assertIn("127.0.0.1:{}".format(server.port), listener.failures[-1])
        self.assertEqual(meter.last_error, listener.failures[-1])

        server.set_currents(7.0, 8.0, 9.0)
        await server.start()
        await until(lambda: listener.last[0] == "reading")
        self.assertEqual(listener.readings[-1], (7.0, 8.0, 9.0))
        self.assertIsNone(meter.last_error)
        self.assertEqual(server.reads.count((HOLDING, 40000, 2)), 2)

    @asyncio_test
    async def test_never_reachable(self):
        """A meter that is not there fails each poll, "connecting to" it;
        once it appears it is read."""
        port = free_port()
        meter, listener = self.meter(port, "sdm630")
        reason = await self.failure(listener, "connecting")
        self.assertEqual(reason, "connecting to 127.0.0.1:{}: refused or no answer".format(port))
        await until(lambda: len(listener.failures) >= 3)
        server = MeterServer("sdm630", port=port)
        server.set_currents(1.0, 1.0, 1.0)
        await server.start()
        self.addCleanup(lambda: stop_server(server))
        await until(lambda: listener.readings)
        self.assertEqual(listener.readings[-1], (1.0, 1.0, 1.0))

    @asyncio_test
    async def test_silent_meter_times_out(self):
        """A meter that takes the connection and never answers fails with
        the registers and the timeout in the reason."""

        async def silent(reader, writer):
            await reader.read(1000)

        tcp = await asyncio.start_server(silent, "127.0.0.1", 0)
        self.addCleanup(tcp.close)
        port = tcp.sockets[0].getsockname()[1]
        meter, listener = self.meter(port, "sdm630", timeout=0.2)
        reason = await self.failure(listener, "no answer")
        self.assertEqual(reason, "reading input registers 6..17: no answer within 0.2 s")
        self.assertEqual(listener.readings, [])

    @asyncio_test
    async def test_retries_are_counted_in_the_reason(self):
        """With pymodbus retrying once, the reason says two tries were made."""

        async def silent(reader, writer):
            await reader.read(1000)

        tcp = await asyncio.start_server(silent, "127.0.0.1", 0)
        self.addCleanup(tcp.close)
        port = tcp.sockets[0].getsockname()[1]
        meter, listener = self.meter(port, "sunspec", timeout=0.1, retries=1)
        reason = await self.failure(listener, "no answer")
        self.assertEqual(
            reason, "reading holding registers 40000..40001: no answer within 0.1 s (2 tries)"
        )

    @asyncio_test
    async def test_modbus_exception(self):
        """A read answered with a Modbus exception fails the poll, naming
        the registers and the exception; the poll after it reads again."""
        server = await self.server("sdm630")
        meter, listener = await self.first_reading(server)
        server.fail_reads(ExcCodes.DEVICE_FAILURE)
        reason = await self.failure(listener, "exception")
        self.assertEqual(
            reason, "reading input registers 6..17: Modbus exception 4 (device failure)"
        )
        failures = len(listener.failures)
        await until(lambda: len(listener.failures) >= failures + 2)
        server.set_currents(2.0, 2.0, 2.0)
        server.fail_reads(None)
        await until(lambda: listener.last[0] == "reading")
        self.assertEqual(listener.readings[-1], (2.0, 2.0, 2.0))

    @asyncio_test
    async def test_sunspec_modbus_exception_other_than_illegal_address(self):
        """A SunSpec device that answers the marker read with "device
        failure" is not searched at other bases: that is the failure."""
        server = await self.server("sunspec")
        server.fail_reads(ExcCodes.DEVICE_FAILURE)
        meter, listener = self.meter(server.port, "sunspec")
        reason = await self.failure(listener, "exception")
        self.assertEqual(
            reason, "reading holding registers 40000..40001: Modbus exception 4 (device failure)"
        )
        self.assertNotIn((HOLDING, 0, 2), server.reads)

    @asyncio_test
    async def test_listener_that_raises_does_not_stop_polling(self):
        """A mistake in on_reading is logged, and polling goes on."""
        server = await self.server("sdm630")
        calls = []

        def broken(name, currents):
            calls.append(currents)
            raise RuntimeError("listener bug")

        meter = ModbusMeter(
            name="grid",
            host="127.0.0.1",
            port=server.port,
            unit_id=1,
            kind="sdm630",
            poll_interval=POLL,
            reactor=reactor,
            on_reading=broken,
            on_failure=broken,
            timeout=0.5,
            retries=0,
        )
        meter.start()
        self.addCleanup(meter.stop)
        await until(lambda: len(calls) >= 3)
        self.assertTrue(self.flushLoggedErrors(RuntimeError))


class StopTests(MeterTestCase):
    @asyncio_test
    async def test_stop_leaves_nothing_behind(self):
        """After stop() no timer and no asyncio task is left and nothing is
        read any more; start() again polls again."""
        timers = set(reactor.getDelayedCalls())
        server = await self.server("sunspec")
        meter, listener = await self.first_reading(server)
        await wait_deferred(meter.stop())
        self.assertEqual(set(reactor.getDelayedCalls()) - timers, set())
        await until(lambda: asyncio.all_tasks() == {asyncio.current_task()})
        reads = len(server.reads)
        await asyncio.sleep(3 * POLL)
        self.assertEqual(len(server.reads), reads)

        readings = len(listener.readings)
        meter.start()
        await until(lambda: len(listener.readings) > readings)

    @asyncio_test
    async def test_stop_while_a_request_is_in_flight(self):
        """stop() during a request that gets no answer does not wait for
        pymodbus's timeout, reports nothing, and leaves nothing behind."""
        timers = set(reactor.getDelayedCalls())
        asked = asyncio.Event()

        async def silent(reader, writer):
            await reader.read(1000)
            asked.set()

        tcp = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = tcp.sockets[0].getsockname()[1]
        meter, listener = self.meter(port, "sunspec", timeout=30)
        await asyncio.wait_for(asked.wait(), 10)
        started = asyncio.get_running_loop().time()
        await wait_deferred(meter.stop())
        self.assertLess(asyncio.get_running_loop().time() - started, 5)
        tcp.close()
        await tcp.wait_closed()
        self.assertEqual(listener.events, [])
        self.assertEqual(set(reactor.getDelayedCalls()) - timers, set())
        await until(lambda: asyncio.all_tasks() == {asyncio.current_task()})

    @asyncio_test
    async def test_stop_before_start_and_twice(self):
        """stop() of a meter that does not poll fires at once."""
        meter = ModbusMeter(
            name="grid", host="127.0.0.1", port=free_port(), unit_id=1, kind="sdm630",
            poll_interval=POLL, reactor=reactor, on_reading=None, on_failure=None,
        )
        self.assertIsNone(await wait_deferred(meter.stop()))
        meter.start()
        await wait_deferred(meter.stop())
        self.assertIsNone(await wait_deferred(meter.stop()))


class ConfigTests(MeterTestCase):
    @asyncio_test
    async def test_from_config(self):
        """A [meter:*] section's settings: type, address (host:port), id,
        poll_interval."""
        server = await self.server("sunspec", model_id=201)
        server.set_currents(3.0, 0.0, 0.0)
        config = MeterConfig(
            name="carport", type="sunspec", address=server.address, id=1, poll_interval=POLL
        )
        listener = Listener()
        meter = ModbusMeter.from_config(
            config, reactor=reactor, on_reading=listener.on_reading,
            on_failure=listener.on_failure, timeout=0.5,
        )
        self.assertEqual((meter.host, meter.port, meter.unit_id), ("127.0.0.1", server.port, 1))
        meter.start()
        self.addCleanup(meter.stop)
        await until(lambda: listener.readings)
        self.assertEqual(listener.events[0], ("reading", "carport", (3.0, 0.0, 0.0)))

    def test_unknown_type(self):
        """Only sdm630 and sunspec are polled over Modbus."""
        with self.assertRaises(ValueError):
            ModbusMeter(
                name="grid", host="h", port=502, unit_id=1, kind="api", poll_interval=1,
                reactor=reactor, on_reading=None, on_failure=None,
            )


class ServerTests(MeterTestCase):
    @asyncio_test
    async def test_busy_port(self):
        """A second meter server on a port in use cannot listen, and says
        why."""
        server = await self.server("sdm630")
        other = MeterServer("sunspec", port=server.port)
        with self.assertRaises(CannotListen) as caught:
            await other.start()
        self.assertIn(str(server.port), str(caught.exception))
        self.assertFalse(other.running)

    @asyncio_test
    async def test_model_read_fresh_on_every_request(self):
        """The model's currents (and powers) are asked on every read, not
        at start."""
        server = await self.server("sdm630")
        meter, listener = await self.first_reading(server)
        self.assertEqual(listener.readings[-1], (0.0, 0.0, 0.0))
        server.set_currents(5.0, 5.0, 5.0, powers=(-1.0, -1.0, -1.0))
        await until(lambda: listener.readings[-1] == (-5.0, -5.0, -5.0))

    @asyncio_test
    async def test_wrong_function_code_refused(self):
        """The SDM630 answers input registers only; holding registers at the
        same address are "illegal function" (and vice versa for SunSpec)."""
        sdm = await self.server("sdm630")
        sun = await self.server("sunspec")
        for server, wrong, address in (
            (sdm, "read_holding_registers", 6),
            (sun, "read_input_registers", 40000),
        ):
            client = AsyncModbusTcpClient("127.0.0.1", port=server.port, timeout=1, retries=0)
            await client.connect()
            try:
                response = await getattr(client, wrong)(address, count=2, device_id=1)
            finally:
                client.close()
            self.assertTrue(response.isError())
            self.assertEqual(response.exception_code, ExcCodes.ILLEGAL_FUNCTION)
