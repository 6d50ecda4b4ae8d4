"""SunSpec meters: finding the meter model, and its phase currents.

Pure: no I/O. A SunSpec device has holding registers (function code 3)
that begin with the marker C{SunS} (0x5375 0x6E53) at register 40000, or at
0 or 50000 (L{BASES}, tried in that order). Models follow the marker, each
as its ID, its length L and L registers of body, until the end model with
ID 0xFFFF. The meter models 201 (single phase), 202 (split phase), 203
(wye) and 204 (delta) share one layout of L = 105 registers: integers
(int16) with a scale factor (sunssf, value = integer * 10 ** scale factor),
0x8000 meaning "not implemented". The offsets below are those of the
SunSpec Alliance's model definitions (the sunspec/models repository,
json/model_201.json to json/model_204.json; the common model from
json/model_1.json), counted from the first register after ID and L.

The SunSpec Alliance's own library, pysunspec2, is maintained but not
used: it brings its own synchronous Modbus client (and requires pyserial),
whereas meters are polled with pymodbus on Twisted's asyncio loop, and its
generic point objects record decoding problems as text instead of raising
them. The few registers needed here sit at the same fixed offsets in all
four models, so they are decoded from the official definitions directly.
"""

from dataclasses import dataclass

from cfosproxy.modbus.meterdata import VOLTAGE, MeterDataError, signed_current
from cfosproxy.modbus.powerbrain import encode_string

READ_HOLDING_REGISTERS = 3

MARKER = (0x5375, 0x6E53)  # "SunS"
BASES = (40000, 0, 50000)

# Every model begins with its ID and its length L (the registers after them).
HEADER_LENGTH = 2
END_ID = 0xFFFF
# A chain with more models than this has no end: it is not followed further.
MAX_MODELS = 64
LAST_REGISTER = 0xFFFF

COMMON_ID = 1
COMMON_LENGTH = 66

METER_MODELS = {201: "single phase", 202: "split phase", 203: "wye", 204: "delta"}
BODY_LENGTH = 105

# Offsets in the body of a meter model (model_201.json .. model_204.json).
A = 0  # total current
APH = (1, 2, 3)  # AphA, AphB, AphC
A_SF = 4
PHV = 5  # PhV, then PhVphA, PhVphB, PhVphC; line to line voltages at 9..12
V_SF = 13
HZ = 14
HZ_SF = 15
W = 16  # total active power
WPH = (17, 18, 19)  # WphA, WphB, WphC
W_SF = 20
# VA, VAR and PF follow at 21..35 (four values and a scale factor each),
# then the energies: acc32 values of two registers, their scale factors at
# 52 (TotWh_SF, mandatory), 69 and 102, and the event flags (bitfield32).
ACC32 = tuple(range(36, 52)) + tuple(range(53, 69)) + tuple(range(70, 102))
TOTWH_SF = 52
EVT = 103

PHASE_NAMES = ("AphA", "AphB", "AphC")

# The phases a model has. Model 201 requires only AphA, so B and C may be
# "not implemented"; a split-phase service (202) has two legs, A and B.
PHASES = {201: (0,), 202: (0, 1), 203: (0, 1, 2), 204: (0, 1, 2)}

NOT_IMPLEMENTED = 0x8000  # int16 and sunssf
SCALE_FACTORS = range(-10, 11)
INT16_MAX = 0x7FFF

# Where L{image} puts the meter model's header, counted from the base.
IMAGE_METER_OFFSET = len(MARKER) + HEADER_LENGTH + COMMON_LENGTH


@dataclass(frozen=True)
class MeterModel:
    """Where a meter model was found.

    @ivar model_id: 201 .. 204.
    @ivar address: the first register of its body (after ID and L).
    """

    model_id: int
    address: int

    @property
    def block(self):
        """(first register, count) of the body, as one read."""
        return (self.address, BODY_LENGTH)


def is_marker(registers):
    """Whether the two registers read at a base are the C{SunS} marker."""
    return tuple(registers) == MARKER


def next_header(base, headers):
    """The register of the header after C{headers}, the (ID, L) headers
    read so far in the chain that starts at C{base}."""
    address = base + len(MARKER)
    for _, length in headers:
        address += HEADER_LENGTH + length
    return address


def find_meter(base, headers):
    """The first meter model in the chain of models at C{base}.

    Read the chain one header at a time: while this answers None, read the
    two registers at L{next_header}C{(base, headers)} and add them.

    @param headers: the (ID, L) headers read so far, in order, the first
        one right after the marker.
    @return: a L{MeterModel}, or None when the headers so far hold none and
        the chain goes on.
    @raise MeterDataError: the chain ended (ID 0xFFFF) without a meter
        model, runs past the last register or on without end, or the meter
        model's L is not L{BODY_LENGTH}.
    """
    address = base + len(MARKER)
    seen = []
    for model_id, length in headers:
        if model_id == END_ID:
            raise MeterDataError(
                "no meter model (201..204) among the SunSpec models at {}: {}".format(
                    base, ", ".join(str(model) for model in seen) or "none"
                )
            )
        if model_id in METER_MODELS:
            if length != BODY_LENGTH:
                raise MeterDataError(
                    "SunSpec model {} at {}: length {} instead of {}".format(
                        model_id, address, length, BODY_LENGTH
                    )
                )
            return MeterModel(model_id, address + HEADER_LENGTH)
        seen.append(model_id)
        address += HEADER_LENGTH + length
    if address + HEADER_LENGTH - 1 > LAST_REGISTER:
        raise MeterDataError(
            "the SunSpec models at {} run past register {}".format(base, LAST_REGISTER)
        )
    if len(seen) >= MAX_MODELS:
        raise MeterDataError(
            "the SunSpec models at {} have no end after {} models".format(base, len(seen))
        )
    return None


def _int16(word):
    word &= 0xFFFF
    return word - 0x10000 if word & 0x8000 else word


def _scale_factor(model_id, body, offset, name):
    value = _int16(body[offset])
    if value not in SCALE_FACTORS:
        raise MeterDataError(
            "SunSpec model {}: {} = {} is outside {}..{}".format(
                model_id,
                name,
                "0x8000 (not implemented)" if value == _int16(NOT_IMPLEMENTED) else value,
                SCALE_FACTORS[0],
                SCALE_FACTORS[-1],
            )
        )
    return value


def _scaled(value, scale_factor):
    # Dividing by a power of ten, not multiplying by its inverse: 123 with
    # a scale factor of -1 must be 12.3, not 12.300000000000001.
    if scale_factor >= 0:
        return float(value * 10**scale_factor)
    return value / 10**-scale_factor


def decode(model_id, body):
    """The signed currents of L1, L2, L3 (phases A, B, C) from the body of
    a meter model: C{AphA}.. scaled by C{A_SF}, with the sign of C{WphA}..

    A phase power that is not implemented gives no sign: the current counts
    as drawn from the grid. A phase the model does not have (B and C of
    model 201, C of 202) counts as 0 A when not implemented.

    @param body: the L{BODY_LENGTH} registers after the model's ID and L.
    @raise MeterDataError: not a meter model, a body of the wrong length,
        C{A_SF} or C{W_SF} outside -10..10, or a phase current of the
        model's phases not implemented.
    """
    if model_id not in METER_MODELS:
        raise MeterDataError("SunSpec model {} is no meter model (201..204)".format(model_id))
    body = list(body)
    if len(body) != BODY_LENGTH:
        raise MeterDataError(
            "SunSpec model {}: {} registers instead of {}".format(
                model_id, len(body), BODY_LENGTH
            )
        )
    a_sf = _scale_factor(model_id, body, A_SF, "A_SF")
    _scale_factor(model_id, body, W_SF, "W_SF")
    currents = []
    for phase, (current_at, power_at) in enumerate(zip(APH, WPH)):
        current = _int16(body[current_at])
        if current == _int16(NOT_IMPLEMENTED):
            if phase not in PHASES[model_id]:
                currents.append(0.0)
                continue
            raise MeterDataError(
                "SunSpec model {}: {} is 0x8000 (not implemented)".format(
                    model_id, PHASE_NAMES[phase]
                )
            )
        power = _int16(body[power_at])
        currents.append(
            signed_current(
                _scaled(current, a_sf), None if power == _int16(NOT_IMPLEMENTED) else power
            )
        )
    return tuple(currents)


def _fit(values, smallest):
    """The smallest scale factor from C{smallest} up at which every value
    fits in an int16 (0x8000 excluded), and the values scaled to it."""
    for scale_factor in range(smallest, SCALE_FACTORS[-1] + 1):
        if scale_factor <= 0:
            words = [round(value * 10**-scale_factor) for value in values]
        else:
            words = [round(value / 10**scale_factor) for value in values]
        if all(-INT16_MAX <= word <= INT16_MAX for word in words):
            return scale_factor, words
    raise ValueError("{} cannot be shown in SunSpec registers".format(values))


def _word(value):
    return value & 0xFFFF


def encode(model_id, currents, powers=None):
    """The body of meter model C{model_id} for a meter measuring
    C{currents} (amperes of L1, L2, L3, negative = feeding into the grid).

    Only the phases the model has are shown (L{PHASES}); the others are
    "not implemented". Currents get A_SF -2 (0.01 A) unless they need a
    coarser one, powers W_SF 0 likewise; voltages show
    L{cfosproxy.modbus.meterdata.VOLTAGE}, the frequency 50 Hz; apparent and
    reactive power and the power factor are not implemented, the energies
    0.

    @param powers: the active powers of L1, L2, L3 in W; by default each
        current times L{cfosproxy.modbus.meterdata.VOLTAGE}, keeping its
        sign. Given, they alone decide the sign of the currents read back.
    @raise ValueError: not a meter model, or a value that does not fit
        (NaN, or beyond what a scale factor of 10 can show).
    """
    if model_id not in METER_MODELS:
        raise ValueError("SunSpec model {} is no meter model (201..204)".format(model_id))
    currents = tuple(currents)
    if powers is None:
        powers = tuple(current * VOLTAGE for current in currents)
    phases = PHASES[model_id]
    try:
        magnitudes = [abs(currents[phase]) for phase in phases]
        phase_powers = [powers[phase] for phase in phases]
        a_sf, current_words = _fit([sum(magnitudes)] + magnitudes, -2)
        w_sf, power_words = _fit([sum(phase_powers)] + phase_powers, 0)
    except (ValueError, OverflowError):
        raise ValueError(
            "currents {} and powers {} cannot be shown in SunSpec registers".format(
                currents, powers
            )
        ) from None

    body = [NOT_IMPLEMENTED] * BODY_LENGTH
    body[A] = _word(current_words[0])
    body[W] = _word(power_words[0])
    for phase, current, power in zip(phases, current_words[1:], power_words[1:]):
        body[APH[phase]] = _word(current)
        body[WPH[phase]] = _word(power)
        body[PHV + 1 + phase] = round(VOLTAGE)
    body[A_SF] = _word(a_sf)
    body[W_SF] = _word(w_sf)
    body[PHV] = round(VOLTAGE)
    body[V_SF] = 0
    body[HZ] = 50
    body[HZ_SF] = 0
    for offset in ACC32 + (EVT, EVT + 1):
        # An accumulator that is not implemented is 0; so are no events.
        body[offset] = 0
    body[TOTWH_SF] = 0
    return body


def common_model(manufacturer="cfosproxy", model="meter", serial="", device_address=1):
    """The common model 1 (ID, L and body), as every SunSpec device has it
    first: manufacturer, model, options, version, serial number, device
    address and a pad register."""
    body = (
        encode_string(manufacturer, 16)
        + encode_string(model, 16)
        + encode_string("", 8)  # options
        + encode_string("", 8)  # version
        + encode_string(serial, 16)
        + [device_address, NOT_IMPLEMENTED]  # DA, pad
    )
    return [COMMON_ID, COMMON_LENGTH] + body


def image(model_id, currents, powers=None, base=40000):
    """The holding registers of a SunSpec meter: the marker at C{base},
    the common model, meter model C{model_id} (L{encode}) at
    C{base + IMAGE_METER_OFFSET}, and the end model.

    @return: C{{register: value}}.
    """
    words = (
        list(MARKER)
        + common_model()
        + [model_id, BODY_LENGTH]
        + encode(model_id, currents, powers)
        + [END_ID, 0]
    )
    return {base + offset: word for offset, word in enumerate(words)}
