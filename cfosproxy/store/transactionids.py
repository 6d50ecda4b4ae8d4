"""Transaction ids: the site-wide counter they are allocated from, and the
map of ids handed out locally while a backend was unreachable to the
backend's ids for them, once it has seen the StartTransaction."""

from cfosproxy.store.groupcommit import GroupedConnection


class TransactionIdCounter:
    """The table C{counters}: the site's transaction id counter.

    A part of L{cfosproxy.store.facade.Store}: it writes through
    C{self._connection}, the store's L{GroupedConnection}.
    """

    _connection: GroupedConnection

    def next_transaction_id(self):
        """Allocate a transaction id, unique on this site across restarts.

        OCPP 1.6 transaction ids are JSON integers; we count from 1.
        """
        db = self._connection.db
        with self._connection.transaction():
            db.execute(
                "INSERT INTO counters (name, value) VALUES ('transaction', 1) "
                "ON CONFLICT (name) DO UPDATE SET value = value + 1"
            )
            (value,) = db.execute(
                "SELECT value FROM counters WHERE name = 'transaction'"
            ).fetchone()
        return value


class TransactionIdMap:
    """The table C{transaction_ids}: per link, the ids given out locally
    and the backend's id for each.

    A part of L{cfosproxy.store.facade.Store}: it reads and writes through
    C{self._connection}, the store's L{GroupedConnection}.
    """

    _connection: GroupedConnection

    def mark_local_transaction(self, link, local_id):
        """Note that C{local_id} was given out locally on C{link}."""
        with self._connection.transaction():
            self._connection.db.execute(
                "INSERT INTO transaction_ids (link, local_id) VALUES (?, ?) "
                "ON CONFLICT (link, local_id) DO NOTHING",
                (link, local_id),
            )

    def map_transaction(self, link, local_id, backend_id):
        """Keep the backend's id for a local one; this also marks
        C{local_id} as local."""
        with self._connection.transaction():
            self._connection.db.execute(
                "INSERT INTO transaction_ids (link, local_id, backend_id) "
                "VALUES (?, ?, ?) ON CONFLICT (link, local_id) "
                "DO UPDATE SET backend_id = excluded.backend_id",
                (link, local_id, backend_id),
            )

    def backend_transaction_id(self, link, local_id):
        """The backend's id for C{local_id}, or C{None} while unmapped."""
        row = self._connection.db.execute(
            "SELECT backend_id FROM transaction_ids WHERE link = ? AND local_id = ?",
            (link, local_id),
        ).fetchone()
        return None if row is None else row[0]

    def local_transaction_id(self, link, backend_id):
        """The local id mapped to C{backend_id}, or C{None}.

        A backend may hand out one id twice (some answer a rejected
        StartTransaction with 0); then the newest local id wins, local ids
        being allocated in increasing order.
        """
        row = self._connection.db.execute(
            "SELECT local_id FROM transaction_ids WHERE link = ? AND backend_id = ? "
            "ORDER BY local_id DESC LIMIT 1",
            (link, backend_id),
        ).fetchone()
        return None if row is None else row[0]
