"""twistd plugin entry: command-line options and the service tree.

``Options`` loads and checks everything the config file points to, so that
a mistake fails the start with a message naming file, section and key;
``makeService`` only assembles services from the result.
"""

from twisted.application import strports
from twisted.python import usage

from cfosproxy import tls
from cfosproxy.config import ConfigError, load_config
from cfosproxy.reactor import ReactorError, install_asyncio_reactor


class Options(usage.Options):
    """``twistd cfosproxy --config FILE``."""

    synopsis = "[--config FILE]"
    optParameters = [
        ["config", "c", "etc/cfosproxy.ini", "The configuration file (INI)."],
    ]

    def postOptions(self):
        try:
            install_asyncio_reactor()
        except ReactorError as e:
            raise usage.UsageError(str(e)) from e
        try:
            self.config = load_config(self["config"])
        except ConfigError as e:
            raise usage.UsageError(str(e)) from e
        server = self.config.server
        self.tls_context = None
        if server.tls != "off":
            try:
                self.tls_context = tls.server_context_factory(
                    certificate=server.certificate,
                    private_key=server.private_key,
                    client_ca=server.client_ca,
                    require_client_certificate=server.require_client_certificate,
                    state_dir=self.config.manager.state_dir,
                )
            except tls.TLSConfigError as e:
                raise usage.UsageError("{}: {}".format(self["config"], e)) from e


def makeService(options):
    """The daemon: store, load manager, gateways, OCPP server, status API."""
    from twisted.internet import reactor
    from twisted.web.server import Site

    from cfosproxy.backend import BackendLink, backend_url
    from cfosproxy.backendprofiles import BackendProfiles
    from cfosproxy.devices import DeviceRegistry
    from cfosproxy.gateway import Gateway, GatewayObserver
    from cfosproxy.hub import ChargePointHub
    from cfosproxy.localcs import LocalCentralSystem
    from cfosproxy.manager import LoadManager
    from cfosproxy.ocppcontrol import ChargingProfileActuator
    from cfosproxy.server import WallboxServerFactory
    from cfosproxy.services import (
        CloseConnectionsService,
        GatewayService,
        ManagerService,
        OrderedMultiService,
    )
    from cfosproxy.status import status_root
    from cfosproxy.store import StoreService

    config = options.config
    top = OrderedMultiService()

    # Children stop one by one in reverse order: listeners first, then the
    # wallbox connections, the store last.
    store = StoreService(config.manager.state_dir)
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
    gateways = {}
    for wallbox in config.wallboxes:
        if wallbox.type != "ocpp" or not wallbox.gateway_url or wallbox.address in gateways:
            continue
        gateway = Gateway(
            wallbox.address,
            wallbox.client_id,
            lambda: store.store,
            local,
            reactor,
            config.server.call_timeout,
            config.manager.offline_authorize,
            profiles=backend_profiles,
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
        )
        gateways[wallbox.address] = gateway
        for device in registry.devices_of(wallbox.address):
            device.gateway = gateway

    hub = ChargePointHub(
        config.server,
        registry,
        lambda chargebox_id: gateways.get(chargebox_id, local),
        reactor,
        observers=[manager, GatewayObserver(lambda cbid: hub.sessions[cbid], gateways)],
    )
    actuators["ocpp"] = ChargingProfileActuator(hub, reactor, backend_profiles)
    ManagerService(store, manager).setServiceParent(top)
    GatewayService(list(gateways.values())).setServiceParent(top)
    CloseConnectionsService(hub).setServiceParent(top)

    factory = tls.wrap_factory(
        config.server.tls,
        WallboxServerFactory(hub, config.server),
        options.tls_context,
        clock=reactor,
    )
    ocpp = strports.service(config.server.listen, factory)
    ocpp.setName("ocpp")
    ocpp.setServiceParent(top)

    listeners = {"ocpp": ocpp}
    web = strports.service(
        config.status.listen,
        Site(status_root(registry, manager, config.status.token, listeners)),
    )
    web.setName("status")
    listeners["status"] = web
    web.setServiceParent(top)
    return top
