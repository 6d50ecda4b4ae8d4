"""The store as a service of the daemon: open while it runs, the watermark
written beside it every minute, closed when it stops."""

import json

from twisted.internet import task

from cfosproxy.store import STORE_FILE, StoreService
from cfosproxy.store.service import WATERMARK_INTERVAL


def watermark(state_dir):
    with open(str(state_dir / STORE_FILE) + "-watermark", encoding="utf-8") as f:
        return json.load(f)["queued_high_water"]


def test_store_is_open_while_the_service_runs(tmp_path):
    """The store opens when the service starts, not before (twistd forks
    in between), and is closed when it stops, its open group committed."""
    scheduled = []
    service = StoreService(str(tmp_path), scheduled.append, clock=task.Clock())
    assert service.store is None
    service.startService()
    store = service.store
    assert store.path == str(tmp_path / STORE_FILE)
    store.enqueue("CB-1", "Heartbeat", "[2,\"1\",\"Heartbeat\",{}]", 0.0)
    service.stopService()
    reopened = StoreService(str(tmp_path), clock=task.Clock())
    reopened.startService()
    try:
        assert reopened.store.queue_length("CB-1") == 1
    finally:
        reopened.stopService()


def test_watermark_is_written_every_interval(tmp_path):
    """The highest message id queued is written beside the store once per
    interval, not at once, and the writing stops with the service."""
    clock = task.Clock()
    service = StoreService(str(tmp_path), clock=clock)
    service.startService()
    try:
        message = service.store.enqueue("CB-1", "Heartbeat", "h", 0.0)
        assert not (tmp_path / (STORE_FILE + "-watermark")).exists()
        clock.advance(WATERMARK_INTERVAL)
        assert watermark(tmp_path) == message.id
    finally:
        service.stopService()
    assert clock.getDelayedCalls() == []
