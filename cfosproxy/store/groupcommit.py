"""When the store's writes are on disk: each at once, or grouped into one
commit at the end of the reactor's turn.

Most of what a commit costs is its fsync, so the busy writes (a message
queued, a message delivered) join one open transaction that is committed
once at the end of the reactor's turn, and whoever must not go on before
they are on disk waits for L{GroupedConnection.durable}. Every other write
commits at once, together with whatever the group holds.
"""

import sqlite3

from twisted.internet import defer
from twisted.logger import Logger

from cfosproxy.core.errors import StoreError


class GroupedConnection:
    """The store's SQLite connection and how its writes are committed.

    The tables read through C{db} and write inside L{transaction} or
    L{grouped}.

    @ivar db: the C{sqlite3} connection, opened with C{isolation_level=None}
        (statements outside a C{BEGIN} commit by themselves).
    @ivar path: the store file, for error messages.
    @param schedule_commit: C{schedule_commit(f)} arranges for C{f()} to be
        called soon, after the other work at hand (in the daemon: the
        reactor's C{callLater(0, f)}); grouped writes are committed then.
        None commits each write at once.
    """

    _log = Logger()

    def __init__(self, db, path, schedule_commit=None):
        self.db = db
        self.path = path
        self._schedule_commit = schedule_commit
        # While grouped writes wait for their commit: (stored, failed) of
        # those waiting for it (see durable()); None when none are open.
        self._group = None
        # Waiters whose group is committed (or failed), to be told at the
        # scheduled commit: [((stored, failed), None or StoreError)].
        self._settled = []
        self._commit_scheduled = False

    @property
    def group_open(self):
        """Whether grouped writes wait for their commit."""
        return self._group is not None

    def transaction(self):
        """A write that is on disk when the C{with} block ends (committed
        with the open group, if there is one)."""
        return _Transaction(self)

    def grouped(self):
        """A write of one statement that joins the open group; it is on
        disk once L{durable} fires. Without C{schedule_commit}, a plain
        L{transaction}."""
        if self._schedule_commit is None:
            return self.transaction()
        return _GroupedStatement(self)

    def durable(self):
        """A Deferred that fires once every write so far is on disk, or
        fails with L{StoreError} if the commit failed (the grouped writes
        are then undone).

        It fires from the scheduled commit, never from inside another
        write, so that its callbacks don't run in the middle of the caller
        of that write.
        """
        if self._group is None:
            return defer.succeed(None)
        d = defer.Deferred()
        self._group.append((d.callback, d.errback))
        return d

    def when_durable(self, stored, failed):
        """Like L{durable}, with two plain callables instead of a Deferred
        (for what runs for every message): C{stored(None)} once every
        write so far is on disk (at once when none waits), or
        C{failed(error)} with the L{StoreError} of a commit that failed."""
        if self._group is None:
            stored(None)
        else:
            self._group.append((stored, failed))

    def commit(self):
        """Commit the open group now, and tell those waiting for it.

        @raise StoreError: the commit failed; the group's writes are undone.
        """
        try:
            self._commit_group()
        finally:
            self._tell_settled()

    def _begin_group(self):
        if self._group is None:
            self.db.execute("BEGIN IMMEDIATE")
            self._group = []
            if not self._commit_scheduled:
                self._commit_scheduled = True
                self._schedule_commit(self._scheduled_commit)

    def _scheduled_commit(self):
        self._commit_scheduled = False
        try:
            self._commit_group()
        except StoreError as e:
            self._log.error("{error}; the messages of this moment were not kept "
                            "and their wallboxes got an error", error=e)
        self._tell_settled()

    def _commit_group(self):
        if self._group is None:
            return
        waiting, self._group = self._group, None
        try:
            self.db.execute("COMMIT")
        except sqlite3.Error as e:
            # A failed COMMIT may leave the transaction open; the
            # connection stays usable only once it is rolled back.
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            error = _write_error(self.path, e)
            self._settled.extend((waiter, error) for waiter in waiting)
            raise error from e
        self._settled.extend((waiter, None) for waiter in waiting)

    def _abandon_group(self, error):
        """The open group's writes are undone: fail its waiters (at the
        scheduled commit)."""
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")
        waiting, self._group = self._group or [], None
        self._settled.extend((waiter, error) for waiter in waiting)

    def _tell_settled(self):
        settled, self._settled = self._settled, []
        for (stored, failed), error in settled:
            # One waiter that raises must not keep the others from hearing.
            try:
                if error is None:
                    stored(None)
                else:
                    failed(error)
            except Exception:
                self._log.failure("telling a waiter of the store's commit")


def _write_error(path, e):
    """The L{StoreError} for C{sqlite3} error C{e} writing the store at
    C{path}."""
    message = "cannot write store {}: {}".format(path, e)
    if isinstance(e, sqlite3.DatabaseError) and "malformed" in str(e):
        # Damaged while running (a disk failure): the check at start would
        # refuse it now too. Say what helps.
        message += (
            "; the file is damaged: stop cfosproxy, move it aside with its "
            "-wal and -shm files and restore the store from a backup"
        )
    return StoreError(message)


class _GroupedStatement:
    """One statement that joins the open group (opening one if needed).

    No savepoint around it, unlike L{_Transaction} in a group: SQLite undoes
    a single failed statement by itself and leaves the transaction open, or,
    after some errors (a full disk, an I/O error), rolls the whole
    transaction back; C{in_transaction} tells which. Two fewer statements
    for every message a gateway queues and delivers.
    """

    def __init__(self, connection):
        self._connection = connection

    def __enter__(self):
        try:
            self._connection._begin_group()
        except sqlite3.Error as e:
            raise _write_error(self._connection.path, e) from e

    def __exit__(self, exc_type, exc, tb):
        if not isinstance(exc, sqlite3.Error):
            return False
        error = _write_error(self._connection.path, exc)
        if not self._connection.db.in_transaction:
            # The group is lost; those waiting for it are told so.
            self._connection._abandon_group(error)
        raise error from exc


class _Transaction:
    """One write: BEGIN IMMEDIATE … COMMIT, or ROLLBACK when the block
    raises. Inside an open group it is a savepoint of the group instead,
    and the whole group is committed at the end.

    SQLite errors leave as L{StoreError} naming the file, so that callers
    handle one exception for a store they cannot write.
    """

    def __init__(self, connection):
        self._connection = connection
        self._db = connection.db

    def __enter__(self):
        try:
            if self._connection._group is not None:
                self._db.execute("SAVEPOINT write")
            else:
                self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise _write_error(self._connection.path, e) from e

    def __exit__(self, exc_type, exc, tb):
        if self._connection._group is not None:
            return self._exit_savepoint(exc_type, exc)
        if exc_type is None:
            try:
                self._db.execute("COMMIT")
                return False
            except sqlite3.Error as e:
                exc = e
        # A failed COMMIT may leave the transaction open; the connection
        # stays usable only once it is rolled back.
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise _write_error(self._connection.path, exc) from exc
        return False

    def _exit_savepoint(self, exc_type, exc):
        if exc_type is None:
            try:
                self._db.execute("RELEASE write")
            except sqlite3.Error as e:
                exc = e
            else:
                self._connection._commit_group()
                return False
        try:
            # Undo this write only; the group's others stand.
            self._db.execute("ROLLBACK TO write")
            self._db.execute("RELEASE write")
        except sqlite3.Error:
            # SQLite rolls the whole transaction back by itself after some
            # errors (a full disk, an I/O error): the group is lost, and
            # those waiting for it are told so.
            self._connection._abandon_group(_write_error(self._connection.path, exc))
        if isinstance(exc, sqlite3.Error):
            raise _write_error(self._connection.path, exc) from exc
        return False
