"""One meter over Modbus TCP: an Eastron SDM630 or a SunSpec meter, polled
for the signed currents of its three phases.

How a L{ModbusMeter} behaves:

  - B{One request at a time}, one poll at a time: (re)connect if needed,
    read, decode, report; the next poll is C{poll_interval} seconds after
    the end of this one.
  - B{SDM630}: one read of input registers 6..17
    (L{cfosproxy.modbus.sdm630}).
  - B{SunSpec}: once per connection the base is found (the C{SunS} marker
    at 40000, else 0, else 50000; a base the device has no register at
    answers "illegal address") and the chain of models is followed to the
    meter model (201..204); each poll then reads only that model's body
    (L{cfosproxy.modbus.sunspec}). After a failed poll it is looked for
    again.
  - B{Every poll is reported}: C{on_reading(name, currents)} with the
    currents as decoded (NaN too: the caller judges plausibility), or
    C{on_failure(name, reason)}, the reason a short text naming the
    registers, e.g. C{"reading input registers 6..17: no answer within
    2 s"}. Failures are not logged here: the caller logs an outage once.
  - B{Reconnects are ours}, as for L{cfosproxy.modbus.wallbox}: pymodbus's
    own reconnect is off; a failure other than an answer (a Modbus
    exception or registers that make no reading) closes the connection, and
    the next poll, after a backoff of 1 s doubling up to C{poll_interval},
    connects again. pymodbus's C{timeout} and C{retries} bound every
    request.
"""

from pymodbus.constants import ExcCodes

from cfosproxy.modbus import sdm630, sunspec
from cfosproxy.modbus.meterdata import MeterDataError
from cfosproxy.modbus.poller import ModbusPoller, TurnFailed
from cfosproxy.modbus.requests import RequestFailed, is_connection_lost, is_no_answer

KINDS = ("sdm630", "sunspec")

_REGISTER_KINDS = {
    sdm630.READ_INPUT_REGISTERS: "input",
    sunspec.READ_HOLDING_REGISTERS: "holding",
}

_READ_METHODS = {
    sdm630.READ_INPUT_REGISTERS: "read_input_registers",
    sunspec.READ_HOLDING_REGISTERS: "read_holding_registers",
}


class MeterPollFailed(TurnFailed):
    """One poll gave no reading; the message is the reason.

    @ivar answered: the meter answered (a Modbus exception, or registers
        that make no reading), so the connection is kept.
    @ivar exception_code: the Modbus exception code it answered with, or None.
    """

    def __init__(self, reason, answered=False, exception_code=None):
        super().__init__(reason)
        self.answered = answered
        self.exception_code = exception_code


class ModbusMeter(ModbusPoller):
    """Polls one meter for the signed currents of L1, L2, L3.

    @param kind: C{"sdm630"} or C{"sunspec"} (L{KINDS}).
    @param on_reading: C{on_reading(name, currents)} after each good poll,
        C{currents} the floats of L1, L2, L3 in amperes, negative while
        feeding into the grid.
    @param on_failure: C{on_failure(name, reason)} after each failed poll.
    @param timeout: seconds pymodbus waits for a connection or an answer.
    @param retries: how often pymodbus repeats an unanswered request.

    @ivar currents: the currents of the last good poll, or None.
    @ivar last_error: the reason of the last poll's failure; None after a
        good poll.
    """

    _connect_error = MeterPollFailed
    _turn_broke = "{name}: meter poll failed"

    def __init__(
        self,
        *,
        name,
        host,
        port,
        unit_id,
        kind,
        poll_interval,
        reactor,
        on_reading,
        on_failure,
        timeout=2.0,
        retries=1,
    ):
        if kind not in KINDS:
            raise ValueError(
                "meter {}: type {!r} is not one of {}".format(name, kind, ", ".join(KINDS))
            )
        super().__init__(
            name=name,
            host=host,
            port=port,
            unit_id=unit_id,
            poll_interval=poll_interval,
            reactor=reactor,
            timeout=timeout,
            retries=retries,
        )
        self.kind = kind
        self._on_reading = on_reading
        self._on_failure = on_failure

        self.currents = None
        self.last_error = None

        self._model = None  # the SunSpec meter model found on this connection

    @classmethod
    def from_config(cls, config, **kwargs):
        """A meter for a Modbus L{cfosproxy.config.MeterConfig} (C{type}
        C{sdm630} or C{sunspec}); C{kwargs} are the other keywords of the
        constructor: C{reactor}, C{on_reading}, C{on_failure} and maybe
        C{timeout}, C{retries}."""
        return super().from_config(config, kind=config.type, **kwargs)

    # -- polls -----------------------------------------------------------------

    async def _work(self):
        currents = await self._read_currents()
        if self._running:
            self._backoff = None
            self.last_error = None
            self.currents = currents
            self._notify(self._on_reading, self.name, currents)
        return True

    def _failed(self, failure):
        reason = str(failure)
        self.last_error = reason
        self._model = None
        if not failure.answered:
            self._close()
        # Not logged here: twistd writes debug lines too, and a meter that
        # is off the network fails every poll_interval. The meters' board
        # says an outage once (cfosproxy.site.meters).
        self._notify(self._on_failure, self.name, reason)

    # -- reading ---------------------------------------------------------------

    async def _read_currents(self):
        await self._ensure_connected()
        if self.kind == "sdm630":
            registers = await self._read(sdm630.READ_INPUT_REGISTERS, *sdm630.BLOCK)
            return self._decoded(
                sdm630.READ_INPUT_REGISTERS, sdm630.BLOCK, sdm630.decode, registers
            )
        if self._model is None:
            self._model = await self._discover()
        model = self._model
        body = await self._read(sunspec.READ_HOLDING_REGISTERS, *model.block)
        return self._decoded(
            sunspec.READ_HOLDING_REGISTERS,
            model.block,
            lambda registers: sunspec.decode(model.model_id, registers),
            body,
        )

    def _decoded(self, function, block, decode, registers):
        try:
            return decode(registers)
        except MeterDataError as error:
            raise MeterPollFailed(
                "reading {}: {}".format(_registers_text(function, *block), error),
                answered=True,
            ) from error

    async def _discover(self):
        """The SunSpec meter model: its base, then along the chain."""
        for base in sunspec.BASES:
            try:
                marker = await self._read(sunspec.READ_HOLDING_REGISTERS, base, len(sunspec.MARKER))
            except MeterPollFailed as failure:
                # A base the device has no registers at: try the next one.
                if failure.exception_code == ExcCodes.ILLEGAL_ADDRESS:
                    continue
                raise
            if sunspec.is_marker(marker):
                break
        else:
            raise MeterPollFailed(
                "no SunSpec marker (SunS) at holding register {}".format(
                    ", ".join(str(base) for base in sunspec.BASES)
                ),
                answered=True,
            )
        headers = []
        try:
            while (model := sunspec.find_meter(base, headers)) is None:
                address = sunspec.next_header(base, headers)
                header = await self._read(
                    sunspec.READ_HOLDING_REGISTERS, address, sunspec.HEADER_LENGTH
                )
                headers.append(tuple(header))
        except MeterDataError as error:
            raise MeterPollFailed(str(error), answered=True) from error
        self._log.debug(
            "{name}: SunSpec model {model} at {address} (base {base})",
            name=self.name,
            model=model.model_id,
            address=model.address,
            base=base,
        )
        return model

    def _connected(self):
        self._model = None
        self._log.debug(
            "{name}: connected to {host}:{port}", name=self.name, host=self.host, port=self.port
        )

    async def _read(self, function, address, count):
        try:
            return await self._read_registers(_READ_METHODS[function], address, count)
        except RequestFailed as failure:
            raise MeterPollFailed(
                "reading {}: {}".format(_registers_text(function, address, count), failure),
                answered=failure.answered,
                exception_code=failure.exception_code,
            ) from failure

    def _error_text(self, error):
        if is_no_answer(error):
            text = "no answer within {:g} s".format(self.timeout)
            if self.retries:
                text += " ({} tries)".format(self.retries + 1)
            return text
        if is_connection_lost(error):
            return "no connection"
        return super()._error_text(error)

    def _close(self):
        self._model = None
        super()._close()


def _registers_text(function, address, count):
    """C{"input registers 6..17"}."""
    return "{} registers {}..{}".format(_REGISTER_KINDS[function], address, address + count - 1)
