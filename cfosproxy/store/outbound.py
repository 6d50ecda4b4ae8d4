"""The queue of messages toward the backends, one ordered queue per link,
and the dead letters: messages given up on."""

from dataclasses import dataclass

from cfosproxy.store.groupcommit import GroupedConnection

_MESSAGE_COLUMNS = (
    "id, link, action, text, attempts, last_error, queued_at, local_transaction_id"
)
_DEAD_LETTER_COLUMNS = "id, link, action, text, attempts, reason, queued_at, dead_at"


@dataclass(frozen=True)
class QueuedMessage:
    """A message waiting to be delivered to a backend, as stored.

    C{text} is the frame text to send; C{attempts} counts failed deliveries;
    C{local_transaction_id} is set on a StartTransaction that was answered
    locally, with the id the wallbox got.
    """

    id: int
    link: str
    action: str
    text: str
    attempts: int
    last_error: str | None
    queued_at: float
    local_transaction_id: int | None = None


@dataclass(frozen=True)
class DeadLetter:
    """A message taken out of the queue undelivered, and why."""

    id: int
    link: str
    action: str
    text: str
    attempts: int
    reason: str
    queued_at: float
    dead_at: float


class OutboundQueue:
    """The tables C{outbound} and C{dead_letters}.

    A part of L{cfosproxy.store.facade.Store}: it reads and writes through
    C{self._connection}, the store's L{GroupedConnection}.
    """

    _connection: GroupedConnection

    def enqueue(self, link, action, text, now):
        """Append a message to C{link}'s queue. It is on disk once
        L{durable} fires; only then may the wallbox be answered.

        @return: the stored L{QueuedMessage}.
        """
        with self._connection.grouped():
            cursor = self._connection.db.execute(
                "INSERT INTO outbound (link, action, text, queued_at) "
                "VALUES (?, ?, ?, ?)",
                (link, action, text, now),
            )
        return QueuedMessage(cursor.lastrowid, link, action, text, 0, None, now)

    def queued(self, link, limit=None):
        """C{link}'s queued messages, oldest first; at most C{limit}."""
        rows = self._connection.db.execute(
            "SELECT {} FROM outbound WHERE link = ? ORDER BY id LIMIT ?".format(
                _MESSAGE_COLUMNS
            ),
            # LIMIT -1 is SQLite's "no limit".
            (link, -1 if limit is None else limit),
        )
        return [QueuedMessage(*row) for row in rows]

    def set_local_transaction(self, message_id, local_id):
        """Note the local transaction id a queued StartTransaction was
        answered with."""
        with self._connection.transaction():
            self._connection.db.execute(
                "UPDATE outbound SET local_transaction_id = ? WHERE id = ?",
                (local_id, message_id),
            )

    def first_queued(self, link):
        """The oldest message queued for C{link}, or C{None}."""
        messages = self.queued(link, limit=1)
        return messages[0] if messages else None

    def queue_length(self, link):
        """How many messages are queued for C{link}."""
        (count,) = self._connection.db.execute(
            "SELECT count(*) FROM outbound WHERE link = ?", (link,)
        ).fetchone()
        return count

    def delivered(self, message_id):
        """Remove a message the backend has answered.

        An id that is no longer queued is ignored: the message is gone
        either way.
        """
        with self._connection.grouped():
            self._connection.db.execute("DELETE FROM outbound WHERE id = ?", (message_id,))

    def attempt_failed(self, message_id, error):
        """Count a failed delivery and keep its error text.

        @return: the number of failed attempts so far.
        @raise KeyError: no such queued message.
        """
        db = self._connection.db
        with self._connection.transaction():
            db.execute(
                "UPDATE outbound SET attempts = attempts + 1, last_error = ? "
                "WHERE id = ?",
                (error, message_id),
            )
            row = db.execute(
                "SELECT attempts FROM outbound WHERE id = ?", (message_id,)
            ).fetchone()
            if row is None:
                raise KeyError(message_id)
        return row[0]

    def replace_text(self, message_id, text):
        """Replace a queued message's frame text, as after a transaction id
        in it was rewritten.

        @raise KeyError: no such queued message.
        """
        with self._connection.transaction():
            cursor = self._connection.db.execute(
                "UPDATE outbound SET text = ? WHERE id = ?", (text, message_id)
            )
            if cursor.rowcount == 0:
                raise KeyError(message_id)

    def dead_letter(self, message_id, reason, now):
        """Take a message out of its queue for good, keeping it with
        C{reason} among the dead letters; both in one transaction, so a
        crash leaves it in exactly one of the two.

        @return: the L{DeadLetter}.
        @raise KeyError: no such queued message.
        """
        db = self._connection.db
        with self._connection.transaction():
            cursor = db.execute(
                "INSERT INTO dead_letters ({}) "
                "SELECT id, link, action, text, attempts, ?, queued_at, ? "
                "FROM outbound WHERE id = ?".format(_DEAD_LETTER_COLUMNS),
                (reason, now, message_id),
            )
            if cursor.rowcount == 0:
                raise KeyError(message_id)
            db.execute("DELETE FROM outbound WHERE id = ?", (message_id,))
            row = db.execute(
                "SELECT {} FROM dead_letters WHERE id = ?".format(
                    _DEAD_LETTER_COLUMNS
                ),
                (message_id,),
            ).fetchone()
        return DeadLetter(*row)

    def dead_letters(self, link=None):
        """The dead letters, of one link or of all, oldest message first."""
        if link is None:
            rows = self._connection.db.execute(
                "SELECT {} FROM dead_letters ORDER BY id".format(_DEAD_LETTER_COLUMNS)
            )
        else:
            rows = self._connection.db.execute(
                "SELECT {} FROM dead_letters WHERE link = ? ORDER BY id".format(
                    _DEAD_LETTER_COLUMNS
                ),
                (link,),
            )
        return [DeadLetter(*row) for row in rows]
