"""Flapping peers on real sockets: a billing backend that goes down and up
again and again while a wallbox runs transactions through the gateway, and
Power Brains that vanish, hang and come back while the manager polls and
limits them."""

import asyncio
import itertools
import json

import websockets
from twisted.internet import defer, reactor
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial import unittest

from cfosproxy.modbus import powerbrain
from cfosproxy.ws.backend import BackendLink
from cfosproxy.core.gateway import TRANSACTION_ACTIONS
from cfosproxy.modbus.wallbox import ModbusWallbox
from tests.backendpeer import BackendPeer
from tests.harness import RunningDaemon, asyncio_test, eventually, free_port, wait_deferred
from tests.modbusserver import PowerBrainServer
from tests.wallboxes import connect, http_get

TIMESTAMP = "2026-11-23T10:00:00Z"


def fast_reconnects(testcase):
    """Let the daemon's backend links retry after 0.05-0.3 s instead of 1 s
    and more: the backend comes back within a second here, and the link's
    backoff would otherwise make each flap cost seconds. (The delays are
    BackendLink's own parameters; the configuration has no key for them.)

    A backend that is shutting down answers handshakes with 503, and the
    link takes any HTTP refusal as final for C{refused_delay} (300 s); that
    is a bug of its own (L{RefusalTests}). Here the point is what gets
    delivered, so a refusal is retried as fast as the rest."""
    original = BackendLink.__init__

    def init(self, **kwargs):
        kwargs.update(min_delay=0.05, max_delay=0.3, refused_delay=0.3)
        original(self, **kwargs)

    testcase.patch(BackendLink, "__init__", init)


class LogCapture:
    """Every log event while it is installed, to count warnings and errors."""

    def __init__(self, testcase):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        testcase.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def at_least(self, level, namespace=""):
        return [
            (e.get("log_namespace", ""), formatEvent(e))
            for e in self.events
            if e.get("log_level") is not None
            and e["log_level"] >= level
            and e.get("log_namespace", "").startswith(namespace)
        ]


def as_deferred(coroutine):
    """A coroutine run as an asyncio task (websockets and pymodbus need
    one), as a Deferred for addCleanup."""
    return defer.Deferred.fromFuture(asyncio.ensure_future(coroutine))


async def until(predicate, timeout=30):
    async def check():
        return predicate()

    return await eventually(check, timeout=timeout, interval=0.02)


# -- the backend flaps -----------------------------------------------------------


class RawWallbox:
    """A charge point on a raw WebSocket: sends one CALL at a time and keeps
    every frame it gets; CALLs from cfosproxy (the manager's profile) are
    accepted at once."""

    def __init__(self, ws):
        self.ws = ws
        self.answers = {}  # unique id -> [answer frames]
        self.sent = []  # (unique id, action, payload, transaction index)
        self._ids = (str(n) for n in itertools.count(1))
        self._waiting = {}
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self):
        try:
            async for text in self.ws:
                frame = json.loads(text)
                if frame[0] == 2:
                    await self.ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))
                    continue
                self.answers.setdefault(frame[1], []).append(frame)
                waiter = self._waiting.pop(frame[1], None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(frame)
        except websockets.exceptions.ConnectionClosed:
            pass

    async def close(self):
        await self.ws.close()
        await self.reader

    async def call(self, action, payload, transaction=None):
        unique_id = next(self._ids)
        self.sent.append((unique_id, action, payload, transaction))
        waiter = self._waiting[unique_id] = asyncio.get_running_loop().create_future()
        await self.ws.send(json.dumps([2, unique_id, action, payload]))
        # cfosproxy answers itself once the backend was silent for
        # call_timeout (30 s): an answer always comes before this bound.
        return await asyncio.wait_for(waiter, 40)


class BackendFlappingTests(unittest.TestCase):
    """The backend stopped and started about once a second."""

    @asyncio_test
    async def test_flapping_backend_gets_everything_once_in_order(self):
        """While the backend goes down and up eight times, a wallbox runs
        transactions (Start, MeterValues, Stop) with Heartbeats between.
        Once the backend stays up, it has every transaction message in the
        order sent, each once except one in flight at a drop (seen again
        only after the reconnect's BootNotification); MeterValues and Stop
        carry the id the backend gave their Start; the wallbox got exactly
        one answer per CALL and the queue is empty."""
        fast_reconnects(self)
        peer = BackendPeer(free_port())
        await peer.start()
        self.addCleanup(lambda: as_deferred(peer.stop()))
        daemon = RunningDaemon(
            self,
            wallboxes=(
                "[wallbox:garage-1]\ntype = ocpp\naddress = CB-0001\n"
                "gateway_url = ws://127.0.0.1:{}/ocpp/\n".format(peer.port)
            ),
        )
        wallbox = RawWallbox(await connect(daemon.url("CB-0001")))
        self.addCleanup(lambda: as_deferred(wallbox.close()))
        await wallbox.call("BootNotification", {"chargePointVendor": "cFos", "chargePointModel": "Power Brain"})
        # The link is up before the first flap.
        await until(lambda: "CB-0001" in peer.charge_points)

        flapping = True

        async def flap():
            nonlocal flapping
            for _ in range(8):
                await peer.stop()
                await asyncio.sleep(0.3)
                handshakes = len(peer.requests)
                await peer.start()
                # Up until cfosproxy is back and has had a moment to send.
                await until(lambda: len(peer.requests) > handshakes)
                await asyncio.sleep(0.3)
            flapping = False

        async def transactions():
            meter = itertools.count(1000, 100)
            transaction = 0
            while flapping or transaction < 3:
                start = await wallbox.call(
                    "StartTransaction",
                    {"connectorId": 1, "idTag": "04A1B2C3", "meterStart": next(meter), "timestamp": TIMESTAMP},
                    transaction,
                )
                transaction_id = start[2]["transactionId"]
                for _ in range(3):
                    await wallbox.call("MeterValues", {
                        "connectorId": 1, "transactionId": transaction_id,
                        "meterValue": [{"timestamp": TIMESTAMP, "sampledValue": [{"value": str(next(meter))}]}],
                    }, transaction)
                    # A charge point's pace, so that the messages spread
                    # over the flaps (not a wait for anything).
                    await asyncio.sleep(0.02)
                await wallbox.call("Heartbeat", {})
                await wallbox.call(
                    "StopTransaction",
                    {"transactionId": transaction_id, "meterStop": next(meter), "timestamp": TIMESTAMP},
                    transaction,
                )
                transaction += 1

        await asyncio.gather(flap(), transactions())

        expected = [s for s in wallbox.sent if s[1] in TRANSACTION_ACTIONS]
        last_id = expected[-1][0]

        def calls():
            return [json.loads(t) for t in peer.received() if json.loads(t)[0] == 2]

        await until(lambda: any(c[1] == last_id and c[2] in TRANSACTION_ACTIONS for c in calls()))

        async def drained():
            _, device = await http_get(daemon.status_url("/api/devices/garage-1"))
            return device["gateway"]["queue_length"] == 0

        await eventually(drained)

        # The backend really went away and came back each time.
        self.assertGreaterEqual(len(peer.requests), 9)

        received = calls()
        # Transaction messages (the gateway's own BootNotification opens
        # each connection; it marks the reconnects).
        ours = [(i, c) for i, c in enumerate(received) if c[2] in TRANSACTION_ACTIONS]
        ids = [c[1] for _, c in ours]
        collapsed = [u for n, u in enumerate(ids) if n == 0 or ids[n - 1] != u]
        self.assertEqual(collapsed, [s[0] for s in expected])
        for (i, earlier), (j, later) in zip(ours, ours[1:]):
            if earlier[1] == later[1]:
                # Repeated only across a reconnect: it was in flight.
                between = [c[2] for c in received[i + 1:j]]
                self.assertIn("BootNotification", between, (earlier, later))

        # The backend's ids, by transaction: from the last answer to each
        # Start (an earlier one, if any, was lost with its connection).
        answers, given = {}, set()
        for text in peer.sent():
            frame = json.loads(text)
            if frame[0] == 3:
                answers[frame[1]] = frame[2]
                if "transactionId" in frame[2]:
                    given.add(frame[2]["transactionId"])
        backend_ids = {s[3]: answers[s[0]]["transactionId"] for s in expected if s[1] == "StartTransaction"}
        by_id = {s[0]: s for s in expected}
        for _, frame in ours:
            if frame[2] in ("MeterValues", "StopTransaction"):
                transaction_id = frame[3]["transactionId"]
                self.assertIn(transaction_id, given)
                self.assertEqual(transaction_id, backend_ids[by_id[frame[1]][3]], frame)

        # One answer per CALL of the wallbox, and nothing else.
        for unique_id, action, _, _ in wallbox.sent:
            self.assertEqual(len(wallbox.answers.get(unique_id, [])), 1, (unique_id, action))
        self.assertEqual(set(wallbox.answers), {s[0] for s in wallbox.sent})


class RefusalTests(unittest.TestCase):
    """A backend that is restarting answers with an HTTP error for a moment."""

    @asyncio_test
    async def test_service_unavailable_is_retried_with_the_backoff(self):
        """A backend shutting down or starting up (or a proxy in front of
        it) answers the handshake with 503 Service Unavailable, a passing
        state: the link tries again with its normal backoff, and opens once
        the backend takes connections again; it does not sit out
        C{refused_delay} (an hour here), which is for a backend that said
        no and means it (401, 403)."""
        from websockets.asyncio.server import serve

        opened = []
        handshakes = []

        def process_request(connection, request):
            handshakes.append(request.path)
            if len(handshakes) == 1:
                return connection.respond(503, "restarting\n")
            return None

        async def handler(ws):
            await ws.wait_closed()

        server = await serve(handler, "127.0.0.1", free_port(), subprotocols=["ocpp1.6"], process_request=process_request)
        self.addCleanup(lambda: as_deferred(_close_server(server)))
        port = server.sockets[0].getsockname()[1]

        class Handler:
            def link_opened(self, link):
                opened.append(link)

            def link_closed(self, reason):
                pass

            def text_received(self, text):
                pass

        link = BackendLink(
            url="ws://127.0.0.1:{}/ocpp/CB-0001".format(port), client_id="CB-0001",
            password="", ca="", certificate="", private_key="", handler=Handler(),
            reactor=reactor, min_delay=0.05, max_delay=0.2, refused_delay=3600,
        )
        self.addCleanup(link.stop)
        link.start()
        await until(lambda: handshakes and link.state != "connecting")
        self.assertIn("503", link.last_error)
        # The normal backoff is 0.05-0.2 s here; the bound is only the
        # test's patience, far below refused_delay.
        await until(lambda: opened, timeout=5)
        self.assertEqual(len(handshakes), 2)


async def _close_server(server):
    server.close()
    await server.wait_closed()


# -- Power Brains flap -----------------------------------------------------------


class SharedLogServer(PowerBrainServer):
    """A Power Brain that also writes its writes into a log shared with
    other devices, so that the site's state can be replayed in order."""

    def __init__(self, name, log):
        super().__init__()
        self.name = name
        self._shared = log

    def received(self, function_code, address, count, values):
        super().received(function_code, address, count, values)
        if values is not None:
            self._shared.append((self.name, address, list(values)))


def site_exposures(initial, log):
    """Replay the shared write log: after each write, what the devices may
    draw together (0.1 A), counting a device's limit while it is enabled."""
    state = {name: dict(registers) for name, registers in initial.items()}
    sums = []
    for name, address, values in log:
        for offset, value in enumerate(values):
            state[name][address + offset] = value
        sums.append(sum(
            s[powerbrain.CURRENT_LIMIT] for s in state.values() if s[powerbrain.ENABLE]
        ))
    return sums


class ModbusFlappingTests(unittest.TestCase):
    """Power Brains that disappear and come back."""

    @asyncio_test
    async def test_flapping_device_under_load_management(self):
        """Two charging Power Brains share a 20 A site; one of them loses
        its network six times. Each time the status API shows it offline,
        then online; after each return its limit and enable are written
        again; the other wallbox never gets more than the fuse leaves beside
        the limit the offline one still holds; one warning per outage, no
        error."""
        log = LogCapture(self)
        shared = []
        servers = {}
        for name in ("left", "right"):
            server = servers[name] = SharedLogServer(name, shared)
            server.set_serial("PB-" + name)
            server.set_energy(10000)
            server.set_state("C")
            await server.start()
            self.addCleanup(lambda server=server: as_deferred(server.stop()))
        initial = {name: dict(s.registers) for name, s in servers.items()}
        wallboxes = "".join(
            "[wallbox:{}]\ntype = modbus\naddress = {}\npoll_interval = 0.1\n"
            "min_current = 6\nmax_current = 16\n".format(name, server.address)
            for name, server in servers.items()
        )
        daemon = RunningDaemon(self, manager="max_current = 20\n", wallboxes=wallboxes)
        left, right = servers["left"], servers["right"]
        # Both charge, 10 A each.
        await until(lambda: (left.limit, left.enable, right.limit, right.enable) == (100, 1, 100, 1))

        async def device(name):
            _, body = await http_get(daemon.status_url("/api/devices/" + name))
            return body

        async def shown(name, connected):
            return (await device(name))["connected"] is connected

        async def settled(name):
            body = await device(name)
            return body["connected"] and body["pending_limit"] is None and body["accepted_limit"] == 10.0

        for _ in range(6):
            await left.stop()
            await eventually(lambda: shown("left", False), interval=0.02)
            # Offline, "left" keeps (and is counted with) its 10 A: "right",
            # now alone in wanting current, is granted its 16 A but held
            # to the 10 A the fuse leaves.
            left_now, right_now = await device("left"), await device("right")
            self.assertEqual(left_now["accepted_limit"], 10.0)
            self.assertEqual(right_now["granted_current"], 16.0)
            self.assertEqual(right_now["accepted_limit"], 10.0)
            writes = len(left.writes)
            await left.start()
            await eventually(lambda: shown("left", True), interval=0.02)
            # Written again after the return: limit and enable, whatever
            # the device held before.
            await until(lambda: {r for r, _ in left.writes[writes:]} == {powerbrain.CURRENT_LIMIT, powerbrain.ENABLE})
            # And acknowledged, before the next outage: a write cut off
            # half-way is another story (the manager retries it later).
            await eventually(lambda: settled("left"), interval=0.02)

        await until(lambda: (left.limit, left.enable, right.limit, right.enable) == (100, 1, 100, 1))
        self.assertLessEqual(max(site_exposures(initial, shared)), 200)

        warnings = log.at_least(LogLevel.warn)
        offline = [text for _, text in warnings if "left" in text and "offline" in text]
        self.assertEqual(len(offline), 6, warnings)
        self.assertEqual(len(warnings), 6, warnings)
        self.assertEqual(log.at_least(LogLevel.error), [])

    @asyncio_test
    async def test_device_that_vanishes_hangs_and_returns(self):
        """A Power Brain polled every 0.1 s goes, four times over, from
        answering to gone (port closed) to hung (connection accepted,
        nothing answered) and back. Each outage is one offline report and
        one warning, each return one online report, and the wanted limit
        and enable are written again after each return."""
        log = LogCapture(self)
        server = PowerBrainServer()
        server.set_energy(10000)
        await server.start()
        self.addCleanup(lambda: as_deferred(server.stop()))
        online = []
        wallbox = ModbusWallbox(
            name="pb-flap", host="127.0.0.1", port=server.port, unit_id=1,
            poll_interval=0.1, reactor=reactor,
            on_reading=lambda wallbox, reading: None,
            on_online=lambda wallbox, state: online.append(state),
            timeout=0.2, retries=0,
        )
        wallbox.start()
        self.addCleanup(wallbox.stop)
        await until(lambda: wallbox.online)
        await wait_deferred(wallbox.set_outputs(10, True))
        self.assertEqual((server.limit, server.enable), (100, 1))

        hung = []

        async def hang(reader, writer):
            # Accept, read what comes, never answer.
            hung.append(writer)
            await reader.read()

        for _ in range(4):
            await server.stop()
            await until(lambda: online[-1] is False)
            # Hung: a device that takes the connection and says nothing.
            silent = await asyncio.start_server(hang, "127.0.0.1", server.port)
            await until(lambda: hung and "reading" in (wallbox.last_error or ""))
            silent.close()
            for writer in hung:
                writer.close()
            hung.clear()
            await silent.wait_closed()
            # Whatever the device holds now, it is given the limit again.
            server.registers[powerbrain.CURRENT_LIMIT] = 0
            server.registers[powerbrain.ENABLE] = 0
            writes = len(server.writes)
            await server.start()
            await until(lambda: (server.limit, server.enable) == (100, 1))
            self.assertTrue(wallbox.online)
            self.assertEqual({r for r, _ in server.writes[writes:]}, {powerbrain.CURRENT_LIMIT, powerbrain.ENABLE})

        self.assertEqual(online, [True] + [False, True] * 4)
        ours = log.at_least(LogLevel.warn, "cfosproxy")
        self.assertEqual(len(ours), 4, ours)
        self.assertTrue(all("offline" in text for _, text in ours), ours)
        self.assertEqual(log.at_least(LogLevel.error), [])
