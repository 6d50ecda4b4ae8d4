"""The daemon sets Python's garbage collector for many small messages."""

import gc
from types import SimpleNamespace

import pytest
from twisted.internet.testing import MemoryReactorClock

from cfosproxy import tap
from cfosproxy.ops.gctuning import FREEZE_AFTER, YOUNG_THRESHOLD, tune_garbage_collection


@pytest.fixture
def restored_gc():
    """Whatever a test does to the collector is undone afterwards."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_threshold_raised_and_start_up_frozen(restored_gc):
    """The young-generation threshold is raised at once; what exists once
    start-up is over goes to the permanent generation, not before."""
    gc.unfreeze()
    reactor = MemoryReactorClock()
    tune_garbage_collection(reactor)
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD
    reactor.run()
    reactor.advance(FREEZE_AFTER - 0.1)
    assert gc.get_freeze_count() == 0
    reactor.advance(0.1)
    assert gc.get_freeze_count() > 0


def test_older_generations_keep_their_thresholds(restored_gc):
    """Only the young generation's threshold changes."""
    gc.set_threshold(700, 11, 12)
    tune_garbage_collection(MemoryReactorClock())
    assert gc.get_threshold() == (YOUNG_THRESHOLD, 11, 12)


def test_twistd_entry_tunes_the_collector(monkeypatch):
    """twistd's makeService tunes the collector for the daemon; the test
    harness, which builds the same services in the test process, does not
    (it calls build_daemon)."""
    tuned = []
    monkeypatch.setattr("cfosproxy.ops.gctuning.tune_garbage_collection", tuned.append)
    monkeypatch.setattr("cfosproxy.ws.relaypath.use_integer_masking", lambda: None)
    monkeypatch.setattr("cfosproxy.wiring.daemon.build_daemon", lambda options: ("service", options))
    # What twistd hands the entry, as far as it reads it: the fast path's
    # switch, for the frame masking.
    options = SimpleNamespace(config=SimpleNamespace(server=SimpleNamespace(fast_path=True)))
    assert tap.makeService(options) == ("service", options)
    from twisted.internet import reactor

    assert tuned == [reactor]
