"""Services that start and stop the daemon's parts in the right order."""

from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from cfosproxy.core.session import CLOSE_GOING_AWAY

# Wallboxes that do not complete the close handshake in this time are left to
# the reactor, which drops their sockets when it stops.
CLOSE_WAIT = 5.0


class CloseConnectionsService(service.Service):
    """On stop, close every wallbox WebSocket with 1001 (going away) and
    wait until they are closed, or C{CLOSE_WAIT} seconds."""

    _log = Logger()

    def __init__(self, hub):
        self._hub = hub

    def stopService(self):
        from twisted.internet import reactor

        service.Service.stopService(self)
        count = len(self._hub.sessions)
        if count:
            self._log.info("closing {count} wallbox connection(s)", count=count)
        d = self._hub.close_all(CLOSE_GOING_AWAY, "cfosproxy is shutting down")
        d.addTimeout(CLOSE_WAIT, reactor, onTimeoutCancel=lambda result, timeout: None)
        return d


class OrderedMultiService(service.MultiService):
    """A MultiService that stops its children one after another, last added
    first, each waiting for the one before: listeners stop, then connections
    close, and only then does the store commit and close.

    (Twisted's MultiService stops all children at once.)
    """

    _log = Logger()

    @defer.inlineCallbacks
    def stopService(self):
        service.Service.stopService(self)
        for child in reversed(list(self)):
            try:
                yield defer.maybeDeferred(child.stopService)
            except Exception:
                self._log.failure("stopping {child!r}", child=child)


class ManagerService(service.Service):
    """Starts the load manager with the site limit and the enabled flags
    kept in the store, and stops its timers at the end.

    Added after the L{StoreService}, so the store is open by then.

    @param site_limit: the L{cfosproxy.ops.sitelimit.SiteLimit} to restore,
        or None.
    """

    def __init__(self, store_service, manager, site_limit=None):
        self._store_service = store_service
        self._manager = manager
        self._site_limit = site_limit

    def startService(self):
        if self._site_limit is not None:
            self._site_limit.restore()
        self._manager.restore_enabled(self._store_service.store.device_flags())
        self._manager.restore_state(self._store_service.store.device_states())
        service.Service.startService(self)

    def stopService(self):
        service.Service.stopService(self)
        self._manager.stop()


class GatewayService(service.Service):
    """Starts the backend links that have messages waiting, and closes every
    backend link when the daemon stops.

    A link is otherwise started when its wallbox connects (see
    L{cfosproxy.core.gateway.Gateway.session_opened}).
    """

    def __init__(self, gateways):
        self._gateways = gateways

    def startService(self):
        service.Service.startService(self)
        for gateway in self._gateways:
            if gateway.store.queue_length(gateway.link_id):
                gateway.link.start()

    def stopService(self):
        service.Service.stopService(self)
        for gateway in self._gateways:
            gateway.stop()
        return defer.gatherResults([gateway.link.stop() for gateway in self._gateways])


class ModbusService(service.Service):
    """Polls the Modbus wallboxes while the daemon runs; stops their
    charge points' timers and closes the clients at the end."""

    def __init__(self, wallboxes, chargepoints):
        self._wallboxes = wallboxes
        self._chargepoints = chargepoints

    def startService(self):
        service.Service.startService(self)
        for wallbox in self._wallboxes:
            wallbox.start()

    def stopService(self):
        service.Service.stopService(self)
        for chargepoint in self._chargepoints:
            chargepoint.stop()
        return defer.gatherResults([wallbox.stop() for wallbox in self._wallboxes])


# Twisted listens with a backlog of 50 connections. After a power cut or a
# restart, hundreds of wallboxes reconnect at once; the ones that overflow
# the queue wait for TCP's retries (1, 3, 7 seconds), which made up most of
# the time a storm of 1,000 took to be admitted. The kernel caps the value
# at net.core.somaxconn.
OCPP_BACKLOG = 1024


def with_backlog(description, backlog=OCPP_BACKLOG):
    """The endpoint string C{description} with C{backlog} for a TCP port
    that does not set its own."""
    kind = description.split(":", 1)[0]
    if kind in ("tcp", "tcp6") and "backlog=" not in description:
        return "{}:backlog={:d}".format(description, backlog)
    return description


class ListenError(SystemExit):
    """A port the daemon must listen on is taken or not allowed. twistd's
    start ends with this one line (and exit status 1) instead of a
    traceback of forty."""


class ListeningService(StreamServerEndpointService):
    """C{strports.service(description, factory)}: listens when the daemon
    starts and fails the start at once if it cannot, with L{ListenError}
    naming the configuration key.

    @param where: the setting, for the message, e.g.
        C{"etc/cfosproxy.ini: [server] listen"}.
    @param shown: the endpoint as the setting gives it, for the message;
        None: C{description}.
    """

    def __init__(self, description, factory, where, shown=None, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        super().__init__(serverFromString(reactor, description), factory)
        # As strports.service: a port that cannot be had raises from
        # privilegedStartService instead of being logged.
        self._raiseSynchronously = True
        self.description = shown or description
        self.where = where

    def privilegedStartService(self):
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            reason = getattr(e.socketError, "strerror", None) or str(e.socketError)
            hint = ""
            if getattr(e.socketError, "errno", None) == 98:  # EADDRINUSE
                hint = " (another program, or another cfosproxy, uses it)"
            elif getattr(e.socketError, "errno", None) == 13:  # EACCES
                hint = " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
            raise ListenError(
                "{}: cannot listen on {}: {}{}".format(
                    self.where, self.description, reason, hint
                )
            ) from None
