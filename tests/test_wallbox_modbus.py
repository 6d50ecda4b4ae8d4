"""The virtual Power Brain's Modbus TCP server on real loopback sockets: what
a client reads, what its writes do to the simulated wallbox, what it refuses,
and the service that runs it in the daemon."""

import asyncio
import socket

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from twisted.internet import defer, reactor, task
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial import unittest

from cfosproxy.modbus import powerbrain
from cfosproxy.modbus.meterserver import MeterModbusServer
from cfosproxy.modbus.wallbox import ModbusWallbox
from cfosproxy.services import ListenError
from cfosproxy.wallbox.model import TEST_CAR, PowerBrainModel
from cfosproxy.wallbox.modbusserver import (
    AsyncioServerService,
    CannotListen,
    ModbusServerService,
    PowerBrainModbusServer,
)
from tests.harness import asyncio_test, eventually, free_port, wait_deferred
from tests.meterserver import MeasuredCurrents

HOUR = 3600.0


async def until(condition, timeout=10.0):
    """Wait until C{condition()} is true (bounded; polls the loop)."""

    async def check():
        return condition()

    return await eventually(check, timeout=timeout, interval=0.01)


def run(coro):
    """An awaitable as a Deferred, for addCleanup."""
    return defer.Deferred.fromFuture(asyncio.ensure_future(coro))


class ServerTestCase(unittest.TestCase):
    def model(self, plugged=True, allows=True):
        """A model on a task.Clock: the energy moves only when a test says."""
        self.clock = task.Clock()
        model = PowerBrainModel(self.clock, plugged=plugged, serial="PB-0042")
        model.set_ocpp(None, allows)
        return model

    async def server(self, model, port=None):
        """A started server for C{model}, stopped after the test."""
        server = PowerBrainModbusServer(model, port=port or free_port())
        await server.start()
        self.addCleanup(lambda: run(server.stop()))
        return server

    async def client(self, server):
        """A connected pymodbus client, closed after the test."""
        client = AsyncModbusTcpClient("127.0.0.1", port=server.port, timeout=2, retries=0)
        self.addCleanup(client.close)
        self.assertTrue(await client.connect())
        return client

    async def read(self, client, first, count):
        response = await client.read_holding_registers(first, count=count, device_id=1)
        self.assertFalse(response.isError(), response)
        return list(response.registers)

    async def write(self, client, register, *values):
        """Write one register (function 06) or several (16); the response."""
        if len(values) == 1:
            return await client.write_register(register, values[0], device_id=1)
        return await client.write_registers(register, list(values), device_id=1)


class ReadTests(ServerTestCase):
    @asyncio_test
    async def test_reads_are_the_models_registers(self):
        """Every block of the map reads as the model's registers, as of the
        moment of the read: an hour of charging on the clock shows in the
        meter without anyone calling update()."""
        model = self.model()
        server = await self.server(model)
        client = await self.client(server)
        self.clock.advance(HOUR)
        regs = model.registers()  # not updated yet: the read must update it
        self.assertEqual(powerbrain.decode_u64([regs[8058 + i] for i in range(4)]), 0)

        control = await self.read(client, *powerbrain.CONTROL_BLOCK)
        meter = await self.read(client, *powerbrain.METER_BLOCK)
        serial = await self.read(client, powerbrain.SERIAL, powerbrain.SERIAL_COUNT)
        car = await self.read(client, TEST_CAR, 1)
        regs = model.registers()
        for first, values in ((8092, control), (8058, meter), (8008, serial), (TEST_CAR, car)):
            self.assertEqual(values, [regs[first + i] for i in range(len(values))])
        self.assertEqual(
            powerbrain.decode_reading(control, meter),
            powerbrain.Reading("C", True, 22080, 22080, (32.0, 32.0, 32.0), 32.0),
        )
        self.assertEqual(powerbrain.decode_string(serial), "PB-0042")
        self.assertEqual(car, [1])

    @asyncio_test
    async def test_unknown_register_refused(self):
        """A read of a register the device does not have, or one running
        past the end of a block, is answered "illegal data address"."""
        server = await self.server(self.model())
        client = await self.client(server)
        for first, count in ((8100, 1), (8094, 2), (8000, 8)):
            response = await client.read_holding_registers(first, count=count, device_id=1)
            self.assertTrue(response.isError(), (first, count))
            self.assertEqual(response.exception_code, ExcCodes.ILLEGAL_ADDRESS)

    @asyncio_test
    async def test_cfosproxy_client(self):
        """cfosproxy's own Modbus client polls the virtual wallbox as a real
        Power Brain, and its limit and enable writes steer the car."""
        model = self.model()
        server = await self.server(model)
        readings = []
        wallbox = ModbusWallbox(
            name="virtual",
            host="127.0.0.1",
            port=server.port,
            unit_id=1,
            poll_interval=0.1,
            reactor=reactor,
            on_reading=lambda wallbox, reading: readings.append(reading),
            on_online=lambda wallbox, online: None,
            timeout=1,
            retries=0,
        )
        self.clock.advance(HOUR)  # a meter reading of 0 is held back once
        wallbox.start()
        self.addCleanup(wallbox.stop)
        await until(lambda: readings)
        self.assertEqual((readings[0].state, readings[0].energy_wh), ("C", 22080))
        self.assertEqual(wallbox.serial, "PB-0042")

        await wait_deferred(wallbox.set_outputs(10, True))
        self.assertEqual((model.state, model.current), ("C", 10.0))
        await wait_deferred(wallbox.set_outputs(0, False))
        self.assertEqual((model.state, model.current, model.modbus_enabled), ("B", 0.0, False))
        await until(lambda: readings[-1].state == "B")
        self.assertEqual(readings[-1].limit_amps, 0.0)


class WriteTests(ServerTestCase):
    @asyncio_test
    async def test_limit_and_enable(self):
        """8093 sets the Modbus limit in 0.1 A, 8094 switches charging off
        and on; each write is logged, and reads back as written."""
        model = self.model()
        server = await self.server(model)
        client = await self.client(server)
        self.assertFalse((await self.write(client, 8093, 132)).isError())
        self.assertEqual((model.modbus_limit, model.current), (13.2, 13.2))
        self.assertFalse((await self.write(client, 8094, 0)).isError())
        self.assertEqual((model.modbus_enabled, model.state, model.current), (False, "B", 0.0))
        self.assertEqual(await self.read(client, 8092, 3), [1, 132, 0])
        self.assertFalse((await self.write(client, 8093, 160, 1)).isError())
        self.assertEqual((model.modbus_limit, model.modbus_enabled, model.state), (16.0, True, "C"))
        self.assertEqual(server.writes, [(8093, [132]), (8094, [0]), (8093, [160, 1])])

    @asyncio_test
    async def test_test_register_plugs_the_car(self):
        """Writing 1 to the test register plugs the car in, 0 unplugs it; it
        reads back 1/0, and any other value is refused (illegal value)."""
        model = self.model(plugged=False)
        server = await self.server(model)
        client = await self.client(server)
        self.assertEqual(await self.read(client, TEST_CAR, 1), [0])
        await self.write(client, TEST_CAR, 1)
        self.assertEqual((model.plugged, model.state), (True, "C"))
        self.assertEqual(await self.read(client, TEST_CAR, 1), [1])
        await self.write(client, TEST_CAR, 0)
        self.assertEqual((model.plugged, model.state), (False, "A"))
        response = await self.write(client, TEST_CAR, 2)
        self.assertEqual(response.exception_code, ExcCodes.ILLEGAL_VALUE)
        self.assertFalse(model.plugged)

    @asyncio_test
    async def test_other_registers_refused(self):
        """Writes to any register but 8093, 8094 and the test register are
        refused with "illegal data address" and change nothing, also when
        one of several registers written at once is writable; they are
        logged all the same."""
        model = self.model()
        server = await self.server(model)
        client = await self.client(server)
        before = model.registers()
        for register, values in (
            (8092, [2]),
            (8058, [0, 0, 0, 0]),
            (8008, [0x4142]),
            (8062, [0]),
            (8092, [2, 100]),
            (8100, [1]),
        ):
            response = await self.write(client, register, *values)
            self.assertTrue(response.isError(), register)
            self.assertEqual(response.exception_code, ExcCodes.ILLEGAL_ADDRESS)
        self.assertEqual(model.registers(), before)
        self.assertEqual(model.modbus_limit, 32.0)
        self.assertEqual(len(server.writes), 6)


class StartStopTests(ServerTestCase):
    @asyncio_test
    async def test_stop_and_start_on_the_same_port(self):
        """After stop() the port is closed; start() opens the same port
        again and serves the same model."""
        model = self.model()
        server = await self.server(model)
        client = await self.client(server)
        await self.write(client, 8093, 100)
        await server.stop()
        self.assertFalse(server.running)
        await until(lambda: not client.connected)
        await server.stop()  # idempotent

        await server.start()
        self.assertTrue(server.running)
        again = await self.client(server)
        self.assertEqual(await self.read(again, 8093, 1), [100])

    @asyncio_test
    async def test_port_in_use(self):
        """Starting on a port that is taken fails with CannotListen, which
        names the address and the reason."""
        first = await self.server(self.model())
        second = PowerBrainModbusServer(self.model(), port=first.port)
        with self.assertRaises(CannotListen) as caught:
            await second.start()
        self.assertIn("127.0.0.1:{}".format(first.port), str(caught.exception))
        self.assertIn("in use", str(caught.exception))
        self.assertFalse(second.running)


class RecordingReactor:
    """The real reactor for timers; records stop() instead of stopping."""

    def __init__(self):
        self.stopped = 0

    def callLater(self, *args, **kwargs):
        return reactor.callLater(*args, **kwargs)

    def stop(self):
        self.stopped += 1


class ServiceTests(ServerTestCase):
    def service(self, port):
        fake = RecordingReactor()
        svc = ModbusServerService(self.model(), port=port, reactor=fake)
        return svc, fake

    @asyncio_test
    async def test_starts_and_stops(self):
        """The service opens the port once the reactor turns, and its
        stopService Deferred fires once the port is closed."""
        port = free_port()
        svc, fake = self.service(port)
        svc.startService()
        self.addCleanup(lambda: svc.running and svc.stopService())
        await until(lambda: svc.server.running)
        client = await self.client(svc.server)
        self.assertEqual(await self.read(client, TEST_CAR, 1), [1])
        await wait_deferred(svc.stopService())
        self.assertFalse(svc.server.running)
        self.assertEqual(fake.stopped, 0)

    @asyncio_test
    async def test_stop_before_the_start(self):
        """A service stopped before the reactor turned never opens its port."""
        svc, fake = self.service(free_port())
        svc.startService()
        await wait_deferred(svc.stopService())
        # A turn of the reactor after the one the start was due in.
        await wait_deferred(task.deferLater(reactor, 0, lambda: None))
        client = AsyncModbusTcpClient("127.0.0.1", port=svc.server.port, timeout=1, retries=0)
        self.addCleanup(client.close)
        self.assertFalse(await client.connect())
        self.assertFalse(svc.server.running)

    @asyncio_test
    async def test_port_in_use_fails_the_start(self):
        """When the port is taken, startService raises ListenError naming
        the setting, the address and the reason, so twistd fails the start
        (non-zero exit, one line) instead of running without Modbus; the
        reactor is untouched."""
        taken = await self.server(self.model())
        svc, fake = self.service(taken.port)
        with self.assertRaises(ListenError) as raised:
            svc.startService()
        self.assertIn("127.0.0.1:{}".format(taken.port), str(raised.exception))
        self.assertIn("in use", str(raised.exception))
        self.assertIn("[modbus] listen", str(raised.exception))
        self.assertFalse(svc.running)
        self.assertEqual(fake.stopped, 0)

    @asyncio_test
    async def test_port_taken_after_the_check(self):
        """A port taken between the check in startService and the start on
        the reactor's first turn: the Power Brain's server and a meter's
        both fail with the CannotListen the service knows, which is logged
        as one critical line naming the server, the address and the
        reason, and the reactor is stopped."""
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        servers = [
            (PowerBrainModbusServer(self.model(), port=free_port()), "Modbus server"),
            (MeterModbusServer(MeasuredCurrents(), kind="sdm630", port=free_port()), "grid meter"),
        ]
        for server, what in servers:
            fake = RecordingReactor()
            svc = AsyncioServerService(server, reactor=fake, where="[x] listen", what=what)
            svc.startService()
            with socket.socket() as taken:
                taken.bind(("127.0.0.1", server.port))
                taken.listen()
                await until(lambda: fake.stopped)
            await wait_deferred(svc.stopService())
            self.assertEqual(fake.stopped, 1)
            self.assertFalse(server.running)
            critical = [
                formatEvent(event) for event in events if event["log_level"] == LogLevel.critical
            ]
            self.assertEqual(
                critical,
                [
                    "no {}, stopping: cannot listen on 127.0.0.1:{}: Address already in use"
                    .format(what, server.port)
                ],
            )
            events.clear()
