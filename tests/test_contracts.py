"""Every implementation of the core's contracts provides what its interface
in L{cfosproxy.core.interfaces} promises (zope.interface's verifyObject:
the declaration, the methods and their signatures, the attributes)."""

import pytest
from twisted.internet import task
from zope.interface.verify import verifyClass, verifyObject

from cfosproxy.config import config_from_string
from cfosproxy.core.devices import DeviceRegistry
from cfosproxy.core.gateway import Gateway
from cfosproxy.core.hub import ChargePointHub
from cfosproxy.core.interfaces import (
    IBackendHandler,
    IBackendLink,
    ICallTarget,
    IHubObserver,
    ILimitActuator,
    IPeerConnection,
    IWallboxHandler,
)
from cfosproxy.core.localcs import LocalCentralSystem
from cfosproxy.core.session import OcppSession
from cfosproxy.modbus.chargepoint import ModbusChargePoint
from cfosproxy.modbus.wallbox import ModbusLimitActuator
from cfosproxy.ops.metrics import MessageCounter
from cfosproxy.site.manager import LoadManager
from cfosproxy.site.ocpplimits import ChargingProfileActuator
from cfosproxy.store import Store
from cfosproxy.ws.backend import BackendLink
from cfosproxy.ws.server import WallboxServerProtocol
from tests.fakes import RecordingConnection

CONFIG = """
[wallbox:garage]
type = ocpp
address = CB-1
gateway_url = ws://backend.example/ocpp/
[wallbox:pb]
type = modbus
address = 127.0.0.1:4701
gateway_url = ws://backend.example/ocpp/
"""


@pytest.fixture
def site(tmp_path):
    """The core's objects for one small site, each built as the daemon
    builds it."""
    clock = task.Clock()
    config = config_from_string(CONFIG)
    registry = DeviceRegistry(config, clock)
    store = Store(str(tmp_path / "store.sqlite"))
    local = LocalCentralSystem(clock, 300, store.next_transaction_id)

    def link(handler):
        # Built, never started: nothing connects.
        from twisted.internet import reactor

        return BackendLink(
            url="ws://backend.example/ocpp/CB-1", client_id="CB-1", password="",
            ca="", certificate="", private_key="", handler=handler, reactor=reactor,
        )

    gateway = Gateway("CB-1", "CB-1", lambda: store, local, clock, 30, "cache", link=link)
    hub = ChargePointHub(config.server, registry, lambda _: local, clock)
    actuators = {"ocpp": ChargingProfileActuator(hub, clock)}
    manager = LoadManager(config, registry, clock, lambda name, enabled: None)
    manager.connect_actuators(actuators)
    yield {
        "clock": clock, "registry": registry, "local": local, "gateway": gateway,
        "hub": hub, "manager": manager, "actuators": actuators, "store": store,
    }
    store.close()


def test_wallbox_handlers(site):
    """The gateway and the local central system answer a wallbox's CALLs
    and hear of its session."""
    verifyObject(IWallboxHandler, site["gateway"])
    verifyObject(IWallboxHandler, site["local"])


def test_the_gateway_handles_its_backend_link(site):
    """The gateway is its backend link's handler; the link is an
    L{IBackendLink} (and so a peer connection for the backend leg)."""
    verifyObject(IBackendHandler, site["gateway"])
    verifyObject(IBackendLink, site["gateway"].link)
    verifyObject(IPeerConnection, site["gateway"].link)


def test_call_targets(site):
    """A wallbox's session and a Modbus wallbox's OCPP charge point both
    take the backend's CALLs."""
    session = OcppSession("CB-1", RecordingConnection(), site["local"].answer, (), site["clock"], 30)
    verifyObject(ICallTarget, session)
    chargepoint = ModbusChargePoint(
        site["registry"].get("pb"), site["gateway"], site["clock"], lambda: None
    )
    verifyObject(ICallTarget, chargepoint)


def test_hub_observers(site):
    """The registry, the load manager and the metrics' counter hear of
    connections and exchanges."""
    verifyObject(IHubObserver, site["registry"])
    verifyObject(IHubObserver, site["manager"])
    verifyObject(IHubObserver, MessageCounter())


def test_limit_actuators(site):
    """Charging profiles and Power Brain registers both set limits."""
    verifyObject(ILimitActuator, site["actuators"]["ocpp"])
    verifyObject(ILimitActuator, ModbusLimitActuator({}))


def test_the_wallbox_websocket_is_a_peer_connection():
    """The server's protocol is what a wallbox's session sends through
    (its C{peer} is set when the connection is made)."""
    verifyClass(IPeerConnection, WallboxServerProtocol)
