"""Exceptions that the sans-IO core shares with the I/O around it.

Here, not in the modules that raise them, so that the core (the gateway,
the local central system) can catch them without importing sqlite3 or
Twisted services.
"""


class StoreError(Exception):
    """The store cannot be opened or written; the message says which file."""
