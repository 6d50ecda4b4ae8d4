"""End-to-end: the virtual Power Brain (cfoswallbox) with cfosproxy, over
real sockets: OCPP to the local manager, Modbus under the manager, through
a gateway to a backend, and over TLS with a client certificate."""

import asyncio
import json
import pathlib
import shutil
import tempfile

from pymodbus.client import AsyncModbusTcpClient
from twisted.trial import unittest

from cfosproxy.wallbox.model import TEST_CAR
from tests.backendpeer import BackendPeer
from tests.certutil import TestPKI
from tests.harness import RunningDaemon, RunningWallbox, asyncio_test, eventually, free_port
from tests.wallboxes import http_get


async def until(predicate, timeout=30):
    async def check():
        return predicate()

    return await eventually(check, timeout=timeout)


def ocpp_wallbox(name="CB-0001", extra=""):
    return "[wallbox:{0}]\ntype = ocpp\naddress = {0}\nmin_current = 6\nmax_current = 16\n{1}".format(name, extra)


async def write_register(port, register, value):
    client = AsyncModbusTcpClient("127.0.0.1", port=port)
    await client.connect()
    try:
        result = await client.write_register(register, value, device_id=1)
        assert not result.isError(), result
    finally:
        client.close()


class VirtualWallboxTests(unittest.TestCase):
    @asyncio_test
    async def test_local_manager_holds_then_grants(self):
        """cfoswallbox boots at cfosproxy; the 0 A default profile keeps it
        from charging although the car is plugged and Modbus allows; once
        its transaction runs, the manager's grant (16 A) is what it
        charges at, and the energy grows."""
        daemon = RunningDaemon(self, manager="max_current = 32\n", wallboxes=ocpp_wallbox())
        wallbox = RunningWallbox(self, ocpp="url = ws://127.0.0.1:{}/\nclient_id = CB-0001\n".format(daemon.port))
        model = wallbox.model

        async def transaction():
            _, device = await http_get(daemon.status_url("/api/devices/CB-0001"))
            return device["transaction_id"] is not None and device

        await eventually(transaction)
        await until(lambda: model.current == 16.0)
        energy = model.energy_wh
        await until(lambda: model.energy_wh > energy)
        _, device = await http_get(daemon.status_url("/api/devices/CB-0001"))
        self.assertEqual((device["granted_current"], device["vendor"], device["model"]), (16.0, "cFos", "Power Brain"))

    @asyncio_test
    async def test_zero_amp_default_blocks_charging(self):
        """With a site limit of 0 A the wallbox never charges: the default
        profile holds it at 0 A even during its transaction."""
        daemon = RunningDaemon(self, manager="max_current = 0\n", wallboxes=ocpp_wallbox())
        wallbox = RunningWallbox(self, ocpp="url = ws://127.0.0.1:{}/\nclient_id = CB-0001\n".format(daemon.port))

        async def held():
            _, device = await http_get(daemon.status_url("/api/devices/CB-0001"))
            return device["transaction_id"] is not None and device["accepted_limit"] == 0.0

        await eventually(held)
        await until(lambda: wallbox.virtual.chargepoint.ocpp_limit() == 0.0)
        self.assertEqual(wallbox.model.current, 0.0)
        self.assertEqual(wallbox.model.state, "B")

    @asyncio_test
    async def test_modbus_server_managed_by_cfosproxy(self):
        """cfosproxy manages the virtual wallbox as a Modbus device: it
        writes 16 A and enable into its registers and the wallbox charges
        at 16 A (its OCPP side, without a server, authorizes locally)."""
        wallbox = RunningWallbox(self, ocpp="url = ws://127.0.0.1:{}/\n".format(free_port()))
        daemon = RunningDaemon(
            self,
            manager="max_current = 32\n",
            wallboxes="[wallbox:pb]\ntype = modbus\naddress = 127.0.0.1:{}\npoll_interval = 0.2\n".format(wallbox.modbus_port),
        )
        await until(lambda: wallbox.model.modbus_limit == 16.0 and wallbox.model.modbus_enabled)
        await until(lambda: wallbox.model.current == 16.0)

        async def shown():
            _, device = await http_get(daemon.status_url("/api/devices/pb"))
            return device["status"] == "Charging" and device["power_w"] > 0

        await eventually(shown)

    @asyncio_test
    async def test_through_gateway_to_backend(self):
        """cfoswallbox → cfosproxy gateway → backend: plugging the car in
        through the Modbus test register and out again gives the backend a
        complete transaction (Authorize, StartTransaction, StopTransaction)."""
        peer = BackendPeer(free_port())
        await peer.start()
        self.addCleanup(lambda: asyncio.ensure_future(peer.stop()))
        daemon = RunningDaemon(
            self,
            manager="max_current = 32\n",
            wallboxes=ocpp_wallbox(extra="gateway_url = ws://127.0.0.1:{}/ocpp/\n".format(peer.port)),
        )
        wallbox = RunningWallbox(
            self, ocpp="url = ws://127.0.0.1:{}/\nclient_id = CB-0001\n".format(daemon.port), car="plugged = no\n"
        )

        def actions():
            return [json.loads(t)[2] for t in peer.received() if json.loads(t)[0] == 2]

        await peer.wait_for(lambda p: "BootNotification" in actions())
        await write_register(wallbox.modbus_port, TEST_CAR, 1)
        await peer.wait_for(lambda p: "StartTransaction" in actions())
        await until(lambda: wallbox.model.current == 16.0)
        await write_register(wallbox.modbus_port, TEST_CAR, 0)
        await peer.wait_for(lambda p: "StopTransaction" in actions())
        ordered = [a for a in actions() if a in ("Authorize", "StartTransaction", "StopTransaction")]
        self.assertEqual(ordered, ["Authorize", "StartTransaction", "StopTransaction"])

    @asyncio_test
    async def test_tls_with_client_certificate(self):
        """cfoswallbox over wss verifies cfosproxy's certificate against its
        CA and presents a client certificate that cfosproxy requires."""
        directory = tempfile.mkdtemp(prefix="cfosproxy-pki-")
        self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
        pki = TestPKI(pathlib.Path(directory))
        cert, key = pki.client_cert_path("CB-0001")
        daemon = RunningDaemon(
            self,
            server="tls = on\ncertificate = {}\nprivate_key = {}\nclient_ca = {}\nrequire_client_certificate = yes\n".format(
                pki.server_cert_path, pki.server_key_path, pki.ca_cert_path
            ),
            wallboxes=ocpp_wallbox(),
        )
        RunningWallbox(
            self,
            ocpp="url = wss://localhost:{}/\nclient_id = CB-0001\nca = {}\ncertificate = {}\nprivate_key = {}\n".format(
                daemon.port, pki.ca_cert_path, cert, key
            ),
        )

        async def connected():
            _, device = await http_get(daemon.status_url("/api/devices/CB-0001"))
            return device["connected"] and device

        device = await eventually(connected)
        self.assertIn("CN=CB-0001", device["certificate_subject"])
