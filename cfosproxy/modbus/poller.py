"""What polling one device over Modbus TCP takes, whatever the device: one
turn of requests at a time on a timer, reconnects of our own with backoff,
and a stop that waits for the turn in flight.

L{ModbusPoller} is the base of L{cfosproxy.modbus.wallbox.ModbusWallbox}
and L{cfosproxy.modbus.meter.ModbusMeter}; they say what a turn does and
what a failed one means to them. How a poller behaves:

  - B{One turn at a time.} The timer starts a turn (C{start} the first one
    at once); a turn asked for while one runs follows it. After a turn that
    polled, the next poll is C{poll_interval} later; after a failed turn,
    a backoff later: 1 s doubling, at most C{poll_interval} (and at most
    L{ModbusPoller._backoff_max}). A turn that broke (a bug) is logged, and
    polling goes on.
  - B{Reconnects are ours.} pymodbus's own reconnect is off
    (C{reconnect_delay=0}): a request on a lost connection fails at once
    instead of racing a background task. pymodbus's C{timeout} and
    C{retries} bound every request.
  - B{C{stop}} cancels the request in flight (nobody waits for pymodbus's
    timeout), and its Deferred fires once that turn has ended and the
    connection is closed, even when C{start} came again meanwhile.
  - B{A listener that raises} is logged; it does not stop polling.
"""

import asyncio
import math

from pymodbus.client import AsyncModbusTcpClient
from twisted.internet import defer
from twisted.logger import Logger

from cfosproxy.modbus.requests import (
    TRANSPORT_ERRORS,
    RequestFailed,
    RequestSlot,
    error_text,
    exception_text,
)

# The first retry delay after a failed turn; it doubles from there.
BACKOFF_START = 1.0


class TurnFailed(Exception):
    """A turn could not do its requests: no connection, no answer in time,
    or an answer that gave nothing usable.

    @ivar answered: the device answered (a Modbus exception, or registers
        that make no reading), so the connection is kept.
    """

    answered = False


class ModbusPoller:
    """Polls one device over Modbus TCP in turns.

    A subclass says what a turn does (L{_work}) and what a failed one means
    (L{_failed}), and may hear when polling stops (L{_stopping}) and when a
    new connection is made (L{_connected}).

    @param poll_interval: seconds from the end of a poll to the next one.
    @param timeout: seconds pymodbus waits for a connection or an answer.
    @param retries: how often pymodbus repeats an unanswered request.

    @cvar _backoff_max: the longest retry delay, besides C{poll_interval}.
    @cvar _connect_error: the L{TurnFailed} raised, with its message, when
        no connection could be made.
    @cvar _turn_broke: what is logged when a turn raised something else.
    """

    _log = Logger()
    _backoff_max = math.inf
    _connect_error = TurnFailed
    _turn_broke = "{name}: Modbus turn failed"

    def __init__(self, *, name, host, port, unit_id, poll_interval, reactor, timeout, retries):
        self.name = name
        self.host = host
        self.port = port
        self.unit_id = unit_id
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.retries = retries
        self._reactor = reactor

        self._client = None
        self._running = False
        self._timer = None
        self._turn = None  # Deferred of the turn in progress
        self._requests = RequestSlot()  # the pymodbus call in progress
        self._again = False  # a turn was asked for while one ran
        self._backoff = None
        self._stopped = []  # stop()'s Deferreds, waiting for the turn to end

    @classmethod
    def from_config(cls, config, **kwargs):
        """A poller for the device of C{config}: its C{name}, C{host},
        C{port}, C{id} and C{poll_interval}; C{kwargs} are the other
        keywords of the constructor."""
        return cls(
            name=config.name,
            host=config.host,
            port=config.port,
            unit_id=config.id,
            poll_interval=config.poll_interval,
            **kwargs,
        )

    # -- public ----------------------------------------------------------------

    def start(self):
        """Start polling. The pymodbus client is made in the first turn,
        which runs from the reactor, so inside the running asyncio loop."""
        if self._running:
            return
        self._running = True
        self._schedule(0)

    def stop(self):
        """Stop polling, cancel a request in flight and close the connection.

        @return: a Deferred that fires once nothing is left running.
        """
        if not self._running:
            return defer.succeed(None)
        self._running = False
        self._cancel_timer()
        self._stopping()
        if self._turn is None:
            self._close()
            return defer.succeed(None)
        self._requests.cancel()
        d = defer.Deferred()
        self._stopped.append(d)
        return d

    # -- what a subclass says --------------------------------------------------

    async def _work(self):
        """The requests of one turn.

        @return: whether the turn polled (the next poll is then due
            C{poll_interval} later).
        @raise TurnFailed: the turn failed; L{_failed} is told.
        """
        raise NotImplementedError()

    def _failed(self, error):
        """A turn failed with the L{TurnFailed} C{error} while polling."""
        raise NotImplementedError()

    def _stopping(self):
        """Polling stops (C{stop} was called); no turn starts any more."""

    def _connected(self):
        """A new connection was made: nothing learnt on an earlier one holds."""

    # -- turns -----------------------------------------------------------------

    def _tick(self):
        self._timer = None
        self._kick()

    def _kick(self):
        if not self._running:
            return
        if self._turn is not None:
            self._again = True
            return
        self._again = False
        self._turn = d = defer.ensureDeferred(self._run_turn())
        d.addErrback(lambda f: self._log.failure(self._turn_broke, f, name=self.name))
        d.addBoth(self._turn_done)

    def _turn_done(self, _):
        self._turn = None
        if not self._running:
            self._close()
        elif self._again:
            self._kick()
        elif self._timer is None:
            # The turn broke: polling goes on all the same.
            self._schedule(self.poll_interval)
        stopped, self._stopped = self._stopped, []
        for d in stopped:
            d.callback(None)

    async def _run_turn(self):
        try:
            polled = await self._work()
        except asyncio.CancelledError:
            # A CancelledError is no Exception, so nothing else here would
            # catch it. One that stop() caused ends the turn quietly, even
            # when start() came since; any other is a fault, to be logged.
            if self._running and not self._stopped:
                raise
            return
        except TurnFailed as error:
            if self._running:
                self._failed(error)
                self._schedule(self._next_backoff())
            return
        if polled and self._running:
            self._schedule(self.poll_interval)

    def _schedule(self, delay):
        if not self._running:
            return
        self._cancel_timer()
        self._timer = self._reactor.callLater(delay, self._tick)

    def _cancel_timer(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _next_backoff(self):
        if self._backoff is None:
            self._backoff = BACKOFF_START
        else:
            self._backoff *= 2
        self._backoff = min(self._backoff, self._backoff_max, self.poll_interval)
        return self._backoff

    def _notify(self, callback, *args):
        # A mistake in a listener must not stop polling.
        try:
            callback(*args)
        except Exception:
            self._log.failure("{name}: listener failed", name=self.name)

    # -- requests --------------------------------------------------------------

    async def _ensure_connected(self):
        """Connect unless connected; the client is made the first time.

        @raise TurnFailed: the C{_connect_error}, e.g. C{"connecting to
            host:502: refused or no answer"}.
        """
        if self._client is not None and self._client.connected:
            return
        if self._client is None:
            self._client = AsyncModbusTcpClient(
                self.host,
                port=self.port,
                name=self.name,
                timeout=self.timeout,
                retries=self.retries,
                reconnect_delay=0,
            )
        try:
            connected = await self._call(self._client.connect)
        except TRANSPORT_ERRORS as error:
            connected = False
            reason = error_text(error)
        else:
            reason = "refused or no answer"
        if not connected:
            raise self._connect_error(
                "connecting to {}:{}: {}".format(self.host, self.port, reason)
            )
        self._connected()

    async def _read_registers(self, method, address, count):
        """C{count} registers from C{address} by the client's C{method}
        (e.g. C{read_holding_registers}).

        @raise RequestFailed: without saying which registers.
        """
        try:
            response = await self._call(
                getattr(self._client, method), address, count=count, device_id=self.unit_id
            )
        except TRANSPORT_ERRORS as error:
            raise RequestFailed(self._error_text(error)) from error
        _check_answer(response)
        registers = list(response.registers)
        if len(registers) < count:
            raise RequestFailed(
                "{} registers instead of {}".format(len(registers), count), answered=True
            )
        return registers[:count]

    async def _write_register(self, register, value):
        """Write C{value} to the holding register C{register}.

        @raise RequestFailed: without saying which register.
        """
        try:
            response = await self._call(
                self._client.write_register, register, value, device_id=self.unit_id
            )
        except TRANSPORT_ERRORS as error:
            raise RequestFailed(self._error_text(error)) from error
        _check_answer(response)

    def _error_text(self, error):
        """The reason given for a request that raised C{error}."""
        return error_text(error)

    async def _call(self, method, *args, **kwargs):
        if not self._running:
            # stop() came between two requests of one turn.
            raise asyncio.CancelledError()
        return await self._requests.call(method, *args, **kwargs)

    def _close(self):
        if self._client is not None:
            self._client.close()


def _check_answer(response):
    if response.isError():
        raise RequestFailed(
            exception_text(response), answered=True, exception_code=response.exception_code
        )
