"""The simulated cFos Power Brain: what it draws and what its registers show.

Sans-IO: no reactor, no sockets, no pymodbus. It takes a clock (anything
with C{seconds()}: the reactor in the daemon, C{task.Clock} in tests); the
Modbus server (L{cfosproxy.wallbox.modbusserver}) and the OCPP charge point
feed it inputs and read its outputs.

The rule (DESIGN.md, "Virtual Power Brain"): the car draws
M{min(Modbus limit, OCPP limit, car maximum)} per phase, on all three phases,
only when Modbus (8094) and OCPP (an accepted transaction on an operative
connector) both allow it and a car is plugged in, and not at all below
6 A: IEC 61851 gives a car no charging current below that.
"""

import math

from cfosproxy.modbus import powerbrain

VOLTS_PER_PHASE = 230.0
PHASES = 3

# IEC 61851: the least current a charging station may offer a car.
MIN_CHARGING_CURRENT = 6.0

# The limit in 8093 before anyone writes it: the device's own maximum, so a
# Power Brain without a load manager charges at full current (as far as OCPP
# and the car let it), as a real one set up for 32 A does.
DEVICE_MAX_CURRENT = 32.0

# The project's test register (not on a real Power Brain): write 1 to plug
# the simulated car in, 0 to unplug it; it reads back 1 or 0.
TEST_CAR = 8200

# 8 registers hold 16 characters.
DEFAULT_SERIAL = "CFOS-VIRTUAL-001"


class PowerBrainModel:
    """One simulated Power Brain with a car that may be plugged in.

    Inputs are set through the methods (C{set_*}, C{plug}, C{unplug}), which
    account the energy drawn so far before they change anything; read the
    attributes, never assign them.

    @ivar modbus_limit: the limit in register 8093, A (default
        L{DEVICE_MAX_CURRENT}).
    @ivar modbus_enabled: register 8094 (default True).
    @ivar ocpp_limit: the OCPP composite limit now, A, or None for none.
    @ivar ocpp_allows: OCPP lets the car charge (an accepted transaction on
        an operative connector). False until the OCPP side says so.
    @ivar plugged: a car is plugged in.
    @ivar car_max_current: the most the car draws, A per phase.
    @ivar volts_per_phase: the voltage the car draws at, V per phase.
    @ivar serial: the serial number in registers 8008..8015.
    @ivar state: C{"A"} no car, C{"B"} car plugged in and not charging,
        C{"C"} charging (the simulation never shows D, E or F).
    @ivar current: A per phase the car draws now.
    """

    def __init__(
        self,
        clock,
        *,
        car_max_current=32.0,
        volts_per_phase=VOLTS_PER_PHASE,
        plugged=False,
        serial=DEFAULT_SERIAL,
        on_change=None,
    ):
        """
        @param clock: has C{seconds()}.
        @param on_change: called with the model after every change of
            C{state}, C{current} or C{energy_wh} (whole Wh): a hook for a
            log line.
        @raise ValueError: the serial number does not fit the registers.
        """
        powerbrain.encode_string(serial, powerbrain.SERIAL_COUNT)
        self._clock = clock
        self._on_change = on_change
        self.serial = serial
        self.car_max_current = float(car_max_current)
        self.volts_per_phase = float(volts_per_phase)
        self.plugged = bool(plugged)
        self.modbus_limit = DEVICE_MAX_CURRENT
        self.modbus_enabled = True
        self.ocpp_limit = None
        self.ocpp_allows = False
        self._energy = 0.0
        self._since = clock.seconds()
        self._recompute()

    # -- inputs ----------------------------------------------------------------

    def plug(self):
        """The car is plugged in."""
        self._change("plugged", True)

    def unplug(self):
        """The car is unplugged."""
        self._change("plugged", False)

    def set_modbus_limit(self, amps):
        """Register 8093 was written: the limit in A."""
        self._change("modbus_limit", float(amps))

    def set_modbus_enabled(self, enabled):
        """Register 8094 was written."""
        self._change("modbus_enabled", bool(enabled))

    def set_ocpp(self, limit, allows):
        """What OCPP says now: its composite limit in A (None for none) and
        whether it lets the car charge."""
        self.update()
        self.ocpp_limit = None if limit is None else float(limit)
        self.ocpp_allows = bool(allows)
        self.update()

    def _change(self, name, value):
        # The energy up to now was drawn under the old inputs.
        self.update()
        setattr(self, name, value)
        self.update()

    def update(self):
        """Account the energy drawn since the last update at the current
        draw, then work out state and current again.

        Call it before reading the outputs; the input methods call it.
        """
        before = self._observed()
        now = self._clock.seconds()
        # A clock that steps back must not take energy away.
        elapsed = max(0.0, now - self._since)
        self._since = now
        self._energy += self._power() * elapsed / 3600
        self._recompute()
        if self._on_change is not None and self._observed() != before:
            self._on_change(self)

    def _recompute(self):
        self.current = self._allowed_current()
        if not self.plugged:
            self.state = "A"
        elif self.current > 0:
            self.state = "C"
        else:
            self.state = "B"

    def _allowed_current(self):
        if not (self.plugged and self.modbus_enabled and self.ocpp_allows):
            return 0.0
        ocpp = math.inf if self.ocpp_limit is None else self.ocpp_limit
        amps = min(self.modbus_limit, ocpp, self.car_max_current)
        return amps if amps >= MIN_CHARGING_CURRENT else 0.0

    def _observed(self):
        return (self.state, self.current, self.energy_wh)

    def _power(self):
        return self.current * PHASES * self.volts_per_phase

    # -- outputs ---------------------------------------------------------------

    @property
    def power_w(self):
        """Active power now, W."""
        return round(self._power())

    @property
    def energy_wh(self):
        """The meter, whole Wh (never decreasing)."""
        # round() first: 13.2 A for an hour sums to 9107.999999999998 in
        # binary floating point, and must show 9108.
        return math.floor(round(self._energy, 6))

    @property
    def currents(self):
        """L1, L2, L3 in A: the car charges on all three phases."""
        return (self.current,) * PHASES

    def registers(self):
        """C{{register: value}} for every register the device has: the
        Power Brain's map (L{cfosproxy.modbus.powerbrain}) and L{TEST_CAR}.

        Call L{update} first for values as of now.
        """
        regs = {}

        def put(first, words):
            regs.update(zip(range(first, first + len(words)), words))

        put(powerbrain.SERIAL, powerbrain.encode_string(self.serial, powerbrain.SERIAL_COUNT))
        put(
            powerbrain.STATE,
            [
                powerbrain.encode_state(self.state),
                powerbrain.limit_register(self.modbus_limit),
                int(self.modbus_enabled),
            ],
        )
        put(powerbrain.ENERGY, powerbrain.encode_u64(self.energy_wh))
        put(powerbrain.POWER, powerbrain.encode_u32(self.power_w))
        for register, amps in zip(powerbrain.CURRENTS, self.currents):
            put(register, powerbrain.encode_u32(round(amps * 10)))
        regs[TEST_CAR] = int(self.plugged)
        return regs
