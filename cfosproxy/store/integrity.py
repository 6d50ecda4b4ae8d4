"""The checks at open for a store file that must not be used as it is: a
damaged file, another application's database, and a damaged write-ahead
log whose later commits SQLite would drop without a word.
"""

import shutil
import sqlite3
from datetime import datetime, timezone

from twisted.logger import Logger

from cfosproxy.core.errors import StoreError
from cfosproxy.store.schema import MIGRATIONS, schema_version
from cfosproxy.store.walcheck import check_wal

_log = Logger()


def check_write_ahead_log(path):
    """A log damaged before its last commit loses every commit behind the
    damage when SQLite opens it, silently. Say so, and keep a copy of the
    log for whoever can recover more from it.

    Call it before SQLite opens the store: afterwards, what it dropped is
    gone.

    @param path: the store file; its log is beside it.
    """
    wal = path + "-wal"
    damage = check_wal(wal)
    if damage is None:
        return
    kept = "{}.damaged-{}".format(
        wal, datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    )
    shutil.copy2(wal, kept)
    _log.critical(
        "The store's write-ahead log {wal} is damaged: {damage}. SQLite "
        "drops them: messages queued then may be lost (the next line says "
        "how many, if the store can tell). The log is kept as {kept}.",
        wal=wal,
        damage=damage.describe(),
        kept=kept,
    )


def check_file(db, path):
    """Refuse a file that is damaged or is not a cfosproxy store.

    C{PRAGMA quick_check} reads every page once; for a store of a few
    megabytes that takes milliseconds, and damage is found at start, not in
    the middle of a transaction hours later.

    @param db: the file, opened and not yet written to.
    @param path: the file, for the error message.
    @raise StoreError: the file is damaged, or belongs to another
        application.
    """
    problems = [row[0] for row in db.execute("PRAGMA quick_check") if row[0] != "ok"]
    if problems:
        raise StoreError(damaged(path, problems[0]))
    version = schema_version(db)
    if version > len(MIGRATIONS):
        return  # a newer cfosproxy's; migrate() says so
    found = _table_names(db)
    # The tables this version of the schema has, as SQLite itself makes
    # them from the migrations.
    reference = sqlite3.connect(":memory:")
    try:
        for script in MIGRATIONS[:version]:
            reference.executescript(script)
        expected = _table_names(reference)
    finally:
        reference.close()
    if (version == 0 and found) or not expected <= found:
        raise StoreError(
            "{} is not a cfosproxy store: it holds the tables {} (schema "
            "version {}). It may belong to another application: move it "
            "aside, or set [manager] state_dir to a directory of "
            "cfosproxy's own.".format(path, ", ".join(sorted(found)) or "(none)", version)
        )


def damaged(path, detail):
    """The message for a store file that SQLite finds damaged.

    @param detail: what SQLite said: an exception or C{quick_check}'s text.
    """
    # quick_check's first line only says which database it checked.
    lines = [line for line in str(detail).splitlines() if not line.startswith("***")]
    detail = "; ".join(lines[:3])[:300]
    return (
        "store {path} is damaged ({detail}). Stop cfosproxy, move "
        "{path} aside together with its -wal and -shm files if there are "
        "any, and restore the store from a backup (see Backup in "
        "docs/operations.md). Without a backup, remove it: cfosproxy then "
        "starts with an empty store, and messages still queued for a "
        "backend are lost.".format(path=path, detail=detail)
    )


def _table_names(db):
    """The names of the tables in C{db}, without SQLite's own."""
    rows = db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' "
        "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
    )
    return {name for (name,) in rows}
