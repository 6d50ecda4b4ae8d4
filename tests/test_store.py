"""The SQLite store: what the gateway keeps through a backend outage, a
restart and a crash."""

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys

import pytest
from zope.interface.verify import verifyObject

from cfosproxy.core.interfaces import IIdTagCache, IOutboundQueue, ITransactionIds
from cfosproxy.store import STORE_FILE, DeadLetter, QueuedMessage, Store, StoreError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def store(tmp_path):
    store = Store.in_state_dir(str(tmp_path))
    yield store
    store.close()


def texts(messages):
    return [message.text for message in messages]


def is_local_transaction(store, link, local_id):
    """Whether C{store}'s file holds C{local_id} as given out locally on
    C{link}, mapped to a backend id yet or not, as another opener of the
    file sees it (the gateway never asks: it maps what it marked)."""
    with contextlib.closing(sqlite3.connect(store.path)) as other:
        row = other.execute(
            "SELECT 1 FROM transaction_ids WHERE link = ? AND local_id = ?",
            (link, local_id),
        ).fetchone()
    return row is not None


@pytest.mark.parametrize(
    "contract", [IOutboundQueue, ITransactionIds, IIdTagCache], ids=lambda i: i.__name__
)
def test_store_provides_the_cores_contracts(store, contract):
    """The store declares each contract the gateway and the local central
    system are written against, and has every method of it with the
    contract's signature."""
    assert verifyObject(contract, store)


def test_queue_keeps_order_per_link_and_links_apart(store):
    """Each link has its own queue, read back oldest first, and a link's
    messages never show up in another's."""
    a1 = store.enqueue("box-a", "StartTransaction", "a1", 10.0)
    b1 = store.enqueue("box-b", "MeterValues", "b1", 11.0)
    a2 = store.enqueue("box-a", "MeterValues", "a2", 12.0)
    a3 = store.enqueue("box-a", "StopTransaction", "a3", 13.0)

    assert a1 == QueuedMessage(a1.id, "box-a", "StartTransaction", "a1", 0, None, 10.0)
    assert store.queued("box-a") == [a1, a2, a3]
    assert store.queued("box-b") == [b1]
    assert store.queued("box-a", limit=2) == [a1, a2]
    assert store.first_queued("box-a") == a1
    assert store.queue_length("box-a") == 3
    assert store.queued("box-c") == []
    assert store.first_queued("box-c") is None
    assert store.queue_length("box-c") == 0

    store.delivered(a1.id)
    store.delivered(a1.id)  # again: already gone, nothing happens
    assert store.first_queued("box-a") == a2
    assert store.queue_length("box-a") == 2
    assert store.queued("box-b") == [b1]


def test_message_ids_are_never_reused(store):
    """A message enqueued after the newest one was delivered gets a new id,
    so an id held from before can never name a different message."""
    first = store.enqueue("box", "Heartbeat", "1", 1.0)
    store.delivered(first.id)
    second = store.enqueue("box", "Heartbeat", "2", 2.0)
    assert second.id > first.id


def test_everything_survives_close_and_reopen(tmp_path):
    """Queue, dead letters, transaction map, id tags and boot text are all
    there after the store is closed and opened again."""
    store = Store.in_state_dir(str(tmp_path))
    m1 = store.enqueue("box", "StartTransaction", "m1", 1.0)
    m2 = store.enqueue("box", "MeterValues", "m2", 2.0)
    m3 = store.enqueue("box", "DataTransfer", "m3", 3.0)
    dead = store.dead_letter(m3.id, "no answer", 4.0)
    store.map_transaction("box", 7, 4711)
    store.remember_id_tag("box", "TAG", {"status": "Accepted"}, 5.0)
    store.save_boot("box", "boot text")
    store.close()

    store = Store.in_state_dir(str(tmp_path))
    try:
        assert store.queued("box") == [m1, m2]
        assert store.dead_letters() == [dead]
        assert store.backend_transaction_id("box", 7) == 4711
        assert store.cached_id_tag("box", "TAG", 6.0) == {"status": "Accepted"}
        assert store.last_boot("box") == "boot text"
    finally:
        store.close()


def test_commits_are_visible_without_close(tmp_path):
    """What was written is there for a second opener of the file while the
    first was never closed, as after a crash."""
    crashed = Store.in_state_dir(str(tmp_path))
    try:
        m1 = crashed.enqueue("box", "StartTransaction", "m1", 1.0)
        crashed.attempt_failed(m1.id, "timeout")
        crashed.mark_local_transaction("box", 3)
        crashed.save_boot("box", "boot")

        reopened = Store.in_state_dir(str(tmp_path))
        try:
            [message] = reopened.queued("box")
            assert (message.id, message.text, message.attempts) == (m1.id, "m1", 1)
            assert is_local_transaction(reopened, "box", 3)
            assert reopened.last_boot("box") == "boot"
        finally:
            reopened.close()
    finally:
        crashed.close()


def test_attempts_are_counted(store):
    """Each failed delivery counts one attempt and keeps the latest error;
    the message stays first in its queue."""
    message = store.enqueue("box", "StartTransaction", "m", 1.0)
    assert store.attempt_failed(message.id, "timeout") == 1
    assert store.attempt_failed(message.id, "CALLERROR InternalError") == 2
    first = store.first_queued("box")
    assert (first.id, first.attempts, first.last_error) == (
        message.id,
        2,
        "CALLERROR InternalError",
    )
    with pytest.raises(KeyError):
        store.attempt_failed(message.id + 1, "no such message")


def test_dead_letter_moves_the_message(store):
    """A dead-lettered message leaves its queue and shows up among the dead
    letters with its attempts, the reason and both times; the rest of the
    queue keeps its order."""
    m1 = store.enqueue("box", "StartTransaction", "m1", 1.0)
    m2 = store.enqueue("box", "MeterValues", "m2", 2.0)
    other = store.enqueue("other", "MeterValues", "o1", 2.5)
    store.attempt_failed(m1.id, "CALLERROR")
    store.attempt_failed(m1.id, "CALLERROR")

    dead = store.dead_letter(m1.id, "rejected by backend", 3.0)

    assert dead == DeadLetter(
        m1.id, "box", "StartTransaction", "m1", 2, "rejected by backend", 1.0, 3.0
    )
    assert store.queued("box") == [m2]
    assert store.dead_letters("box") == [dead]
    assert store.dead_letters("other") == []
    dead_other = store.dead_letter(other.id, "too old", 4.0)
    assert store.dead_letters() == [dead, dead_other]
    with pytest.raises(KeyError):
        store.dead_letter(m1.id, "twice", 5.0)
    assert store.dead_letters() == [dead, dead_other]


def test_replace_text(store):
    """A queued message's text can be rewritten in place, keeping its id,
    position and attempts."""
    m1 = store.enqueue("box", "MeterValues", '{"transactionId":1}', 1.0)
    m2 = store.enqueue("box", "StopTransaction", '{"transactionId":1}', 2.0)
    store.attempt_failed(m1.id, "timeout")
    store.replace_text(m1.id, '{"transactionId":4711}')
    assert texts(store.queued("box")) == ['{"transactionId":4711}', m2.text]
    assert store.first_queued("box").attempts == 1
    with pytest.raises(KeyError):
        store.replace_text(m2.id + 1, "no such message")


def test_transaction_map_both_ways(store):
    """Local ids are marked, then mapped to the backend's ids; lookups work
    in both directions and per link."""
    assert not is_local_transaction(store, "box", 5)
    store.mark_local_transaction("box", 5)
    store.mark_local_transaction("box", 5)  # twice is harmless
    assert is_local_transaction(store, "box", 5)
    assert not is_local_transaction(store, "other", 5)
    assert store.backend_transaction_id("box", 5) is None

    store.map_transaction("box", 5, 900)
    store.map_transaction("other", 6, 900)
    assert is_local_transaction(store, "box", 5)
    assert store.backend_transaction_id("box", 5) == 900
    assert store.local_transaction_id("box", 900) == 5
    assert store.local_transaction_id("other", 900) == 6
    assert store.local_transaction_id("box", 901) is None
    assert store.backend_transaction_id("box", 6) is None

    # Marking again does not forget the mapping.
    store.mark_local_transaction("box", 5)
    assert store.backend_transaction_id("box", 5) == 900


def test_id_tag_cache_honours_status_and_expiry(store):
    """Only id tags the backend accepted come back, and only until their
    expiryDate; a later non-Accepted answer replaces an Accepted one."""
    # 2030-01-01T00:00:00Z
    expiry = 1893456000.0
    store.remember_id_tag("box", "OPEN", {"status": "Accepted"}, 1.0)
    dated = {"status": "Accepted", "expiryDate": "2030-01-01T00:00:00Z"}
    store.remember_id_tag("box", "DATED", dated, 1.0)
    offset = {"status": "Accepted", "expiryDate": "2030-01-01T01:00:00+01:00"}
    store.remember_id_tag("box", "OFFSET", offset, 1.0)
    store.remember_id_tag("box", "BLOCKED", {"status": "Blocked"}, 1.0)
    junk = {"status": "Accepted", "expiryDate": "soon"}
    store.remember_id_tag("box", "JUNK", junk, 1.0)

    assert store.cached_id_tag("box", "OPEN", expiry + 1e6) == {"status": "Accepted"}
    assert store.cached_id_tag("box", "DATED", expiry - 1) == dated
    assert store.cached_id_tag("box", "DATED", expiry) is None
    assert store.cached_id_tag("box", "OFFSET", expiry - 1) is not None
    assert store.cached_id_tag("box", "OFFSET", expiry) is None
    assert store.cached_id_tag("box", "BLOCKED", 2.0) is None
    assert store.cached_id_tag("box", "JUNK", 2.0) is None
    assert store.cached_id_tag("box", "UNKNOWN", 2.0) is None
    assert store.cached_id_tag("other", "OPEN", 2.0) is None

    store.remember_id_tag("box", "OPEN", {"status": "Blocked"}, 3.0)
    assert store.cached_id_tag("box", "OPEN", 4.0) is None


def test_boot_notification_is_kept_per_link(store):
    """The latest BootNotification text of each link comes back."""
    assert store.last_boot("box") is None
    store.save_boot("box", "first")
    store.save_boot("box", "second")
    store.save_boot("other", "theirs")
    assert store.last_boot("box") == "second"
    assert store.last_boot("other") == "theirs"


def test_migrates_a_database_of_the_previous_schema(tmp_path):
    """A file written by the release with only counters and device flags
    opens with its data intact and gains the gateway tables."""
    path = str(tmp_path / STORE_FILE)
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
        CREATE TABLE device_flags (name TEXT PRIMARY KEY, enabled INTEGER NOT NULL);
        INSERT INTO counters VALUES ('transaction', 41);
        INSERT INTO device_flags VALUES ('garage', 0);
        PRAGMA user_version = 2;
        """
    )
    old.close()

    store = Store(path)
    try:
        assert store.next_transaction_id() == 42
        assert store.device_flags() == {"garage": False}
        message = store.enqueue("box", "Heartbeat", "[2,\"1\",\"Heartbeat\",{}]", 1.0)
        assert store.queued("box") == [message]
    finally:
        store.close()


def test_newer_schema_is_refused(tmp_path):
    """A file from a newer cfosproxy is not used with a schema this one does
    not know: StoreError naming the file."""
    path = str(tmp_path / STORE_FILE)
    newer = sqlite3.connect(path)
    newer.execute("PRAGMA user_version = 999")
    newer.close()
    with pytest.raises(StoreError, match="newer") as raised:
        Store(path)
    assert path in str(raised.value)


def test_garbage_file_gives_store_error(tmp_path):
    """A store file that is not SQLite gives StoreError naming the file."""
    path = str(tmp_path / STORE_FILE)
    with open(path, "wb") as f:
        f.write(os.urandom(64) + b"this is not a database" * 200)
    with pytest.raises(StoreError) as raised:
        Store(path)
    assert path in str(raised.value)


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="root writes to read-only directories",
)
def test_read_only_state_dir_gives_store_error(tmp_path):
    """A state directory the daemon cannot write to gives StoreError naming
    the file, not a crash later."""
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o500)
    try:
        with pytest.raises(StoreError) as raised:
            Store.in_state_dir(str(state))
        assert str(state / STORE_FILE) in str(raised.value)
    finally:
        state.chmod(0o700)


def test_state_dir_that_cannot_be_made_gives_store_error(tmp_path):
    """A state directory that cannot be created (a file is in the way)
    gives StoreError naming the file."""
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    with pytest.raises(StoreError) as raised:
        Store.in_state_dir(str(blocker / "state"))
    assert str(blocker / "state" / STORE_FILE) in str(raised.value)


# Enqueue 200 messages, saying each id only after enqueue returned, then
# wait (never closing the store) until killed.
CHILD = """
import sys
from cfosproxy.store import Store
store = Store(sys.argv[1])
for n in range(200):
    message = store.enqueue("box", "MeterValues", "message %d" % n, float(n))
    print(message.id, flush=True)
sys.stdin.read()
"""


def test_sigkill_loses_no_acknowledged_message(tmp_path):
    """A process SIGKILLed while enqueueing loses none of the messages it
    had acknowledged; they come back in order (plus at most the one it
    had stored but not yet acknowledged)."""
    path = str(tmp_path / STORE_FILE)
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    acknowledged = []
    try:
        while len(acknowledged) < 100:
            line = child.stdout.readline()
            assert line, "child died early"
            acknowledged.append(int(line))
        child.send_signal(signal.SIGKILL)
        acknowledged.extend(int(line) for line in child.stdout)
    finally:
        child.kill()
        child.wait()
        child.stdin.close()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL

    store = Store(path)
    try:
        messages = store.queued("box")
    finally:
        store.close()
    ids = [message.id for message in messages]
    assert ids == sorted(ids)
    assert ids[: len(acknowledged)] == acknowledged
    assert len(ids) - len(acknowledged) <= 1
    assert texts(messages) == ["message %d" % n for n in range(len(messages))]


def test_local_transaction_id_kept_with_message(tmp_path):
    """The local transaction id of a queued StartTransaction is kept with
    it, across a reopen."""
    store = Store(str(tmp_path / "s.sqlite"))
    message = store.enqueue("CB-1", "StartTransaction", "[2,\"a\",\"StartTransaction\",{}]", 1.0)
    assert store.first_queued("CB-1").local_transaction_id is None
    store.set_local_transaction(message.id, 17)
    store.close()
    again = Store(str(tmp_path / "s.sqlite"))
    assert again.first_queued("CB-1").local_transaction_id == 17
