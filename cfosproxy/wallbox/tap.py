"""twistd plugin entry of the virtual Power Brain: ``twistd cfoswallbox``."""

from cfosproxy.options import ConfigFileOptions
from cfosproxy.wallbox.config import load_wallbox_config
from cfosproxy.wiring.backends import Backend


class Options(ConfigFileOptions):
    """``twistd cfoswallbox --config FILE`` (default C{etc/cfoswallbox.ini})."""

    default_config = "etc/cfoswallbox.ini"
    load = staticmethod(load_wallbox_config)

    def prepare(self):
        ocpp = self.config.ocpp
        self.backend = Backend.read(
            ocpp.url,
            ocpp.client_id,
            ocpp.password,
            ca=ocpp.ca,
            certificate=ocpp.certificate,
            private_key=ocpp.private_key,
            section="ocpp",
            keys=("ca", "certificate", "private_key"),
        )


def makeService(options):
    """The virtual wallbox: its Modbus server and its OCPP charge point
    (L{cfosproxy.wallbox.build})."""
    from cfosproxy.wallbox.build import build_virtual_wallbox

    return build_virtual_wallbox(options)
