"""twistd plugin entry of the virtual Power Brain: ``twistd cfoswallbox``."""

from urllib.parse import urlsplit

from cfosproxy.ws import tls
from cfosproxy.options import ConfigFileOptions
from cfosproxy.wallbox.config import load_wallbox_config


class Options(ConfigFileOptions):
    """``twistd cfoswallbox --config FILE`` (default C{etc/cfoswallbox.ini})."""

    default_config = "etc/cfoswallbox.ini"
    load = staticmethod(load_wallbox_config)

    def prepare(self):
        ocpp = self.config.ocpp
        self.tls_options = None
        parts = urlsplit(ocpp.url)
        if parts.scheme == "wss":
            self.tls_options = tls.client_tls_options(
                parts.hostname,
                ca=ocpp.ca,
                certificate=ocpp.certificate,
                private_key=ocpp.private_key,
                section="ocpp",
                keys=("ca", "certificate", "private_key"),
            )


def makeService(options):
    """The virtual wallbox: its Modbus server and its OCPP charge point."""
    import itertools

    from twisted.application import service
    from twisted.internet import reactor

    from cfosproxy.ws.backend import BackendLink, backend_url
    from cfosproxy.config import WallboxConfig
    from cfosproxy.core.devices import Device
    from cfosproxy.core.gateway import Gateway
    from cfosproxy.core.localcs import LocalCentralSystem
    from cfosproxy.wallbox.chargepoint import VirtualChargePoint
    from cfosproxy.wallbox.model import PowerBrainModel
    from cfosproxy.wallbox.modbusserver import ModbusServerService
    from cfosproxy.wallbox.service import VirtualWallbox, VirtualWallboxService, log_change

    config = options.config
    ocpp, car = config.ocpp, config.car
    model = PowerBrainModel(
        reactor, car_max_current=car.max_current, plugged=car.plugged, on_change=log_change
    )
    # The charge point logic works on a device record, as cfosproxy's does.
    device = Device(
        name=ocpp.client_id,
        type="modbus",
        address=ocpp.client_id,
        connector_id=ocpp.connector_id,
        config=WallboxConfig(name=ocpp.client_id, type="modbus", address="virtual", id_tag=ocpp.id_tag),
    )
    transaction_ids = itertools.count(1)
    # Offline, the wallbox authorizes locally (a real one: its local list).
    local = LocalCentralSystem(reactor, 300, lambda: next(transaction_ids))
    holder = {}
    gateway = Gateway(
        ocpp.client_id, ocpp.client_id, lambda: holder["service"].store, local, reactor, 30, "accept"
    )
    gateway.link = BackendLink(
        url=backend_url(ocpp.url, ocpp.client_id),
        client_id=ocpp.client_id,
        password=ocpp.password,
        ca=ocpp.ca,
        certificate=ocpp.certificate,
        private_key=ocpp.private_key,
        handler=gateway,
        reactor=reactor,
        tls_options=options.tls_options,
    )
    virtual = VirtualWallbox(model, None)
    virtual.chargepoint = VirtualChargePoint(
        device, gateway, reactor, virtual.allowed_changed, car.max_current, connector_id=ocpp.connector_id
    )

    top = service.MultiService()
    ModbusServerService(
        model, host=config.modbus.host, port=config.modbus.port, unit_id=config.modbus.unit_id,
        where="{}: [modbus] listen".format(options["config"]),
    ).setServiceParent(top)
    holder["service"] = VirtualWallboxService(virtual, gateway, reactor)
    holder["service"].setServiceParent(top)
    return top
