"""What both twistd plugins do with their command line.

Each plugin's ``Options`` installs the asyncio reactor, loads its INI file
and reads the files it points to, turning every mistake into a
``usage.UsageError`` that names the file, section and key: twistd then
prints it and exits with status 1.
"""

from twisted.python import usage

from cfosproxy.ws import tls
from cfosproxy.config import ConfigError
from cfosproxy.reactor import ReactorError, install_asyncio_reactor


class ConfigFileOptions(usage.Options):
    """``--config FILE`` for a daemon; subclasses name the default file and
    the loader, and read what the configuration points to in L{prepare}."""

    synopsis = "[--config FILE]"
    default_config = None

    def __init__(self):
        super().__init__()
        self["config"] = self.default_config

    def opt_config(self, path):
        """The configuration file (INI)."""
        self["config"] = path

    opt_c = opt_config

    @staticmethod
    def load(path):
        raise NotImplementedError

    def postOptions(self):
        try:
            install_asyncio_reactor()
        except ReactorError as e:
            raise usage.UsageError(str(e)) from e
        try:
            self.config = self.load(self["config"])
        except ConfigError as e:
            raise usage.UsageError(str(e)) from e
        try:
            self.prepare()
        except (tls.TLSConfigError, ConfigError) as e:
            raise usage.UsageError("{}: {}".format(self["config"], e)) from e

    def prepare(self):
        """Read the files the configuration points to (certificates, keys);
        L{tls.TLSConfigError} or L{ConfigError} fails the start."""
