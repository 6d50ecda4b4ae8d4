"""What closed connections leave behind is freed once enough have closed,
and not before."""

import gc

import pytest
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from cfosproxy.ops import memory
from cfosproxy.ops.memory import CLOSED_BEFORE_RELEASE, MemoryRelease
from cfosproxy.ws.server import WallboxServerProtocol
from tests.harness import RunningDaemon, asyncio_test, eventually
from tests.wallboxes import connect
from tests.wallboxserver import WallboxServer

pytestmark = pytest.mark.usefixtures("logged_errors", "no_reactor_timers")


class Counting:
    """A closed-connection count, a collection and a trim that count their
    calls."""

    def __init__(self):
        self.closed = 0
        self.collections = 0
        self.trims = []

    def collect(self):
        self.collections += 1

    def trim(self, pad):
        self.trims.append(pad)


@pytest.fixture
def counting():
    """A fresh L{Counting}."""
    return Counting()


@pytest.fixture
def release(counting):
    """A release over C{counting}'s count, collection and trim."""
    return MemoryRelease(lambda: counting.closed, counting.collect, counting.trim)


@pytest.fixture
def log():
    """The text of every log line while the test runs."""
    lines = []

    def observer(event):
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    yield lines
    globalLogPublisher.removeObserver(observer)


def test_released_once_enough_connections_closed(counting, release, log):
    """Fewer closed connections than the threshold: nothing happens.
    At the threshold: one full collection, one trim, one log line; then
    nothing until as many again have closed."""
    counting.closed = CLOSED_BEFORE_RELEASE - 1
    release.check()
    assert counting.collections == 0
    counting.closed = CLOSED_BEFORE_RELEASE
    release.check()
    assert (counting.collections, counting.trims) == (1, [0])
    assert len([line for line in log if "Freed the memory" in line]) == 1
    counting.closed += CLOSED_BEFORE_RELEASE - 1
    release.check()
    assert counting.collections == 1
    counting.closed += 1
    release.check()
    assert counting.collections == 2


def test_counted_from_the_start(counting):
    """Connections closed before the release was made are not counted."""
    counting.closed = 5 * CLOSED_BEFORE_RELEASE
    release = MemoryRelease(lambda: counting.closed, counting.collect, None)
    release.check()
    assert counting.collections == 0


def test_a_failure_is_logged_not_raised(counting, log, logged_errors):
    """A release that fails is logged, and the timer that calls it goes
    on (it does not raise)."""

    def broken():
        raise MemoryError("no")

    release = MemoryRelease(lambda: counting.closed, broken, None)
    counting.closed = CLOSED_BEFORE_RELEASE
    release.check()
    assert any("releasing the memory" in line for line in log)
    assert [failure.type for failure in logged_errors] == [MemoryError]
    logged_errors.clear()


def test_without_malloc_trim(counting):
    """Where the C library has no malloc_trim, the collection alone
    runs."""
    release = MemoryRelease(lambda: counting.closed, counting.collect, None)
    counting.closed = CLOSED_BEFORE_RELEASE
    release.check()
    assert (counting.collections, counting.trims) == (1, [])


def protocols_alive():
    return sum(1 for o in gc.get_objects() if type(o) is WallboxServerProtocol)


class ClosedConnectionsTests(unittest.TestCase):
    """On a real server: closed wallbox connections stay in memory in
    reference cycles until a collection, and the release frees them."""

    def setUp(self):
        self.patch(memory, "CLOSED_BEFORE_RELEASE", 10)
        gc.collect()
        gc.disable()
        self.addCleanup(gc.enable)

    @asyncio_test
    async def test_closed_connections_are_freed_after_the_burst(self):
        """Ten wallboxes connect and close. Their protocol objects are
        still there (in cycles the collector has not yet visited), and the
        server counted them as closed; the release frees them."""
        wallboxes = WallboxServer(self)
        release = MemoryRelease(lambda: wallboxes.factory.closed_connections)
        before = protocols_alive()
        for _ in range(10):
            async with await connect(wallboxes.url()) as ws:
                await ws.send('[2,"hb","Heartbeat",{}]')
                await ws.recv()

        async def all_closed():
            return not wallboxes.hub.sessions and wallboxes.factory.closed_connections >= 10

        await eventually(all_closed)
        self.assertGreaterEqual(protocols_alive() - before, 10)
        release.check()
        self.assertLessEqual(protocols_alive(), before)


class DaemonTests(unittest.TestCase):
    """The daemon gives back the memory of closed connections by itself."""

    @asyncio_test
    async def test_the_daemon_frees_after_a_burst(self):
        """Wallboxes connect and leave; once enough have closed, the daemon
        logs that it freed their memory."""
        self.patch(memory, "CLOSED_BEFORE_RELEASE", 3)
        self.patch(memory, "RELEASE_CHECK_INTERVAL", 0.1)
        log = []

        def observer(event):
            log.append(formatEvent(event))

        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        daemon = RunningDaemon(self)
        for _ in range(3):
            async with await connect(daemon.url()) as ws:
                await ws.send('[2,"hb","Heartbeat",{}]')
                await ws.recv()

        async def freed():
            return [line for line in log if "Freed the memory of 3 closed connections" in line]

        await eventually(freed)
