"""C{[server] fast_path}: read from the configuration, on by default; with
C{no}, the daemon relays between a wallbox and its backend with every frame
through Autobahn alone, byte for byte as with the fast path."""

import asyncio
import gc

import pytest
from twisted.trial import unittest

from cfosproxy.config import ConfigError, config_from_string
from cfosproxy.ws.backend import _BackendConnection
from cfosproxy.ws.relaypath import RelayPathMixin
from cfosproxy.ws.server import _WallboxConnection
from tests.backendpeer import BackendPeer
from tests.harness import RunningDaemon, asyncio_test, free_port
from tests.wallboxes import connect, exchange


def test_fast_path_is_on_unless_switched_off():
    """Without the key the fast path is on; C{no} switches it off; anything
    but yes or no is refused naming the key."""
    assert config_from_string("[server]\n").server.fast_path is True
    assert config_from_string("[server]\nfast_path = no\n").server.fast_path is False
    assert config_from_string("[server]\nfast_path = yes\n").server.fast_path is True
    with pytest.raises(ConfigError, match=r"\[server\] fast_path: must be yes or no"):
        config_from_string("[server]\nfast_path = maybe\n")


def open_connections():
    """The wallbox connections and backend connections open in this
    process (closed ones of earlier tests may not be collected yet)."""
    return [
        o
        for o in gc.get_objects()
        if issubclass(type(o), (_WallboxConnection, _BackendConnection))
        and o.state == o.STATE_OPEN
    ]


class RelayWithoutTheFastPathTests(unittest.TestCase):
    """A daemon with C{fast_path = no} and a gateway to a backend."""

    async def relay(self, server):
        """Relay a BootNotification, a DataTransfer with odd spacing and a
        Heartbeat from a wallbox through a daemon with C{[server]} lines
        C{server} to a backend; return what the backend received, what it
        sent, the answers the wallbox got, and the protocols in use."""
        peer = BackendPeer(free_port())
        await peer.start()
        self.addCleanup(lambda: asyncio.ensure_future(peer.stop()))
        daemon = RunningDaemon(
            self,
            server=server,
            wallboxes=(
                "[wallbox:garage-1]\ntype = ocpp\naddress = CB-0001\n"
                "gateway_url = ws://127.0.0.1:{}/ocpp/\n".format(peer.port)
            ),
        )
        sent = [
            '[2,"b-1","BootNotification",{"chargePointVendor":"cFos","chargePointModel":"Power Brain"}]',
            '[2,"dt-1", "DataTransfer" ,{"vendorId":"com.example","data":"' + "x" * 300 + '"}]',
            '[2,"h-1","Heartbeat",{}]',
        ]
        answers = []
        async with await connect(daemon.url("CB-0001")) as ws:
            await peer.wait_for(lambda p: "CB-0001" in p.charge_points)
            for text in sent:
                answers.append(await exchange(ws, text))
            protocols = open_connections()
        return sent, answers, peer, protocols

    @asyncio_test
    async def test_frames_are_relayed_without_the_fast_path(self):
        """Every frame reaches the backend exactly as the wallbox sent it,
        and every answer the wallbox exactly as the backend sent it; both
        of the daemon's WebSockets have no fast path."""
        sent, answers, peer, protocols = await self.relay("fast_path = no\n")
        received, peer_sent = peer.received(), peer.sent()
        for text in sent:
            self.assertIn(text, received)
        for answer in answers:
            self.assertIn(answer, peer_sent)
        kinds = {type(p).__name__ for p in protocols}
        self.assertEqual(kinds, {"PlainWallboxServerProtocol", "_PlainBackendProtocol"})
        self.assertFalse(any(isinstance(p, RelayPathMixin) for p in protocols))

    @asyncio_test
    async def test_by_default_both_legs_take_the_fast_path(self):
        """The same relay with the key left out: both WebSockets take the
        fast path."""
        _, answers, _, protocols = await self.relay("")
        self.assertEqual(len(answers), 3)
        kinds = {type(p).__name__ for p in protocols}
        self.assertEqual(kinds, {"WallboxServerProtocol", "_BackendProtocol"})
