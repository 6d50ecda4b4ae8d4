"""The cFos Power Brain's Modbus register map, and how to read and write it.

Pure: no I/O. Holding registers, big-endian words (the high word first) and
big-endian bytes within a word, as the Power Brain's documentation gives them.
L{cfosproxy.modbus.wallbox} talks to the device; L{cfosproxy.wallbox} plays one.
"""

import math
from dataclasses import dataclass

# Charging state, low byte (see STATES); the high byte is not part of it.
STATE = 8092
# Charging current limit in 0.1 A (written by the manager).
CURRENT_LIMIT = 8093
# Charging enable, 1 or 0 (written by the manager).
ENABLE = 8094
# Energy in Wh, unsigned 64 bit: 4 registers.
ENERGY = 8058
# Active power in W, unsigned 32 bit: 2 registers.
POWER = 8062
# Current of L1, L2, L3 in 0.1 A, unsigned 32 bit: 2 registers each.
CURRENTS = (8064, 8066, 8068)
# Serial number, a string in 8 registers.
SERIAL = 8008
SERIAL_COUNT = 8

# What one poll reads: STATE..ENABLE, and ENERGY..the last current.
CONTROL_BLOCK = (STATE, 3)
METER_BLOCK = (ENERGY, 12)

# IEC 61851 states by the low byte of STATE.
STATES = {0: "A", 1: "B", 2: "C", 3: "D", 4: "E", 5: "F"}
_STATE_CODES = {letter: code for code, letter in STATES.items()}

# The OCPP 1.6 connector status that each state is shown as.
OCPP_STATUS = {
    "A": "Available",
    "B": "Preparing",
    "C": "Charging",
    "D": "Charging",
    "E": "Faulted",
    "F": "Faulted",
}

MAX_REGISTER = 0xFFFF


@dataclass(frozen=True)
class Reading:
    """What one poll of a Power Brain found.

    @ivar state: IEC 61851 state letter, C{"A"} to C{"F"}.
    @ivar enabled: register 8094 is not 0.
    @ivar energy_wh: the meter, Wh.
    @ivar power_w: active power, W.
    @ivar currents: L1, L2, L3 in amperes.
    @ivar limit_amps: the current limit the device holds (8093), amperes.
    """

    state: str
    enabled: bool
    energy_wh: int
    power_w: int
    currents: tuple[float, float, float]
    limit_amps: float | None = None

    @property
    def status(self):
        """The state as an OCPP 1.6 connector status."""
        return OCPP_STATUS[self.state]


def _words(regs, count):
    regs = list(regs)
    if len(regs) != count:
        raise ValueError("expected {} registers, got {}".format(count, len(regs)))
    value = 0
    for word in regs:
        value = (value << 16) | (word & MAX_REGISTER)
    return value


def decode_u32(regs):
    """An unsigned 32 bit value from 2 registers, high word first."""
    return _words(regs, 2)


def decode_u64(regs):
    """An unsigned 64 bit value from 4 registers, high word first."""
    return _words(regs, 4)


def decode_string(regs):
    """A string from registers, two characters per word, the first in the
    high byte. It ends at the first NUL; padding spaces are stripped."""
    raw = b"".join((word & MAX_REGISTER).to_bytes(2, "big") for word in regs)
    return raw.split(b"\0", 1)[0].decode("ascii", errors="replace").strip()


def _encode_words(value, count):
    value = int(value)
    if not 0 <= value < 1 << (16 * count):
        raise ValueError("{} does not fit in {} registers".format(value, count))
    return [(value >> (16 * (count - 1 - i))) & MAX_REGISTER for i in range(count)]


def encode_u32(value):
    """2 registers, high word first, for an unsigned 32 bit value (the
    inverse of L{decode_u32}); ValueError when it does not fit."""
    return _encode_words(value, 2)


def encode_u64(value):
    """4 registers, high word first, for an unsigned 64 bit value (the
    inverse of L{decode_u64}); ValueError when it does not fit."""
    return _encode_words(value, 4)


def encode_string(text, count):
    """C{count} registers holding the ASCII C{text}, two characters per word,
    NUL padded (the inverse of L{decode_string}).

    ValueError when the text is not ASCII or longer than C{2 * count}
    characters: a cut-off serial number would name another device.
    """
    raw = text.encode("ascii")
    if len(raw) > 2 * count:
        raise ValueError("{!r} is longer than {} characters".format(text, 2 * count))
    raw = raw.ljust(2 * count, b"\0")
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


def encode_state(letter):
    """The low byte of register 8092 for a state letter C{"A"}..C{"F"}."""
    return _STATE_CODES[letter]


def decode_state(word):
    """The state letter from register 8092 (its low byte).

    An unknown value counts as C{"F"} (error): the manager grants nothing to
    a device in a state it does not understand, which is the safe side.
    """
    return STATES.get(word & 0xFF, "F")


def decode_current(regs):
    """A current in amperes from 2 registers in 0.1 A."""
    return decode_u32(regs) / 10


def decode_reading(control, meter):
    """A L{Reading} from the 3 registers at 8092 and the 12 at 8058."""
    control = list(control)
    meter = list(meter)
    if len(control) != CONTROL_BLOCK[1] or len(meter) != METER_BLOCK[1]:
        raise ValueError("incomplete registers")
    return Reading(
        state=decode_state(control[0]),
        enabled=control[2] != 0,
        energy_wh=decode_u64(meter[0:4]),
        power_w=decode_u32(meter[4:6]),
        currents=tuple(decode_current(meter[i : i + 2]) for i in (6, 8, 10)),
        limit_amps=control[1] / 10,
    )


def limit_register(amps):
    """The value of register 8093 for a limit of C{amps}: 0.1 A units,
    rounded down (never above what was asked), clamped to 0..65535."""
    amps = float(amps)
    if math.isnan(amps) or amps <= 0:
        return 0
    if math.isinf(amps):
        return MAX_REGISTER
    # round() first: 2.3 * 10 is 22.999999999999996 in binary floating point,
    # and 2.3 A must give 23.
    return min(MAX_REGISTER, math.floor(round(amps * 10, 6)))
