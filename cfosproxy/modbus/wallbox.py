"""One cFos Power Brain over Modbus TCP, and limits through its registers.

pymodbus runs on asyncio and the daemon on Twisted's asyncio reactor, so both
share one loop: every awaited pymodbus call is an asyncio task wrapped in a
Deferred, and the pymodbus client is created only once that loop runs.

How a L{ModbusWallbox} behaves:

  - B{One request at a time.} A single I{turn} runs at once: (re)connect if
    needed, read the serial number once per connection, poll, then write
    what changed. C{set_outputs} starts a write-only turn between polls.
  - B{Reconnects are ours.} pymodbus's own reconnect is off
    (C{reconnect_delay=0}): a request on a lost connection fails at once
    instead of racing a background task, and the next turn connects again
    after our backoff (1 s doubling to 30 s, at most C{poll_interval}).
    pymodbus's C{timeout} and C{retries} bound every request.
  - B{Offline} is a poll that did not give a complete reading: no
    connection, no answer in time, or a Modbus exception. The device is
    reported offline (logged once, as a warning), retried with backoff, and
    reported online again (logged at info) by the next good poll. A Modbus
    exception keeps the connection, since the device did answer; every
    other failure closes it. A Modbus exception for the serial number is
    only logged: some firmware has no serial, and polling does not need it.
  - B{Energy 0 after a (re)connect is not trusted}: a device that has just
    booted may answer 0 before its meter is read. The first reading of a
    connection with energy 0 is held back (no C{on_reading}); the next one
    is reported, whatever it shows, since two readings agreeing on 0 (or a
    non-zero one) are the device's real answer.
  - B{Writes go to flash} on a real Power Brain: 8093 and 8094 are written
    only when the wanted value differs from what was last written
    successfully. After a new connection or a time offline nothing written
    before is taken for granted: the wanted values are written again.
"""

from twisted.internet import defer
from zope.interface import implementer

from cfosproxy.modbus import powerbrain
from cfosproxy.modbus.poller import ModbusPoller, TurnFailed
from cfosproxy.modbus.requests import RequestFailed
from cfosproxy.core.errors import PeerGone
from cfosproxy.core.interfaces import ILimitActuator

# The longest retry delay of a device that does not answer.
BACKOFF_MAX = 30.0


class ModbusError(TurnFailed):
    """A request to a Power Brain failed.

    @ivar register: the (first) register of the request, or None for the
        connection itself.
    @ivar answered: True when the device answered with a Modbus exception;
        False when it did not answer at all.
    """

    def __init__(self, message, register=None, answered=False):
        super().__init__(message)
        self.register = register
        self.answered = answered


class ModbusConnectError(ModbusError):
    """The TCP connection could not be made."""


class ModbusReadError(ModbusError):
    """Reading registers failed."""


class ModbusWriteError(ModbusError):
    """Writing a register failed."""


class WallboxOffline(Exception):
    """The device does not answer now (or its poller is stopped)."""


class WritesDisabled(Exception):
    """The device is only observed: cfosproxy writes nothing to it."""


class ModbusWallbox(ModbusPoller):
    """Polls one Power Brain and writes its limit and enable registers.

    @param on_reading: C{on_reading(wallbox, reading)} after each poll that
        gave a trusted L{powerbrain.Reading}.
    @param on_online: C{on_online(wallbox, online)} whenever C{online}
        changes; it starts False.
    @param timeout: seconds pymodbus waits for a connection or an answer.
    @param retries: how often pymodbus repeats an unanswered request.
    @param writes: False to only observe: nothing is ever written.

    @ivar online: the last poll gave a complete reading.
    @ivar reading: the last trusted reading, or None.
    @ivar serial: the serial number read after the last connect, or None.
    @ivar last_error: why the device is offline, e.g. C{"reading 8092: ..."};
        None while it is online.
    """

    _backoff_max = BACKOFF_MAX
    _connect_error = ModbusConnectError

    def __init__(
        self,
        *,
        name,
        host,
        port,
        unit_id,
        poll_interval,
        reactor,
        on_reading,
        on_online,
        timeout=2.0,
        retries=1,
        writes=True,
    ):
        super().__init__(
            name=name,
            host=host,
            port=port,
            unit_id=unit_id,
            poll_interval=poll_interval,
            reactor=reactor,
            timeout=timeout,
            retries=retries,
        )
        self.writes = writes
        self._on_reading = on_reading
        self._on_online = on_online

        self.online = False
        self.reading = None
        self.serial = None
        self.last_error = None

        self._poll_due = False
        self._new_connection = False
        self._fresh = False  # no reading trusted yet on this connection
        self._zero_seen = False
        self._warned = False  # "offline" was logged and "back" was not
        self._wanted = {}  # register -> value
        self._written = {}  # register -> value the device acknowledged
        self._dirty = False  # _wanted may differ from _written
        self._waiters = []

    # -- public ----------------------------------------------------------------

    def set_outputs(self, limit_amps, enabled):
        """Want register 8093 = L{powerbrain.limit_register}C{(limit_amps)}
        and 8094 = 1 or 0.

        Only registers whose value differs from what was last written are
        written. Charging is disabled before the limit changes and enabled
        only after it, so the device never charges under a limit it should
        not have.

        @return: a Deferred that fires when the device holds the values (at
            once if it does already). It fails with L{ModbusWriteError}
            (naming the register) when a write fails, L{WallboxOffline} when
            the device is offline (the values are then written when it is
            back), L{WritesDisabled} when only observing.
        """
        if not self.writes:
            return defer.fail(
                WritesDisabled("{} is only observed; nothing is written".format(self.name))
            )
        self._wanted = {
            powerbrain.CURRENT_LIMIT: powerbrain.limit_register(limit_amps),
            powerbrain.ENABLE: 1 if enabled else 0,
        }
        self._dirty = True
        if not (self._running and self.online):
            return defer.fail(
                WallboxOffline(
                    "{} is offline ({}); the values are written when it is back".format(
                        self.name,
                        self.last_error or ("not connected yet" if self._running else "stopped"),
                    )
                )
            )
        if self._turn is None and self._next_write() is None:
            self._dirty = False
            return defer.succeed(None)
        d = defer.Deferred()
        self._waiters.append(d)
        self._kick()
        return d

    # -- turns -----------------------------------------------------------------

    def _tick(self):
        # A turn the timer starts polls; one set_outputs starts only writes.
        self._poll_due = True
        super()._tick()

    async def _work(self):
        polled = False
        if self._poll_due:
            self._poll_due = False
            polled = True
            await self._poll()
        if self.online and self._dirty:
            await self._write_outputs()
        return polled

    def _stopping(self):
        self._fail_waiters(WallboxOffline("{} stopped".format(self.name)))

    # -- polling ---------------------------------------------------------------

    async def _poll(self):
        await self._ensure_connected()
        if self._new_connection:
            await self._read_serial()
        control = await self._read(*powerbrain.CONTROL_BLOCK)
        meter = await self._read(*powerbrain.METER_BLOCK)
        reading = powerbrain.decode_reading(control, meter)
        self._went_online()
        if self._trusted(reading):
            self.reading = reading
            self._notify(self._on_reading, self, reading)

    def _connected(self):
        self._new_connection = True
        self._fresh = True
        self._zero_seen = False
        # The device may have restarted: what it was given is not taken
        # for granted.
        self._written.clear()
        self._dirty = bool(self._wanted)

    async def _read_serial(self):
        try:
            regs = await self._read(powerbrain.SERIAL, powerbrain.SERIAL_COUNT)
        except ModbusReadError as error:
            if not error.answered:
                raise
            self._log.warn("{name}: no serial number: {error}", name=self.name, error=error)
        else:
            self.serial = powerbrain.decode_string(regs) or None
        self._new_connection = False

    def _trusted(self, reading):
        if not self._fresh:
            return True
        if reading.energy_wh == 0 and not self._zero_seen:
            self._zero_seen = True
            self._log.info(
                "{name}: energy 0 right after connecting; waiting for the next reading",
                name=self.name,
            )
            return False
        self._fresh = False
        return True

    async def _read(self, address, count):
        try:
            return await self._read_registers("read_holding_registers", address, count)
        except RequestFailed as failure:
            raise ModbusReadError(
                "reading {}: {}".format(address, failure), address, answered=failure.answered
            ) from failure

    # -- online / offline ------------------------------------------------------

    def _went_online(self):
        self._backoff = None
        self.last_error = None
        if self.online:
            return
        self.online = True
        if self._wanted:
            # Back from offline: write what is wanted again.
            self._written.clear()
            self._dirty = True
        if self._warned:
            self._log.info("{name}: Modbus device is back", name=self.name)
        else:
            self._log.info(
                "{name}: Modbus device online at {host}:{port}, serial {serial}",
                name=self.name,
                host=self.host,
                port=self.port,
                serial=self.serial,
            )
        self._warned = False
        self._notify(self._on_online, self, True)

    def _failed(self, error):
        # The device went offline, or stays so.
        self.last_error = str(error)
        if not error.answered:
            self._close()
        self._written.clear()
        self._fail_waiters(
            error
            if isinstance(error, ModbusWriteError)
            else WallboxOffline("{} is offline: {}".format(self.name, error))
        )
        if not self._warned:
            self._warned = True
            self._log.warn(
                "{name}: Modbus device at {host}:{port} is offline: {error}",
                name=self.name,
                host=self.host,
                port=self.port,
                error=self.last_error,
            )
        if self.online:
            self.online = False
            self._notify(self._on_online, self, False)

    # -- writing ---------------------------------------------------------------

    def _next_write(self):
        """The next register to write, or None when the device holds all."""
        pending = [
            register
            for register in (powerbrain.CURRENT_LIMIT, powerbrain.ENABLE)
            if register in self._wanted and self._written.get(register) != self._wanted[register]
        ]
        if not pending:
            return None
        # Disabling goes before the limit, enabling after it: in between, the
        # device never may charge more than either state allows.
        if powerbrain.ENABLE in pending and self._wanted[powerbrain.ENABLE] == 0:
            return powerbrain.ENABLE
        return pending[0]

    async def _write_outputs(self):
        # _wanted may change while a write is in flight: look again each time.
        while (register := self._next_write()) is not None:
            value = self._wanted[register]
            try:
                await self._write(register, value)
            except ModbusWriteError as error:
                if not error.answered:
                    raise
                # The device said no. Trying again each poll would not
                # change its mind; the next set_outputs or reconnect will.
                self._dirty = False
                self._log.warn("{name}: {error}", name=self.name, error=error)
                self._fail_waiters(error)
                return
            self._written[register] = value
        self._dirty = False
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)

    async def _write(self, register, value):
        try:
            await self._write_register(register, value)
        except RequestFailed as failure:
            raise ModbusWriteError(
                "writing {} = {}: {}".format(register, value, failure),
                register,
                answered=failure.answered,
            ) from failure

    def _fail_waiters(self, error):
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.errback(error)


@implementer(ILimitActuator)
class ModbusLimitActuator:
    """Limits Power Brains through registers 8093 (limit) and 8094 (enable).

    @param wallboxes: C{{device name: ModbusWallbox}}.
    @param allowed: C{allowed(device)}: whether anything besides the manager
        lets the device charge (e.g. an OCPP transaction); charging is
        enabled only when it says so and the limit is above 0.
    @param backend_limit: C{backend_limit(device)}: a backend's limit for
        the device now, or None; the register gets the lower of it and the
        manager's limit (a register holds one value, not a schedule).
    """

    def __init__(self, wallboxes, allowed=lambda device: True, backend_limit=lambda device: None):
        self._wallboxes = wallboxes
        self._allowed = allowed
        self._backend_limit = backend_limit

    def _wallbox(self, device):
        try:
            return self._wallboxes[device.name]
        except KeyError:
            raise WallboxOffline("{} is not a polled Modbus wallbox".format(device.name)) from None

    def prepare(self, device):
        """Nothing to learn: a Power Brain takes its limit in register 8093,
        and its state comes with every poll."""
        return defer.succeed(None)

    def set_limit(self, device, amps):
        """Write the limit; enable charging when C{amps > 0} and allowed.

        A failed write fails the Deferred with L{ModbusWriteError} (no
        answer, or the device refused); for an offline device with
        L{PeerGone}, which tells the manager to wait until the device
        is back (it writes the limit again then), as for an OCPP wallbox
        whose connection is gone.
        """
        try:
            wallbox = self._wallbox(device)
        except WallboxOffline as error:
            return defer.fail(error)
        backend = self._backend_limit(device)
        if backend is not None:
            amps = min(amps, backend)
        d = wallbox.set_outputs(amps, amps > 0 and self._allowed(device))
        d.addErrback(_offline_as_gone, device)
        return d

    def lift(self, device):
        """Let go: the limit becomes the device's configured C{max_current},
        and charging is enabled as far as C{allowed} goes. A Power Brain has
        no "no limit"; its configured maximum is the closest."""
        try:
            wallbox = self._wallbox(device)
        except WallboxOffline as error:
            return defer.fail(error)
        return wallbox.set_outputs(device.config.max_current, self._allowed(device))


def _offline_as_gone(failure, device):
    failure.trap(WallboxOffline)
    raise PeerGone(device.name)
