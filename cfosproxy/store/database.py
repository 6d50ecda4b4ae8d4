"""The SQLite store in ``state_dir``: what must survive a restart or a crash.

One file, ``cfosproxy.sqlite``, in WAL mode with ``synchronous=FULL``: a
commit is on disk before the wallbox gets its answer. It holds the site-wide
transaction id counter, the devices' enabled flags set at run time and, for
the gateway, what a backend outage must not lose: the ordered queue of
messages toward each backend link, messages given up on (dead letters), the
map of local transaction ids to the backend's, the id tags the backend
accepted, and each wallbox's last BootNotification.

Access is synchronous, on the reactor thread: SQLite in WAL mode commits a
small transaction in well under a millisecond on local disk, which is cheaper
than a thread hop. Most of that is the fsync, so the busy writes (a message
queued, a message delivered) are grouped: they join one open transaction that
is committed once at the end of the reactor's turn, and whoever must not go
on before they are on disk waits for L{Store.durable}. Every other write
commits at once, together with whatever the group holds.
"""

import json
import os
import shutil
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger

from cfosproxy.core.errors import StoreError
from cfosproxy.store.walcheck import check_wal

STORE_FILE = "cfosproxy.sqlite"

# How often the highest message id queued is written beside the store, so
# that a start after a damaged log or an old backup can tell what is gone.
WATERMARK_INTERVAL = 60.0

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
    # AUTOINCREMENT: a message id is never used twice, not even after the
    # newest row was delivered, so a dead letter keeps its id as its key and
    # a caller holding a stale id can never hit a newer message.
    """
    CREATE TABLE outbound (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        link       TEXT NOT NULL,
        action     TEXT NOT NULL,
        text       TEXT NOT NULL,
        attempts   INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        queued_at  REAL NOT NULL
    );
    CREATE INDEX outbound_by_link ON outbound (link, id);
    CREATE TABLE dead_letters (
        id        INTEGER PRIMARY KEY,
        link      TEXT NOT NULL,
        action    TEXT NOT NULL,
        text      TEXT NOT NULL,
        attempts  INTEGER NOT NULL,
        reason    TEXT NOT NULL,
        queued_at REAL NOT NULL,
        dead_at   REAL NOT NULL
    );
    CREATE INDEX dead_letters_by_link ON dead_letters (link, id);
    CREATE TABLE transaction_ids (
        link       TEXT NOT NULL,
        local_id   INTEGER NOT NULL,
        backend_id INTEGER,
        PRIMARY KEY (link, local_id)
    );
    CREATE INDEX transaction_ids_by_backend ON transaction_ids (link, backend_id);
    CREATE TABLE id_tags (
        link           TEXT NOT NULL,
        id_tag         TEXT NOT NULL,
        id_tag_info    TEXT NOT NULL,
        remembered_at  REAL NOT NULL,
        PRIMARY KEY (link, id_tag)
    );
    CREATE TABLE boots (
        link TEXT PRIMARY KEY,
        text TEXT NOT NULL
    );
    """,
    # The local transaction id a queued StartTransaction was answered with,
    # to map it to the backend's id once the backend answers.
    """
    ALTER TABLE outbound ADD COLUMN local_transaction_id INTEGER;
    """,
)

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


class Store:
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

    _log = Logger()

    def __init__(self, path, schedule_commit=None, check=True):
        self.path = path
        # An in-memory store (the virtual wallbox's) has no files beside it.
        self._on_disk = path != ":memory:"
        self._schedule_commit = schedule_commit
        # While grouped writes wait for their commit: (stored, failed) of
        # those waiting for it (see durable()); None when none are open.
        self._group = None
        # Deferreds whose group is committed (or failed), to be told at the
        # scheduled commit: [(deferred, None or StoreError)].
        self._settled = []
        self._commit_scheduled = False
        directory = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            # Before SQLite reads the log: afterwards, what it dropped is gone.
            self._check_write_ahead_log()
            self._db = sqlite3.connect(path, isolation_level=None)
        except (OSError, sqlite3.Error) as e:
            raise StoreError("cannot open store {}: {}".format(path, e)) from e
        try:
            # Checked before anything is written to it: neither a damaged
            # file nor another application's database is to be changed.
            if check:
                self._check()
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._migrate()
            self._check_watermark()
        except StoreError:
            self._db.close()
            raise
        except sqlite3.DatabaseError as e:
            self._db.close()
            if getattr(e, "sqlite_errorname", "").startswith(
                ("SQLITE_CORRUPT", "SQLITE_NOTADB")
            ):
                raise StoreError(self._damaged(e)) from e
            raise StoreError("cannot open store {}: {}".format(path, e)) from e
        except OSError as e:
            self._db.close()
            raise StoreError("cannot open store {}: {}".format(path, e)) from e

    # -- damage that SQLite does not report -------------------------------

    def _check_write_ahead_log(self):
        """A log damaged before its last commit loses every commit behind
        the damage when SQLite opens it, silently. Say so, and keep a copy
        of the log for whoever can recover more from it."""
        if not self._on_disk:
            return
        wal = self.path + "-wal"
        damage = check_wal(wal)
        if damage is None:
            return
        kept = "{}.damaged-{}".format(
            wal, datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        )
        shutil.copy2(wal, kept)
        self._log.critical(
            "The store's write-ahead log {wal} is damaged: {damage}. SQLite "
            "drops them: messages queued then may be lost (the next line says "
            "how many, if the store can tell). The log is kept as {kept}.",
            wal=wal,
            damage=damage.describe(),
            kept=kept,
        )

    @property
    def _watermark_path(self):
        return self.path + "-watermark"

    def _queued_high_water(self):
        """The highest message id ever queued, as committed."""
        row = self._db.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'outbound'"
        ).fetchone()
        return row[0] if row else 0

    def _check_watermark(self):
        """Compare the highest message id ever queued with the one written
        beside the store before: lower now means committed messages are
        gone (a damaged log, a store restored from an older backup)."""
        if not self._on_disk:
            return
        try:
            with open(self._watermark_path, encoding="utf-8") as f:
                recorded = json.load(f)
            before, at = int(recorded["queued_high_water"]), recorded["at"]
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as e:
            self._log.warn(
                "ignoring {path}: {error}", path=self._watermark_path, error=e
            )
            return
        now = self._queued_high_water()
        if now < before:
            self._log.critical(
                "The store lost queued messages: message ids up to {before} had "
                "been queued by {at}, but the store ends at {now}. Up to "
                "{missing} message(s) for the backends are gone; the queue now "
                "holds {queued}. Compare with the backends' records.",
                before=before,
                at=at,
                now=now,
                missing=before - now,
                queued=self._db.execute("SELECT count(*) FROM outbound").fetchone()[0],
            )
            # What is now the store's is the new baseline.
            self.save_watermark()

    def save_watermark(self):
        """Write the highest message id queued so far beside the store, for
        the check at the next start. Only what is committed counts: while a
        group is open this waits for the next call."""
        if not self._on_disk or self._group is not None or self._db.in_transaction:
            return
        try:
            high_water = self._queued_high_water()
        except sqlite3.Error as e:
            self._log.debug("cannot read the watermark: {error}", error=e)
            return
        record = {
            "queued_high_water": high_water,
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        temporary = self._watermark_path + ".new"
        try:
            with open(temporary, "w", encoding="utf-8") as f:
                json.dump(record, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, self._watermark_path)
        except OSError as e:
            # A full disk: the store's own writes say so louder.
            self._log.debug("cannot write {path}: {error}", path=temporary, error=e)

    @classmethod
    def in_state_dir(cls, state_dir, schedule_commit=None, check=True):
        """Open the store file in C{state_dir}."""
        return cls(os.path.join(state_dir, STORE_FILE), schedule_commit, check)

    def _check(self):
        """Refuse a file that is damaged or is not a cfosproxy store.

        C{PRAGMA quick_check} reads every page once; for a store of a few
        megabytes that takes milliseconds, and damage is found at start,
        not in the middle of a transaction hours later.
        """
        problems = [
            row[0] for row in self._db.execute("PRAGMA quick_check") if row[0] != "ok"
        ]
        if problems:
            raise StoreError(self._damaged(problems[0]))
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version > len(_MIGRATIONS):
            return  # a newer cfosproxy's; _migrate() says so
        found = self._table_names(self._db)
        # The tables this version of the schema has, as SQLite itself
        # makes them from the migrations.
        reference = sqlite3.connect(":memory:")
        try:
            for script in _MIGRATIONS[:version]:
                reference.executescript(script)
            expected = self._table_names(reference)
        finally:
            reference.close()
        if (version == 0 and found) or not expected <= found:
            raise StoreError(
                "{} is not a cfosproxy store: it holds the tables {} (schema "
                "version {}). It may belong to another application: move it "
                "aside, or set [manager] state_dir to a directory of "
                "cfosproxy's own.".format(
                    self.path, ", ".join(sorted(found)) or "(none)", version
                )
            )

    @staticmethod
    def _table_names(db):
        """The names of the tables in C{db}, without SQLite's own."""
        rows = db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
        )
        return {name for (name,) in rows}

    def _damaged(self, detail):
        """The message for a store file that SQLite finds damaged."""
        # quick_check's first line only says which database it checked.
        lines = [line for line in str(detail).splitlines() if not line.startswith("***")]
        detail = "; ".join(lines[:3])[:300]
        return (
            "store {path} is damaged ({detail}). Stop cfosproxy, move "
            "{path} aside together with its -wal and -shm files if there are "
            "any, and restore the store from a backup (see Backup in "
            "docs/operations.md). Without a backup, remove it: cfosproxy then "
            "starts with an empty store, and messages still queued for a "
            "backend are lost.".format(path=self.path, detail=detail)
        )

    def _migrate(self):
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version > len(_MIGRATIONS):
            # A newer cfosproxy wrote this file; its schema is unknown here.
            raise StoreError(
                "cannot open store {}: schema version {} is newer than this "
                "cfosproxy knows ({})".format(self.path, version, len(_MIGRATIONS))
            )
        for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
            # executescript() commits before it runs, so the migration and
            # its version number go in as one script, one transaction.
            self._db.executescript(
                "BEGIN IMMEDIATE;\n{}\nPRAGMA user_version = {:d};\nCOMMIT;".format(
                    script, number
                )
            )

    def _transaction(self):
        """A write that is on disk when the C{with} block ends (committed
        with the open group, if there is one)."""
        return _Transaction(self)

    def _grouped(self):
        """A write of one statement that joins the open group; it is on
        disk once L{durable} fires. Without C{schedule_commit}, a plain
        L{_transaction}."""
        if self._schedule_commit is None:
            return self._transaction()
        return _GroupedStatement(self)

    def _begin_group(self):
        if self._group is None:
            self._db.execute("BEGIN IMMEDIATE")
            self._group = []
            if not self._commit_scheduled:
                self._commit_scheduled = True
                self._schedule_commit(self._scheduled_commit)

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
            self._db.execute("COMMIT")
        except sqlite3.Error as e:
            # A failed COMMIT may leave the transaction open; the
            # connection stays usable only once it is rolled back.
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            error = _write_error(self.path, e)
            self._settled.extend((waiter, error) for waiter in waiting)
            raise error from e
        self._settled.extend((waiter, None) for waiter in waiting)

    def _abandon_group(self, error):
        """The open group's writes are undone: fail its waiters (at the
        scheduled commit)."""
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
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

    # Outbound queue toward a backend: one ordered queue per link.

    def enqueue(self, link, action, text, now):
        """Append a message to C{link}'s queue. It is on disk once
        L{durable} fires; only then may the wallbox be answered.

        @return: the stored L{QueuedMessage}.
        """
        with self._grouped():
            cursor = self._db.execute(
                "INSERT INTO outbound (link, action, text, queued_at) "
                "VALUES (?, ?, ?, ?)",
                (link, action, text, now),
            )
        return QueuedMessage(cursor.lastrowid, link, action, text, 0, None, now)

    def queued(self, link, limit=None):
        """C{link}'s queued messages, oldest first; at most C{limit}."""
        rows = self._db.execute(
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
        with self._transaction():
            self._db.execute(
                "UPDATE outbound SET local_transaction_id = ? WHERE id = ?",
                (local_id, message_id),
            )

    def first_queued(self, link):
        """The oldest message queued for C{link}, or C{None}."""
        messages = self.queued(link, limit=1)
        return messages[0] if messages else None

    def queue_length(self, link):
        """How many messages are queued for C{link}."""
        (count,) = self._db.execute(
            "SELECT count(*) FROM outbound WHERE link = ?", (link,)
        ).fetchone()
        return count

    def delivered(self, message_id):
        """Remove a message the backend has answered.

        An id that is no longer queued is ignored: the message is gone
        either way.
        """
        with self._grouped():
            self._db.execute("DELETE FROM outbound WHERE id = ?", (message_id,))

    def attempt_failed(self, message_id, error):
        """Count a failed delivery and keep its error text.

        @return: the number of failed attempts so far.
        @raise KeyError: no such queued message.
        """
        with self._transaction():
            self._db.execute(
                "UPDATE outbound SET attempts = attempts + 1, last_error = ? "
                "WHERE id = ?",
                (error, message_id),
            )
            row = self._db.execute(
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
        with self._transaction():
            cursor = self._db.execute(
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
        with self._transaction():
            cursor = self._db.execute(
                "INSERT INTO dead_letters ({}) "
                "SELECT id, link, action, text, attempts, ?, queued_at, ? "
                "FROM outbound WHERE id = ?".format(_DEAD_LETTER_COLUMNS),
                (reason, now, message_id),
            )
            if cursor.rowcount == 0:
                raise KeyError(message_id)
            self._db.execute("DELETE FROM outbound WHERE id = ?", (message_id,))
            row = self._db.execute(
                "SELECT {} FROM dead_letters WHERE id = ?".format(
                    _DEAD_LETTER_COLUMNS
                ),
                (message_id,),
            ).fetchone()
        return DeadLetter(*row)

    def dead_letters(self, link=None):
        """The dead letters, of one link or of all, oldest message first."""
        if link is None:
            rows = self._db.execute(
                "SELECT {} FROM dead_letters ORDER BY id".format(_DEAD_LETTER_COLUMNS)
            )
        else:
            rows = self._db.execute(
                "SELECT {} FROM dead_letters WHERE link = ? ORDER BY id".format(
                    _DEAD_LETTER_COLUMNS
                ),
                (link,),
            )
        return [DeadLetter(*row) for row in rows]

    # Transaction ids handed out locally while the backend was unreachable,
    # and the backend's ids for them once it has seen the StartTransaction.

    def mark_local_transaction(self, link, local_id):
        """Note that C{local_id} was given out locally on C{link}."""
        with self._transaction():
            self._db.execute(
                "INSERT INTO transaction_ids (link, local_id) VALUES (?, ?) "
                "ON CONFLICT (link, local_id) DO NOTHING",
                (link, local_id),
            )

    def is_local_transaction(self, link, local_id):
        """Whether C{local_id} was given out locally on C{link}, mapped to a
        backend id yet or not."""
        row = self._db.execute(
            "SELECT 1 FROM transaction_ids WHERE link = ? AND local_id = ?",
            (link, local_id),
        ).fetchone()
        return row is not None

    def map_transaction(self, link, local_id, backend_id):
        """Keep the backend's id for a local one; this also marks
        C{local_id} as local."""
        with self._transaction():
            self._db.execute(
                "INSERT INTO transaction_ids (link, local_id, backend_id) "
                "VALUES (?, ?, ?) ON CONFLICT (link, local_id) "
                "DO UPDATE SET backend_id = excluded.backend_id",
                (link, local_id, backend_id),
            )

    def backend_transaction_id(self, link, local_id):
        """The backend's id for C{local_id}, or C{None} while unmapped."""
        row = self._db.execute(
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
        row = self._db.execute(
            "SELECT local_id FROM transaction_ids WHERE link = ? AND backend_id = ? "
            "ORDER BY local_id DESC LIMIT 1",
            (link, backend_id),
        ).fetchone()
        return None if row is None else row[0]

    # Id tags the backend answered, for authorizing while it is away.

    def remember_id_tag(self, link, id_tag, id_tag_info, now):
        """Keep the backend's latest C{idTagInfo} for C{id_tag}, whatever
        its status: a tag the backend now blocks must stop counting."""
        with self._grouped():
            self._db.execute(
                "INSERT INTO id_tags (link, id_tag, id_tag_info, remembered_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (link, id_tag) DO UPDATE SET "
                "id_tag_info = excluded.id_tag_info, "
                "remembered_at = excluded.remembered_at",
                (link, id_tag, json.dumps(id_tag_info), now),
            )

    def cached_id_tag(self, link, id_tag, now):
        """The backend's C{idTagInfo} for C{id_tag} if it was C{Accepted}
        and its C{expiryDate}, if any, is later than C{now}; else C{None}.

        An C{expiryDate} that cannot be read counts as expired: it is safer
        to fall back on the offline policy than to guess.
        """
        row = self._db.execute(
            "SELECT id_tag_info FROM id_tags WHERE link = ? AND id_tag = ?",
            (link, id_tag),
        ).fetchone()
        if row is None:
            return None
        info = json.loads(row[0])
        if not isinstance(info, dict) or info.get("status") != "Accepted":
            return None
        expiry = info.get("expiryDate")
        if expiry is not None:
            expires_at = _posix_time(expiry)
            if expires_at is None or expires_at <= now:
                return None
        return info

    # The wallbox's BootNotification, to boot its backend link again.

    def save_boot(self, link, text):
        """Keep the frame text of C{link}'s latest BootNotification."""
        with self._grouped():
            self._db.execute(
                "INSERT INTO boots (link, text) VALUES (?, ?) "
                "ON CONFLICT (link) DO UPDATE SET text = excluded.text",
                (link, text),
            )

    def last_boot(self, link):
        """The frame text of C{link}'s latest BootNotification, or C{None}."""
        row = self._db.execute(
            "SELECT text FROM boots WHERE link = ?", (link,)
        ).fetchone()
        return None if row is None else row[0]

    def close(self):
        """Commit what is pending and close the file."""
        try:
            self.commit()
            self.save_watermark()
        finally:
            self._db.close()


def _posix_time(text):
    """An RFC 3339 date-time as POSIX seconds, or C{None} if unreadable.

    OCPP times are UTC; one without an offset is read as UTC.
    """
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _write_error(path, e):
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

    def __init__(self, store):
        self._store = store

    def __enter__(self):
        try:
            self._store._begin_group()
        except sqlite3.Error as e:
            raise _write_error(self._store.path, e) from e

    def __exit__(self, exc_type, exc, tb):
        if not isinstance(exc, sqlite3.Error):
            return False
        error = _write_error(self._store.path, exc)
        if not self._store._db.in_transaction:
            # The group is lost; those waiting for it are told so.
            self._store._abandon_group(error)
        raise error from exc


class _Transaction:
    """One write: BEGIN IMMEDIATE … COMMIT, or ROLLBACK when the block
    raises. Inside an open group it is a savepoint of the group instead,
    and the whole group is committed at the end.

    SQLite errors leave as L{StoreError} naming the file, so that callers
    handle one exception for a store they cannot write.
    """

    def __init__(self, store):
        self._store = store
        self._db = store._db

    def __enter__(self):
        try:
            if self._store._group is not None:
                self._db.execute("SAVEPOINT write")
            else:
                self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise _write_error(self._store.path, e) from e

    def __exit__(self, exc_type, exc, tb):
        if self._store._group is not None:
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
            raise _write_error(self._store.path, exc) from exc
        return False

    def _exit_savepoint(self, exc_type, exc):
        if exc_type is None:
            try:
                self._db.execute("RELEASE write")
            except sqlite3.Error as e:
                exc = e
            else:
                self._store._commit_group()
                return False
        try:
            # Undo this write only; the group's others stand.
            self._db.execute("ROLLBACK TO write")
            self._db.execute("RELEASE write")
        except sqlite3.Error:
            # SQLite rolls the whole transaction back by itself after some
            # errors (a full disk, an I/O error): the group is lost, and
            # those waiting for it are told so.
            self._store._abandon_group(_write_error(self._store.path, exc))
        if isinstance(exc, sqlite3.Error):
            raise _write_error(self._store.path, exc) from exc
        return False


class StoreService(service.Service):
    """Opens the store when the daemon starts and closes it when it stops.

    Opening happens in C{startService}, not earlier, because twistd forks
    when it daemonizes and an SQLite connection must not cross a fork.

    @param checked: the file was checked moments ago (the daemon's options
        open it once before twistd forks); its pages are not read again.
    @param clock: L{IReactorTime} for writing the store's watermark every
        C{WATERMARK_INTERVAL} seconds; None: the reactor.
    """

    _log = Logger()

    def __init__(self, state_dir, schedule_commit=None, checked=False, clock=None):
        self.state_dir = state_dir
        self.store = None
        self._schedule_commit = schedule_commit
        self._checked = checked
        self._clock = clock
        self._watermark = None

    def startService(self):
        self.store = Store.in_state_dir(
            self.state_dir, self._schedule_commit, check=not self._checked
        )
        self._log.info("store open at {path}", path=self.store.path)
        service.Service.startService(self)
        if self._clock is None:
            from twisted.internet import reactor

            self._clock = reactor
        self._watermark = task.LoopingCall(self.store.save_watermark)
        self._watermark.clock = self._clock
        self._watermark.start(WATERMARK_INTERVAL, now=False)

    def stopService(self):
        service.Service.stopService(self)
        if self._watermark is not None and self._watermark.running:
            self._watermark.stop()
        if self.store is not None:
            self.store.close()
            self._log.info("store closed")
