"""The Eastron SDM630's phase currents and powers, as Modbus registers.

Pure: no I/O. Input registers (function code 4), each value an IEEE-754
float32 in two registers, the high word first:

  - 0x0006, 0x0008, 0x000A: current of L1, L2, L3 in A, never negative;
  - 0x000C, 0x000E, 0x0010: active power of L1, L2, L3 in W, negative
    while the phase feeds into the grid.

One read of L{BLOCK} (0x0006..0x0011) gets both. The signed current of a
phase is its current with the sign of its power
(L{cfosproxy.modbus.meterdata.signed_current}).
"""

import struct

from cfosproxy.modbus.meterdata import VOLTAGE, MeterDataError, signed_current

READ_INPUT_REGISTERS = 4

CURRENTS = (0x0006, 0x0008, 0x000A)
POWERS = (0x000C, 0x000E, 0x0010)

# What one poll reads: (first register, count).
BLOCK = (CURRENTS[0], POWERS[-1] + 2 - CURRENTS[0])


def decode_float(high, low):
    """A float32 from two registers, the high word first."""
    return struct.unpack(">f", struct.pack(">HH", high & 0xFFFF, low & 0xFFFF))[0]


def encode_float(value):
    """The two registers (high word first) of C{value} as a float32.

    @raise ValueError: the value is too large for a float32.
    """
    try:
        raw = struct.pack(">f", value)
    except OverflowError:
        raise ValueError("{!r} does not fit in a float32".format(value)) from None
    return list(struct.unpack(">HH", raw))


def decode(registers):
    """The signed currents of L1, L2, L3 from the registers of L{BLOCK}.

    Values are passed on as the meter gives them, NaN and infinity too:
    whether a reading is plausible is for the caller to judge.

    @raise MeterDataError: not exactly C{BLOCK[1]} registers.
    """
    registers = list(registers)
    first, count = BLOCK
    if len(registers) != count:
        raise MeterDataError(
            "{} registers instead of {} from input register {}".format(
                len(registers), count, first
            )
        )

    def value(register):
        offset = register - first
        return decode_float(registers[offset], registers[offset + 1])

    return tuple(
        signed_current(value(current), value(power)) for current, power in zip(CURRENTS, POWERS)
    )


def encode(currents_signed, powers=None):
    """The registers of L{BLOCK} for a meter measuring C{currents_signed}
    (amperes of L1, L2, L3, negative = feeding into the grid).

    @param powers: the active powers of L1, L2, L3 in W; by default each
        current times L{cfosproxy.modbus.meterdata.VOLTAGE}, so the sign is kept. Given, they alone
        decide the sign of the currents read back.
    @return: C{{register: value}} for every register of L{BLOCK}.
    """
    currents_signed = tuple(currents_signed)
    if powers is None:
        powers = tuple(current * VOLTAGE for current in currents_signed)
    registers = {}
    for register, current in zip(CURRENTS, currents_signed):
        registers[register], registers[register + 1] = encode_float(abs(current))
    for register, power in zip(POWERS, powers):
        registers[register], registers[register + 1] = encode_float(power)
    return registers
