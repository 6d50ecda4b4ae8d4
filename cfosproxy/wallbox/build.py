"""``twistd cfoswallbox`` put together: the virtual Power Brain, its Modbus
server, its OCPP charge point behind a gateway to the backend, and, with
``[meter]``, a grid meter measuring the building."""

import functools
import itertools

from cfosproxy.config import WallboxConfig
from cfosproxy.core.devices import Device
from cfosproxy.core.localcs import LocalCentralSystem
from cfosproxy.modbus.meterserver import MeterModbusServer
from cfosproxy.services import GatewayService, ListeningService, OrderedMultiService
from cfosproxy.wallbox.chargepoint import VirtualChargePoint
from cfosproxy.wallbox.meter import BuildingMeter
from cfosproxy.wallbox.metercontrol import control_site
from cfosproxy.wallbox.modbusserver import AsyncioServerService, ModbusServerService
from cfosproxy.wallbox.model import PowerBrainModel
from cfosproxy.wallbox.service import (
    MemoryStoreService,
    VirtualWallbox,
    VirtualWallboxService,
    log_change,
)
from cfosproxy.wiring.gateways import GatewayMaker

# What the virtual wallbox's own central system answers with while the
# backend is away, and how long it waits for the backend's answers.
HEARTBEAT_INTERVAL = 300
CALL_TIMEOUT = 30


def build_virtual_wallbox(options):
    """The virtual wallbox's services, in the order they start (and,
    reversed, stop: the charge point, its link, the store, the grid
    meter's control and Modbus server, the Modbus server).

    @param options: the L{cfosproxy.wallbox.tap.Options}, parsed.
    """
    from twisted.internet import reactor

    config = options.config
    ocpp, car = config.ocpp, config.car
    model = PowerBrainModel(
        reactor, car_max_current=car.max_current, volts_per_phase=car.voltage,
        plugged=car.plugged, on_change=log_change,
    )
    # The charge point logic works on a device record, as cfosproxy's does.
    device = Device(
        name=ocpp.client_id,
        type="modbus",
        address=ocpp.client_id,
        connector_id=ocpp.connector_id,
        config=WallboxConfig(name=ocpp.client_id, type="modbus", address="virtual", id_tag=ocpp.id_tag),
    )

    top = OrderedMultiService()
    ModbusServerService(
        model, host=config.modbus.host, port=config.modbus.port, unit_id=config.modbus.unit_id,
        where="{}: [modbus] listen".format(options["config"]),
    ).setServiceParent(top)
    if config.meter is not None:
        add_grid_meter(top, model, config.meter, options["config"])
    store = MemoryStoreService()
    store.setServiceParent(top)

    transaction_ids = itertools.count(1)
    # Offline, the wallbox authorizes locally (a real one: its local list).
    local = LocalCentralSystem(reactor, HEARTBEAT_INTERVAL, lambda: next(transaction_ids))
    make_gateway = GatewayMaker(lambda: store.store, local, reactor, CALL_TIMEOUT, "accept")
    gateway = make_gateway(ocpp.client_id, options.backend)
    GatewayService([gateway]).setServiceParent(top)

    virtual = VirtualWallbox(
        model,
        functools.partial(
            VirtualChargePoint,
            device,
            gateway,
            reactor,
            car_max_current=car.max_current,
            connector_id=ocpp.connector_id,
            rules=ocpp.rules,
            volts_per_phase=car.voltage,
        ),
    )
    VirtualWallboxService(virtual, reactor).setServiceParent(top)
    return top


def add_grid_meter(top, wallbox, config, path):
    """Add the grid meter of C{[meter]} to C{top}: its Modbus TCP server
    and, with C{control} set, its HTTP control.

    @param wallbox: the L{cfosproxy.wallbox.model.PowerBrainModel} whose
        car the meter measures.
    @param config: the L{cfosproxy.wallbox.config.MeterServerConfig}.
    @param path: the configuration file, for messages.
    @return: the L{BuildingMeter}.
    """
    meter = BuildingMeter(wallbox, config.other_load)
    AsyncioServerService(
        MeterModbusServer(
            meter, kind=config.type, host=config.host, port=config.port, unit_id=config.unit_id
        ),
        where="{}: [meter] listen".format(path),
        what="grid meter",
    ).setServiceParent(top)
    if config.control:
        ListeningService(
            config.control, control_site(meter), where="{}: [meter] control".format(path)
        ).setServiceParent(top)
    return meter
