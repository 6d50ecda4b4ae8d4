"""What the meter register maps share: their decoding error, how a current
gets its sign, and the nominal voltage.

Pure: no I/O. L{cfosproxy.modbus.sdm630} and L{cfosproxy.modbus.sunspec}
decode with it; L{cfosproxy.modbus.meter} polls.
"""

# Volts per phase: what a meter built here shows, and the power assumed
# for a current when none is given.
VOLTAGE = 230.0


class MeterDataError(ValueError):
    """A meter answered, but its registers make no reading (a block of the
    wrong length, a scale factor out of range, a value the meter marks as
    not implemented). The message says which and why."""


def signed_current(current, power):
    """The current in amperes with the sign of the active power: negative
    while the phase feeds into the grid.

    A power that cannot be told negative (NaN, unknown) counts as drawn from
    the grid, which leaves less room for the wallboxes: the safe side. A
    NaN or infinite current is passed on as it is.
    """
    magnitude = abs(current)
    if power is not None and power < 0:
        return -magnitude
    return magnitude

