"""The simulated Power Brain: what it draws, the energy it counts and what
its registers show, on a task.Clock."""

import pytest
from twisted.internet import task

from cfosproxy.modbus import powerbrain
from cfosproxy.wallbox.model import TEST_CAR, PowerBrainModel

HOUR = 3600.0

pytestmark = pytest.mark.usefixtures("logged_errors", "no_reactor_timers")


def charging(clock=None, car_max_current=32.0, modbus=16.0, ocpp=None, **kwargs):
    """A model with a car plugged in that both sides let charge."""
    model = PowerBrainModel(
        clock or task.Clock(), car_max_current=car_max_current, plugged=True, **kwargs
    )
    model.set_modbus_limit(modbus)
    model.set_ocpp(ocpp, True)
    return model


def read(model, first, count):
    regs = model.registers()
    return [regs[first + i] for i in range(count)]


def test_both_sides_allow():
    """With Modbus enabled and OCPP allowing, the car draws the least of
    the limits and its own maximum, on three phases, in state C."""
    model = charging(modbus=16.0, ocpp=20.0)
    assert (model.state, model.current) == ("C", 16.0)
    assert model.currents == (16.0, 16.0, 16.0)
    assert model.power_w == 11040


def test_modbus_disabled():
    """Writing 0 to the enable register stops charging: 0 A, state B; 1
    lets it charge again."""
    model = charging()
    model.set_modbus_enabled(False)
    assert (model.state, model.current, model.power_w) == ("B", 0.0, 0)
    model.set_modbus_enabled(True)
    assert (model.state, model.current) == ("C", 16.0)


def test_ocpp_not_allowing():
    """Without OCPP's consent (no accepted transaction, or the connector
    inoperative) the car draws nothing, whatever the limits; and OCPP
    does not allow before it is told to."""
    model = charging()
    model.set_ocpp(32.0, False)
    assert (model.state, model.current) == ("B", 0.0)
    fresh = PowerBrainModel(task.Clock(), plugged=True)
    assert (fresh.state, fresh.current, fresh.ocpp_allows) == ("B", 0.0, False)


def test_ocpp_limit_lower():
    """An OCPP limit below the Modbus limit is what the car gets; no
    OCPP limit (None) leaves the Modbus limit."""
    model = charging(modbus=16.0, ocpp=10.0)
    assert model.current == 10.0
    model.set_ocpp(None, True)
    assert model.current == 16.0


def test_car_maximum_lowest():
    """A car that takes less than both limits draws its own maximum."""
    model = charging(car_max_current=13.0, modbus=16.0, ocpp=20.0)
    assert model.current == 13.0


def test_modbus_default_is_device_maximum():
    """Before anyone writes 8093 the limit is the device's 32 A, and
    8094 is on: only OCPP and the car bound the current."""
    model = PowerBrainModel(task.Clock(), plugged=True)
    model.set_ocpp(None, True)
    assert (model.modbus_limit, model.modbus_enabled) == (32.0, True)
    assert model.current == 32.0


def test_below_six_amps_no_charging():
    """Any limit below 6 A (IEC 61851's least) means no charging at all,
    also an OCPP limit of 0; exactly 6 A charges."""
    for modbus, ocpp, car in ((5.9, None, 32.0), (16.0, 0.0, 32.0), (16.0, None, 5.0)):
        model = charging(car_max_current=car, modbus=modbus, ocpp=ocpp)
        assert (model.state, model.current) == ("B", 0.0), (modbus, ocpp, car)
    assert charging(modbus=6.0).current == 6.0


def test_states():
    """No car: A; plugged in but not allowed: B; allowed: C; unplugged
    while charging: A and 0 A at once."""
    model = PowerBrainModel(task.Clock())
    assert model.state == "A"
    model.set_ocpp(None, False)
    model.plug()
    assert model.state == "B"
    model.set_ocpp(None, True)
    assert model.state == "C"
    model.unplug()
    assert (model.state, model.current) == ("A", 0.0)


def test_no_car_no_current():
    """Both sides allowing does not make an empty socket draw current."""
    model = PowerBrainModel(task.Clock())
    model.set_ocpp(16.0, True)
    assert (model.state, model.current) == ("A", 0.0)


def test_on_change():
    """on_change is called for a change of state or current, not for an
    input that changes neither."""
    changes = []
    model = PowerBrainModel(
        task.Clock(), on_change=lambda m: changes.append((m.state, m.current))
    )
    model.set_modbus_limit(20.0)  # no car: nothing changes
    assert changes == []
    model.plug()
    model.set_ocpp(None, True)
    model.set_modbus_limit(16.0)
    assert changes == [("B", 0.0), ("C", 20.0), ("C", 16.0)]


def test_one_hour_at_16_amps():
    """16 A on three phases at 230 V for one hour is exactly 11040 Wh."""
    clock = task.Clock()
    model = charging(clock, modbus=16.0)
    clock.advance(HOUR)
    model.update()
    assert model.energy_wh == 11040


def test_piecewise():
    """Each stretch counts at the current drawn during it: half an hour
    at 16 A, then at 10 A after a new limit, is 5520 + 3450 Wh."""
    clock = task.Clock()
    model = charging(clock, modbus=16.0)
    clock.advance(HOUR / 2)
    model.set_modbus_limit(10.0)
    clock.advance(HOUR / 2)
    model.update()
    assert model.energy_wh == 5520 + 3450


def test_no_energy_while_not_charging():
    """Time passing without charging (no car, disabled, not allowed)
    adds nothing; the meter never goes back."""
    clock = task.Clock()
    model = PowerBrainModel(clock)
    clock.advance(HOUR)
    model.update()
    assert model.energy_wh == 0
    model.plug()
    model.set_ocpp(None, True)
    clock.advance(HOUR / 4)
    model.set_modbus_enabled(False)
    meter = model.energy_wh
    assert meter == 32 * 690 // 4
    clock.advance(HOUR)
    model.set_ocpp(None, False)
    model.set_modbus_enabled(True)
    clock.advance(HOUR)
    model.unplug()
    clock.advance(HOUR)
    model.update()
    assert model.energy_wh == meter


def test_never_decreasing():
    """Many small steps and a clock that steps back never lower the
    meter, and the small steps add up to the whole."""
    clock = task.Clock()
    model = charging(clock, modbus=16.0)
    seen = []
    for _ in range(3600):
        clock.advance(1.0)
        model.update()
        seen.append(model.energy_wh)
    assert seen == sorted(seen)
    assert model.energy_wh == 11040
    clock.rightNow -= 100
    model.update()
    assert model.energy_wh >= seen[-1]


def test_on_change_for_whole_wh():
    """on_change is called when the meter passes a whole Wh, not for a
    fraction of one."""
    clock = task.Clock()
    changes = []
    model = charging(clock, modbus=16.0, on_change=lambda m: changes.append(m.energy_wh))
    del changes[:]
    clock.advance(0.1)  # 0.3 Wh
    model.update()
    assert changes == []
    clock.advance(1.0)  # 3.37 Wh in all
    model.update()
    assert changes == [3]


def test_every_value_encoded():
    """registers() holds every value of the map, read back with the
    decoders cfosproxy's Modbus client uses."""
    clock = task.Clock()
    model = charging(clock, modbus=13.2, serial="PB-0042")
    clock.advance(HOUR)
    model.update()
    reading = powerbrain.decode_reading(
        read(model, *powerbrain.CONTROL_BLOCK), read(model, *powerbrain.METER_BLOCK)
    )
    assert reading == powerbrain.Reading(
        state="C",
        enabled=True,
        energy_wh=9108,
        power_w=9108,
        currents=(13.2, 13.2, 13.2),
        limit_amps=13.2,
    )
    assert powerbrain.decode_string(read(model, powerbrain.SERIAL, powerbrain.SERIAL_COUNT)) == "PB-0042"
    assert model.registers()[TEST_CAR] == 1


def test_idle_values():
    """No car: state A, the test register 0, nothing drawn; a disabled
    device shows 8094 = 0 and the limit as written."""
    model = PowerBrainModel(task.Clock())
    model.set_modbus_enabled(False)
    model.set_modbus_limit(0)
    regs = model.registers()
    assert powerbrain.decode_state(regs[powerbrain.STATE]) == "A"
    assert read(model, powerbrain.STATE, 3) == [0, 0, 0]
    assert read(model, powerbrain.ENERGY, 12) == [0] * 12
    assert regs[TEST_CAR] == 0


def test_energy_above_32_bits():
    """The meter uses all four words of 8058."""
    clock = task.Clock()
    model = charging(clock, modbus=32.0)
    clock.advance(2**32 / 22080 * HOUR + HOUR)
    model.update()
    assert model.energy_wh > 2**32
    assert powerbrain.decode_u64(read(model, powerbrain.ENERGY, 4)) == model.energy_wh


def test_serial_must_fit():
    """A serial number longer than 16 characters (8 registers) is
    refused when the model is made, not cut off."""
    with pytest.raises(ValueError):
        PowerBrainModel(task.Clock(), serial="X" * 17)
    model = PowerBrainModel(task.Clock(), serial="X" * 16)
    assert powerbrain.decode_string(read(model, powerbrain.SERIAL, 8)) == "X" * 16


def test_round_trip():
    """The encoders are the decoders' inverses, at the edges too, and
    refuse what does not fit."""
    for value in (0, 1, 65536, 2**32 - 1):
        assert powerbrain.decode_u32(powerbrain.encode_u32(value)) == value
    for value in (0, 2**32 + 5, 2**64 - 1):
        assert powerbrain.decode_u64(powerbrain.encode_u64(value)) == value
    assert powerbrain.encode_u32(65538) == [1, 2]
    with pytest.raises(ValueError):
        powerbrain.encode_u32(2**32)
    with pytest.raises(ValueError):
        powerbrain.encode_u64(-1)
    assert powerbrain.encode_string("AB", 2) == [0x4142, 0]
    with pytest.raises(ValueError):
        powerbrain.encode_string("ABCDE", 2)
    with pytest.raises(ValueError):
        powerbrain.encode_string("Ä", 2)
    for letter in "ABCDEF":
        assert powerbrain.decode_state(powerbrain.encode_state(letter)) == letter
