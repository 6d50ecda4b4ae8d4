"""twistd plugin entry: command-line options and the service tree.

``Options`` loads and checks everything the config file points to, so that
a mistake fails the start with a message naming file, section and key;
L{cfosproxy.wiring.daemon} only assembles services from the result.
"""

from twisted.python import usage

from cfosproxy.ws import tls
from cfosproxy.config import load_config
from cfosproxy.options import ConfigFileOptions
from cfosproxy.store import Store, StoreError
from cfosproxy.wiring.backends import Backend


class Options(ConfigFileOptions):
    """``twistd cfosproxy --config FILE`` (default C{etc/cfosproxy.ini}).

    @ivar tls_context: the OCPP server's TLS context, or None (C{tls = off}).
    @ivar backends: C{{device name: L{Backend}}} of the wallboxes that have
        a C{gateway_url}.
    """

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
        self.backends = {
            wallbox.name: Backend.read(
                wallbox.gateway_url,
                wallbox.client_id,
                wallbox.gateway_password,
                ca=wallbox.gateway_ca,
                certificate=wallbox.gateway_certificate,
                private_key=wallbox.gateway_private_key,
                section="wallbox:" + wallbox.name,
            )
            for wallbox in self.config.wallboxes
            if wallbox.gateway_url
        }


def makeService(options):
    """twistd's entry: the daemon (L{cfosproxy.wiring.daemon.build_daemon}),
    with Python's garbage collector and, with the fast path on, Autobahn's
    frame masking set for it (process-wide, so not in C{build_daemon},
    which the tests call in their own process)."""
    from twisted.internet import reactor

    from cfosproxy.ops.gctuning import tune_garbage_collection
    from cfosproxy.wiring.daemon import build_daemon
    from cfosproxy.ws.relaypath import use_integer_masking

    tune_garbage_collection(reactor)
    if options.config.server.fast_path:
        use_integer_masking()
    return build_daemon(options)
