"""A billing backend for the gateway tests: the ``ocpp`` package's central
system over ``websockets``, logging every frame exactly as it travelled."""

import asyncio
import base64
import itertools

import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call_result
from websockets.asyncio.server import serve


class LoggingConnection:
    """A websockets connection that records each text frame, in order, as
    (direction, text): "in" from cfosproxy, "out" to it."""

    def __init__(self, ws, peer):
        self._ws = ws
        self._peer = peer

    async def recv(self):
        text = await self._ws.recv()
        self._peer.record("in", text)
        return text

    async def send(self, text):
        self._peer.record("out", text)
        await self._ws.send(text)


class CentralSystem(ChargePoint):
    """The backend's view of one charge point: accepts everything,
    transaction ids from 1000 up."""

    def __init__(self, charge_point_id, connection, peer):
        super().__init__(charge_point_id, connection)
        self._peer = peer

    @on("BootNotification")
    def boot(self, **kwargs):
        return call_result.BootNotification(current_time="2026-11-23T10:00:00Z", interval=300, status="Accepted")

    @on("Heartbeat")
    def heartbeat(self):
        return call_result.Heartbeat(current_time="2026-11-23T10:00:00Z")

    @on("Authorize")
    def authorize(self, id_tag):
        return call_result.Authorize(id_tag_info={"status": "Accepted"})

    @on("StartTransaction")
    def start_transaction(self, **kwargs):
        return call_result.StartTransaction(transaction_id=next(self._peer.transaction_ids), id_tag_info={"status": "Accepted"})

    @on("StopTransaction")
    def stop_transaction(self, **kwargs):
        return call_result.StopTransaction()

    @on("MeterValues")
    def meter_values(self, **kwargs):
        return call_result.MeterValues()

    @on("StatusNotification")
    def status_notification(self, **kwargs):
        return call_result.StatusNotification()

    @on("DataTransfer")
    def data_transfer(self, **kwargs):
        return call_result.DataTransfer(status="Accepted", data="paid")


class BackendPeer:
    """Runs the backend on a loopback port; stop and start it at will.

    @ivar frames: every frame as (direction, text), over all connections.
    @ivar requests: (path, headers) of every WebSocket handshake.
    """

    def __init__(self, port, ssl=None):
        self.port = port
        self.ssl = ssl
        self.frames = []
        self.requests = []
        self.charge_points = {}
        self.transaction_ids = itertools.count(1000)
        self.password = None
        self._server = None
        self._changed = asyncio.Event()

    def record(self, direction, text):
        self.frames.append((direction, text))
        self._changed.set()

    def received(self):
        """The texts cfosproxy sent, in order."""
        return [text for direction, text in self.frames if direction == "in"]

    def sent(self):
        """The texts the backend sent, in order."""
        return [text for direction, text in self.frames if direction == "out"]

    async def wait_for(self, predicate, timeout=30):
        """Wait until C{predicate(self)} is true."""
        async def until():
            while not predicate(self):
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(until(), timeout)

    async def start(self):
        async def process_request(connection, request):
            self.requests.append(
                (request.path, {k.lower(): v for k, v in request.headers.raw_items()})
            )
            if self.password is not None:
                expected = "Basic " + base64.b64encode(
                    "{}:{}".format(request.path.rsplit("/", 1)[-1], self.password).encode()
                ).decode()
                if request.headers.get("Authorization") != expected:
                    return connection.respond(401, "Unauthorized\n")
            return None

        async def handler(ws):
            charge_point_id = ws.request.path.rsplit("/", 1)[-1]
            central = CentralSystem(charge_point_id, LoggingConnection(ws, self), self)
            self.charge_points[charge_point_id] = central
            self._changed.set()
            try:
                await central.start()
            except websockets.exceptions.ConnectionClosed:
                pass

        self._server = await serve(
            handler, "127.0.0.1", self.port, subprotocols=["ocpp1.6"],
            process_request=process_request, ssl=self.ssl,
        )

    async def stop(self):
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
