"""The INI file of the virtual Power Brain (``etc/cfoswallbox.ini``).

The same file rules as cfosproxy's own (L{cfosproxy.config}): unknown
sections and keys are errors, every error names file, section and key.
"""

import re
from dataclasses import dataclass, field

from cfosproxy.config import ConfigError, check_ws_url, parse_sections, read_config_text


@dataclass(frozen=True)
class OcppClientConfig:
    """``[ocpp]``: the Power Brain's "OCPP client" settings."""

    url: str = "ws://127.0.0.1:19520/"
    client_id: str = "CB-0001"
    password: str = field(default="", repr=False)
    ca: str = ""
    certificate: str = ""
    private_key: str = ""
    connector_id: int = 1
    id_tag: str = "04A1B2C3D4"


@dataclass(frozen=True)
class ModbusServerConfig:
    """``[modbus]``: where the Modbus TCP server listens."""

    listen: str = "tcp:4701:interface=127.0.0.1"
    unit_id: int = 1

    @property
    def host(self):
        return _listen_parts(self.listen)[1]

    @property
    def port(self):
        return _listen_parts(self.listen)[0]


@dataclass(frozen=True)
class CarConfig:
    """``[car]``: the simulated car."""

    plugged: bool = False
    max_current: float = 32.0


@dataclass(frozen=True)
class WallboxSimConfig:
    path: str
    ocpp: OcppClientConfig = OcppClientConfig()
    modbus: ModbusServerConfig = ModbusServerConfig()
    car: CarConfig = CarConfig()


# The Modbus server is pymodbus's, not a Twisted endpoint: it takes a TCP
# port and an interface, written as the endpoint string cfosproxy uses.
_LISTEN = re.compile(r"tcp6?:(\d+)(?::interface=(.+))?")


def _listen_parts(listen):
    match = _LISTEN.fullmatch(listen)
    return int(match.group(1)), (match.group(2) or "0.0.0.0").replace("\\:", ":")


def load_wallbox_config(path):
    """Read and check ``cfoswallbox.ini``; ConfigError on any mistake."""
    return wallbox_config_from_string(read_config_text(path), path)


def wallbox_config_from_string(text, path="<string>"):
    """Like L{load_wallbox_config}, for INI text."""
    parts = {}
    for section in parse_sections(text, path):
        reader = _READERS.get(section.name)
        if reader is None:
            raise section.error(None, "unknown section (known: ocpp, modbus, car)")
        parts[section.name] = reader(section)
    return WallboxSimConfig(path=path, **parts)


def _ocpp(section):
    c = OcppClientConfig(**section.read(OcppClientConfig))
    scheme = check_ws_url(section, "url", c.url, password_key="password")
    section.check(scheme, "url", "must be ws://host/... or wss://host/...")
    section.check(c.client_id and "/" not in c.client_id, "client_id", "must be set, without /")
    section.check(c.connector_id >= 1, "connector_id", "must be 1 or more")
    section.check(len(c.id_tag) <= 20, "id_tag", "must be at most 20 characters (OCPP IdToken)")
    section.check(not c.private_key or c.certificate, "private_key", "needs certificate to be set too")
    section.check(scheme == "wss" or not (c.ca or c.certificate), "ca",
                  "ca and certificate need a wss:// url")
    return c


def _modbus(section):
    c = ModbusServerConfig(**section.read(ModbusServerConfig))
    section.check(_LISTEN.fullmatch(c.listen), "listen",
                  "must be tcp:PORT or tcp:PORT:interface=ADDRESS")
    section.check(1 <= c.unit_id <= 247, "unit_id", "must be 1 to 247")
    return c


def _car(section):
    c = CarConfig(**section.read(CarConfig))
    section.check(c.max_current >= 6, "max_current", "must be at least 6 (IEC 61851)")
    return c


_READERS = {"ocpp": _ocpp, "modbus": _modbus, "car": _car}

__all__ = ["ConfigError", "load_wallbox_config", "wallbox_config_from_string", "WallboxSimConfig"]
