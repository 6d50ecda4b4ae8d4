"""The highest message id ever queued, written beside the store
(``cfosproxy.sqlite-watermark``), so that a start after a damaged log or
from an old backup can tell how many queued messages are gone.
"""

import json
import os
import sqlite3
from datetime import datetime, timezone

from twisted.logger import Logger


class Watermark:
    """The watermark file of one store.

    @param store_path: the store file; the watermark is beside it.
    @param connection: the store's L{GroupedConnection}.
    """

    _log = Logger()

    def __init__(self, store_path, connection):
        self._path = store_path + "-watermark"
        self._connection = connection

    def check(self):
        """Compare the highest message id ever queued with the one written
        beside the store before: lower now means committed messages are
        gone (a damaged log, a store restored from an older backup)."""
        try:
            with open(self._path, encoding="utf-8") as f:
                recorded = json.load(f)
            before, at = int(recorded["queued_high_water"]), recorded["at"]
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as e:
            self._log.warn("ignoring {path}: {error}", path=self._path, error=e)
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
                queued=self._connection.db.execute(
                    "SELECT count(*) FROM outbound"
                ).fetchone()[0],
            )
            # What is now the store's is the new baseline.
            self.save()

    def save(self):
        """Write the highest message id queued so far beside the store, for
        the check at the next start. Only what is committed counts: while a
        group is open this waits for the next call."""
        if self._connection.group_open or self._connection.db.in_transaction:
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
        temporary = self._path + ".new"
        try:
            with open(temporary, "w", encoding="utf-8") as f:
                json.dump(record, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, self._path)
        except OSError as e:
            # A full disk: the store's own writes say so louder.
            self._log.debug("cannot write {path}: {error}", path=temporary, error=e)

    def _queued_high_water(self):
        """The highest message id ever queued, as committed."""
        row = self._connection.db.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'outbound'"
        ).fetchone()
        return row[0] if row else 0
