"""The store as a Twisted service of the daemon."""

from twisted.application import service
from twisted.internet import task
from twisted.logger import Logger

from cfosproxy.store.facade import Store

# How often the highest message id queued is written beside the store, so
# that a start after a damaged log or an old backup can tell what is gone.
WATERMARK_INTERVAL = 60.0


class StoreService(service.Service):
    """Opens the store when the daemon starts and closes it when it stops.

    Opening happens in C{startService}, not earlier, because twistd forks
    when it daemonizes and an SQLite connection must not cross a fork.

    @ivar store: the open L{Store}; None before the service starts.
    @param checked: the file was checked moments ago (the daemon's options
        open it once before twistd forks); its pages are not read again.
    @param clock: L{IReactorTime} for writing the store's watermark every
        C{WATERMARK_INTERVAL} seconds; None: the reactor.
    """

    _log = Logger()

    def __init__(self, state_dir, schedule_commit=None, checked=False, clock=None):
        self.state_dir = state_dir
        self.store = None
        self._schedule_commit = schedule_commit
        self._checked = checked
        self._clock = clock
        self._watermark = None

    def startService(self):
        self.store = Store.in_state_dir(
            self.state_dir, self._schedule_commit, check=not self._checked
        )
        self._log.info("store open at {path}", path=self.store.path)
        service.Service.startService(self)
        if self._clock is None:
            from twisted.internet import reactor

            self._clock = reactor
        self._watermark = task.LoopingCall(self.store.save_watermark)
        self._watermark.clock = self._clock
        self._watermark.start(WATERMARK_INTERVAL, now=False)

    def stopService(self):
        service.Service.stopService(self)
        if self._watermark is not None and self._watermark.running:
            self._watermark.stop()
        if self.store is not None:
            self.store.close()
            self._log.info("store closed")
