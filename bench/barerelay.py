"""The floor of cfosproxy's stack: a WebSocket relay on Twisted and Autobahn
that does nothing but pass frames on.

    python bench/barerelay.py --port P --backend ws://127.0.0.1:B/ocpp/

Every wallbox that connects gets its own WebSocket to the backend (the URL
plus its ChargeBox-ID), and each text frame is forwarded as it is, both
ways: no parsing, no sessions, no store, no load management. It runs on the
reactor cfosproxy uses (asyncio) and reads and writes frames through the
same path (L{cfosproxy.ws.relaypath}), so what it costs per round trip is what
the stack under cfosproxy costs at least, before it does any of cfosproxy's
work. C{bench/relay.py} runs it next to cfosproxy.

Prints ``ready`` once it listens.
"""

import argparse
import sys

from twisted.internet import asyncioreactor

asyncioreactor.install()

from autobahn.twisted.websocket import (  # noqa: E402
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from twisted.internet import reactor  # noqa: E402
from twisted.internet.endpoints import TCP4ClientEndpoint  # noqa: E402

from cfosproxy.ws import internals  # noqa: E402
from cfosproxy.ws.relaypath import FACTORY_OPTIONS, RelayPathMixin, use_integer_masking  # noqa: E402

SUBPROTOCOL = "ocpp1.6"


def text_of(protocol, payload):
    """The message as text, or None after failing the connection with 1007
    (the UTF-8 check is the relay's own, as in cfosproxy)."""
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        internals.fail_invalid_payload(protocol, "text message is not valid UTF-8")
        return None


class BackendLeg(RelayPathMixin, WebSocketClientProtocol):
    """The relay's WebSocket to the backend for one wallbox."""

    def onOpen(self):
        self.factory.wallbox.leg_opened(self)

    def onMessage(self, payload, isBinary):
        # As cfosproxy does: the UTF-8 check is the relay's own.
        if isBinary or text_of(self, payload) is not None:
            self.factory.wallbox.sendMessage(payload, isBinary)

    def onClose(self, wasClean, code, reason):
        self.factory.wallbox.dropConnection(abort=True)


class WallboxSide(RelayPathMixin, WebSocketServerProtocol):
    """One wallbox's WebSocket; frames that come before the backend leg is
    open wait for it."""

    leg = None

    def onConnect(self, request):
        self._waiting = []
        chargebox_id = request.path.rstrip("/").rsplit("/", 1)[-1]
        factory = WebSocketClientFactory(
            self.factory.backend_url + chargebox_id, protocols=[SUBPROTOCOL]
        )
        factory.protocol = BackendLeg
        factory.wallbox = self
        factory.setProtocolOptions(autoPingInterval=0, **FACTORY_OPTIONS)
        endpoint = TCP4ClientEndpoint(
            reactor, self.factory.backend_host, self.factory.backend_port
        )
        endpoint.connect(factory)
        return SUBPROTOCOL

    def leg_opened(self, leg):
        self.leg = leg
        for payload, is_binary in self._waiting:
            leg.sendMessage(payload, is_binary)
        self._waiting = None

    def onMessage(self, payload, isBinary):
        if not isBinary and text_of(self, payload) is None:
            return
        if self.leg is None:
            self._waiting.append((payload, isBinary))
        else:
            self.leg.sendMessage(payload, isBinary)

    def onClose(self, wasClean, code, reason):
        # A clean close: the backend peer logs a traceback for every reset.
        if self.leg is not None:
            self.leg.sendClose()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend", required=True, help="ws://host:port/path/")
    args = parser.parse_args()

    use_integer_masking()  # as cfosproxy does
    factory = WebSocketServerFactory(protocols=[SUBPROTOCOL])
    factory.protocol = WallboxSide
    factory.setProtocolOptions(autoPingInterval=0, **FACTORY_OPTIONS)
    factory.backend_url = args.backend
    host_port = args.backend.split("//", 1)[1].split("/", 1)[0]
    factory.backend_host, port = host_port.rsplit(":", 1)
    factory.backend_port = int(port)
    reactor.listenTCP(args.port, factory, backlog=1024, interface="127.0.0.1")
    reactor.callWhenRunning(lambda: print("ready", flush=True))
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
