"""A Power Brain over Modbus TCP: polling, writing, offline and back, against
a real pymodbus server on loopback (tests/modbusserver.py)."""

import asyncio

from twisted.internet import defer, reactor
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from cfosproxy.config import WallboxConfig
from cfosproxy.core.devices import Device
from cfosproxy.core.interfaces import ILimitActuator
from cfosproxy.modbus.wallbox import (
    ModbusLimitActuator,
    ModbusWallbox,
    ModbusWriteError,
    WallboxOffline,
    WritesDisabled,
)
from cfosproxy.modbus.powerbrain import Reading
from cfosproxy.core.errors import PeerGone
from tests.harness import asyncio_test, eventually, free_port, wait_deferred
from tests.modbusserver import PowerBrainServer

POLL = 0.1


async def until(condition, timeout=10.0):
    """Wait until C{condition()} is true (bounded; polls the loop)."""

    async def check():
        return condition()

    return await eventually(check, timeout=timeout, interval=0.01)


async def fails_with(d, exception_type):
    """Await the Deferred C{d} and return the exception it fails with."""
    try:
        await wait_deferred(d)
    except exception_type as error:
        return error
    raise AssertionError("no {}".format(exception_type.__name__))


def stop_server(server):
    """C{server.stop()} as a Deferred, for addCleanup."""
    return defer.Deferred.fromFuture(asyncio.ensure_future(server.stop()))


class Listener:
    """Records what a wallbox reports."""

    def __init__(self):
        self.readings = []
        self.online = []

    def on_reading(self, wallbox, reading):
        self.readings.append(reading)

    def on_online(self, wallbox, online):
        self.online.append(online)


class ModbusTestCase(unittest.TestCase):
    async def server(self, energy=1000):
        """A started Power Brain with a non-zero meter (energy 0 is held
        back once), stopped after the test."""
        server = PowerBrainServer()
        server.set_energy(energy)
        await server.start()
        self.addCleanup(lambda: stop_server(server))
        return server

    def wallbox(self, port, poll_interval=POLL, **kwargs):
        """A started ModbusWallbox polling 127.0.0.1:port, stopped after the test."""
        listener = Listener()
        options = dict(timeout=0.5, retries=0)
        options.update(kwargs)
        wallbox = ModbusWallbox(
            name="pb-1",
            host="127.0.0.1",
            port=port,
            unit_id=1,
            poll_interval=poll_interval,
            reactor=reactor,
            on_reading=listener.on_reading,
            on_online=listener.on_online,
            **options,
        )
        wallbox.start()
        self.addCleanup(wallbox.stop)
        return wallbox, listener

    async def online_wallbox(self, server, **kwargs):
        wallbox, listener = self.wallbox(server.port, **kwargs)
        await until(lambda: listener.readings)
        return wallbox, listener


class PollingTests(ModbusTestCase):
    @asyncio_test
    async def test_every_value_end_to_end(self):
        """State (with a high byte set), enable, limit, energy above 2^32,
        power, the three currents and the serial number arrive decoded; the
        device is reported online once."""
        server = await self.server(energy=2**32 + 123)
        server.set_state("C", high_byte=0x12)
        server.registers[8093] = 160
        server.registers[8094] = 1
        server.set_power(11040)
        server.set_currents(16.0, 15.9, 0.1)
        server.set_serial("PB-0042")
        wallbox, listener = await self.online_wallbox(server)
        expected = Reading(
            state="C",
            enabled=True,
            energy_wh=2**32 + 123,
            power_w=11040,
            currents=(16.0, 15.9, 0.1),
            limit_amps=16.0,
        )
        self.assertEqual(listener.readings[0], expected)
        self.assertEqual(listener.readings[0].status, "Charging")
        self.assertEqual(wallbox.reading, expected)
        self.assertEqual(wallbox.serial, "PB-0042")
        self.assertTrue(wallbox.online)
        self.assertIsNone(wallbox.last_error)
        self.assertEqual(listener.online, [True])

    @asyncio_test
    async def test_polls_the_register_map(self):
        """Each poll reads 3 registers at 8092 and 12 at 8058; the serial
        number (8 at 8008) is read once per connection, not per poll."""
        server = await self.server()
        wallbox, listener = await self.online_wallbox(server)
        await until(lambda: len(listener.readings) >= 3)
        self.assertEqual(server.reads[0], (8008, 8))
        self.assertEqual(server.reads.count((8008, 8)), 1)
        self.assertEqual(set(server.reads[1:]), {(8092, 3), (8058, 12)})
        self.assertEqual(server.writes, [])

    @asyncio_test
    async def test_energy_zero_after_connect_not_reported(self):
        """A reading with energy 0 right after connecting is held back; the
        next one, with the real meter, is the first reported."""
        server = await self.server(energy=0)
        # A long interval: the meter changes well before the second poll.
        wallbox, listener = self.wallbox(server.port, poll_interval=1.0)
        await until(lambda: (8058, 12) in server.reads)
        server.set_energy(52000)
        await until(lambda: listener.readings)
        self.assertEqual([r.energy_wh for r in listener.readings][:1], [52000])
        self.assertTrue(all(r.energy_wh == 52000 for r in listener.readings))
        self.assertEqual(listener.online, [True])

    @asyncio_test
    async def test_energy_zero_confirmed_is_reported(self):
        """A meter that really is at 0 (two readings agree) is reported, from
        the second reading on."""
        server = await self.server(energy=0)
        wallbox, listener = self.wallbox(server.port)
        await until(lambda: listener.readings)
        self.assertEqual(listener.readings[0].energy_wh, 0)
        self.assertGreaterEqual(server.reads.count((8058, 12)), 2)


class WriteTests(ModbusTestCase):
    @asyncio_test
    async def test_writes_only_what_changed(self):
        """set_outputs writes 8093 and 8094 only when they change, never
        repeats a write, never touches another register, and polling writes
        nothing by itself. Lowering to 0 disables before it lowers."""
        server = await self.server()
        wallbox, listener = await self.online_wallbox(server)

        await wait_deferred(wallbox.set_outputs(16, True))
        self.assertEqual(server.writes, [(8093, [160]), (8094, [1])])
        self.assertEqual((server.limit, server.enable), (160, 1))

        await wait_deferred(wallbox.set_outputs(16.04, True))
        await wait_deferred(wallbox.set_outputs(10.05, True))
        await wait_deferred(wallbox.set_outputs(10, True))
        self.assertEqual(server.writes[2:], [(8093, [100])])

        await wait_deferred(wallbox.set_outputs(0, False))
        self.assertEqual(server.writes[3:], [(8094, [0]), (8093, [0])])

        await wait_deferred(wallbox.set_outputs(6, True))
        self.assertEqual(server.writes[5:], [(8093, [60]), (8094, [1])])

        polls = len(listener.readings)
        await until(lambda: len(listener.readings) >= polls + 3)
        self.assertEqual(len(server.writes), 7)
        self.assertEqual({address for address, _ in server.writes}, {8093, 8094})
        self.assertEqual(listener.readings[-1].limit_amps, 6.0)
        self.assertTrue(listener.readings[-1].enabled)

    @asyncio_test
    async def test_rewrites_after_restart(self):
        """After the device was away and is back, both registers are written
        again (it may have lost them), once."""
        server = await self.server()
        wallbox, listener = await self.online_wallbox(server)
        await wait_deferred(wallbox.set_outputs(13.2, True))
        self.assertEqual(server.writes, [(8093, [132]), (8094, [1])])

        await server.stop()
        server.registers[8093] = 320  # it came back with something else
        await until(lambda: not wallbox.online)
        await server.start()
        await until(lambda: len(server.writes) == 4)
        self.assertEqual(server.writes[2:], [(8093, [132]), (8094, [1])])
        self.assertEqual(server.limit, 132)
        polls = len(listener.readings)
        await until(lambda: len(listener.readings) >= polls + 3)
        self.assertEqual(len(server.writes), 4)

    @asyncio_test
    async def test_wanted_while_offline_written_when_back(self):
        """set_outputs on an offline device fails at once with WallboxOffline;
        the values are written as soon as it is back."""
        server = await self.server()
        wallbox, listener = await self.online_wallbox(server)
        await server.stop()
        await until(lambda: not wallbox.online)
        error = await fails_with(wallbox.set_outputs(8, True), WallboxOffline)
        self.assertIn("pb-1", str(error))
        await server.start()
        await until(lambda: len(server.writes) == 2)
        self.assertEqual(server.writes, [(8093, [80]), (8094, [1])])

    @asyncio_test
    async def test_refused_write(self):
        """A write the device answers with a Modbus exception fails the
        Deferred with ModbusWriteError naming the register; the device stays
        online and the write is not repeated at each poll."""
        server = await self.server()
        server.fail_writes(8094)
        wallbox, listener = await self.online_wallbox(server)
        error = await fails_with(wallbox.set_outputs(10, True), ModbusWriteError)
        self.assertIn("writing 8094", str(error))
        self.assertEqual(error.register, 8094)
        self.assertEqual(server.writes, [(8093, [100]), (8094, [1])])
        polls = len(listener.readings)
        await until(lambda: len(listener.readings) >= polls + 3)
        self.assertEqual(len(server.writes), 2)
        self.assertTrue(wallbox.online)

    @asyncio_test
    async def test_observe_mode_never_writes(self):
        """With writes=False set_outputs fails with WritesDisabled, and
        nothing is written, also not after a reconnect."""
        server = await self.server()
        wallbox, listener = await self.online_wallbox(server, writes=False)
        await fails_with(wallbox.set_outputs(16, True), WritesDisabled)
        await server.stop()
        await until(lambda: not wallbox.online)
        await server.start()
        await until(lambda: wallbox.online)
        polls = len(listener.readings)
        await until(lambda: len(listener.readings) >= polls + 2)
        self.assertEqual(server.writes, [])


class OfflineTests(ModbusTestCase):
    @asyncio_test
    async def test_offline_and_back(self):
        """When the server goes away the device is reported offline, with
        the reason in last_error; when it is back, online again and polled
        (and its serial read again)."""
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        server = await self.server()
        server.set_serial("PB-7")
        wallbox, listener = await self.online_wallbox(server)
        await server.stop()
        await until(lambda: listener.online == [True, False])
        self.assertFalse(wallbox.online)
        self.assertIn("127.0.0.1:{}".format(server.port), wallbox.last_error)
        # Let several retries fail while it is away (the backoff is at most
        # POLL): still only one warning.
        await asyncio.sleep(5 * POLL)

        server.set_energy(2000)
        await server.start()
        await until(lambda: listener.online == [True, False, True])
        await until(lambda: listener.readings[-1].energy_wh == 2000)
        self.assertIsNone(wallbox.last_error)
        self.assertEqual(server.reads.count((8008, 8)), 2)
        ours = [
            (e["log_level"].name, formatEvent(e))
            for e in events
            if e.get("log_namespace", "").startswith("cfosproxy.modbus.wallbox")
        ]
        self.assertEqual(
            [level for level, _ in ours if level != "debug"], ["info", "warn", "info"]
        )
        self.assertIn("offline", ours[1][1])
        self.assertIn("back", ours[2][1])

    @asyncio_test
    async def test_never_reachable(self):
        """A device that is not there is not reported online, the reason is
        in last_error, and it is tried again until it appears."""
        port = free_port()
        wallbox, listener = self.wallbox(port)
        await until(lambda: wallbox.last_error)
        self.assertIn("connecting to 127.0.0.1:{}".format(port), wallbox.last_error)
        self.assertEqual(listener.online, [])
        server = PowerBrainServer(port=port)
        server.set_energy(1)
        await server.start()
        self.addCleanup(lambda: stop_server(server))
        await until(lambda: listener.readings)
        self.assertEqual(listener.online, [True])

    @asyncio_test
    async def test_silent_device_times_out(self):
        """A device that accepts the connection and never answers is offline
        after pymodbus's timeout, with the register in last_error."""
        async def silent(reader, writer):
            await reader.read(1000)

        tcp = await asyncio.start_server(silent, "127.0.0.1", 0)
        self.addCleanup(tcp.close)
        port = tcp.sockets[0].getsockname()[1]
        wallbox, listener = self.wallbox(port, timeout=0.2)
        await until(lambda: wallbox.last_error)
        self.assertIn("reading 8008", wallbox.last_error)
        self.assertFalse(wallbox.online)
        self.assertEqual(listener.readings, [])

    @asyncio_test
    async def test_modbus_exception_survived(self):
        """A Modbus exception for one read (illegal data address at 8058)
        makes that poll fail: the device is offline, last_error names the
        register and the exception; polling goes on, and it is back as soon
        as the register answers again."""
        server = await self.server()
        wallbox, listener = await self.online_wallbox(server)
        server.fail_reads(8058)
        await until(lambda: not wallbox.online)
        self.assertIn("8058", wallbox.last_error)
        self.assertIn("illegal address", wallbox.last_error)
        readings = len(listener.readings)
        reads = server.reads.count((8058, 12))
        await until(lambda: server.reads.count((8058, 12)) >= reads + 2)
        self.assertEqual(len(listener.readings), readings)

        server.set_energy(3000)
        server.fail_reads(None)
        await until(lambda: wallbox.online)
        await until(lambda: listener.readings[-1].energy_wh == 3000)
        self.assertEqual(listener.online, [True, False, True])

    @asyncio_test
    async def test_no_serial_number_survived(self):
        """A device that answers the serial number read with a Modbus
        exception is polled all the same; its serial is None."""
        server = PowerBrainServer()
        server.set_energy(1)
        server.fail_reads(8008)
        await server.start()
        self.addCleanup(lambda: stop_server(server))
        wallbox, listener = await self.online_wallbox(server)
        self.assertIsNone(wallbox.serial)
        self.assertEqual(listener.online, [True])


class StopTests(ModbusTestCase):
    @asyncio_test
    async def test_stop_leaves_nothing_behind(self):
        """After stop() no timer and no asyncio task is left, the connection
        is closed, and a later set_outputs fails with WallboxOffline."""
        timers = set(reactor.getDelayedCalls())  # trial's own test timeout
        server = await self.server()
        wallbox, listener = await self.online_wallbox(server)
        await wait_deferred(wallbox.stop())
        await server.stop()
        self.assertEqual(set(reactor.getDelayedCalls()) - timers, set())
        self.assertEqual(asyncio.all_tasks() - {asyncio.current_task()}, set())
        polls = len(server.reads)
        await asyncio.sleep(3 * POLL)
        self.assertEqual(len(server.reads), polls)
        await fails_with(wallbox.set_outputs(16, True), WallboxOffline)

    @asyncio_test
    async def test_stop_while_waiting_for_an_answer(self):
        """stop() during a request that gets no answer does not wait for
        pymodbus's timeout, and leaves nothing behind."""
        timers = set(reactor.getDelayedCalls())
        asked = asyncio.Event()

        async def silent(reader, writer):
            await reader.read(1000)
            asked.set()

        tcp = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = tcp.sockets[0].getsockname()[1]
        wallbox, listener = self.wallbox(port, timeout=30)
        await asyncio.wait_for(asked.wait(), 10)
        started = asyncio.get_running_loop().time()
        await wait_deferred(wallbox.stop())
        self.assertLess(asyncio.get_running_loop().time() - started, 5)
        tcp.close()
        await tcp.wait_closed()
        self.assertEqual(set(reactor.getDelayedCalls()) - timers, set())
        await until(lambda: asyncio.all_tasks() == {asyncio.current_task()})


class ActuatorTests(ModbusTestCase):
    def device(self, server, max_current=16.0):
        config = WallboxConfig(
            name="pb-1", type="modbus", address=server.address, max_current=max_current
        )
        return Device(
            name="pb-1", type="modbus", address=server.address, connector_id=1, config=config
        )

    @asyncio_test
    async def test_set_limit_and_lift(self):
        """set_limit writes the limit and enables charging above 0 A;
        0 A disables it; lift writes the configured max_current, enabled."""
        server = await self.server()
        wallbox, _ = await self.online_wallbox(server)
        actuator = ModbusLimitActuator({"pb-1": wallbox})
        self.assertTrue(ILimitActuator.providedBy(actuator))
        device = self.device(server, max_current=20)

        await wait_deferred(actuator.set_limit(device, 7.5))
        self.assertEqual((server.limit, server.enable), (75, 1))
        await wait_deferred(actuator.set_limit(device, 0))
        self.assertEqual((server.limit, server.enable), (0, 0))
        await wait_deferred(actuator.lift(device))
        self.assertEqual((server.limit, server.enable), (200, 1))

    @asyncio_test
    async def test_not_allowed_stays_disabled(self):
        """When allowed(device) says no, the limit is written but charging
        stays disabled, also when the manager lets go."""
        server = await self.server()
        wallbox, _ = await self.online_wallbox(server)
        actuator = ModbusLimitActuator({"pb-1": wallbox}, allowed=lambda device: False)
        device = self.device(server)
        await wait_deferred(actuator.set_limit(device, 10))
        self.assertEqual((server.limit, server.enable), (100, 0))
        await wait_deferred(actuator.lift(device))
        self.assertEqual((server.limit, server.enable), (160, 0))

    @asyncio_test
    async def test_backend_limit_is_the_ceiling(self):
        """With a backend limit the register gets the lower of it and the
        manager's limit."""
        server = await self.server()
        wallbox, _ = await self.online_wallbox(server)
        backend = {"limit": 8.0}
        actuator = ModbusLimitActuator({"pb-1": wallbox}, backend_limit=lambda device: backend["limit"])
        device = self.device(server)
        await wait_deferred(actuator.set_limit(device, 16))
        self.assertEqual((server.limit, server.enable), (80, 1))
        backend["limit"] = 32.0
        await wait_deferred(actuator.set_limit(device, 16))
        self.assertEqual(server.limit, 160)

    @asyncio_test
    async def test_offline_and_unknown(self):
        """A limit for an offline device fails with PeerGone (the
        manager then waits until the device is back); a device without a
        poller fails with WallboxOffline."""
        server = await self.server()
        wallbox, _ = await self.online_wallbox(server)
        actuator = ModbusLimitActuator({"pb-1": wallbox})
        device = self.device(server)
        await server.stop()
        await until(lambda: not wallbox.online)
        await fails_with(actuator.set_limit(device, 10), PeerGone)
        other = Device(
            name="pb-2", type="modbus", address="x", connector_id=1, config=device.config
        )
        await fails_with(actuator.lift(other), WallboxOffline)
