"""A meter on Modbus TCP: the registers of an Eastron SDM630 or of a SunSpec
meter, served from a model of what it measures.

A pymodbus C{SimDevice} holds the registers; an access hook fills them from
the model on every read, so each answer shows what the model says at that
moment. pymodbus is asyncio only: the server is created and awaited on the
running asyncio loop (Twisted's asyncio reactor in the daemon and tests).

The model needs one method, and may have a second:

  - C{currents()}: the signed currents of L1, L2, L3 in amperes, negative
    while feeding into the grid;
  - C{powers()} (optional): the active powers of L1, L2, L3 in W. Without
    it, or when it returns None, each power is the current times
    L{cfosproxy.modbus.meterdata.VOLTAGE}.
"""

from pymodbus.constants import ExcCodes

from cfosproxy.modbus import sdm630, sunspec
from cfosproxy.modbus.simserver import CannotListen, SimDeviceServer

__all__ = ["KINDS", "CannotListen", "MeterModbusServer"]

KINDS = ("sdm630", "sunspec")


class MeterModbusServer(SimDeviceServer):
    """A meter on Modbus TCP, serving a model (see the module docstring).

    C{kind} C{"sdm630"}: input registers (function code 4) 6..17 of the
    SDM630. C{kind} C{"sunspec"}: holding registers (function code 3) from
    C{base} on, with the SunSpec marker, the common model, meter model
    C{model_id} (201..204) and the end model. Any other register is
    "illegal data address", any other function code "illegal function":
    the meter is read only.

    Start and stop may alternate on the same port.

    @raise CannotListen: from C{start}, when the port cannot be opened.
    """

    def __init__(
        self, model, *, kind, host="127.0.0.1", port=502, unit_id=1, base=40000, model_id=203
    ):
        if kind not in KINDS:
            raise ValueError("meter type {!r} is not one of {}".format(kind, ", ".join(KINDS)))
        if kind == "sunspec" and model_id not in sunspec.METER_MODELS:
            raise ValueError("SunSpec model {} is no meter model (201..204)".format(model_id))
        super().__init__(host=host, port=port, unit_id=unit_id)
        self.model = model
        self.kind = kind
        self.base = base
        self.model_id = model_id

    @property
    def function_code(self):
        """The one function code the meter answers: 4 or 3."""
        if self.kind == "sdm630":
            return sdm630.READ_INPUT_REGISTERS
        return sunspec.READ_HOLDING_REGISTERS

    def block(self):
        """The registers the device has, as (first register, count)."""
        if self.kind == "sdm630":
            return sdm630.BLOCK
        return (self.base, len(sunspec.image(self.model_id, (0, 0, 0), base=self.base)))

    # -- hooks -----------------------------------------------------------------

    def registers(self):
        """The registers served now, C{{register: value}}, from the model.

        A test server may change them to serve nonsense.
        """
        currents = tuple(self.model.currents())
        powers_of = getattr(self.model, "powers", None)
        powers = powers_of() if powers_of is not None else None
        if self.kind == "sdm630":
            return sdm630.encode(currents, powers)
        return sunspec.image(self.model_id, currents, powers, base=self.base)

    def received(self, function_code, address, count):
        """Called with every request as it arrives, before it is checked.
        A test server may record them."""

    def refusal(self, function_code, address, count):
        """The Modbus exception to answer a read of the device's registers
        with, or None to serve it. A test server may refuse more."""
        return None

    # -- server hooks ----------------------------------------------------------

    def _blocks(self):
        return (self.block(),)

    def _listening(self):
        self._log.info(
            "Modbus TCP meter ({kind}) on {host}:{port}, unit id {unit_id}",
            kind=self.kind,
            host=self.host,
            port=self.port,
            unit_id=self.unit_id,
        )

    def _trace(self, sending, pdu):
        if not sending:
            self.received(pdu.function_code, pdu.address, getattr(pdu, "count", 0))
        return pdu

    async def _access(self, function_code, start, address, count, current, values):
        # The model is the truth, copied into pymodbus's registers on every
        # read.
        if values is not None or function_code != self.function_code:
            return ExcCodes.ILLEGAL_FUNCTION
        refused = self.refusal(function_code, address, count)
        if refused is not None:
            return refused
        registers = self.registers()
        for register in range(address, address + count):
            if register in registers:
                current[register - start] = registers[register]
        return None
