"""Each wallbox's latest BootNotification, to boot its backend link again."""

from cfosproxy.store.groupcommit import GroupedConnection


class Boots:
    """The table C{boots}: per link, the frame text of the latest
    BootNotification.

    A part of L{cfosproxy.store.facade.Store}: it reads and writes through
    C{self._connection}, the store's L{GroupedConnection}.
    """

    _connection: GroupedConnection

    def save_boot(self, link, text):
        """Keep the frame text of C{link}'s latest BootNotification."""
        with self._connection.grouped():
            self._connection.db.execute(
                "INSERT INTO boots (link, text) VALUES (?, ?) "
                "ON CONFLICT (link) DO UPDATE SET text = excluded.text",
                (link, text),
            )

    def last_boot(self, link):
        """The frame text of C{link}'s latest BootNotification, or C{None}."""
        row = self._connection.db.execute(
            "SELECT text FROM boots WHERE link = ?", (link,)
        ).fetchone()
        return None if row is None else row[0]
