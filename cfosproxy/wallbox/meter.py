"""The virtual wallbox's grid meter: what a meter at the building's grid
connection measures, the wallbox's car included.

Sans-IO: the model that L{cfosproxy.modbus.meterserver.MeterModbusServer}
serves, and that the HTTP control (L{cfosproxy.wallbox.metercontrol})
changes. The building draws an I{other load} per phase (signed: negative
while it feeds into the grid, say from solar panels) plus what the car
draws from the simulated Power Brain; the wallbox is wired L1L2L3, so its
L1 is the building's L1.
"""

import math

from twisted.logger import Logger

from cfosproxy.wallbox.model import PHASES


def three_phases(amps, what="other load"):
    """C{amps} as the floats of L1, L2, L3: one number for every phase, or
    three.

    @param what: how messages name the value.
    @raise ValueError: not a number or three, a boolean, or not finite.
    """
    values = list(amps) if isinstance(amps, (list, tuple)) else [amps]
    if len(values) not in (1, PHASES):
        raise ValueError(
            "{} must be one number or three (L1, L2, L3), not {} numbers".format(what, len(values))
        )
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("{} must be numbers of amperes, not {!r}".format(what, value))
        if not math.isfinite(value):
            raise ValueError("{} must be finite, not {!r}".format(what, value))
    floats = tuple(float(value) for value in values)
    return floats * PHASES if len(floats) == 1 else floats


class BuildingMeter:
    """The building's grid meter: other load plus the car, per phase.

    @param wallbox: the L{cfosproxy.wallbox.model.PowerBrainModel}; its
        C{currents} are read as of the moment of each reading.
    @param other_load: amperes of L1, L2, L3 (or one number for all),
        signed.
    @ivar other_load: the other load now, three floats.
    """

    _log = Logger()

    def __init__(self, wallbox, other_load=0.0):
        self.wallbox = wallbox
        self.other_load = three_phases(other_load)

    def set_other_load(self, amps, source="the configuration"):
        """Change the other load (one number for every phase, or three);
        a change is logged at info.

        @param source: who changed it, for the log line.
        @raise ValueError: see L{three_phases}; nothing changes then.
        """
        new = three_phases(amps)
        old, self.other_load = self.other_load, new
        if new != old:
            self._log.info(
                "grid meter: other load {new} A (was {old} A), set by {source}",
                new=_shown(new), old=_shown(old), source=source,
            )

    def car_currents(self):
        """What the car draws now on L1, L2, L3, A."""
        # The energy and state as of now, as a Modbus read of the wallbox
        # would see them.
        self.wallbox.update()
        return tuple(self.wallbox.currents)

    def currents(self):
        """The meter's signed currents of L1, L2, L3, A: other load plus car."""
        return tuple(other + car for other, car in zip(self.other_load, self.car_currents()))

    def powers(self):
        """The meter's active powers of L1, L2, L3, W, at the wallbox's
        voltage (negative while feeding into the grid)."""
        volts = self.wallbox.volts_per_phase
        return tuple(amps * volts for amps in self.currents())

    def snapshot(self):
        """What the meter shows, as JSON-ready lists per phase: C{other_load},
        C{car} and C{currents} in A, C{powers} in W."""
        car = self.car_currents()
        currents = [other + amps for other, amps in zip(self.other_load, car)]
        return {
            "other_load": list(self.other_load),
            "car": list(car),
            "currents": currents,
            "powers": [amps * self.wallbox.volts_per_phase for amps in currents],
        }


def _shown(amps):
    return "[{}]".format(", ".join("{:g}".format(a) for a in amps))
