"""When the store's writes are on disk: grouped commits, and a full disk.

Grouped writes (a message queued, a message delivered) share one commit at
the end of the reactor's turn; whoever must wait for them to be on disk waits
for C{durable()}. A disk that is full (simulated with SQLite's own
C{max_page_count}, which fails a write exactly as a full disk does:
"database or disk is full") makes the write fail with a L{StoreError} and
loses nothing that was kept before.
"""

import json
import sqlite3

import pytest
from twisted.internet import task

from cfosproxy.core.gateway import LOCAL_TRANSACTION_IDS, Gateway
from cfosproxy.core.localcs import LocalCentralSystem
from cfosproxy.core.session import OcppSession
from cfosproxy.store import Store, StoreError
from tests.fakes import RecordingConnection
from tests.test_gateway import START, FakeLink


class Scheduler:
    """C{schedule_commit} for the tests: keeps the commit until told."""

    def __init__(self):
        self.pending = []

    def __call__(self, f):
        self.pending.append(f)

    def run(self):
        pending, self.pending = self.pending, []
        for f in pending:
            f()


def on_disk(path):
    """The queued texts as another connection (another process, a restart)
    sees them: only what is committed."""
    with sqlite3.connect(path) as other:
        return [text for (text,) in other.execute("SELECT text FROM outbound ORDER BY id")]


@pytest.fixture
def grouped(tmp_path):
    scheduler = Scheduler()
    path = str(tmp_path / "s.sqlite")
    store = Store(path, scheduler)
    yield store, scheduler, path
    store.close()


def test_grouped_writes_share_one_commit(grouped):
    """Messages queued in one turn are on disk only after the scheduled
    commit, which is scheduled once for all of them; durable() fires then."""
    store, scheduler, path = grouped
    fired = []
    for n in range(3):
        store.enqueue("CB-1", "MeterValues", "m{}".format(n), 0)
        store.durable().addCallback(fired.append)
    assert len(scheduler.pending) == 1
    assert on_disk(path) == [] and fired == []
    scheduler.run()
    assert on_disk(path) == ["m0", "m1", "m2"]
    assert fired == [None, None, None]


def test_durable_without_pending_writes_fires_at_once(grouped):
    """Nothing waiting to be committed: durable() has already fired."""
    store, _, _ = grouped
    fired = []
    store.durable().addCallback(fired.append)
    assert fired == [None]


def test_plain_write_commits_the_group_but_tells_waiters_later(grouped):
    """A write that must be on disk when it returns (a transaction id
    handed out) commits the open group with it; those waiting on the group
    hear of it at the scheduled commit, not from inside that write."""
    store, scheduler, path = grouped
    fired = []
    store.enqueue("CB-1", "StartTransaction", "s", 0)
    store.durable().addCallback(fired.append)
    store.next_transaction_id()
    assert on_disk(path) == ["s"]
    assert fired == []
    scheduler.run()
    assert fired == [None]


def test_close_commits_what_is_pending(tmp_path):
    """Stopping the daemon commits a group that is still open."""
    path = str(tmp_path / "s.sqlite")
    store = Store(path, Scheduler())
    store.enqueue("CB-1", "MeterValues", "last", 0)
    store.close()
    assert on_disk(path) == ["last"]


def fill(store):
    """Let the file grow no more: every page it has is all it gets."""
    # The store's connection is the one whose writes must fail.
    (pages,) = store._connection.db.execute("PRAGMA page_count").fetchone()
    store._connection.db.execute("PRAGMA max_page_count = {:d}".format(pages))


def free(store):
    store._connection.db.execute("PRAGMA max_page_count = 1073741823")


def test_full_disk_fails_the_write_with_a_clear_error(tmp_path):
    """A write the disk has no room for raises StoreError naming the file
    and SQLite's reason; what was queued before stays; once there is room
    again, writes work."""
    path = str(tmp_path / "s.sqlite")
    store = Store(path)
    store.enqueue("CB-1", "StartTransaction", "kept", 0)
    fill(store)
    with pytest.raises(StoreError) as error:
        for n in range(1000):
            store.enqueue("CB-1", "MeterValues", "x" * 4000, 0)
    assert path in str(error.value) and "full" in str(error.value)
    assert store.queued("CB-1")[0].text == "kept"
    free(store)
    store.enqueue("CB-1", "StopTransaction", "after", 0)
    assert on_disk(path)[0] == "kept" and on_disk(path)[-1] == "after"
    store.close()


def test_full_disk_in_a_group_tells_the_truth(grouped):
    """In a group, the write that does not fit fails. SQLite may undo the
    whole group with it (it does after a full disk); whatever happened,
    those waiting on the group hear "stored" exactly when their write is
    on disk, and a failure otherwise."""
    store, scheduler, path = grouped
    store.enqueue("CB-1", "StartTransaction", "first", 0)
    outcome = []
    store.durable().addCallbacks(
        lambda _: outcome.append("stored"), lambda f: outcome.append(f.trap(StoreError))
    )
    fill(store)
    with pytest.raises(StoreError):
        for n in range(1000):
            store.enqueue("CB-1", "MeterValues", "x" * 4000, 0)
    free(store)
    scheduler.run()
    if outcome == ["stored"]:
        assert on_disk(path)[0] == "first"
    else:
        assert outcome == [StoreError] and "first" not in on_disk(path)
    # The store goes on working either way.
    store.enqueue("CB-1", "StopTransaction", "after", 0)
    scheduler.run()
    assert on_disk(path)[-1] == "after"


class FailingConnection:
    """The store's connection, with the statements that C{fails(sql)}
    picks raising C{error} instead of running."""

    error = sqlite3.OperationalError("disk I/O error")

    def __init__(self, db):
        self._db = db

    def fails(self, sql):
        raise NotImplementedError

    def execute(self, sql, *args):
        if self.fails(sql):
            raise self.error
        return self._db.execute(sql, *args)

    @property
    def in_transaction(self):
        return self._db.in_transaction

    def close(self):
        self._db.close()


class CommitFails(FailingConnection):
    """COMMIT fails as on an I/O error: SQLite offers no portable way to
    make just the COMMIT fail."""

    def fails(self, sql):
        return sql == "COMMIT"


def test_failed_commit_tells_every_waiter(grouped):
    """A commit that fails undoes the group and fails every durable()
    waiting on it with the StoreError, so that none of their wallboxes is
    told "stored"; the store then works again."""
    store, scheduler, path = grouped
    store.enqueue("CB-1", "MeterValues", "lost", 0)
    failures = []
    store.durable().addErrback(failures.append)
    connection = store._connection
    real, connection.db = connection.db, CommitFails(connection.db)
    scheduler.run()
    connection.db = real
    assert len(failures) == 1 and failures[0].check(StoreError)
    assert "disk I/O error" in str(failures[0].value)
    assert on_disk(path) == [] and store.queued("CB-1") == []
    store.enqueue("CB-1", "MeterValues", "next", 0)
    scheduler.run()
    assert on_disk(path) == ["next"]


class GatewayRig:
    """A gateway on a grouped store, as the daemon runs it."""

    def __init__(self, tmp_path):
        self.clock = task.Clock()
        self.scheduler = Scheduler()
        self.store = Store(str(tmp_path / "store.sqlite"), self.scheduler)
        # next_transaction_id: the store's, unless a test replaces it.
        self.next_transaction_id = self.store.next_transaction_id
        local = LocalCentralSystem(self.clock, 300, lambda: self.next_transaction_id())
        self.link = FakeLink()
        self.gateway = Gateway(
            "CB-1", "CB-1", lambda: self.store, local, self.clock, 30, "accept",
            link=lambda handler: self.link,
        )
        self.wallbox = RecordingConnection()
        self.session = OcppSession("CB-1", self.wallbox, self.gateway.answer, (), self.clock, 30)
        self.gateway.session_opened(self.session)

    def send(self, unique_id, action, payload):
        self.session.text_received(json.dumps([2, unique_id, action, payload]))


def test_gateway_answers_only_after_the_commit(tmp_path):
    """The wallbox hears nothing of a transaction message before it is on
    disk: its answer waits for the group's commit."""
    rig = GatewayRig(tmp_path)
    rig.send("s1", "StartTransaction", START)
    assert rig.wallbox.sent == []
    rig.scheduler.run()
    [answer] = rig.wallbox.frames
    assert answer[:2] == [3, "s1"]
    assert answer[2]["transactionId"] == LOCAL_TRANSACTION_IDS + 1
    rig.store.close()


def test_gateway_with_a_full_disk_answers_an_error_and_loses_nothing(tmp_path):
    """With no room on disk the wallbox gets a CALLERROR for its
    transaction message (so that it keeps it and sends it again), the
    messages queued before stay queued, and once there is room again the
    same message is taken, and the error shown is cleared."""
    rig = GatewayRig(tmp_path)
    rig.send("s1", "StartTransaction", START)
    rig.scheduler.run()
    fill(rig.store)
    big = {"connectorId": 1, "transactionId": 1, "meterValue": [
        {"timestamp": "2026-11-23T10:00:00Z", "sampledValue": [{"value": "1" * 8000}]}]}
    rig.send("m1", "MeterValues", big)
    rig.scheduler.run()
    answer = rig.wallbox.frames[-1]
    assert answer[:3] == [4, "m1", "InternalError"]
    assert "full" in rig.gateway.status()["last_error"]
    assert [m.action for m in rig.store.queued("CB-1")] == ["StartTransaction"]
    free(rig.store)
    rig.send("m1", "MeterValues", big)
    rig.scheduler.run()
    assert rig.wallbox.frames[-1] == [3, "m1", {}]
    # The store works again: the status API says so.
    assert rig.gateway.status()["last_error"] is None
    assert [m.action for m in rig.store.queued("CB-1")] == ["StartTransaction", "MeterValues"]
    rig.store.close()


def test_damage_while_running_says_what_to_do(tmp_path):
    """A store that SQLite finds malformed in the middle of a write (a disk
    failure while running) gives an error that says what to do."""

    class Malformed(FailingConnection):
        error = sqlite3.DatabaseError("database disk image is malformed")

        def fails(self, sql):
            return sql.startswith("INSERT")

    store = Store(str(tmp_path / "s.sqlite"))
    store._connection.db = Malformed(store._connection.db)
    with pytest.raises(StoreError) as error:
        store.enqueue("CB-1", "MeterValues", "m", 0)
    assert "restore the store from a backup" in str(error.value)
    store.close()


def test_backend_answer_before_the_commit_is_told_reaches_the_wallbox(tmp_path):
    """Another write that must be on disk at once (a transaction id handed
    out elsewhere) commits the open group early, and the backend link opens
    and accepts the boot before the commit's waiters are told at the end of
    the turn. The queue leaves the new StartTransaction to its wallbox's
    waiter, which sends it on; the wallbox gets the backend's answer, with
    the backend's transaction id, not a local one."""
    rig = GatewayRig(tmp_path)
    rig.send("b1", "BootNotification", {"chargePointVendor": "v", "chargePointModel": "m"})
    rig.scheduler.run()
    rig.send("s1", "StartTransaction", START)
    rig.store.next_transaction_id()  # commits the group now
    rig.gateway.link_opened(rig.link)
    boot = json.loads(rig.link.sent[-1])
    assert boot[2] == "BootNotification"
    rig.gateway.text_received(json.dumps(
        [3, boot[1], {"status": "Accepted", "currentTime": "2026-11-23T10:00:00Z", "interval": 300}]
    ))
    assert json.loads(rig.link.sent[-1])[2] == "BootNotification"  # s1 waits
    rig.scheduler.run()
    assert json.loads(rig.link.sent[-1])[1] == "s1"
    rig.gateway.text_received(
        '[3,"s1",{"transactionId":4711,"idTagInfo":{"status":"Accepted"}}]'
    )
    assert rig.wallbox.sent[-1] == '[3,"s1",{"transactionId":4711,"idTagInfo":{"status":"Accepted"}}]'
    assert rig.store.queued("CB-1") == []
    rig.store.close()


def test_a_queued_message_is_one_statement_in_the_group(grouped):
    """Queueing and removing a message in an open group cost one SQL
    statement each: no savepoint around them (SQLite undoes a single failed
    statement by itself)."""
    store, scheduler, path = grouped
    store.enqueue("CB-1", "MeterValues", "first", 0)  # opens the group
    statements = []
    store._connection.db.set_trace_callback(statements.append)
    message = store.enqueue("CB-1", "MeterValues", "second", 0)
    store.delivered(message.id)
    store._connection.db.set_trace_callback(None)
    assert [s.split()[0] for s in statements] == ["INSERT", "DELETE"]
    scheduler.run()
    assert on_disk(path) == ["first"]


def test_a_failed_statement_leaves_the_group_standing(grouped):
    """A grouped write that fails while the transaction stays open (here a
    table that is gone) raises StoreError; the group's other writes are
    still committed and their waiters hear "stored"."""
    store, scheduler, path = grouped
    store.enqueue("CB-1", "MeterValues", "kept", 0)
    stored = store.durable()
    store._connection.db.execute("DROP TABLE boots")
    with pytest.raises(StoreError):
        store.save_boot("CB-1", "boot")
    assert store._connection.db.in_transaction
    scheduler.run()
    assert stored.called and stored.result is None
    assert on_disk(path) == ["kept"]


class DiskFull(FailingConnection):
    """The store's connection on a disk that fills up and empties again:
    while C{full}, every statement that writes, and COMMIT, fails as SQLite
    fails on a full disk; with C{only} set, only the writes whose SQL holds
    that text (a disk with room for small writes, not for others).
    (C{max_page_count} cannot make an UPDATE or a DELETE fail: they need no
    new page.)"""

    WRITES = ("INSERT", "UPDATE", "DELETE", "COMMIT")
    error = sqlite3.OperationalError("database or disk is full")

    def __init__(self, db):
        super().__init__(db)
        self.full = False
        self.only = None

    def fails(self, sql):
        return (
            self.full
            and sql.lstrip().upper().startswith(self.WRITES)
            and (self.only is None or self.only in sql)
        )


BACKEND_START = {"transactionId": 4711, "idTagInfo": {"status": "Accepted"}}


def replay_start_on_a_full_disk(tmp_path):
    """A rig whose queued StartTransaction (answered locally while the
    backend was away) reached the backend just as the disk filled up; the
    backend has answered it. Returns the rig, the disk and the local id."""
    rig = GatewayRig(tmp_path)
    disk = rig.store._connection.db = DiskFull(rig.store._connection.db)
    rig.send("b1", "BootNotification", {"chargePointVendor": "v", "chargePointModel": "m"})
    rig.send("s1", "StartTransaction", START)
    rig.scheduler.run()
    local_id = rig.wallbox.frames[-1][2]["transactionId"]
    rig.gateway.link_opened(rig.link)
    boot = json.loads(rig.link.sent[-1])
    rig.gateway.text_received(json.dumps([3, boot[1], {"status": "Accepted", "currentTime": "t", "interval": 60}]))
    start = json.loads(rig.link.sent[-1])
    assert start[2] == "StartTransaction"
    disk.full = True
    rig.gateway.text_received(json.dumps([3, start[1], BACKEND_START]))
    rig.scheduler.run()
    return rig, disk, local_id


def starts_sent(rig):
    return [text for text in rig.link.sent if json.loads(text)[2] == "StartTransaction"]


def test_a_full_disk_never_sends_an_answered_start_transaction_again(tmp_path):
    """The backend answered a queued StartTransaction, and the disk is full
    so that its transaction id cannot be recorded (while smaller writes
    still fit). That StartTransaction is not sent again (each copy would be
    a new transaction at the backend), however much else happens: new
    messages from the wallbox, retries, time. The status API says why the
    queue waits."""
    rig, disk, _ = replay_start_on_a_full_disk(tmp_path)
    disk.only = "transaction_ids"
    for n in range(5):
        rig.send("m{}".format(n), "MeterValues", {"connectorId": 1, "meterValue": []})
        rig.scheduler.run()
        rig.clock.advance(10)
        rig.scheduler.run()
    assert len(starts_sent(rig)) == 1
    assert "full" in rig.gateway.status()["last_error"]
    rig.store.close()


def test_answers_are_recorded_once_the_disk_has_room(tmp_path):
    """Once the disk has room again, the backend's answer kept in memory is
    written: the local transaction id maps to the backend's, the queue is
    empty, a later message of the transaction goes out with the backend's
    id, and the error shown is cleared."""
    rig, disk, local_id = replay_start_on_a_full_disk(tmp_path)
    rig.clock.advance(5)
    disk.full = False
    rig.clock.advance(60)
    rig.scheduler.run()
    assert rig.store.backend_transaction_id("CB-1", local_id) == 4711
    assert rig.store.queued("CB-1") == []
    assert rig.gateway.status()["last_error"] is None
    stop = {"transactionId": local_id, "meterStop": 5, "timestamp": "2026-11-23T11:00:00Z"}
    rig.send("x1", "StopTransaction", stop)
    rig.scheduler.run()
    sent = json.loads(rig.link.sent[-1])
    assert sent[2] == "StopTransaction" and sent[3]["transactionId"] == 4711
    assert len(starts_sent(rig)) == 1
    rig.store.close()


def test_a_failed_commit_of_a_delivery_does_not_send_it_again(tmp_path):
    """The removal of a delivered message is committed with others at the
    end of the turn. When that commit fails, the message is back in the
    store, but it was answered: it is not sent again; the removal is
    written again, and the next message goes out after that."""
    rig = GatewayRig(tmp_path)
    rig.send("s1", "StartTransaction", START)
    rig.send("d1", "DataTransfer", {"vendorId": "x"})
    rig.scheduler.run()
    rig.gateway.link_opened(rig.link)
    first = json.loads(rig.link.sent[-1])
    assert first[2] == "StartTransaction"
    connection = rig.store._connection
    real, connection.db = connection.db, CommitFails(connection.db)
    rig.gateway.text_received(json.dumps([3, first[1], BACKEND_START]))
    rig.scheduler.run()
    assert [m.action for m in rig.store.queued("CB-1")] == ["StartTransaction", "DataTransfer"]
    connection.db = real
    rig.clock.advance(60)
    rig.scheduler.run()
    assert [json.loads(t)[2] for t in rig.link.sent] == ["StartTransaction", "DataTransfer"]
    rig.gateway.text_received(json.dumps([3, json.loads(rig.link.sent[-1])[1], {"status": "Accepted"}]))
    rig.scheduler.run()
    assert rig.store.queued("CB-1") == []
    rig.store.close()


def test_a_start_that_cannot_get_a_local_id_is_withdrawn(tmp_path):
    """The StartTransaction is on disk, but the disk is full before cfosproxy
    can keep the local transaction id it would answer with. The wallbox gets
    an error and sends the StartTransaction again later; the queued copy is
    withdrawn, so that the backend gets the transaction once."""
    rig = GatewayRig(tmp_path)
    disk = rig.store._connection.db = DiskFull(rig.store._connection.db)

    def next_id_on_a_full_disk():
        disk.full = True
        try:
            return rig.store.next_transaction_id()
        finally:
            disk.full = False

    rig.next_transaction_id = next_id_on_a_full_disk
    rig.send("s1", "StartTransaction", START)
    rig.scheduler.run()
    assert rig.wallbox.frames[-1][:3] == [4, "s1", "InternalError"]
    rig.next_transaction_id = rig.store.next_transaction_id
    rig.send("s1", "StartTransaction", START)  # the wallbox tries again
    rig.scheduler.run()
    assert rig.wallbox.frames[-1][:2] == [3, "s1"]
    rig.gateway.link_opened(rig.link)
    rig.scheduler.run()
    assert len(starts_sent(rig)) == 1
    rig.gateway.text_received(json.dumps([3, json.loads(starts_sent(rig)[0])[1], BACKEND_START]))
    rig.scheduler.run()
    assert rig.store.queued("CB-1") == [] and len(starts_sent(rig)) == 1
    rig.store.close()


def test_a_waiter_that_raises_does_not_silence_the_others(grouped):
    """Those waiting for one commit are all told, even when one of them
    raises: the others' wallboxes still get their answers."""
    store, scheduler, path = grouped
    store.enqueue("CB-1", "MeterValues", "m", 0)
    told = []

    def broken(_):
        raise RuntimeError("a bug in one waiter")

    store.when_durable(broken, told.append)
    store.when_durable(told.append, told.append)
    store.durable().addCallback(told.append)
    scheduler.run()
    assert told == [None, None]
