"""The meter register maps, without I/O: the SDM630's floats
(L{cfosproxy.modbus.sdm630}) and SunSpec's models 201..204
(L{cfosproxy.modbus.sunspec}), decoded, encoded, and refused when they make
no reading."""

import math

import pytest

from cfosproxy.modbus import sdm630, sunspec
from cfosproxy.modbus.meterdata import MeterDataError, signed_current
from cfosproxy.modbus.powerbrain import decode_string

NAN = float("nan")
INF = float("inf")


def sdm630_block(registers):
    """The registers of one read of the SDM630's block, in order."""
    first, count = sdm630.BLOCK
    return [registers[first + i] for i in range(count)]


def int16(value):
    """A register holding the int16 C{value}."""
    return value & 0xFFFF


def meter_body(currents, powers, a_sf=0, w_sf=0):
    """A meter model body built by hand from the offsets of the SunSpec
    definition (not by L{sunspec.encode}): AphA..AphC at 1..3, A_SF at 4,
    WphA..WphC at 17..19, W_SF at 20; everything else not implemented."""
    body = [0x8000] * 105
    for offset, value in zip((1, 2, 3), currents):
        body[offset] = int16(value)
    for offset, value in zip((17, 18, 19), powers):
        body[offset] = int16(value)
    body[4] = int16(a_sf)
    body[20] = int16(w_sf)
    return body


def registers_at(image, first, count):
    """C{count} registers of an image from C{first} on."""
    return [image[first + i] for i in range(count)]


def walk(image, base):
    """The meter model in an image, found as the poller finds it: one
    header at a time."""
    headers = []
    while (model := sunspec.find_meter(base, headers)) is None:
        headers.append(tuple(registers_at(image, sunspec.next_header(base, headers), 2)))
    return model


# -- the sign ------------------------------------------------------------------


def test_signed_current_takes_the_sign_of_the_power():
    """Negative power makes the current negative, whatever sign the current
    had; zero, positive or unknown (None, NaN) power counts as drawn."""
    assert signed_current(10.0, -2300.0) == -10.0
    assert signed_current(-10.0, 2300.0) == 10.0
    assert signed_current(10.0, 0.0) == 10.0
    assert signed_current(10.0, None) == 10.0
    assert signed_current(10.0, NAN) == 10.0


# -- SDM630 --------------------------------------------------------------------


def test_sdm630_block_is_one_read_of_currents_and_powers():
    """One read of 12 input registers from 0x0006 covers the three currents
    (0x0006/8/A) and the three powers (0x000C/E/10)."""
    assert sdm630.BLOCK == (0x0006, 12)
    assert sdm630.READ_INPUT_REGISTERS == 4
    registers = sdm630.encode((1.0, 2.0, 3.0))
    assert sorted(registers) == list(range(0x0006, 0x0012))


def test_sdm630_floats_are_high_word_first():
    """1.0 A is 0x3F80 0x0000 at register 6, 230 W (the default power of
    1 A) is 0x4366 0x0000 at register 12."""
    registers = sdm630.encode((1.0, 0.0, 0.0))
    assert (registers[0x0006], registers[0x0007]) == (0x3F80, 0x0000)
    assert (registers[0x000C], registers[0x000D]) == (0x4366, 0x0000)
    assert sdm630.decode_float(0x4366, 0x0000) == 230.0


def test_sdm630_round_trip_keeps_the_signs():
    """Encoded and decoded again, signed currents come back: the current
    registers hold the magnitude, the default powers the sign."""
    registers = sdm630.encode((16.0, -5.5, 0.25))
    assert sdm630.decode_float(registers[0x0008], registers[0x0009]) == 5.5
    assert sdm630.decode(sdm630_block(registers)) == (16.0, -5.5, 0.25)


def test_sdm630_sign_comes_from_the_power():
    """Given powers alone decide the sign: export on L1, import on L2 and
    no power on L3 (counted as drawn)."""
    registers = sdm630.encode((10.0, -10.0, 10.0), powers=(-2300.0, 2300.0, 0.0))
    assert sdm630.decode(sdm630_block(registers)) == (-10.0, 10.0, 10.0)


def test_sdm630_nan_and_infinity_pass_through():
    """NaN and infinite currents are decoded as they are: plausibility is
    for the caller."""
    registers = sdm630.encode((NAN, INF, 10000.0))
    l1, l2, l3 = sdm630.decode(sdm630_block(registers))
    assert math.isnan(l1)
    assert l2 == INF
    assert l3 == 10000.0


def test_sdm630_wrong_block_length_raises():
    """A block of 10 registers (or 13) is refused, naming the count."""
    with pytest.raises(MeterDataError, match="10 registers instead of 12"):
        sdm630.decode([0] * 10)
    with pytest.raises(MeterDataError, match="13 registers instead of 12"):
        sdm630.decode([0] * 13)


def test_sdm630_value_too_large_for_a_float32():
    """A value beyond float32 cannot be encoded: ValueError, not a wrong
    register."""
    with pytest.raises(ValueError, match="float32"):
        sdm630.encode((1e40, 0.0, 0.0))


# -- SunSpec: decoding ---------------------------------------------------------


def test_sunspec_decodes_by_the_definition_offsets():
    """A body built by hand from the model definition: AphA 160, AphB 55,
    AphC 0 with A_SF -1; WphA 3680, WphB -1265, WphC 0 → 16 A, -5.5 A, 0 A."""
    body = meter_body((160, 55, 0), (3680, -1265, 0), a_sf=-1)
    assert sunspec.decode(203, body) == (16.0, -5.5, 0.0)


def test_sunspec_scale_factors_scale():
    """123 with A_SF -1 is exactly 12.3; with A_SF 2 it is 12300; W_SF
    does not change the sign."""
    assert sunspec.decode(203, meter_body((123, 123, 123), (1, -1, 1), a_sf=-1)) == (
        12.3,
        -12.3,
        12.3,
    )
    assert sunspec.decode(203, meter_body((123, 0, 0), (1, 0, 0), a_sf=2, w_sf=3))[0] == 12300.0


def test_sunspec_negative_current_register_gets_the_power_sign():
    """A meter that signs its current registers is read by the power's sign
    only: -100 with positive power is drawn."""
    assert sunspec.decode(203, meter_body((-100, 100, 0), (2300, -2300, 0)))[:2] == (
        100.0,
        -100.0,
    )


def test_sunspec_power_not_implemented_counts_as_drawn():
    """Without a phase power (0x8000) there is no sign: the current counts
    as drawn from the grid."""
    body = meter_body((10, 10, 10), (-2300, -2300, -2300))
    body[17] = 0x8000
    assert sunspec.decode(203, body) == (10.0, -10.0, -10.0)


@pytest.mark.parametrize("model_id", [201, 202, 203, 204])
def test_sunspec_round_trip_every_meter_model(model_id):
    """Encoded and decoded, each meter model gives back the currents of the
    phases it has; the others are 0."""
    currents = (16.0, -5.5, 0.25)
    phases = sunspec.PHASES[model_id]
    expected = tuple(currents[phase] if phase in phases else 0.0 for phase in range(3))
    assert sunspec.decode(model_id, sunspec.encode(model_id, currents)) == expected


def test_sunspec_model_201_missing_phases_are_zero():
    """Model 201 with AphB and AphC not implemented: L2 and L3 are 0; but
    an AphB it does give is read."""
    body = meter_body((100, 0, 0), (2300, 0, 0))
    body[2] = body[3] = 0x8000
    assert sunspec.decode(201, body) == (100.0, 0.0, 0.0)
    body[2] = 7
    assert sunspec.decode(201, body) == (100.0, 7.0, 0.0)


def test_sunspec_model_202_missing_phase_c_is_zero():
    """A split-phase meter (202) without AphC reads 0 on L3; without AphB
    it is refused."""
    body = meter_body((10, 20, 0), (1, 1, 0))
    body[3] = 0x8000
    assert sunspec.decode(202, body) == (10.0, 20.0, 0.0)
    body[2] = 0x8000
    with pytest.raises(MeterDataError, match="AphB is 0x8000"):
        sunspec.decode(202, body)


@pytest.mark.parametrize("model_id,phase", [(203, 0), (203, 1), (204, 2), (201, 0)])
def test_sunspec_phase_current_not_implemented_raises(model_id, phase):
    """A phase current the model has, given as 0x8000, is refused and
    named."""
    body = meter_body((10, 10, 10), (1, 1, 1))
    body[1 + phase] = 0x8000
    name = ("AphA", "AphB", "AphC")[phase]
    with pytest.raises(MeterDataError, match="{} is 0x8000 \\(not implemented\\)".format(name)):
        sunspec.decode(model_id, body)


@pytest.mark.parametrize(
    "name,a_sf,w_sf,shown",
    [
        ("A_SF", 11, 0, "11"),
        ("A_SF", -11, 0, "-11"),
        ("A_SF", -32768, 0, "0x8000 \\(not implemented\\)"),
        ("W_SF", 0, 11, "11"),
        ("W_SF", 0, -32768, "0x8000 \\(not implemented\\)"),
    ],
)
def test_sunspec_scale_factor_out_of_range_raises(name, a_sf, w_sf, shown):
    """A scale factor outside -10..10 (also "not implemented") is refused,
    naming it and its value."""
    body = meter_body((10, 10, 10), (1, 1, 1), a_sf=a_sf, w_sf=w_sf)
    with pytest.raises(MeterDataError, match="{} = {} is outside -10..10".format(name, shown)):
        sunspec.decode(203, body)


def test_sunspec_scale_factors_at_the_limits_are_read():
    """-10 and 10 are still scale factors."""
    assert sunspec.decode(203, meter_body((1, 0, 0), (1, 0, 0), a_sf=10, w_sf=-10))[0] == 1e10
    assert sunspec.decode(203, meter_body((1, 0, 0), (1, 0, 0), a_sf=-10))[0] == 1e-10


def test_sunspec_wrong_body_length_raises():
    """A short read (100 registers) or a long one is refused, naming the
    count."""
    body = sunspec.encode(203, (1.0, 2.0, 3.0))
    with pytest.raises(MeterDataError, match="100 registers instead of 105"):
        sunspec.decode(203, body[:100])
    with pytest.raises(MeterDataError, match="106 registers instead of 105"):
        sunspec.decode(203, body + [0])


def test_sunspec_decode_refuses_other_models():
    """Only 201..204 are meter models here (not the float ones, 211..)."""
    with pytest.raises(MeterDataError, match="213 is no meter model"):
        sunspec.decode(213, [0] * 105)


# -- SunSpec: the chain of models ----------------------------------------------


def test_marker():
    """SunS is 0x5375 0x6E53; anything else is not."""
    assert sunspec.is_marker([0x5375, 0x6E53])
    assert not sunspec.is_marker([0x6E53, 0x5375])
    assert not sunspec.is_marker([0, 0])
    assert sunspec.BASES == (40000, 0, 50000)


def test_find_meter_after_the_common_model():
    """Marker at 40000, common model at 40002 (L 66), model 203 at 40070:
    its body starts at 40072."""
    assert sunspec.find_meter(40000, []) is None
    assert sunspec.next_header(40000, []) == 40002
    assert sunspec.find_meter(40000, [(1, 66)]) is None
    assert sunspec.next_header(40000, [(1, 66)]) == 40070
    model = sunspec.find_meter(40000, [(1, 66), (203, 105)])
    assert model == sunspec.MeterModel(203, 40072)
    assert model.block == (40072, 105)


def test_find_meter_passes_other_models():
    """An inverter model (101, L 50) before the meter is skipped; the first
    meter model wins, also at base 0."""
    headers = [(1, 66), (101, 50), (204, 105), (201, 105)]
    assert sunspec.find_meter(0, headers) == sunspec.MeterModel(204, 2 + 68 + 52 + 2)


def test_find_meter_end_without_meter_raises():
    """The end model (0xFFFF) before any meter model: refused, listing the
    models that were there."""
    with pytest.raises(MeterDataError, match="no meter model .* at 40000: 1, 101"):
        sunspec.find_meter(40000, [(1, 66), (101, 50), (0xFFFF, 0)])
    with pytest.raises(MeterDataError, match="at 0: none"):
        sunspec.find_meter(0, [(0xFFFF, 0)])


def test_find_meter_wrong_length_raises():
    """A meter model whose L is not 105 is refused, naming model, register
    and length."""
    with pytest.raises(MeterDataError, match="model 203 at 40070: length 100 instead of 105"):
        sunspec.find_meter(40000, [(1, 66), (203, 100)])


def test_find_meter_chain_past_the_last_register_raises():
    """A model so long that the next header would lie past 65535."""
    with pytest.raises(MeterDataError, match="past register 65535"):
        sunspec.find_meter(50000, [(1, 66), (64001, 20000)])


def test_find_meter_chain_without_end_raises():
    """Models without end (e.g. all of length 0) are not followed forever."""
    with pytest.raises(MeterDataError, match="no end after 64 models"):
        sunspec.find_meter(0, [(1, 0)] * 64)
    assert sunspec.find_meter(0, [(1, 0)] * 63) is None


# -- SunSpec: the image a server serves ----------------------------------------


@pytest.mark.parametrize("base", [40000, 0, 50000])
def test_image_holds_marker_common_meter_and_end(base):
    """From the base: SunS, the common model (ID 1, L 66, manufacturer
    cfosproxy), the meter model at base + 70, then the end model."""
    image = sunspec.image(203, (16.0, -5.5, 0.0), base=base)
    assert registers_at(image, base, 2) == [0x5375, 0x6E53]
    assert registers_at(image, base + 2, 2) == [1, 66]
    assert decode_string(registers_at(image, base + 4, 16)) == "cfosproxy"
    header = base + sunspec.IMAGE_METER_OFFSET
    assert registers_at(image, header, 2) == [203, 105]
    assert registers_at(image, header + 107, 2) == [0xFFFF, 0]
    assert len(image) == 2 + 68 + 107 + 2
    model = walk(image, base)
    assert model == sunspec.MeterModel(203, header + 2)
    assert sunspec.decode(203, registers_at(image, *model.block)) == (16.0, -5.5, 0.0)


def test_image_of_model_201_shows_one_phase():
    """A single-phase image leaves AphB, AphC, WphB, WphC not implemented."""
    body = sunspec.encode(201, (10.0, 20.0, 30.0))
    assert [body[offset] for offset in (2, 3, 18, 19)] == [0x8000] * 4
    assert sunspec.decode(201, body) == (10.0, 0.0, 0.0)


def test_image_picks_a_scale_factor_that_fits():
    """0.01 A resolution by default; 10,000 A (and 2.3 MW) get coarser
    scale factors and still come back."""
    body = sunspec.encode(203, (0.25, 0.0, 0.0))
    assert body[sunspec.A_SF] == int16(-2)
    body = sunspec.encode(203, (10000.0, -10000.0, 10000.0))
    assert 0 <= body[sunspec.A_SF] <= 10
    assert sunspec.decode(203, body) == (10000.0, -10000.0, 10000.0)


def test_image_cannot_show_nan():
    """SunSpec integers have no NaN: encoding one is a ValueError."""
    with pytest.raises(ValueError, match="cannot be shown"):
        sunspec.encode(203, (NAN, 0.0, 0.0))


def test_image_powers_given_decide_the_sign():
    """Powers given to the image sign the currents read back."""
    body = sunspec.encode(204, (10.0, 10.0, 10.0), powers=(-2300.0, 0.0, 2300.0))
    assert sunspec.decode(204, body) == (-10.0, 10.0, 10.0)
