"""What L{cfosproxy.modbus.poller.ModbusPoller} does the same for a wallbox
and a meter, in the rare turns of a stop and a start: a start while a
stopped request is still ending, and a turn that breaks. Against real
pymodbus servers on loopback (tests/modbusserver.py, tests/meterserver.py)
and a device that never answers."""

import asyncio

from cfosproxy.modbus import powerbrain
from tests.harness import asyncio_test, wait_deferred
from tests.test_modbus import ModbusTestCase, stop_server, until
from tests.test_modbus_meter import MeterTestCase

# A poll interval long enough that a poll within a few seconds of start()
# is one made at once, not one that came due.
LONG_POLL = 60


class SilentDevice:
    """A TCP server on loopback that takes requests and never answers.

    @ivar requests: what arrived, one entry per read from the socket (a
        request each, as the poller sends one at a time and waits).
    """

    def __init__(self):
        self.requests = []
        self._server = None

    @property
    def port(self):
        """The port it listens on."""
        return self._server.sockets[0].getsockname()[1]

    async def start(self):
        """Listen on a free loopback port."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def stop(self):
        """Stop listening."""
        self._server.close()
        await self._server.wait_closed()

    async def asked(self, count):
        """Wait until C{count} requests have arrived."""
        await until(lambda: len(self.requests) >= count)

    async def _serve(self, reader, writer):
        while data := await reader.read(1000):
            self.requests.append(data)


async def silent_device(testcase):
    """A started L{SilentDevice}, stopped after C{testcase} (after the
    pollers it made later, since cleanups run last first)."""
    device = SilentDevice()
    await device.start()
    testcase.addCleanup(lambda: stop_server(device))
    return device


class WallboxTests(ModbusTestCase):
    @asyncio_test
    async def test_start_while_a_stopped_request_ends(self):
        """start() right after stop(), while the cancelled request is still
        ending: stop()'s Deferred fires all the same, the cancelled request
        is not logged as a failure, and polling goes on."""
        device = await silent_device(self)
        wallbox, listener = self.wallbox(device.port, timeout=30)
        await device.asked(1)
        stopped = wallbox.stop()
        wallbox.start()
        await asyncio.wait_for(wait_deferred(stopped), 5)
        await device.asked(2)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(listener.online, [])

    @asyncio_test
    async def test_a_broken_turn_is_logged_and_polling_goes_on(self):
        """A turn that raises what no request raises (a bug, here in
        decoding) is logged once, and the next polls go on as before."""
        server = await self.server()
        wallbox, listener = await self.online_wallbox(server)
        decode_reading = powerbrain.decode_reading
        broken = []

        def decode_once_broken(control, meter):
            if not broken:
                broken.append(True)
                raise RuntimeError("decoder bug")
            return decode_reading(control, meter)

        self.patch(powerbrain, "decode_reading", decode_once_broken)
        await until(lambda: broken, timeout=5)
        readings = len(listener.readings)
        await until(lambda: len(listener.readings) >= readings + 3, timeout=5)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertTrue(wallbox.online)


class MeterTests(MeterTestCase):
    @asyncio_test
    async def test_start_while_a_stopped_poll_ends_polls_at_once(self):
        """start() right after stop(), while the cancelled poll is still
        ending, polls at once, as a start does, not C{poll_interval}
        later; stop()'s Deferred fires and nothing is reported."""
        device = await silent_device(self)
        meter, listener = self.meter(
            device.port, "sdm630", poll_interval=LONG_POLL, timeout=30
        )
        await device.asked(1)
        stopped = meter.stop()
        meter.start()
        await asyncio.wait_for(wait_deferred(stopped), 5)
        await until(lambda: len(device.requests) >= 2, timeout=5)
        self.assertEqual(listener.events, [])
