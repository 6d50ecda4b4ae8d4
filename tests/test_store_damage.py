"""A store file that is damaged or not a store at all: opening it fails
with a StoreError that names the file and says what to do, the file is left
as it was, and the daemon does not start on it. A damaged write-ahead log,
whose later commits SQLite would drop without a word, is said at start."""

import glob
import os
import shutil
import sqlite3
import subprocess
import sys

import pytest
from twisted.logger import formatEvent, globalLogPublisher

from cfosproxy.store import STORE_FILE, Store, StoreError
from cfosproxy.store.walcheck import check_wal
from tests.harness import TWISTD, daemon_env, free_port

PAGE = 4096


def store_with_data(path):
    """A closed store of a few dozen pages: a queue of messages, as after a
    backend outage, plus the other tables' rows."""
    # Queued messages grouped into one commit (the daemon commits at the
    # end of the reactor's turn; here at the end), so one fsync, not 300.
    store = Store(path, schedule_commit=lambda commit: None)
    try:
        for n in range(300):
            store.enqueue("CB-1", "MeterValues", '[2,"m%d","MeterValues",{}]' % n + " " * 400, float(n))
        store.next_transaction_id()
        store.set_device_enabled("garage-1", False)
        store.save_boot("CB-1", '[2,"b","BootNotification",{}]')
        store.commit()
    finally:
        store.close()
    # Closing the last connection folds the WAL into the file and removes
    # it, so the damage below hits the only copy of the data.
    assert not os.path.exists(path + "-wal")


def overwrite(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def truncate(path, size):
    with open(path, "r+b") as f:
        f.truncate(size)


def middle_page(path):
    return (os.path.getsize(path) // PAGE // 2) * PAGE


# Deterministic junk, so a failure can be reproduced byte for byte.
JUNK = bytes(range(256)) * (PAGE // 256)


def garbage(path):
    with open(path, "wb") as f:
        f.write(JUNK * 3)


def damaged_page(path):
    store_with_data(path)
    overwrite(path, middle_page(path), JUNK)


def damaged_page_header(path):
    # Only the b-tree page header: the page looks like a page, but of no
    # known kind.
    store_with_data(path)
    overwrite(path, middle_page(path), b"\xff" * 16)


def truncated_to_half(path):
    store_with_data(path)
    truncate(path, middle_page(path))


def truncated_mid_header(path):
    store_with_data(path)
    truncate(path, 50)


def first_page_damaged(path):
    store_with_data(path)
    overwrite(path, 100, JUNK[:200])


def other_application(path):
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT);"
        "INSERT INTO photos (name) VALUES ('garage.jpg');"
    )
    db.close()


def other_application_with_version(path):
    # An application that counts its schema in user_version as we do.
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE counters (name TEXT, value INTEGER);"
        "CREATE TABLE settings (key TEXT, value TEXT);"
        "PRAGMA user_version = 3;"
    )
    db.close()


DAMAGED = [garbage, damaged_page, damaged_page_header, truncated_to_half, truncated_mid_header, first_page_damaged]
FOREIGN = [other_application, other_application_with_version]


def file_bytes(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.mark.parametrize("damage", DAMAGED, ids=lambda f: f.__name__)
def test_damaged_store_is_refused_at_open(tmp_path, damage):
    """Garbage, a truncated file, a page overwritten in the middle or at the
    start: Store() raises StoreError naming the file, calling it damaged and
    saying to move it aside and restore a backup; the file is not changed."""
    path = str(tmp_path / STORE_FILE)
    damage(path)
    before = file_bytes(path)
    with pytest.raises(StoreError) as raised:
        Store(path)
    message = str(raised.value)
    assert path in message
    assert "is damaged" in message
    assert "move" in message and "backup" in message
    assert file_bytes(path) == before


@pytest.mark.parametrize("make", FOREIGN, ids=lambda f: f.__name__)
def test_other_applications_database_is_refused_untouched(tmp_path, make):
    """A valid SQLite file of another application is not turned into a
    store (no tables added, no WAL mode set): StoreError names the file,
    its tables, and says to move it or choose another state_dir."""
    path = str(tmp_path / STORE_FILE)
    make(path)
    before = file_bytes(path)
    with pytest.raises(StoreError) as raised:
        Store(path)
    message = str(raised.value)
    assert path in message
    assert "not a cfosproxy store" in message
    assert "settings" in message or "photos" in message
    assert "state_dir" in message
    assert file_bytes(path) == before


def test_intact_store_with_data_opens(tmp_path):
    """The check does not refuse a good store: one with data opens and
    reads back what it holds."""
    path = str(tmp_path / STORE_FILE)
    store_with_data(path)
    store = Store(path)
    try:
        assert store.queue_length("CB-1") == 300
        assert store.device_flags() == {"garage-1": False}
    finally:
        store.close()


@pytest.fixture(scope="module")
def daemon_on_damaged_store(tmp_path_factory):
    """``twistd -n cfosproxy`` started once on a state_dir whose store has
    a damaged page: its exit status, its output and the store's path."""
    directory = tmp_path_factory.mktemp("damaged")
    state_dir = directory / "var"
    state_dir.mkdir()
    path = str(state_dir / STORE_FILE)
    damaged_page(path)
    config = directory / "cfosproxy.ini"
    config.write_text(
        "[server]\nlisten = tcp:{}:interface=127.0.0.1\ntls = off\n"
        "[manager]\nstate_dir = {}\n"
        "[status]\nlisten = tcp:{}:interface=127.0.0.1\n".format(free_port(), state_dir, free_port())
    )
    result = subprocess.run(
        [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "cfosproxy", "--config", str(config)],
        cwd=str(directory), env=daemon_env(), capture_output=True, text=True, timeout=60,
    )
    return result.returncode, result.stdout + result.stderr, path


def test_daemon_does_not_start_on_a_damaged_store(daemon_on_damaged_store):
    """The daemon refuses to run on a damaged store: it exits non-zero and
    its output names the file and says to restore a backup."""
    returncode, output, path = daemon_on_damaged_store
    assert returncode != 0, output
    assert "store {} is damaged".format(path) in output
    assert "restore the store from a backup" in output


def test_daemon_refusal_is_one_message_without_traceback(daemon_on_damaged_store):
    """An operator reading the log of a refused start sees the message, not
    a Python traceback around it."""
    returncode, output, path = daemon_on_damaged_store
    assert "Traceback" not in output


def test_a_file_checked_moments_ago_is_not_read_again(tmp_path, monkeypatch):
    """The daemon checks the store before twistd forks and opens it again
    after: the second open skips the page-by-page check, the first one
    makes it."""
    from cfosproxy.store import facade

    checks = []
    real = facade.check_file
    monkeypatch.setattr(
        facade, "check_file", lambda db, path: checks.append(path) or real(db, path)
    )
    Store.in_state_dir(str(tmp_path)).close()
    Store.in_state_dir(str(tmp_path), check=False).close()
    assert checks == [str(tmp_path / STORE_FILE)]


# -- a damaged write-ahead log ---------------------------------------------------
#
# SQLite reads the log up to the first frame whose checksum fails and drops
# everything behind it without a word. The store checks the log before
# SQLite opens it, says what would be lost, keeps a copy of the log, and
# says how many queued messages are gone.


def crashed_store(tmp_path, commits, watermark=True):
    """A store as a crash leaves it: C{commits} messages queued, each in a
    commit of its own, all still in the write-ahead log (the process died
    before any checkpoint). Returns the crashed store file's path."""
    live = str(tmp_path / "live" / STORE_FILE)
    store = Store(live)
    store._connection.db.execute("PRAGMA wal_autocheckpoint = 0")
    for n in range(commits):
        store.enqueue("CB-1", "MeterValues", '[2,"m%d","MeterValues",{}]' % n, float(n))
    if watermark:
        store.save_watermark()
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    for suffix in ("", "-wal", "-watermark"):
        if os.path.exists(live + suffix):
            shutil.copy(live + suffix, str(crashed / STORE_FILE) + suffix)
    store.close()
    return str(crashed / STORE_FILE)


def wal_frames(path):
    size = os.path.getsize(path + "-wal")
    return (size - 32) // (24 + PAGE)


def damage_frame(path, frame):
    """Flip a byte in the page of frame C{frame} (from 1) of the log."""
    offset = 32 + (frame - 1) * (24 + PAGE) + 24 + 200
    with open(path + "-wal", "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def open_and_log(path):
    """Open the store; return it and the log lines it wrote."""
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        store = Store(path)
    finally:
        globalLogPublisher.removeObserver(events.append)
    return store, [(e["log_level"].name, formatEvent(e)) for e in events if "log_level" in e]


def test_a_whole_log_is_whole(tmp_path):
    """A log as a crash leaves it, undamaged: nothing to report, and every
    message is there."""
    path = crashed_store(tmp_path, 20)
    assert wal_frames(path) > 20
    assert check_wal(path + "-wal") is None
    store, logged = open_and_log(path)
    assert len(store.queued("CB-1")) == 20
    assert [line for line in logged if line[0] == "critical"] == []
    store.close()


def test_damage_in_the_middle_of_the_log_is_said_and_kept(tmp_path):
    """A frame damaged in the middle of the log: SQLite drops every commit
    behind it. The store says so at open (critical: which frame, how many
    commits), keeps a copy of the damaged log beside the store, and says how
    many queued messages are gone compared with what had been queued."""
    path = crashed_store(tmp_path, 20)
    frames = wal_frames(path)
    damage_frame(path, frames // 2)
    damage = check_wal(path + "-wal")
    assert damage is not None and damage.frame == frames // 2 and damage.lost_commits >= 5
    store, logged = open_and_log(path)
    kept = len(store.queued("CB-1"))
    assert kept < 20  # SQLite did drop them
    critical = [text for level, text in logged if level == "critical"]
    assert len(critical) == 2, logged
    assert "damaged" in critical[0] and "frame {} of {}".format(frames // 2, frames) in critical[0]
    assert "Up to {} message(s)".format(20 - kept) in critical[1]
    assert "the queue now holds {}".format(kept) in critical[1]
    [copy] = glob.glob(path + "-wal.damaged-*")
    assert check_wal(copy) is not None
    store.close()
    # Said once: the next start takes the store as it now is.
    store, logged = open_and_log(path)
    assert [line for line in logged if line[0] == "critical"] == []
    store.close()


def test_a_torn_last_transaction_is_no_damage(tmp_path):
    """A crash in the middle of the last commit tears its frames; that commit
    was never acknowledged, so losing it is right and nothing is reported."""
    path = crashed_store(tmp_path, 20, watermark=False)
    damage_frame(path, wal_frames(path))
    assert check_wal(path + "-wal") is None
    store, logged = open_and_log(path)
    assert len(store.queued("CB-1")) == 19
    assert [line for line in logged if line[0] == "critical"] == []
    store.close()


def test_a_restored_old_backup_says_what_is_gone(tmp_path):
    """A store restored from a backup older than the watermark written
    beside it: the start says how many messages queued since are gone."""
    path = str(tmp_path / STORE_FILE)
    store = Store(path)
    for n in range(3):
        store.enqueue("CB-1", "MeterValues", "m%d" % n, 0.0)
    store.close()
    shutil.copy(path, str(tmp_path / "backup"))
    store = Store(path)
    for n in range(7):
        store.enqueue("CB-1", "MeterValues", "n%d" % n, 0.0)
    store.close()
    shutil.copy(str(tmp_path / "backup"), path)
    store, logged = open_and_log(path)
    [critical] = [text for level, text in logged if level == "critical"]
    assert "store ends at 3" in critical and "Up to 7 message(s)" in critical
    store.close()
