"""The SQLite store in ``state_dir``: what must survive a restart or a crash.

One file, ``cfosproxy.sqlite``, in WAL mode with ``synchronous=FULL``: a
commit is on disk before the wallbox gets its answer. It holds the site-wide
transaction id counter and the devices' enabled flags set at run time.

Access is synchronous: every write is one small transaction, and SQLite in WAL
mode commits those in well under a millisecond on local disk, which is cheaper
than a thread hop.
"""

import os
import sqlite3

from twisted.application import service
from twisted.logger import Logger

STORE_FILE = "cfosproxy.sqlite"

# Schema migrations, applied in order; PRAGMA user_version counts how many
# have run. Never edit an entry once released: append a new one.
_MIGRATIONS = (
    """
    CREATE TABLE counters (
        name  TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
    """,
    """
    CREATE TABLE device_flags (
        name    TEXT PRIMARY KEY,
        enabled INTEGER NOT NULL
    );
    """,
)


class StoreError(Exception):
    """The store cannot be opened or written; the message says which file."""


class Store:
    """The daemon's durable state, one SQLite file.

    @param path: the database file; its directory is created (mode 0700).
    """

    def __init__(self, path):
        self.path = path
        directory = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._migrate()
        except (OSError, sqlite3.Error) as e:
            raise StoreError("cannot open store {}: {}".format(path, e)) from e

    @classmethod
    def in_state_dir(cls, state_dir):
        """Open the store file in C{state_dir}."""
        return cls(os.path.join(state_dir, STORE_FILE))

    def _migrate(self):
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
            # executescript() commits before it runs, so the migration and
            # its version number go in as one script, one transaction.
            self._db.executescript(
                "BEGIN IMMEDIATE;\n{}\nPRAGMA user_version = {:d};\nCOMMIT;".format(
                    script, number
                )
            )

    def _transaction(self):
        return _Transaction(self._db)

    def next_transaction_id(self):
        """Allocate a transaction id, unique on this site across restarts.

        OCPP 1.6 transaction ids are JSON integers; we count from 1.
        """
        with self._transaction():
            self._db.execute(
                "INSERT INTO counters (name, value) VALUES ('transaction', 1) "
                "ON CONFLICT (name) DO UPDATE SET value = value + 1"
            )
            (value,) = self._db.execute(
                "SELECT value FROM counters WHERE name = 'transaction'"
            ).fetchone()
        return value

    def device_flags(self):
        """The enabled flags set at run time: C{{device name: bool}}."""
        rows = self._db.execute("SELECT name, enabled FROM device_flags")
        return {name: bool(enabled) for name, enabled in rows}

    def set_device_enabled(self, name, enabled):
        """Keep a device's enabled flag."""
        with self._transaction():
            self._db.execute(
                "INSERT INTO device_flags (name, enabled) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET enabled = excluded.enabled",
                (name, int(enabled)),
            )

    def close(self):
        """Commit what is pending and close the file."""
        self._db.close()


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, or ROLLBACK when the block raises."""

    def __init__(self, db):
        self._db = db

    def __enter__(self):
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb):
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
        return False


class StoreService(service.Service):
    """Opens the store when the daemon starts and closes it when it stops.

    Opening happens in C{startService}, not earlier, because twistd forks
    when it daemonizes and an SQLite connection must not cross a fork.
    """

    _log = Logger()

    def __init__(self, state_dir):
        self.state_dir = state_dir
        self.store = None

    def startService(self):
        self.store = Store.in_state_dir(self.state_dir)
        self._log.info("store open at {path}", path=self.store.path)
        service.Service.startService(self)

    def stopService(self):
        service.Service.stopService(self)
        if self.store is not None:
            self.store.close()
            self._log.info("store closed")
