"""The cFos Power Brain register map: decoding and the limit register."""

import pytest

from cfosproxy.modbus import powerbrain
from cfosproxy.modbus.powerbrain import (
    Reading,
    decode_reading,
    decode_state,
    decode_string,
    decode_u32,
    decode_u64,
    limit_register,
)


def test_u32_high_word_first():
    """Two registers are one unsigned 32 bit value, high word first, up
    to the largest value."""
    assert decode_u32([0x0001, 0x0002]) == 65538
    assert decode_u32([0, 11000]) == 11000
    assert decode_u32([0xFFFF, 0xFFFF]) == 2**32 - 1


def test_u64_above_32_bits():
    """Energy counts past 2^32 Wh: all four words count, high first."""
    assert decode_u64([0, 1, 0, 5]) == 2**32 + 5
    assert decode_u64([0x1234, 0x5678, 0x9ABC, 0xDEF0]) == 0x123456789ABCDEF0
    assert decode_u64([0, 0, 0, 0]) == 0


def test_wrong_number_of_registers():
    """A short or long read is an error, not a wrong number."""
    with pytest.raises(ValueError):
        decode_u32([1])
    with pytest.raises(ValueError):
        decode_u64([1, 2, 3])


def test_string_with_padding():
    """A string is two characters per word, the first in the high byte;
    NUL padding, an odd length and padding spaces are stripped."""
    assert decode_string([0x5042, 0x2D31, 0x3233, 0, 0, 0, 0, 0]) == "PB-123"
    assert decode_string([0x4142, 0x4300, 0, 0]) == "ABC"
    assert decode_string([0x2041, 0x4220, 0x2020]) == "AB"
    assert decode_string([0, 0]) == ""


def test_state_is_the_low_byte():
    """The state is the low byte of 8092; a high byte set changes nothing."""
    for code, letter in powerbrain.STATES.items():
        assert decode_state(0xAB00 | code) == letter
    assert decode_state(0x0201) == "B"
    assert decode_state(0x0102) == "C"


def test_unknown_state_is_an_error():
    """A state value the map does not know counts as F (error)."""
    assert decode_state(0x0007) == "F"
    assert decode_state(0x00FF) == "F"


def test_ocpp_status():
    """Each state shows as the OCPP status DESIGN names: A Available,
    B Preparing, C and D Charging, E and F Faulted."""
    statuses = {
        letter: Reading(letter, True, 0, 0, (0.0, 0.0, 0.0)).status
        for letter in "ABCDEF"
    }
    assert statuses == {
        "A": "Available",
        "B": "Preparing",
        "C": "Charging",
        "D": "Charging",
        "E": "Faulted",
        "F": "Faulted",
    }


def test_reading_from_both_blocks():
    """The 3 registers from 8092 and the 12 from 8058 give every value of
    a reading: state, enable, limit, energy, power, currents in A."""
    control = [0x0201, 160, 1]
    meter = [0, 1, 0, 7, 0, 11040, 0, 160, 0, 159, 0, 1]
    assert decode_reading(control, meter) == Reading(
        state="B",
        enabled=True,
        energy_wh=2**32 + 7,
        power_w=11040,
        currents=(16.0, 15.9, 0.1),
        limit_amps=16.0,
    )
    assert not decode_reading([2, 0, 0], [0] * 12).enabled


def test_tenths_of_an_ampere():
    """The limit is written in 0.1 A."""
    assert limit_register(16) == 160
    assert limit_register(6.0) == 60
    assert limit_register(0) == 0


def test_rounded_down():
    """Fractions below 0.1 A are cut off, never rounded up, and binary
    floating point does not lose a tenth (2.3 A is 23)."""
    assert limit_register(10.09) == 100
    assert limit_register(10.99) == 109
    assert limit_register(2.3) == 23
    assert limit_register(0.3) == 3
    assert limit_register(0.05) == 0


def test_clamped():
    """Negative and NaN become 0, anything past the register's range 65535."""
    assert limit_register(-1) == 0
    assert limit_register(float("nan")) == 0
    assert limit_register(float("-inf")) == 0
    assert limit_register(6553.5) == 65535
    assert limit_register(100000) == 65535
    assert limit_register(float("inf")) == 65535
