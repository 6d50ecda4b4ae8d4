"""Settings changed at run time over the status API, which outlast a
restart: for now the site limit."""

import time

from cfosproxy.store.groupcommit import GroupedConnection

# The row of the site's limit per phase in the table C{settings}.
SITE_LIMIT = "site_limit"


class SiteSettings:
    """The table C{settings}: per setting name, its value as text and when
    it was set (seconds since the epoch).

    A part of L{cfosproxy.store.facade.Store}: it reads and writes through
    C{self._connection}, the store's L{GroupedConnection}.
    """

    _connection: GroupedConnection

    def site_limit(self):
        """The site limit set at run time, or None when none is kept.

        @return: C{(amperes per phase, set at)}.
        @raise ValueError: the kept value is no number (the file was edited).
        """
        row = self._connection.db.execute(
            "SELECT value, set_at FROM settings WHERE name = ?", (SITE_LIMIT,)
        ).fetchone()
        if row is None:
            return None
        value, set_at = row
        try:
            return float(value), set_at
        except ValueError:
            raise ValueError("the kept site limit {!r} is no number".format(value)) from None

    def set_site_limit(self, amps, at=None):
        """Keep the site limit set at run time, on disk when this returns;
        C{None} removes it (the configuration's is in force again).

        @param at: when it was set, seconds since the epoch; None: now.
        @raise StoreError: it could not be written.
        """
        with self._connection.transaction():
            if amps is None:
                self._connection.db.execute("DELETE FROM settings WHERE name = ?", (SITE_LIMIT,))
            else:
                self._connection.db.execute(
                    "INSERT INTO settings (name, value, set_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = excluded.value, "
                    "set_at = excluded.set_at",
                    (SITE_LIMIT, repr(float(amps)), time.time() if at is None else at),
                )
