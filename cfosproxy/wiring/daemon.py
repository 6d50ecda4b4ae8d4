"""``twistd cfosproxy`` put together: the store, the site's devices and
their gateways, the load manager, the Modbus wallboxes, the OCPP server
and the status API.

Each part is made with what it needs. Two loops cannot be cut that way,
and each is closed in one step once everything in it is made (see
L{build_daemon}): the load manager's actuators reach the wallboxes through
the hub and the Modbus clients, which report to the manager; and the
backends' profiles act on the registry's devices, which are made with
their gateways, which hand the backends' profile calls to those profiles.
"""

import functools
import logging

from twisted.logger import Logger

from cfosproxy.core.backendprofiles import BackendProfiles
from cfosproxy.core.devices import DeviceRegistry
from cfosproxy.core.hub import ChargePointHub
from cfosproxy.core.localcs import LocalCentralSystem
from cfosproxy.modbus.chargepoint import ModbusChargePoint
from cfosproxy.modbus.device import ModbusDevice
from cfosproxy.modbus.meter import ModbusMeter
from cfosproxy.modbus.wallbox import ModbusLimitActuator, ModbusWallbox
from cfosproxy.ops.memory import memory_release_service
from cfosproxy.ops.metrics import MessageCounter, SiteCollector, chain, metrics_resource
from cfosproxy.ops.sitelimit import SiteLimit
from cfosproxy.ops.status import StatusSite, status_root
from cfosproxy.services import (
    CloseConnectionsService,
    GatewayService,
    ListeningService,
    ManagerService,
    ModbusService,
    OrderedMultiService,
    with_backlog,
)
from cfosproxy.site.manager import LoadManager
from cfosproxy.site.ocpplimits import ChargingProfileActuator
from cfosproxy.store import StoreService
from cfosproxy.wiring.gateways import GatewayMaker
from cfosproxy.ws import tls
from cfosproxy.ws.backend import BackendOutages
from cfosproxy.ws.server import WallboxServerFactory

_log = Logger()


def build_daemon(options):
    """The daemon's services, in the order they start (and, reversed,
    stop: listeners first, the store last).

    @param options: the L{cfosproxy.tap.Options}, parsed: the configuration
        and what was read of the files it points to.
    """
    from twisted.internet import reactor

    config = options.config
    for warning in config.warnings():
        _log.warn("{warning}", warning=warning)
    if any(w.type == "modbus" for w in config.wallboxes) or any(
        m.type != "api" for m in config.used_meters()
    ):
        # pymodbus logs every failed (re)connect through stdlib logging; the
        # daemon logs a Modbus device going offline and back itself, once.
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

    top = OrderedMultiService()
    # Queue writes are committed together at the end of the reactor's
    # turn: one fsync for all the messages that arrived in it.
    # Options.prepare has just checked the file.
    store = StoreService(
        config.manager.state_dir,
        lambda commit: reactor.callLater(0, commit),
        checked=True,
    )
    store.setServiceParent(top)

    local = LocalCentralSystem(
        reactor,
        config.server.heartbeat_interval,
        lambda: store.store.next_transaction_id(),
    )
    counter = MessageCounter()
    backend_profiles = BackendProfiles()
    make_gateway = GatewayMaker(
        lambda: store.store,
        local,
        reactor,
        config.server.call_timeout,
        config.manager.offline_authorize,
        profiles=backend_profiles,
        count=counter.count_backend,
        boot_wait=config.server.boot_wait,
        ping_interval=config.server.ping_interval,
        max_message_size=config.server.max_message_size,
        fast_path=config.server.fast_path,
        # One log of backend outages for all links: a backend that goes
        # down is one warning, not one per wallbox.
        outages=BackendOutages(reactor),
    )
    ocpp_gateways, modbus_gateways = _gateways(config, options.backends, make_gateway)
    registry = DeviceRegistry(config, reactor, _device_gateways(config, ocpp_gateways, modbus_gateways))
    manager = LoadManager(
        config,
        registry,
        reactor,
        lambda name, enabled: store.store.set_device_enabled(name, enabled),
        save_state=lambda name, state: store.store.save_device_state(name, state),
    )

    def backend_limit(device):
        return backend_profiles.limit_now(device, reactor.seconds())

    # Modbus wallboxes, each with its OCPP charge point when it has a backend.
    chargepoints = {
        name: ModbusChargePoint(
            registry.get(name),
            gateway,
            reactor,
            functools.partial(manager.reapply, name),
            backend_profiles,
        )
        for name, gateway in modbus_gateways.items()
    }
    modbus_wallboxes = {}
    for wallbox in config.wallboxes:
        if wallbox.type != "modbus":
            continue
        joint = ModbusDevice(
            registry.get(wallbox.name),
            manager,
            reactor,
            chargepoint=chargepoints.get(wallbox.name),
            backend_limit=backend_limit,
        )
        modbus_wallboxes[wallbox.name] = ModbusWallbox.from_config(
            wallbox,
            reactor=reactor,
            on_reading=joint.on_reading,
            on_online=chain(counter.modbus_online, joint.on_online),
            writes=config.manager.mode == "control",
        )

    # Modbus meters, each reporting to the manager's meters; an api meter's
    # readings come over the status API.
    meters = [
        ModbusMeter.from_config(
            meter,
            reactor=reactor,
            on_reading=manager.meters.reading,
            on_failure=manager.meters.failure,
        )
        for meter in config.used_meters()
        if meter.type != "api"
    ]

    hub = ChargePointHub(
        config.server,
        registry,
        lambda chargebox_id: ocpp_gateways.get(chargebox_id, local),
        reactor,
        observers=[manager, counter],
    )

    # The two loops (see the module's docstring), closed now that all
    # their parts are made, before anything runs.
    manager.connect_actuators(
        {
            "ocpp": ChargingProfileActuator(hub, reactor, backend_profiles),
            "modbus": ModbusLimitActuator(
                modbus_wallboxes,
                allowed=lambda device: device.name not in chargepoints
                or chargepoints[device.name].allows_charging,
                backend_limit=backend_limit,
            ),
        }
    )
    backend_profiles.serve(registry, manager)

    if config.manhole.listen:
        from cfosproxy.ops.manhole import admin_namespace, manhole_service

        manhole_service(
            listen=config.manhole.listen,
            authorized_keys=config.manhole.authorized_keys,
            state_dir=config.manager.state_dir,
            namespace=admin_namespace(registry=registry, manager=manager, hub=hub),
            where=_where(options, "manhole"),
        ).setServiceParent(top)
    # The site limit set over the status API, kept in the store.
    site_limit = SiteLimit(manager, config.manager.max_current, lambda: store.store)
    ManagerService(store, manager, site_limit).setServiceParent(top)
    GatewayService(
        list(ocpp_gateways.values()) + list(modbus_gateways.values())
    ).setServiceParent(top)
    ModbusService(
        list(modbus_wallboxes.values()) + meters, list(chargepoints.values())
    ).setServiceParent(top)
    CloseConnectionsService(hub).setServiceParent(top)

    wallbox_factory = WallboxServerFactory(hub, config.server, fast_path=config.server.fast_path)
    memory_release_service(lambda: wallbox_factory.closed_connections).setServiceParent(top)
    factory = tls.wrap_factory(
        config.server.tls,
        wallbox_factory,
        options.tls_context,
        clock=reactor,
    )
    ocpp = ListeningService(
        with_backlog(config.server.listen),
        factory,
        _where(options, "server"),
        shown=config.server.listen,
    )
    ocpp.setName("ocpp")
    ocpp.setServiceParent(top)

    listeners = {"ocpp": ocpp}
    web = ListeningService(
        config.status.listen,
        StatusSite(
            status_root(
                registry,
                manager,
                config.status.token,
                listeners,
                site_limit=site_limit,
                extra={
                    b"metrics": metrics_resource(
                        SiteCollector(registry, hub, modbus_wallboxes, counter, manager)
                    )
                },
            ),
            allowed_hosts=config.status.host_allow_list,
        ),
        _where(options, "status"),
    )
    web.setName("status")
    # The status API's health page tells of every listener, its own too:
    # it joins the page's mapping once it exists.
    listeners["status"] = web
    web.setServiceParent(top)
    return top


def _where(options, section):
    """A listen setting, as a start that cannot listen names it."""
    return "{}: [{}] listen".format(options["config"], section)


def _gateways(config, backends, make_gateway):
    """The gateways of the wallboxes with a backend.

    @param backends: C{{device name: L{Backend}}} of the wallboxes that
        have a C{gateway_url}.
    @return: C{({ChargeBox-ID: Gateway}, {device name: Gateway})}: an OCPP
        wallbox's connectors share one gateway, a Modbus device has its own.
    """
    ocpp, modbus = {}, {}
    for wallbox in config.wallboxes:
        if not wallbox.gateway_url:
            continue
        if wallbox.type == "ocpp" and wallbox.address not in ocpp:
            ocpp[wallbox.address] = make_gateway(
                wallbox.address, backends[wallbox.name], _connector_ids(config, wallbox.address)
            )
        elif wallbox.type == "modbus":
            modbus[wallbox.name] = make_gateway(wallbox.name, backends[wallbox.name])
    return ocpp, modbus


def _connector_ids(config, chargebox_id):
    """The connectors configured on the OCPP wallbox C{chargebox_id}."""
    return tuple(sorted(w.id for w in config.devices_for(chargebox_id)))


def _device_gateways(config, ocpp_gateways, modbus_gateways):
    """C{{device name: Gateway}}: each configured device's gateway, for
    the ones that have a backend."""
    gateways = dict(modbus_gateways)
    for wallbox in config.wallboxes:
        if wallbox.type == "ocpp" and wallbox.address in ocpp_gateways:
            gateways[wallbox.name] = ocpp_gateways[wallbox.address]
    return gateways
