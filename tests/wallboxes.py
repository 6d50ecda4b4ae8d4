"""Test clients: a wallbox built on the ``ocpp`` package, and HTTP."""

import asyncio
import json
import urllib.error
import urllib.request

import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call_result


async def http_get(url):
    """GET a URL (in a thread: the daemon runs on this thread's loop)."""

    def fetch():
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    return await asyncio.get_running_loop().run_in_executor(None, fetch)


class Wallbox(ChargePoint):
    """The ocpp package's charge point, as a stand-in for a real wallbox:
    it accepts charging profiles and keeps the last one per connector."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.profiles = {}
        self.profile_changed = asyncio.Event()
        self.remote_starts = []

    @on("SetChargingProfile")
    def on_set_charging_profile(self, connector_id, cs_charging_profiles):
        self.profiles[connector_id] = cs_charging_profiles
        self.profile_changed.set()
        return call_result.SetChargingProfile(status="Accepted")

    @on("RemoteStartTransaction")
    def on_remote_start(self, id_tag, connector_id=None, **kwargs):
        self.remote_starts.append({"id_tag": id_tag, "connector_id": connector_id})
        return call_result.RemoteStartTransaction(status="Accepted")

    @on("ClearChargingProfile")
    def on_clear_charging_profile(self, id=None, connector_id=None, **kwargs):
        self.profiles = {c: p for c, p in self.profiles.items() if p["charging_profile_id"] != id}
        self.profile_changed.set()
        return call_result.ClearChargingProfile(status="Accepted")

    def limit(self, connector_id=1):
        """The limit of the profile on a connector, or None."""
        profile = self.profiles.get(connector_id)
        if profile is None:
            return None
        return profile["charging_schedule"]["charging_schedule_period"][0]["limit"]

    async def wait_for_limit(self, wanted, connector_id=1, timeout=10):
        """Wait until the connector's limit is C{wanted}."""
        async def until():
            while self.limit(connector_id) != wanted:
                self.profile_changed.clear()
                await self.profile_changed.wait()

        await asyncio.wait_for(until(), timeout)


async def exchange(ws, text):
    """Send one raw frame on the WebSocket C{ws}, return the raw answer
    (CALLs from cfosproxy meanwhile, the manager's profiles, are accepted
    and skipped)."""
    unique_id = json.loads(text)[1]
    await ws.send(text)
    while True:
        answer = await asyncio.wait_for(ws.recv(), 15)
        frame = json.loads(answer)
        if frame[0] == 2:
            await ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))
            continue
        if frame[1] == unique_id:
            return answer


async def connect(url, **kwargs):
    kwargs.setdefault("subprotocols", ["ocpp1.6"])
    return await websockets.connect(url, open_timeout=10, **kwargs)


async def refused_status(url, **kwargs):
    """The HTTP status with which the server refuses the upgrade."""
    try:
        ws = await connect(url, **kwargs)
    except websockets.exceptions.InvalidStatus as e:
        return e.response.status_code, e.response
    await ws.close()
    raise AssertionError("connection to {} was accepted".format(url))


async def http_post(url, token=None):
    """POST to a URL with an optional bearer token; return status and JSON."""

    def send():
        request = urllib.request.Request(url, data=b"", method="POST")
        if token is not None:
            request.add_header("Authorization", "Bearer " + token)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read()), dict(response.headers)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null"), dict(e.headers)

    return await asyncio.get_running_loop().run_in_executor(None, send)


async def start_wallbox(url, chargebox_id, **kwargs):
    """Connect a L{Wallbox} and run it; returns it (C{.ws}, C{.runner})."""
    ws = await connect(url, **kwargs)
    wallbox = Wallbox(chargebox_id, ws)
    wallbox.ws = ws
    wallbox.runner = asyncio.ensure_future(wallbox.start())
    return wallbox


async def stop_wallbox(wallbox):
    """Stop a wallbox started with L{start_wallbox}."""
    wallbox.runner.cancel()
    await wallbox.ws.close()
