"""The site limit set at run time: kept in the store across a restart,
removed again with null, restored at start with one line in the log, and
never changed when the store cannot keep it."""

import contextlib
import sqlite3

import pytest
from twisted.application import service
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from cfosproxy.core.errors import StoreError
from cfosproxy.ops.sitelimit import SiteLimit
from cfosproxy.services import ManagerService
from cfosproxy.store import STORE_FILE, Store
from cfosproxy.store.schema import MIGRATIONS, schema_version

# 2026-12-05 13:02:00 UTC
SET_AT = 1796475720.0


@pytest.fixture
def store(tmp_path):
    store = Store.in_state_dir(str(tmp_path))
    yield store
    store.close()


@pytest.fixture
def log():
    """The text of every log event while the test runs, with its level."""
    events = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def lines(events, level):
    """The text of the C{events} at C{level}."""
    return [formatEvent(e) for e in events if e.get("log_level") == level]


class FakeManager:
    """The load manager's site limit, as L{SiteLimit} uses it."""

    def __init__(self, site_limit):
        self.site_limit = site_limit
        self.enabled_flags = None

    def set_site_limit(self, amps):
        if amps < 0:
            raise ValueError("negative")
        self.site_limit = amps

    def restore_enabled(self, flags):
        self.enabled_flags = flags

    def restore_state(self, states):
        self.states = states


def test_a_fresh_store_has_no_site_limit(store):
    """Nothing set: no site limit kept."""
    assert store.site_limit() is None


def test_the_site_limit_outlasts_a_restart(tmp_path):
    """A site limit set at run time is there, with when it was set, after
    the store is closed and opened again (a restart)."""
    store = Store.in_state_dir(str(tmp_path))
    store.set_site_limit(25.0, SET_AT)
    store.close()
    reopened = Store.in_state_dir(str(tmp_path))
    try:
        assert reopened.site_limit() == (25.0, SET_AT)
    finally:
        reopened.close()


def test_a_new_limit_replaces_the_old_one(store):
    """Setting the site limit again keeps only the latest one."""
    store.set_site_limit(25.0, SET_AT)
    store.set_site_limit(12.5, SET_AT + 60)
    assert store.site_limit() == (12.5, SET_AT + 60)


def test_null_removes_the_site_limit(tmp_path):
    """C{None} removes the kept limit, also across a restart; removing one
    that is not there is no error."""
    store = Store.in_state_dir(str(tmp_path))
    store.set_site_limit(25.0, SET_AT)
    store.set_site_limit(None)
    store.set_site_limit(None)
    store.close()
    reopened = Store.in_state_dir(str(tmp_path))
    try:
        assert reopened.site_limit() is None
    finally:
        reopened.close()


def test_the_limit_is_on_disk_when_the_call_returns(store):
    """Another opener of the file sees the limit at once: it was
    committed, not left in an open group."""
    store.set_site_limit(20.0, SET_AT)
    with contextlib.closing(sqlite3.connect(store.path)) as other:
        rows = other.execute("SELECT name, value, set_at FROM settings").fetchall()
    assert rows == [("site_limit", "20.0", SET_AT)]


def older_store(path, migrations, rows):
    """Write a store file as a release before this one left it: the first
    C{migrations} of L{MIGRATIONS} applied, with C{rows} (SQL) in it."""
    old = sqlite3.connect(path)
    for script in MIGRATIONS[:migrations]:
        old.executescript(script)
    old.executescript(rows + "PRAGMA user_version = {:d};".format(migrations))
    old.close()


def test_an_older_store_gets_the_settings_table(tmp_path):
    """A file of the release before the settings table opens with its data
    intact, gains the table, and keeps a site limit."""
    path = str(tmp_path / STORE_FILE)
    settings = next(i for i, script in enumerate(MIGRATIONS) if "CREATE TABLE settings" in script)
    older_store(path, settings, "INSERT INTO device_flags VALUES ('garage', 0);")

    store = Store(path)
    try:
        assert schema_version(store._connection.db) == len(MIGRATIONS)
        assert store.device_flags() == {"garage": False}
        assert store.site_limit() is None
        store.set_site_limit(16.0, SET_AT)
        assert store.site_limit() == (16.0, SET_AT)
    finally:
        store.close()


class BrokenStore:
    """A store whose disk is full."""

    def site_limit(self):
        return None

    def set_site_limit(self, amps, at=None):
        raise StoreError("cannot write store var/cfosproxy.sqlite: database or disk is full")


def site_limit(store, manager, now=SET_AT):
    """A L{SiteLimit} over C{manager} and C{store}, [manager] max_current
    32 A, its clock at C{now}."""
    return SiteLimit(manager, 32.0, lambda: store, now=lambda: now)


def test_setting_keeps_it_and_changes_the_manager(store):
    """A limit set over the API is kept in the store and handed to the
    manager; it shows as coming from the API, with when."""
    manager = FakeManager(32.0)
    limit = site_limit(store, manager)
    assert limit.as_json() == {
        "max_current": 32.0, "source": "config", "set_at": None, "configured": 32.0,
    }
    limit.set(25)
    assert manager.site_limit == 25.0
    assert store.site_limit() == (25.0, SET_AT)
    assert limit.as_json() == {
        "max_current": 25.0, "source": "api", "set_at": "2026-12-05T13:02:00Z",
        "configured": 32.0,
    }


def test_null_goes_back_to_the_config(store):
    """C{None} removes the kept limit and gives the manager the configured
    [manager] max_current again."""
    manager = FakeManager(32.0)
    limit = site_limit(store, manager)
    limit.set(25)
    limit.set(None)
    assert manager.site_limit == 32.0
    assert store.site_limit() is None
    assert limit.as_json()["source"] == "config"


def test_a_store_that_cannot_keep_it_changes_nothing():
    """When the store cannot write, set() raises StoreError and the
    manager's limit stays as it was."""
    manager = FakeManager(32.0)
    limit = site_limit(BrokenStore(), manager)
    with pytest.raises(StoreError):
        limit.set(10)
    assert manager.site_limit == 32.0
    assert limit.as_json()["source"] == "config"


@pytest.mark.parametrize("amps", [-1, float("nan"), float("inf")])
def test_what_is_no_limit_is_refused_before_the_store(store, amps):
    """A negative or non-finite limit is a ValueError; nothing is kept."""
    limit = site_limit(store, FakeManager(32.0))
    with pytest.raises(ValueError):
        limit.set(amps)
    assert store.site_limit() is None


def test_restore_takes_the_kept_limit_and_says_so(store, log):
    """At start, a kept limit replaces the configured one, and one line at
    info tells the operator which, since when, and how to go back."""
    store.set_site_limit(25.0, SET_AT)
    manager = FakeManager(32.0)
    limit = site_limit(store, manager, now=SET_AT + 86400)
    limit.restore()
    assert manager.site_limit == 25.0
    assert limit.as_json()["source"] == "api"
    assert limit.as_json()["set_at"] == "2026-12-05T13:02:00Z"
    [line] = [line for line in lines(log, LogLevel.info) if "site limit" in line]
    assert line == (
        "site limit 25 A per phase, set over the status API on 2026-12-05 13:02 UTC, "
        "replaces [manager] max_current = 32 A of the config; "
        'POST /api/site {"max_current": null} goes back to it'
    )


def test_restore_without_a_kept_limit_leaves_the_config(store, log):
    """Nothing kept: the configured limit stays, and nothing is said."""
    manager = FakeManager(32.0)
    site_limit(store, manager).restore()
    assert manager.site_limit == 32.0
    assert not [line for line in lines(log, LogLevel.info) if "site limit" in line]


def test_a_kept_value_that_is_no_limit_is_ignored_with_a_warning(store, log):
    """A kept value that is no number of amperes (edited by hand) leaves
    the configured limit in force, and a warning says so."""
    store.set_site_limit(25.0, SET_AT)
    store._connection.db.execute("UPDATE settings SET value = 'lots' WHERE name = 'site_limit'")
    manager = FakeManager(32.0)
    limit = site_limit(store, manager)
    limit.restore()
    assert manager.site_limit == 32.0
    assert limit.as_json()["source"] == "config"
    [warning] = lines(log, LogLevel.warn)
    assert "'lots'" in warning
    assert "[manager] max_current = 32 A" in warning


def test_a_kept_limit_above_a_lowered_config_is_not_used(store, log):
    """A limit kept from the API that is above [manager] max_current (the
    config was lowered since: a smaller fuse went in) is not used: the
    config's limit is in force, and a warning says why."""
    store.set_site_limit(30.0, SET_AT)
    manager = FakeManager(25.0)
    limit = SiteLimit(manager, 25.0, lambda: store, now=lambda: SET_AT)
    limit.restore()
    assert manager.site_limit == 25.0
    assert limit.as_json()["source"] == "config"
    [warning] = lines(log, LogLevel.warn)
    assert "30 A kept from the status API is above [manager] max_current = 25 A" in warning


def test_a_limit_above_the_config_is_refused(store):
    """Over the API, a site limit above [manager] max_current is refused
    (it is the fuse's rating); the store keeps nothing."""
    manager = FakeManager(32.0)
    with pytest.raises(ValueError, match="40 A is above"):
        site_limit(store, manager).set(40)
    assert manager.site_limit == 32.0 and store.site_limit() is None


class OpenStore(service.Service):
    """The store service, started: only C{store} is read."""

    def __init__(self, store):
        self.store = store


def test_manager_service_restores_the_limit_at_start(store):
    """ManagerService, when it starts, hands the kept site limit to the
    manager (and the enabled flags, as before)."""
    store.set_site_limit(20.0, SET_AT)
    store.set_device_enabled("garage", False)
    manager = FakeManager(32.0)
    ManagerService(OpenStore(store), manager, site_limit(store, manager)).startService()
    assert manager.site_limit == 20.0
    assert manager.enabled_flags == {"garage": False}
