"""A meter for tests: L{cfosproxy.modbus.meterserver.MeterModbusServer} in
this process, with currents a test sets directly and hooks to make it
answer nonsense.

It logs every read request and can be told to serve NaN or any other
current, a SunSpec meter model of the wrong length, a scale factor out of
range, to refuse reads with a Modbus exception, or to stop answering (stop
the server; start it again on the same port to come back). It runs on the
asyncio loop of the test (Twisted's asyncio reactor in these tests).
"""

from pymodbus.constants import ExcCodes

from cfosproxy.modbus import sunspec
from cfosproxy.modbus.meterserver import MeterModbusServer
from tests.modbusserver import free_port


class MeasuredCurrents:
    """The model the server serves: currents (and powers) a test sets."""

    def __init__(self):
        self.values = (0.0, 0.0, 0.0)
        self.watts = None

    def currents(self):
        return self.values

    def powers(self):
        return self.watts


class MeterServer(MeterModbusServer):
    """One meter on C{127.0.0.1:port}, unit id 1, measuring 0 A.

    @param kind: C{"sdm630"} or C{"sunspec"}.
    @param base: where the SunSpec registers begin.
    @param model_id: the SunSpec meter model, 201..204.

    @ivar reads: every read request in order, as C{(function code,
        register, count)}, refused ones too.
    """

    def __init__(self, kind, port=None, unit_id=1, base=40000, model_id=203):
        super().__init__(
            MeasuredCurrents(),
            kind=kind,
            host="127.0.0.1",
            port=port or free_port(),
            unit_id=unit_id,
            base=base,
            model_id=model_id,
        )
        self.reads = []
        self._refusing = None
        self._length = None
        self._scale_factors = {}

    @property
    def address(self):
        """C{host:port}, as a meter's C{address} in the configuration."""
        return "127.0.0.1:{}".format(self.port)

    @property
    def meter_header(self):
        """The register of the SunSpec meter model's ID."""
        return self.base + sunspec.IMAGE_METER_OFFSET

    @property
    def meter_body(self):
        """(first register, count) of the SunSpec meter model's body."""
        return (self.meter_header + sunspec.HEADER_LENGTH, sunspec.BODY_LENGTH)

    # -- what the meter measures -----------------------------------------------

    def set_currents(self, l1, l2, l3, powers=None):
        """Signed currents in amperes (NaN allowed for the SDM630's
        floats); C{powers} in W, by default each current times 230 V."""
        self.model.values = (l1, l2, l3)
        self.model.watts = powers

    # -- nonsense --------------------------------------------------------------

    def fail_reads(self, exception=ExcCodes.DEVICE_FAILURE):
        """Answer every read with this Modbus exception; None to stop."""
        self._refusing = exception

    def set_model_length(self, length):
        """Give the SunSpec meter model length L = C{length} (shorter than
        105), its body cut to it, the end model right after; None to stop."""
        self._length = length

    def set_scale_factor(self, name, value):
        """Serve the SunSpec scale factor C{"A_SF"} or C{"W_SF"} as the
        int16 C{value} (e.g. 11, or -32768 for "not implemented")."""
        self._scale_factors[name] = value

    # -- server hooks ----------------------------------------------------------

    def registers(self):
        registers = super().registers()
        if self.kind != "sunspec":
            return registers
        body = self.meter_header + sunspec.HEADER_LENGTH
        for name, value in self._scale_factors.items():
            offset = {"A_SF": sunspec.A_SF, "W_SF": sunspec.W_SF}[name]
            registers[body + offset] = value & 0xFFFF
        if self._length is not None:
            registers[self.meter_header + 1] = self._length
            end = body + self._length
            registers[end] = sunspec.END_ID
            registers[end + 1] = 0
        return registers

    def received(self, function_code, address, count):
        self.reads.append((function_code, address, count))

    def refusal(self, function_code, address, count):
        return self._refusing
