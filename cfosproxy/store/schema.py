"""The store's tables, as a list of migrations, and bringing a file up to
date with them.

PRAGMA user_version counts how many migrations a file has had; a file with
a higher count was written by a newer cfosproxy and is not touched.
"""

from cfosproxy.core.errors import StoreError

# Applied in order. Never edit an entry once released: append a new one.
MIGRATIONS = (
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
    # Settings changed over the status API that outlast a restart (the
    # site limit): the value as text, and when it was set.
    """
    CREATE TABLE settings (
        name   TEXT PRIMARY KEY,
        value  TEXT NOT NULL,
        set_at REAL NOT NULL
    );
    """,
    # What a restart needs of each device (cfosproxy.site.restart): the
    # limit it may hold and its transaction, as a JSON object.
    """
    CREATE TABLE device_state (
        name  TEXT PRIMARY KEY,
        state TEXT NOT NULL
    );
    """,
)


def schema_version(db):
    """How many of the migrations the file open in C{db} has had."""
    (version,) = db.execute("PRAGMA user_version").fetchone()
    return version


def migrate(db, path):
    """Apply the migrations the file open in C{db} lacks.

    @param path: the file, for the error message.
    @raise StoreError: a newer cfosproxy wrote the file.
    """
    version = schema_version(db)
    if version > len(MIGRATIONS):
        # A newer cfosproxy wrote this file; its schema is unknown here.
        raise StoreError(
            "cannot open store {}: schema version {} is newer than this "
            "cfosproxy knows ({})".format(path, version, len(MIGRATIONS))
        )
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        # executescript() commits before it runs, so the migration and
        # its version number go in as one script, one transaction.
        db.executescript(
            "BEGIN IMMEDIATE;\n{}\nPRAGMA user_version = {:d};\nCOMMIT;".format(
                script, number
            )
        )
