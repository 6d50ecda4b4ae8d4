"""The L{Store}: the SQLite file in ``state_dir`` opened, checked and
migrated, with every table's methods on one object.

One file, ``cfosproxy.sqlite``, in WAL mode with ``synchronous=FULL``: a
commit is on disk before the wallbox gets its answer. It holds the site-wide
transaction id counter, the devices' enabled flags and the site limit set at
run time and, for the gateway, what a backend outage must not lose: the
ordered queue of messages toward each backend link, messages given up on
(dead letters), the map of local transaction ids to the backend's, the id
tags the backend accepted, and each wallbox's last BootNotification.

Access is synchronous, on the reactor thread: SQLite in WAL mode commits a
small transaction in well under a millisecond on local disk, which is cheaper
than a thread hop. Most of that is the fsync, so the busy writes are grouped
(see L{cfosproxy.store.groupcommit}).
"""

import os
import sqlite3

from zope.interface import implementer

from cfosproxy.core.errors import StoreError
from cfosproxy.core.interfaces import IIdTagCache, IOutboundQueue, ITransactionIds
from cfosproxy.store.boots import Boots
from cfosproxy.store.deviceflags import DeviceFlags
from cfosproxy.store.devicestate import DeviceStates
from cfosproxy.store.groupcommit import GroupedConnection
from cfosproxy.store.idtags import IdTagCache
from cfosproxy.store.integrity import check_file, check_write_ahead_log, damaged
from cfosproxy.store.outbound import OutboundQueue
from cfosproxy.store.schema import migrate
from cfosproxy.store.settings import SiteSettings
from cfosproxy.store.transactionids import TransactionIdCounter, TransactionIdMap
from cfosproxy.store.watermark import Watermark

STORE_FILE = "cfosproxy.sqlite"


# The tables are base classes: each is a few methods over the one shared
# connection, and the store's API is theirs without a method here for each
# that only passes the call on.
@implementer(IOutboundQueue, ITransactionIds, IIdTagCache)
class Store(
    OutboundQueue,
    Boots,
    TransactionIdCounter,
    TransactionIdMap,
    IdTagCache,
    DeviceFlags,
    DeviceStates,
    SiteSettings,
):
    """The daemon's durable state, one SQLite file.

    @param path: the database file; its directory is created (mode 0700).
    @param schedule_commit: C{schedule_commit(f)} arranges for C{f()} to be
        called soon, after the other work at hand (in the daemon: the
        reactor's C{callLater(0, f)}); grouped writes are committed then.
        None commits each write at once.
    @param check: run the checks for a damaged or foreign file (C{PRAGMA
        quick_check} reads every page); False when they passed moments ago.
    @raise StoreError: the file cannot be opened, is not SQLite, is
        damaged, belongs to another application, or was written by a newer
        cfosproxy.
    """

    def __init__(self, path, schedule_commit=None, check=True):
        self.path = path
        # An in-memory store (the virtual wallbox's) has no files beside it.
        on_disk = path != ":memory:"
        directory = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            if on_disk:
                check_write_ahead_log(path)
            db = sqlite3.connect(path, isolation_level=None)
        except (OSError, sqlite3.Error) as e:
            raise StoreError("cannot open store {}: {}".format(path, e)) from e
        self._connection = GroupedConnection(db, path, schedule_commit)
        self._watermark = Watermark(path, self._connection) if on_disk else None
        try:
            # Checked before anything is written to it: neither a damaged
            # file nor another application's database is to be changed.
            if check:
                check_file(db, path)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            migrate(db, path)
            if self._watermark is not None:
                self._watermark.check()
        except StoreError:
            db.close()
            raise
        except sqlite3.DatabaseError as e:
            db.close()
            if getattr(e, "sqlite_errorname", "").startswith(
                ("SQLITE_CORRUPT", "SQLITE_NOTADB")
            ):
                raise StoreError(damaged(path, e)) from e
            raise StoreError("cannot open store {}: {}".format(path, e)) from e
        except OSError as e:
            db.close()
            raise StoreError("cannot open store {}: {}".format(path, e)) from e

    @classmethod
    def in_state_dir(cls, state_dir, schedule_commit=None, check=True):
        """Open the store file in C{state_dir}."""
        return cls(os.path.join(state_dir, STORE_FILE), schedule_commit, check)

    def durable(self):
        """A Deferred that fires once every write so far is on disk, or
        fails with L{StoreError} if the commit failed; see
        L{GroupedConnection.durable}."""
        return self._connection.durable()

    def when_durable(self, stored, failed):
        """Like L{durable}, with two plain callables: C{stored(None)} or
        C{failed(error)}; see L{GroupedConnection.when_durable}."""
        self._connection.when_durable(stored, failed)

    def commit(self):
        """Commit the grouped writes now, and tell those waiting for them.

        @raise StoreError: the commit failed; the group's writes are undone.
        """
        self._connection.commit()

    def save_watermark(self):
        """Write the highest message id queued so far beside the store (see
        L{cfosproxy.store.watermark}); while grouped writes wait for their
        commit, at the next call."""
        if self._watermark is not None:
            self._watermark.save()

    def close(self):
        """Commit what is pending and close the file."""
        try:
            self.commit()
            self.save_watermark()
        finally:
            self._connection.db.close()
