"""A cFos Power Brain for tests: the virtual wallbox's Modbus server
(L{cfosproxy.wallbox.modbusserver}) in this process, with registers a test
sets directly instead of a simulated car.

It has the register map of L{cfosproxy.modbus.powerbrain} plus the virtual
wallbox's test register 8200 (any other register gets "illegal data
address"), takes writes of 8093, 8094 and 8200 only (as the virtual wallbox
does), logs every read and write request, and
can be told to refuse reads or writes of one register. It runs on the
asyncio loop of the test (Twisted's asyncio reactor in these tests).
"""

import socket

from pymodbus.constants import ExcCodes

from cfosproxy.modbus import powerbrain
from cfosproxy.wallbox.model import TEST_CAR
from cfosproxy.wallbox.modbusserver import BLOCKS, PowerBrainModbusServer


def free_port():
    """A loopback TCP port that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RegisterMemory:
    """The model the server serves: a plain C{{register: value}} dict that
    tests set as they like (also states D, E, F), and that writes land in."""

    def __init__(self, registers):
        self._registers = registers

    def update(self):
        pass

    def registers(self):
        return self._registers

    def set_modbus_limit(self, amps):
        self._registers[powerbrain.CURRENT_LIMIT] = powerbrain.limit_register(amps)

    def set_modbus_enabled(self, enabled):
        self._registers[powerbrain.ENABLE] = int(enabled)

    def plug(self):
        self._registers[TEST_CAR] = 1

    def unplug(self):
        self._registers[TEST_CAR] = 0


class PowerBrainServer(PowerBrainModbusServer):
    """One Power Brain on C{127.0.0.1:port}, unit id 1, all registers 0.

    Stop and start again keeps the port and the registers, as a device that
    is unplugged and plugged in again.

    @ivar registers: C{{register: value}}, the device's memory; what a client
        wrote is here too.
    @ivar writes: every write request in order, as C{(register, [values])}.
    @ivar reads: every read of holding registers, as C{(register, count)}.
    """

    def __init__(self, port=None, unit_id=1):
        self.registers = {first + i: 0 for first, count in BLOCKS for i in range(count)}
        super().__init__(
            RegisterMemory(self.registers),
            host="127.0.0.1",
            port=port or free_port(),
            unit_id=unit_id,
        )
        self.reads = []
        self._failing = None
        self._refusing = None

    @property
    def address(self):
        """C{host:port}, as a wallbox's C{address} in the configuration."""
        return "127.0.0.1:{}".format(self.port)

    # -- what the device shows -------------------------------------------------

    def set_state(self, letter, high_byte=0):
        """Charging state C{"A"}..C{"F"}; the high byte of 8092 is noise the
        reader must ignore."""
        self.registers[powerbrain.STATE] = (high_byte << 8) | powerbrain.encode_state(letter)

    def set_energy(self, wh):
        self._set_words(powerbrain.ENERGY, powerbrain.encode_u64(wh))

    def set_power(self, w):
        self._set_words(powerbrain.POWER, powerbrain.encode_u32(w))

    def set_currents(self, a1, a2, a3):
        """Currents in amperes (stored in 0.1 A)."""
        for register, amps in zip(powerbrain.CURRENTS, (a1, a2, a3)):
            self._set_words(register, powerbrain.encode_u32(round(amps * 10)))

    def set_serial(self, text):
        """The serial number, NUL padded to 8 registers."""
        self._set_words(powerbrain.SERIAL, powerbrain.encode_string(text, powerbrain.SERIAL_COUNT))

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

    def _set_words(self, first, words):
        for i, word in enumerate(words):
            self.registers[first + i] = word

    # -- server hooks ----------------------------------------------------------

    def received(self, function_code, address, count, values):
        super().received(function_code, address, count, values)
        if values is None:
            self.reads.append((address, count))

    def refusal(self, address, count, values):
        failing = self._refusing if values is not None else self._failing
        if failing is not None and address <= failing < address + count:
            return ExcCodes.ILLEGAL_ADDRESS
        return super().refusal(address, count, values)
