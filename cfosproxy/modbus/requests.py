"""What the Modbus pollers share about pymodbus requests: the errors a
request may raise, their text, and one request at a time in flight as a
Deferred.

pymodbus runs on asyncio and the daemon on Twisted's asyncio reactor, so
both share one loop: each awaited pymodbus call runs as an asyncio task
wrapped in a Deferred, which the poller cancels when it stops.
"""

import asyncio

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from twisted.internet import defer

# What a failed request may raise in pymodbus (or the socket below it).
TRANSPORT_ERRORS = (ModbusException, OSError, asyncio.TimeoutError)


class RequestFailed(Exception):
    """A request gave nothing usable; the message says why, not where.

    @ivar answered: the device answered (a Modbus exception, or too few
        registers); False when it did not answer at all.
    @ivar exception_code: the Modbus exception code it answered with, or None.
    """

    def __init__(self, reason, answered=False, exception_code=None):
        super().__init__(reason)
        self.answered = answered
        self.exception_code = exception_code


def exception_text(response):
    """C{"Modbus exception 2 (illegal address)"} for an error response."""
    try:
        name = ExcCodes(response.exception_code).name.lower().replace("_", " ")
    except ValueError:
        name = "unknown"
    return "Modbus exception {} ({})".format(response.exception_code, name)


def error_text(error):
    """The text of an error, or its type's name when it has none."""
    return str(error) or type(error).__name__


def is_no_answer(error):
    """Whether a request failed because the device did not answer in time.

    pymodbus tells this with a ModbusIOException once its retries are used
    up (and a bare TimeoutError in some paths); its other
    ModbusIOExceptions are answers that did not fit the request.
    """
    if isinstance(error, asyncio.TimeoutError):
        return True
    return isinstance(error, ModbusIOException) and "no response" in str(error).lower()


def is_connection_lost(error):
    """Whether a request failed because there was no connection (any more)."""
    return isinstance(error, ConnectionException)


class RequestSlot:
    """Runs one pymodbus request at a time, and cancels it on demand."""

    def __init__(self):
        self._request = None

    @property
    def busy(self):
        """A request is in flight."""
        return self._request is not None

    async def call(self, method, *args, **kwargs):
        """Await C{method(*args, **kwargs)} as an asyncio task.

        @raise asyncio.CancelledError: L{cancel} was called meanwhile.
        """

        async def request():
            # Inside the task: pymodbus raises ConnectionException at once,
            # not from the coroutine, when it has no connection.
            return await method(*args, **kwargs)

        self._request = defer.Deferred.fromFuture(asyncio.ensure_future(request()))
        try:
            return await self._request
        finally:
            self._request = None

    def cancel(self):
        """Cancel the request in flight, if any: its answer is not wanted,
        and nobody waits for pymodbus's timeout."""
        if self._request is not None:
            self._request.cancel()
