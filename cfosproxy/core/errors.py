"""Exceptions that the sans-IO core shares with the I/O around it.

Here, not in the modules that raise them, so that the core (the gateway,
the local central system) can catch them without importing sqlite3 or
Twisted services.
"""


class StoreError(Exception):
    """The store cannot be opened or written; the message says which file."""


class CallTimeout(Exception):
    """The peer did not answer a CALL within its timeout."""


class PeerGone(Exception):
    """The peer went away before a CALL could be answered: its connection
    closed, or (a Modbus wallbox) the device is offline."""


class LimitRefused(Exception):
    """The device answered, and did not accept the limit."""


class UnitChanged(LimitRefused):
    """The device refused the limit, and the next way to try sends it in
    another unit (W instead of A): the manager sends it again at once, and
    counts it as sent in that unit."""
