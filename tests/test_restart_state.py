"""What a restart of cfosproxy keeps of each device
(L{cfosproxy.site.restart}) and the store's table for it (C{device_state}):
a round trip through a real SQLite file, values that do not read left out,
rows that do not read skipped with a warning, and an older file gaining the
table."""

import contextlib
import json
import sqlite3

import pytest
from twisted.logger import LogLevel, formatEvent

from cfosproxy.core.devices import Device
from cfosproxy.site.restart import kept_state, restore_device
from cfosproxy.site.watts import IN_AMPERES, SentAs
from cfosproxy.store import STORE_FILE, Store
from cfosproxy.store.schema import MIGRATIONS, schema_version
# The store and the log, as the settings tests have them.
from tests.test_settings import log, older_store, store  # noqa: F401

pytestmark = pytest.mark.usefixtures("logged_errors", "no_reactor_timers")


def warnings(events):
    """The text of the warnings among C{events}."""
    return [formatEvent(e) for e in events if e.get("log_level") == LogLevel.warn]


def device(name="garage", **state):
    """An OCPP wallbox's device, as the registry makes it, with C{state}."""
    return Device(name=name, type="ocpp", address="CB-1", connector_id=1, **state)


def charging():
    """A device whose car charges at a limit of 10 A."""
    return device(
        accepted_limit=10.0,
        pending_limit=12.5,
        transaction_id=42,
        id_tag="04A2B3C4D5",
        meter_start=1000.0,
        status="Charging",
        energy_wh=1523.5,
    )


def restored(state, **before):
    """A fresh device (with C{before}) after L{restore_device} of C{state}:
    the device and what restore_device returned."""
    fresh = device(**before)
    sent, pending, _ = restore_device(fresh, state)
    return fresh, (sent, pending)


# -- what is kept ----------------------------------------------------------------


def test_what_is_kept_of_a_charging_device():
    """The limit and how it was sent, the one in flight, and the
    transaction."""
    assert kept_state(charging(), SentAs("W", 3), {"garage"}) == {
        "limit": 10.0,
        "unit": "W",
        "phases": 3,
        "pending": 12.5,
        "uncertain": True,
        "limit_transaction": None,
        "transaction_id": 42,
        "id_tag": "04A2B3C4D5",
        "meter_start": 1000.0,
        "status": "Charging",
        "energy_wh": 1523.5,
    }


def test_what_is_kept_of_a_device_that_holds_nothing():
    """No limit held, none in flight, no transaction: a limit in A, certain."""
    assert kept_state(device(), None, {"another"}) == {
        "limit": None,
        "unit": "A",
        "phases": 1,
        "pending": None,
        "uncertain": False,
        "limit_transaction": None,
        "transaction_id": None,
        "id_tag": None,
        "meter_start": None,
        "status": None,
        "energy_wh": None,
    }


def test_the_kept_state_is_json():
    """What is kept survives JSON as it is."""
    state = kept_state(charging(), SentAs("W", 2), set())
    assert json.loads(json.dumps(state)) == state


# -- putting it back -------------------------------------------------------------


def test_a_round_trip_through_the_store(tmp_path):
    """Kept before a restart, read from the reopened file into a fresh
    device: the same limit, transaction and meter, and how the limit was
    sent with the one in flight."""
    before = charging()
    store = Store.in_state_dir(str(tmp_path))
    store.save_device_state(before.name, kept_state(before, SentAs("W", 3), set()))
    store.close()

    reopened = Store.in_state_dir(str(tmp_path))
    try:
        states = reopened.device_states()
    finally:
        reopened.close()
    after, (sent, pending) = restored(states["garage"])
    assert (sent, pending) == (SentAs("W", 3), 12.5)
    kept = ("accepted_limit", "transaction_id", "id_tag", "meter_start", "status", "energy_wh")
    for name in kept:
        assert getattr(after, name) == getattr(before, name), name
    # The one in flight is the manager's to count, not the device's.
    assert after.pending_limit is None


def test_a_limit_in_amperes_comes_back_in_amperes():
    """A limit sent in A comes back as such; whole numbers as floats."""
    state = kept_state(device(accepted_limit=6.0), None, set())
    state["limit"] = 6
    after, (sent, pending) = restored(state)
    assert sent == IN_AMPERES
    assert pending is None
    assert after.accepted_limit == 6.0 and isinstance(after.accepted_limit, float)


@pytest.mark.parametrize(
    "value",
    [-1, "10", True, float("nan"), float("inf"), None, [10], {"a": 10}],
    ids=["negative", "text", "bool", "nan", "inf", "null", "list", "object"],
)
def test_a_limit_that_does_not_read_is_none(value):
    """A kept limit (or one in flight) that is no number of 0 or more
    counts as none held (or none in flight)."""
    after, (_, pending) = restored({"limit": value, "pending": value}, accepted_limit=9.0)
    assert after.accepted_limit is None
    assert pending is None


@pytest.mark.parametrize(
    "unit, phases",
    [("W", 0), ("W", 4), ("W", 2.0), ("W", "3"), ("W", True), ("kW", 3), (None, 3), ("A", 3)],
)
def test_a_unit_that_does_not_read_is_amperes(unit, phases):
    """Only W with 1, 2 or 3 phases (a whole number) reads as sent in W."""
    _, (sent, _) = restored({"limit": 10.0, "unit": unit, "phases": phases})
    assert sent == IN_AMPERES


@pytest.mark.parametrize("phases", [1, 2, 3])
def test_watts_on_each_number_of_phases(phases):
    """W on 1, 2 or 3 phases comes back as sent."""
    _, (sent, _) = restored({"limit": 10.0, "unit": "W", "phases": phases})
    assert sent == SentAs("W", phases)


@pytest.mark.parametrize("transaction", ["42", 42.0, None, True, [42]])
def test_a_transaction_that_does_not_read_is_left_out(transaction):
    """A transaction id that is no whole number leaves the device's
    transaction and id tag as they were."""
    after, _ = restored(
        {"transaction_id": transaction, "id_tag": "04A2B3C4D5"},
        transaction_id=7,
        id_tag="OLD-TAG",
    )
    assert (after.transaction_id, after.id_tag) == (7, "OLD-TAG")


def test_an_id_tag_that_does_not_read_is_none():
    """With a transaction that reads, an id tag that is no text is none."""
    after, _ = restored({"transaction_id": 42, "id_tag": 1234}, id_tag="OLD-TAG")
    assert (after.transaction_id, after.id_tag) == (42, None)


@pytest.mark.parametrize("value", ["Charging", 3, None, ["Charging"]])
def test_a_status_that_does_not_read_is_left_out(value):
    """Only a status that is text replaces the device's."""
    after, _ = restored({"status": value}, status="Available")
    assert after.status == (value if isinstance(value, str) else "Available")


@pytest.mark.parametrize("key", ["meter_start", "energy_wh"])
@pytest.mark.parametrize("value", [-5, "1000", False, float("nan"), None])
def test_a_meter_that_does_not_read_is_left_out(key, value):
    """A meter reading that is no number of 0 or more leaves the device's."""
    after, _ = restored({key: value}, **{key: 800.0})
    assert getattr(after, key) == 800.0


def test_an_empty_state_restores_nothing():
    """A state without any key: no limit, in A, nothing in flight, the rest
    as it was."""
    after, result = restored({}, transaction_id=7, status="Available", energy_wh=5.0)
    assert result == (IN_AMPERES, None)
    assert after.accepted_limit is None
    assert (after.transaction_id, after.status, after.energy_wh) == (7, "Available", 5.0)


def test_values_written_by_hand_into_the_store_are_left_out(store):
    """NaN and Infinity (which Python's JSON writes and reads) and numbers
    below 0 in the file do not read: the device keeps what it has."""
    store.save_device_state(
        "garage",
        {
            "limit": float("nan"),
            "pending": float("inf"),
            "meter_start": -1.0,
            "energy_wh": float("-inf"),
            "transaction_id": 42,
            "status": "SuspendedEV",
        },
    )
    after, (sent, pending) = restored(store.device_states()["garage"], energy_wh=5.0)
    assert (after.accepted_limit, pending, sent) == (None, None, IN_AMPERES)
    assert (after.meter_start, after.energy_wh) == (None, 5.0)
    assert (after.transaction_id, after.status) == (42, "SuspendedEV")


# -- the table ---------------------------------------------------------------------


def test_a_fresh_store_keeps_no_device_state(store):
    """Nothing saved: no device's state."""
    assert store.device_states() == {}


def test_each_device_has_one_row_replaced_on_each_save(store):
    """A second save of a device replaces its state; other devices keep
    theirs."""
    store.save_device_state("garage", {"limit": 10.0})
    store.save_device_state("carport", {"limit": 6.0})
    store.save_device_state("garage", {"limit": 16.0, "unit": "W", "phases": 1})
    assert store.device_states() == {
        "garage": {"limit": 16.0, "unit": "W", "phases": 1},
        "carport": {"limit": 6.0},
    }


def test_the_state_is_on_disk_when_the_call_returns(store):
    """Another connection to the file reads the state at once, as JSON."""
    state = kept_state(charging(), SentAs("W", 3), set())
    store.save_device_state("garage", state)
    with contextlib.closing(sqlite3.connect(store.path)) as other:
        rows = other.execute("SELECT name, state FROM device_state").fetchall()
    assert [(name, json.loads(text)) for name, text in rows] == [("garage", state)]


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "null", '"garage"', "10", ""])
def test_a_row_that_does_not_read_is_skipped_with_a_warning(store, log, text):
    """A row that is no JSON object is left out, with a warning naming the
    file and the device; the other rows are read."""
    store.save_device_state("carport", {"limit": 6.0})
    with contextlib.closing(sqlite3.connect(store.path)) as other:
        with other:
            other.execute(
                "INSERT INTO device_state (name, state) VALUES (?, ?)", ("garage", text)
            )
    assert store.device_states() == {"carport": {"limit": 6.0}}
    (warning,) = warnings(log)
    assert "garage" in warning and store.path in warning
    assert "carport" not in warning


def test_an_older_store_gets_the_device_state_table(tmp_path):
    """A file of the release before (every migration but the last) opens
    with its data intact, gains the table, and keeps device states."""
    assert "device_state" in MIGRATIONS[-1]
    path = str(tmp_path / STORE_FILE)
    older_store(
        path,
        len(MIGRATIONS) - 1,
        "INSERT INTO device_flags VALUES ('garage', 0);"
        "INSERT INTO settings VALUES ('site_limit', '20.0', 1700000000.0);",
    )

    store = Store(path)
    try:
        assert schema_version(store._connection.db) == len(MIGRATIONS)
        assert store.device_flags() == {"garage": False}
        assert store.site_limit() == (20.0, 1700000000.0)
        assert store.device_states() == {}
        store.save_device_state("garage", {"limit": 8.0})
        assert store.device_states() == {"garage": {"limit": 8.0}}
    finally:
        store.close()


def test_the_transaction_of_a_tx_profile_is_kept():
    """A limit held as a TxProfile goes with its transaction: which one is
    kept and restored, and a value that does not read is left out."""
    state = kept_state(charging(), IN_AMPERES, set(), held_for=42)
    assert state["limit_transaction"] == 42
    assert restore_device(device(), state)[2] == 42
    assert restore_device(device(), {**state, "limit_transaction": "42"})[2] is None
