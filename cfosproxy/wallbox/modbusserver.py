"""The virtual Power Brain's Modbus TCP server, and a service that runs it.

A pymodbus C{SimDevice} holds the register map of L{cfosproxy.modbus.powerbrain}
plus L{cfosproxy.wallbox.model.TEST_CAR}; an access hook serves every read
from the model and turns every write into a model input. pymodbus is asyncio
only: the server is created and awaited on the running asyncio loop (the
daemon's Twisted asyncio reactor).
"""

import asyncio

from pymodbus.constants import ExcCodes
from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from cfosproxy.modbus import powerbrain
from cfosproxy.modbus.simserver import CannotListen, SimDeviceServer, bind_error
from cfosproxy.services import ListenError
from cfosproxy.wallbox.model import TEST_CAR

# The blocks the device answers, as (first register, count); any other
# register is "illegal data address", as on the real device.
BLOCKS = (
    (powerbrain.SERIAL, powerbrain.SERIAL_COUNT),
    powerbrain.METER_BLOCK,
    powerbrain.CONTROL_BLOCK,
    (TEST_CAR, 1),
)

# The registers a client may write: the real device takes only the limit
# and the enable flag; TEST_CAR is the simulation's own.
WRITABLE = frozenset({powerbrain.CURRENT_LIMIT, powerbrain.ENABLE, TEST_CAR})

READ_HOLDING_REGISTERS = 3
# Function codes that write holding registers: single, multiple, read/write.
WRITE_FUNCTIONS = (6, 16, 23)

# How many writes L{PowerBrainModbusServer.writes} keeps: the daemon runs
# for months, and the log is for tests and the admin shell.
WRITE_LOG = 1000


class PowerBrainModbusServer(SimDeviceServer):
    """A Power Brain on Modbus TCP, serving a model.

    The model needs C{update()}, C{registers()} (a value for every register
    in L{BLOCKS}), C{set_modbus_limit(amps)}, C{set_modbus_enabled(flag)},
    C{plug()} and C{unplug()}: L{cfosproxy.wallbox.model.PowerBrainModel}.

    Start and stop may alternate on the same port; C{start} raises
    L{CannotListen} when the port cannot be opened.

    @ivar writes: the last L{WRITE_LOG} write requests in order, as
        C{(register, [values])}, refused ones too.
    """

    def __init__(self, model, *, host="127.0.0.1", port=4701, unit_id=1):
        super().__init__(host=host, port=port, unit_id=unit_id)
        self.model = model
        self.writes = []

    # -- hooks -----------------------------------------------------------------

    def received(self, function_code, address, count, values):
        """Called with every request as it arrives, before it is checked:
        C{values} is None for a read. Logs the writes; a test server may
        record more."""
        if values is not None:
            self.writes.append((address, values))
            del self.writes[:-WRITE_LOG]

    def refusal(self, address, count, values):
        """The Modbus exception to answer an access of the device's
        registers with, or None to serve it (C{values} is None for a read).

        Writes are refused unless every register is in L{WRITABLE}, and
        L{TEST_CAR} takes only 0 and 1. A test server may refuse more.
        """
        if values is None:
            return None
        registers = range(address, address + count)
        if any(register not in WRITABLE for register in registers):
            return ExcCodes.ILLEGAL_ADDRESS
        for register, value in zip(registers, values):
            if register == TEST_CAR and value not in (0, 1):
                return ExcCodes.ILLEGAL_VALUE
        return None

    # -- server hooks ----------------------------------------------------------

    def _blocks(self):
        return BLOCKS

    def _listening(self):
        self._log.info(
            "Modbus TCP server on {host}:{port}, unit id {unit_id}",
            host=self.host,
            port=self.port,
            unit_id=self.unit_id,
        )

    def _trace(self, sending, pdu):
        if not sending:
            if pdu.function_code == READ_HOLDING_REGISTERS:
                self.received(pdu.function_code, pdu.address, pdu.count, None)
            elif pdu.function_code in WRITE_FUNCTIONS:
                address = getattr(pdu, "write_address", pdu.address)
                values = list(getattr(pdu, "write_registers", pdu.registers))
                self.received(pdu.function_code, address, len(values), values)
        return pdu

    async def _access(self, function_code, start, address, count, current, values):
        # The model is the truth: copied into pymodbus's registers on a
        # read, told on a write.
        refused = self.refusal(address, count, values)
        if refused is not None:
            return refused
        if values is None:
            self.model.update()
            registers = self.model.registers()
            for register in range(address, address + count):
                current[register - start] = registers[register]
            return None
        for register, value in zip(range(address, address + count), values):
            self._write(register, value)
        return None

    def _write(self, register, value):
        self._log.info("Modbus write {register} = {value}", register=register, value=value)
        if register == powerbrain.CURRENT_LIMIT:
            self.model.set_modbus_limit(value / 10)
        elif register == powerbrain.ENABLE:
            self.model.set_modbus_enabled(value != 0)
        elif value:
            self.model.plug()
        else:
            self.model.unplug()


def _check_free(host, port):
    """Raise L{CannotListen} when C{host:port} cannot be listened on now."""
    reason = bind_error(host, port)
    if reason is not None:
        raise CannotListen("cannot listen on Modbus TCP {}:{}: {}".format(host, port, reason))


class AsyncioServerService(service.Service):
    """Runs a pymodbus server in a twistd daemon: any object with C{host},
    C{port}, C{running} and the coroutines C{start()} (raising
    L{CannotListen}) and C{stop()}, as a
    L{cfosproxy.modbus.simserver.SimDeviceServer} has.

    pymodbus needs the asyncio loop running, and twistd starts services
    before the reactor runs: the server starts on the reactor's first turn.

    A port that is already taken fails the start at once (L{ListenError}
    from C{startService}, naming C{where}, so twistd exits non-zero): the port is tried with
    a socket of our own before the reactor runs. Should opening fail later
    all the same (a race with another process), that is logged (critical,
    with the reason) and the reactor is stopped: a virtual wallbox without
    its Modbus port is of no use.

    @param what: how the log names the server, e.g. C{"Modbus server"}.
    @ivar server: the server.
    """

    _log = Logger()

    def __init__(self, server, *, reactor=None, where, what="Modbus server"):
        if reactor is None:
            # Imported here: importing a module must not install a reactor.
            from twisted.internet import reactor
        self.server = server
        self._reactor = reactor
        self._where = where
        self._what = what
        self._call = None
        self._starting = None

    def startService(self):
        try:
            _check_free(self.server.host, self.server.port)
        except CannotListen as e:
            # One line naming the setting, not a traceback.
            raise ListenError("{}: {}".format(self._where, e)) from None
        service.Service.startService(self)
        self._call = self._reactor.callLater(0, self._start)

    def _start(self):
        self._call = None
        d = defer.Deferred.fromFuture(asyncio.ensure_future(self.server.start()))
        d.addErrback(self._failed)
        self._starting = d

    def _failed(self, failure):
        if failure.check(CannotListen):
            self._log.critical(
                "no {what}, stopping: {error}", what=self._what, error=failure.getErrorMessage()
            )
        else:
            self._log.failure("no {what}, stopping", failure, what=self._what)
        self._reactor.stop()

    def stopService(self):
        """Stop the server; the Deferred fires once its port is closed."""
        service.Service.stopService(self)
        if self._call is not None:
            self._call.cancel()
            self._call = None
        return defer.ensureDeferred(self._stop())

    async def _stop(self):
        starting, self._starting = self._starting, None
        if starting is not None:
            # A start still under way would open the port after the stop.
            await starting
        await defer.Deferred.fromFuture(asyncio.ensure_future(self.server.stop()))


class ModbusServerService(AsyncioServerService):
    """Runs a L{PowerBrainModbusServer} for the model in a twistd daemon
    (see L{AsyncioServerService}).

    @ivar server: the L{PowerBrainModbusServer}.
    """

    def __init__(
        self, model, *, host="127.0.0.1", port=4701, unit_id=1, reactor=None,
        where="[modbus] listen",
    ):
        super().__init__(
            PowerBrainModbusServer(model, host=host, port=port, unit_id=unit_id),
            reactor=reactor,
            where=where,
        )
