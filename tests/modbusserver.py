"""A cFos Power Brain for tests: a real pymodbus TCP server in this process.

It holds the register map of L{cfosproxy.powerbrain} (and nothing else, so a
read or write of any other register gets "illegal data address"), logs every
read and write, and can be told to refuse reads of one register. It runs on
the asyncio loop of the test (Twisted's asyncio reactor in these tests).
"""

import socket

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from cfosproxy import powerbrain

READ_HOLDING_REGISTERS = 3
# Function codes that write holding registers: single, multiple, read/write.
WRITES = (6, 16, 23)

# The blocks the server answers: (first register, count).
BLOCKS = (
    (powerbrain.SERIAL, powerbrain.SERIAL_COUNT),
    powerbrain.METER_BLOCK,
    powerbrain.CONTROL_BLOCK,
)


def free_port():
    """A loopback TCP port that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PowerBrainServer:
    """One Power Brain on C{127.0.0.1:port}, unit id 1.

    Stop and start again keeps the port and the registers, as a device that
    is unplugged and plugged in again.

    @ivar registers: C{{register: value}}, the device's memory; what a client
        wrote is here too.
    @ivar writes: every write in order, as C{(register, [values])}.
    @ivar reads: every read of holding registers, as C{(register, count)}.
    """

    def __init__(self, port=None, unit_id=1):
        self.port = port or free_port()
        self.unit_id = unit_id
        self.registers = {
            first + i: 0 for first, count in BLOCKS for i in range(count)
        }
        self.writes = []
        self.reads = []
        self._failing = None
        self._refusing = None
        self._server = None

    @property
    def address(self):
        """C{host:port}, as a wallbox's C{address} in the configuration."""
        return "127.0.0.1:{}".format(self.port)

    async def start(self):
        """Listen; returns once the port is open."""
        device = SimDevice(
            id=self.unit_id,
            simdata=[
                SimData(first, count=count, datatype=DataType.REGISTERS)
                for first, count in BLOCKS
            ],
            action=self._access,
        )
        self._server = ModbusTcpServer(
            device, address=("127.0.0.1", self.port), trace_pdu=self._trace
        )
        await self._server.serve_forever(background=True)

    async def stop(self):
        """Close the port and every connection (idempotent)."""
        if self._server is not None:
            server, self._server = self._server, None
            await server.shutdown()

    @property
    def running(self):
        return self._server is not None

    # -- what the device shows -------------------------------------------------

    def set_state(self, letter, high_byte=0):
        """Charging state C{"A"}..C{"F"}; the high byte of 8092 is noise the
        reader must ignore."""
        code = {v: k for k, v in powerbrain.STATES.items()}[letter]
        self.registers[powerbrain.STATE] = (high_byte << 8) | code

    def set_energy(self, wh):
        self._set_words(powerbrain.ENERGY, wh, 4)

    def set_power(self, w):
        self._set_words(powerbrain.POWER, w, 2)

    def set_currents(self, a1, a2, a3):
        """Currents in amperes (stored in 0.1 A)."""
        for register, amps in zip(powerbrain.CURRENTS, (a1, a2, a3)):
            self._set_words(register, round(amps * 10), 2)

    def set_serial(self, text):
        """The serial number, NUL padded to 8 registers."""
        raw = text.encode("ascii").ljust(2 * powerbrain.SERIAL_COUNT, b"\0")
        for i in range(powerbrain.SERIAL_COUNT):
            self.registers[powerbrain.SERIAL + i] = int.from_bytes(raw[2 * i : 2 * i + 2], "big")

    def fail_reads(self, register):
        """Answer every read that includes C{register} with a Modbus
        exception (illegal data address); None to stop."""
        self._failing = register

    def fail_writes(self, register):
        """Answer every write to C{register} with a Modbus exception
        (illegal data address); None to stop."""
        self._refusing = register

    @property
    def limit(self):
        """Register 8093 (0.1 A)."""
        return self.registers[powerbrain.CURRENT_LIMIT]

    @property
    def enable(self):
        """Register 8094."""
        return self.registers[powerbrain.ENABLE]

    def _set_words(self, first, value, count):
        for i in range(count):
            shift = 16 * (count - 1 - i)
            self.registers[first + i] = (value >> shift) & 0xFFFF

    # -- pymodbus hooks --------------------------------------------------------

    def _trace(self, sending, pdu):
        # Every request as it arrives, also one for a register the device
        # does not have (which the datastore refuses before _access).
        if not sending:
            if pdu.function_code == READ_HOLDING_REGISTERS:
                self.reads.append((pdu.address, pdu.count))
            elif pdu.function_code in WRITES:
                address = getattr(pdu, "write_address", pdu.address)
                values = getattr(pdu, "write_registers", pdu.registers)
                self.writes.append((address, list(values)))
        return pdu

    async def _access(self, function_code, start, address, count, current, values):
        # pymodbus keeps its own copy of the registers (current, from
        # start); self.registers is the truth, copied in on every access.
        if values is None:
            failing = self._failing
            if (
                function_code == READ_HOLDING_REGISTERS
                and failing is not None
                and address <= failing < address + count
            ):
                return ExcCodes.ILLEGAL_ADDRESS
            for i in range(count):
                current[address - start + i] = self.registers[address + i]
            return None
        refusing = self._refusing
        if refusing is not None and address <= refusing < address + count:
            return ExcCodes.ILLEGAL_ADDRESS
        for i, value in enumerate(values):
            self.registers[address + i] = value
        return None
