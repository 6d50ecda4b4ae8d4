"""The virtual Power Brain's Modbus TCP server, and a service that runs it.

A pymodbus C{SimDevice} holds the register map of L{cfosproxy.modbus.powerbrain}
plus L{cfosproxy.wallbox.model.TEST_CAR}; an access hook serves every read
from the model and turns every write into a model input. pymodbus is asyncio
only: the server is created and awaited on the running asyncio loop (the
daemon's Twisted asyncio reactor).
"""

import asyncio
import socket

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from cfosproxy.modbus import powerbrain
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


class CannotListen(OSError):
    """The Modbus TCP port could not be opened."""


class PowerBrainModbusServer:
    """A Power Brain on Modbus TCP, serving a model.

    The model needs C{update()}, C{registers()} (a value for every register
    in L{BLOCKS}), C{set_modbus_limit(amps)}, C{set_modbus_enabled(flag)},
    C{plug()} and C{unplug()}: L{cfosproxy.wallbox.model.PowerBrainModel}.

    Start and stop may alternate on the same port.

    @ivar writes: the last L{WRITE_LOG} write requests in order, as
        C{(register, [values])}, refused ones too.
    """

    _log = Logger()

    def __init__(self, model, *, host="127.0.0.1", port=4701, unit_id=1):
        self.model = model
        self.host = host
        self.port = port
        self.unit_id = unit_id
        self.writes = []
        self._server = None

    @property
    def running(self):
        """The port is open."""
        return self._server is not None

    async def start(self):
        """Listen; returns once the port is open.

        @raise CannotListen: the port is in use, or the address is not
            this machine's.
        """
        if self._server is not None:
            return
        device = SimDevice(
            id=self.unit_id,
            simdata=[
                SimData(first, count=count, datatype=DataType.REGISTERS)
                for first, count in BLOCKS
            ],
            action=self._access,
        )
        server = ModbusTcpServer(
            device, address=(self.host, self.port), trace_pdu=self._trace
        )
        try:
            await server.serve_forever(background=True)
        except RuntimeError:
            raise CannotListen(
                "cannot listen on {}:{}: {}".format(
                    self.host, self.port, _bind_error(self.host, self.port) or "unknown reason"
                )
            ) from None
        self._server = server
        self._log.info(
            "Modbus TCP server on {host}:{port}, unit id {unit_id}",
            host=self.host,
            port=self.port,
            unit_id=self.unit_id,
        )

    async def stop(self):
        """Close the port and every connection (idempotent)."""
        if self._server is not None:
            server, self._server = self._server, None
            await server.shutdown()

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

    # -- pymodbus hooks --------------------------------------------------------

    def _trace(self, sending, pdu):
        # Requests as they arrive, also those that pymodbus refuses itself
        # (a register the device does not have) before _access sees them.
        if not sending:
            if pdu.function_code == READ_HOLDING_REGISTERS:
                self.received(pdu.function_code, pdu.address, pdu.count, None)
            elif pdu.function_code in WRITE_FUNCTIONS:
                address = getattr(pdu, "write_address", pdu.address)
                values = list(getattr(pdu, "write_registers", pdu.registers))
                self.received(pdu.function_code, address, len(values), values)
        return pdu

    async def _access(self, function_code, start, address, count, current, values):
        # pymodbus keeps its own copy of the registers (current, from
        # start); the model is the truth: copied in on a read, told on a
        # write.
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


def _bind_error(host, port):
    # pymodbus only logs why it could not listen and raises a bare
    # RuntimeError; binding once ourselves, as asyncio does (SO_REUSEADDR),
    # finds the reason to tell the operator.
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as error:
        return error.strerror or str(error)
    return None


def _check_free(host, port):
    """Raise L{CannotListen} when C{host:port} cannot be listened on now."""
    reason = _bind_error(host, port)
    if reason is not None:
        raise CannotListen("cannot listen on Modbus TCP {}:{}: {}".format(host, port, reason))


class ModbusServerService(service.Service):
    """Runs a L{PowerBrainModbusServer} for the model in a twistd daemon.

    pymodbus needs the asyncio loop running, and twistd starts services
    before the reactor runs: the server starts on the reactor's first turn.

    A port that is already taken fails the start at once (L{ListenError}
    from C{startService}, naming C{where}, so twistd exits non-zero): the port is tried with
    a socket of our own before the reactor runs. Should opening fail later
    all the same (a race with another process), that is logged (critical,
    with the reason) and the reactor is stopped: a virtual wallbox without
    its Modbus port is of no use.

    @ivar server: the L{PowerBrainModbusServer}.
    """

    _log = Logger()

    def __init__(
        self, model, *, host="127.0.0.1", port=4701, unit_id=1, reactor=None,
        where="[modbus] listen",
    ):
        if reactor is None:
            # Imported here: importing a module must not install a reactor.
            from twisted.internet import reactor
        self.server = PowerBrainModbusServer(model, host=host, port=port, unit_id=unit_id)
        self._reactor = reactor
        self._where = where
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
                "no Modbus server, stopping: {error}", error=failure.getErrorMessage()
            )
        else:
            self._log.failure("no Modbus server, stopping", failure)
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

