"""What serving a device on Modbus TCP takes, whatever the device: a pymodbus
C{ModbusTcpServer} around a C{SimDevice}, started and stopped on one port,
and the reason when the port cannot be opened.

L{SimDeviceServer} is the base of
L{cfosproxy.modbus.meterserver.MeterModbusServer} and
L{cfosproxy.wallbox.modbusserver.PowerBrainModbusServer}; they say which
registers the device has, what an access does and what a request that
arrives is to them. pymodbus is asyncio only: the server is created and
awaited on the running asyncio loop (Twisted's asyncio reactor in the
daemon and tests).
"""

import socket

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from twisted.logger import Logger


class CannotListen(OSError):
    """The Modbus TCP port could not be opened."""


class SimDeviceServer:
    """One device on Modbus TCP; start and stop may alternate on the same
    port.

    A subclass says which registers the device has (L{_blocks}), answers
    every access (L{_access}), hears every request as it arrives
    (L{_trace}), and says what is logged once the port is open
    (L{_listening}).
    """

    _log = Logger()

    def __init__(self, *, host, port, unit_id):
        self.host = host
        self.port = port
        self.unit_id = unit_id
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
                for first, count in self._blocks()
            ],
            action=self._access,
        )
        server = ModbusTcpServer(device, address=(self.host, self.port), trace_pdu=self._trace)
        try:
            await server.serve_forever(background=True)
        except RuntimeError:
            raise CannotListen(
                "cannot listen on {}:{}: {}".format(
                    self.host, self.port, bind_error(self.host, self.port) or "unknown reason"
                )
            ) from None
        self._server = server
        self._listening()

    async def stop(self):
        """Close the port and every connection (idempotent)."""
        if self._server is not None:
            server, self._server = self._server, None
            await server.shutdown()

    # -- what a subclass says --------------------------------------------------

    def _blocks(self):
        """The registers the device has, as (first register, count) pairs;
        any other register is "illegal data address"."""
        raise NotImplementedError()

    def _listening(self):
        """The port was opened: log what listens where."""
        raise NotImplementedError()

    def _trace(self, sending, pdu):
        """pymodbus's C{trace_pdu} hook: every PDU received (C{sending}
        false) or sent, also requests that pymodbus refuses itself (a
        register the device does not have) before L{_access} sees them.

        @return: the PDU to go on with.
        """
        return pdu

    async def _access(self, function_code, start, address, count, current, values):
        """pymodbus's C{SimDevice} action: an access of C{count} registers
        from C{address}, C{values} None for a read. pymodbus keeps its own
        copy of the registers in C{current}, from register C{start}.

        @return: a Modbus exception code to answer with, or None to answer
            from C{current} (a read) or take the write.
        """
        raise NotImplementedError()


def bind_error(host, port):
    """Why C{host:port} cannot be listened on now, or None when it can.

    pymodbus only logs why it could not listen and raises a bare
    RuntimeError; binding once ourselves, as asyncio does (SO_REUSEADDR),
    finds the reason to tell the operator.
    """
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
