"""The OCPP server alone, in this process, on a real loopback port.

Not a test module. It is the daemon's server part as ``tap.makeService``
puts it together (hub, local central system, device registry, the TLS
mode's wrapper around L{WallboxServerFactory}) without the store, the
manager or the status page, so that it starts in milliseconds and a test
can set its timeouts.
"""

import itertools

from twisted.internet import defer

from cfosproxy.ws import tls
from cfosproxy.config import config_from_string
from cfosproxy.core.devices import DeviceRegistry
from cfosproxy.core.hub import ChargePointHub
from cfosproxy.core.localcs import LocalCentralSystem
from cfosproxy.ws.server import WallboxServerFactory
from cfosproxy.core.session import CLOSE_GOING_AWAY
from tests.fuzzing import CHARGEBOX_ID, CONFIG


class WallboxServer:
    """An OCPP server for the wallbox C{CB-FUZZ}, stopped at the test's end.

    @param mode: the C{[server] tls} mode.
    @param context_factory: the TLS settings for C{"on"} and C{"detect"}.
    @param sniff_timeout: passed to L{tls.wrap_factory}.
    @ivar port: the port it listens on, at 127.0.0.1.
    @ivar factory: the L{WallboxServerFactory} under the TLS mode's wrapper.
    """

    def __init__(self, testcase, mode="off", context_factory=None, sniff_timeout=10.0):
        from twisted.internet import reactor

        config = config_from_string(CONFIG.format(server="tls = {}\n".format(mode)))
        registry = DeviceRegistry(config, reactor)
        local = LocalCentralSystem(reactor, 300, itertools.count(1).__next__)
        self.hub = ChargePointHub(config.server, registry, lambda _: local, reactor)
        self.factory = WallboxServerFactory(self.hub, config.server)
        factory = tls.wrap_factory(
            mode,
            self.factory,
            context_factory,
            clock=reactor,
            sniff_timeout=sniff_timeout,
        )
        self._listening = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.port = self._listening.getHost().port
        testcase.addCleanup(self.stop)

    def url(self, scheme="ws", chargebox_id=CHARGEBOX_ID):
        return "{}://127.0.0.1:{}/{}".format(scheme, self.port, chargebox_id)

    @defer.inlineCallbacks
    def stop(self):
        """Close the wallboxes' connections, then stop listening."""
        yield self.hub.close_all(CLOSE_GOING_AWAY, "test over")
        yield self._listening.stopListening()
