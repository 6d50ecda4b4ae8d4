"""twistd plugin entry: command-line options and the service tree.

``Options`` loads and checks everything the config file points to, so that
a mistake fails the start with a message naming file, section and key;
``build_service`` only assembles services from the result.
"""

import logging
from urllib.parse import urlsplit

from twisted.logger import Logger
from twisted.python import usage

from cfosproxy.ws import tls
from cfosproxy.config import load_config
from cfosproxy.options import ConfigFileOptions
from cfosproxy.store.database import Store, StoreError


class Options(ConfigFileOptions):
    """``twistd cfosproxy --config FILE`` (default C{etc/cfosproxy.ini})."""

    default_config = "etc/cfosproxy.ini"
    load = staticmethod(load_config)

    def prepare(self):
        # The store is checked (and migrated) now, so that a damaged or
        # foreign file fails the start with its message alone; the service
        # opens it again after twistd has forked.
        try:
            Store.in_state_dir(self.config.manager.state_dir).close()
        except StoreError as e:
            raise usage.UsageError(
                "{}: [manager] state_dir: {}".format(self["config"], e)
            ) from e
        server = self.config.server
        self.tls_context = None
        if server.tls != "off":
            self.tls_context = tls.server_context_factory(
                certificate=server.certificate,
                private_key=server.private_key,
                client_ca=server.client_ca,
                require_client_certificate=server.require_client_certificate,
                state_dir=self.config.manager.state_dir,
            )
        if self.config.manhole.listen:
            from cfosproxy.ops.manhole import AuthorizedKeysFile

            AuthorizedKeysFile(self.config.manhole.authorized_keys).check()
        # The files of wss:// backends are read now, so that a mistake
        # fails the start, not the first connection hours later.
        self.gateway_tls = {}
        for wallbox in self.config.wallboxes:
            parts = urlsplit(wallbox.gateway_url)
            if parts.scheme == "wss":
                self.gateway_tls[wallbox.name] = tls.client_tls_options(
                    parts.hostname,
                    ca=wallbox.gateway_ca,
                    certificate=wallbox.gateway_certificate,
                    private_key=wallbox.gateway_private_key,
                    section="wallbox:" + wallbox.name,
                )


_log = Logger()


# Twisted listens with a backlog of 50 connections. After a power cut or a
# restart, hundreds of wallboxes reconnect at once; the ones that overflow
# the queue wait for TCP's retries (1, 3, 7 seconds), which made up most of
# the time a storm of 1,000 took to be admitted. The kernel caps the value
# at net.core.somaxconn.
OCPP_BACKLOG = 1024


def with_backlog(description, backlog=OCPP_BACKLOG):
    """The endpoint string C{description} with C{backlog} for a TCP port
    that does not set its own."""
    kind = description.split(":", 1)[0]
    if kind in ("tcp", "tcp6") and "backlog=" not in description:
        return "{}:backlog={:d}".format(description, backlog)
    return description


def makeService(options):
    """twistd's entry: the daemon (L{build_service}), with Python's garbage
    collector and Autobahn's frame masking set for it (process-wide, so not
    in L{build_service}, which the tests call in their own process)."""
    from twisted.internet import reactor

    from cfosproxy.ops.gctuning import tune_garbage_collection
    from cfosproxy.ws.relaypath import use_integer_masking

    tune_garbage_collection(reactor)
    use_integer_masking()
    return build_service(options)


def build_service(options):
    """The daemon: store, load manager, Modbus wallboxes, gateways, the OCPP
    server and the status API, in the order they start (and, reversed, stop:
    listeners first, the store last)."""
    from twisted.internet import reactor

    from cfosproxy.ws.backend import BackendOutages
    from cfosproxy.core.backendprofiles import BackendProfiles
    from cfosproxy.modbus.chargepoint import ModbusChargePoint
    from cfosproxy.core.devices import DeviceRegistry
    from cfosproxy.core.gateway import GatewayObserver
    from cfosproxy.core.hub import ChargePointHub
    from cfosproxy.core.localcs import LocalCentralSystem
    from cfosproxy.site.manager import LoadManager
    from cfosproxy.ops.memory import memory_release_service
    from cfosproxy.ops.metrics import MessageCounter, SiteCollector, chain, metrics_resource
    from cfosproxy.modbus.wallbox import ModbusLimitActuator, ModbusWallbox
    from cfosproxy.modbus.device import ModbusDevice
    from cfosproxy.site.ocpplimits import ChargingProfileActuator
    from cfosproxy.ws.server import WallboxServerFactory
    from cfosproxy.services import (
        CloseConnectionsService,
        GatewayService,
        ListeningService,
        ManagerService,
        ModbusService,
        OrderedMultiService,
    )
    from cfosproxy.ops.status import StatusSite, status_root
    from cfosproxy.store.database import StoreService

    config = options.config

    def where(section):
        """A listen setting, as a start that cannot listen names it."""
        return "{}: [{}] listen".format(options["config"], section)

    for warning in config.warnings():
        _log.warn("{warning}", warning=warning)

    if any(w.type == "modbus" for w in config.wallboxes):
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

    registry = DeviceRegistry(config, reactor)
    local = LocalCentralSystem(
        reactor,
        config.server.heartbeat_interval,
        lambda: store.store.next_transaction_id(),
    )
    actuators = {}
    manager = LoadManager(
        config,
        registry,
        actuators,
        reactor,
        lambda name, enabled: store.store.set_device_enabled(name, enabled),
    )
    backend_profiles = BackendProfiles(registry, manager, reactor)
    counter = MessageCounter()

    def backend_limit(device):
        return backend_profiles.limit_now(device, reactor.seconds())

    # One log of backend outages for all links: a backend that goes down is
    # one warning, not one per wallbox.
    outages = BackendOutages(reactor)

    def gateway_for(wallbox, key):
        return _gateway(
            wallbox, key, config, store, local, reactor, backend_profiles,
            options.gateway_tls.get(wallbox.name), counter.count_backend, outages,
        )

    # OCPP wallboxes with a backend: one gateway per ChargeBox-ID.
    ocpp_gateways = {}
    for wallbox in config.wallboxes:
        if wallbox.type == "ocpp" and wallbox.gateway_url and wallbox.address not in ocpp_gateways:
            ocpp_gateways[wallbox.address] = gateway_for(wallbox, wallbox.address)
    for address, gateway in ocpp_gateways.items():
        for device in registry.devices_of(address):
            device.gateway = gateway

    # Modbus wallboxes, each with its OCPP charge point when it has a backend.
    modbus_wallboxes, chargepoints, modbus_gateways = {}, {}, []
    for wallbox in config.wallboxes:
        if wallbox.type != "modbus":
            continue
        device = registry.get(wallbox.name)
        joint = ModbusDevice(
            device,
            manager,
            reactor,
            backend_limit=backend_limit,
        )
        if wallbox.gateway_url:
            device.gateway = gateway_for(wallbox, wallbox.name)
            modbus_gateways.append(device.gateway)
            joint.chargepoint = chargepoints[wallbox.name] = ModbusChargePoint(
                device,
                device.gateway,
                reactor,
                lambda name=wallbox.name: manager.reapply(name),
                backend_profiles,
            )
        modbus_wallboxes[wallbox.name] = ModbusWallbox.from_config(
            wallbox,
            reactor=reactor,
            on_reading=joint.on_reading,
            on_online=chain(counter.modbus_online, joint.on_online),
            writes=config.manager.mode == "control",
        )

    hub = ChargePointHub(
        config.server,
        registry,
        lambda chargebox_id: ocpp_gateways.get(chargebox_id, local),
        reactor,
        observers=[
            manager,
            GatewayObserver(lambda cbid: hub.sessions[cbid], ocpp_gateways),
            counter,
        ],
    )
    actuators["ocpp"] = ChargingProfileActuator(hub, reactor, backend_profiles)
    actuators["modbus"] = ModbusLimitActuator(
        modbus_wallboxes,
        allowed=lambda device: device.name not in chargepoints
        or chargepoints[device.name].allows_charging,
        backend_limit=backend_limit,
    )

    if config.manhole.listen:
        from cfosproxy.ops.manhole import admin_namespace, manhole_service

        manhole_service(
            listen=config.manhole.listen,
            authorized_keys=config.manhole.authorized_keys,
            state_dir=config.manager.state_dir,
            namespace=admin_namespace(registry=registry, manager=manager, hub=hub),
            where=where("manhole"),
        ).setServiceParent(top)
    ManagerService(store, manager).setServiceParent(top)
    GatewayService(list(ocpp_gateways.values()) + modbus_gateways).setServiceParent(top)
    ModbusService(list(modbus_wallboxes.values()), list(chargepoints.values())).setServiceParent(top)
    CloseConnectionsService(hub).setServiceParent(top)

    wallbox_factory = WallboxServerFactory(hub, config.server)
    memory_release_service(lambda: wallbox_factory.closed_connections).setServiceParent(top)
    factory = tls.wrap_factory(
        config.server.tls,
        wallbox_factory,
        options.tls_context,
        clock=reactor,
    )
    ocpp = ListeningService(
        with_backlog(config.server.listen), factory, where("server"), shown=config.server.listen
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
                extra={
                    b"metrics": metrics_resource(
                        SiteCollector(registry, hub, modbus_wallboxes, counter, manager)
                    )
                },
            ),
            allowed_hosts=config.status.host_allow_list,
        ),
        where("status"),
    )
    web.setName("status")
    listeners["status"] = web
    web.setServiceParent(top)
    return top


def _gateway(wallbox, key, config, store, local, reactor, backend_profiles, tls_options, count, outages):
    """The gateway and backend link of one wallbox's C{gateway_url}."""
    from cfosproxy.ws.backend import BackendLink, backend_url
    from cfosproxy.core.gateway import Gateway

    gateway = Gateway(
        key,
        wallbox.client_id,
        lambda: store.store,
        local,
        reactor,
        config.server.call_timeout,
        config.manager.offline_authorize,
        profiles=backend_profiles,
        count=count,
        connector_ids=_connector_ids(config, wallbox),
        boot_wait=config.server.boot_wait,
    )
    gateway.link = BackendLink(
        url=backend_url(wallbox.gateway_url, wallbox.client_id),
        client_id=wallbox.client_id,
        password=wallbox.gateway_password,
        ca=wallbox.gateway_ca,
        certificate=wallbox.gateway_certificate,
        private_key=wallbox.gateway_private_key,
        handler=gateway,
        reactor=reactor,
        call_timeout=config.server.call_timeout,
        ping_interval=config.server.ping_interval,
        max_message_size=config.server.max_message_size,
        tls_options=tls_options,
        outages=outages,
    )
    return gateway


def _connector_ids(config, wallbox):
    """The connectors configured on C{wallbox}'s ChargeBox-ID (a Modbus
    wallbox: its one connector)."""
    if wallbox.type != "ocpp":
        return (1,)
    return tuple(sorted(w.id for w in config.wallboxes if w.type == "ocpp" and w.address == wallbox.address))
