"""The INI file of the virtual Power Brain (``etc/cfoswallbox.ini``).

The same file rules as cfosproxy's own (L{cfosproxy.config}): unknown
sections and keys are errors, every error names file, section and key.
"""

import math
import re
from dataclasses import dataclass, field, replace
from typing import Optional

from cfosproxy.config import ConfigError, Section, check_ws_url, parse_sections, read_config_text
from cfosproxy.modbus import meterserver
from cfosproxy.wallbox.model import VOLTS_PER_PHASE
from cfosproxy.wallbox.profilerules import RATE_UNIT_CHOICES, ProfileRules, spell_rate_unit


@dataclass(frozen=True)
class OcppClientConfig:
    """``[ocpp]``: the Power Brain's "OCPP client" settings, and which
    charging profiles it takes (L{ProfileRules}: C{max_stack_level},
    C{rate_unit}, C{tx_default_profile}, C{max_periods}, C{max_profiles},
    C{configuration})."""

    url: str = "ws://127.0.0.1:19520/"
    client_id: str = "CB-0001"
    password: str = field(default="", repr=False)
    ca: str = ""
    certificate: str = ""
    private_key: str = ""
    connector_id: int = 1
    id_tag: str = "04A1B2C3D4"
    max_stack_level: int = ProfileRules.max_stack_level
    rate_unit: str = ProfileRules.rate_unit
    tx_default_profile: str = "accept"
    max_periods: int = ProfileRules.max_periods
    max_profiles: int = ProfileRules.max_profiles
    configuration: bool = ProfileRules.configuration

    @property
    def rules(self):
        """The L{ProfileRules} these settings give."""
        return ProfileRules(
            max_stack_level=self.max_stack_level,
            rate_unit=self.rate_unit,
            tx_default_profile=self.tx_default_profile == "accept",
            max_periods=self.max_periods,
            max_profiles=self.max_profiles,
            configuration=self.configuration,
        )


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
    """``[car]``: the simulated car; C{voltage} is V per phase, which
    turns a charging profile in W into amperes."""

    plugged: bool = False
    max_current: float = 32.0
    voltage: float = VOLTS_PER_PHASE


# The meter types the virtual grid meter serves.
METER_KINDS = meterserver.KINDS


@dataclass(frozen=True)
class MeterServerConfig:
    """``[meter]``: a grid meter on Modbus TCP measuring the building: the
    other load plus what the simulated car draws.

    @ivar other_load: signed amperes of L1, L2, L3 (negative: fed into the
        grid), as three floats.
    @ivar control: the Twisted endpoint of the HTTP control (loopback
        unless it names an interface), or empty for none.
    """

    listen: str = "tcp:5020:interface=127.0.0.1"
    type: str = "sdm630"
    unit_id: int = 1
    other_load: tuple = (0.0, 0.0, 0.0)
    control: str = ""

    @property
    def host(self):
        return _listen_parts(self.listen)[1]

    @property
    def port(self):
        return _listen_parts(self.listen)[0]


@dataclass(frozen=True)
class WallboxSimConfig:
    path: str
    ocpp: OcppClientConfig = OcppClientConfig()
    modbus: ModbusServerConfig = ModbusServerConfig()
    car: CarConfig = CarConfig()
    meter: Optional[MeterServerConfig] = None


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
            raise section.error(None, "unknown section (known: ocpp, modbus, car, meter)")
        parts[section.name] = reader(section)
    return WallboxSimConfig(path=path, **parts)


# The choices of tx_default_profile.
TX_DEFAULT_PROFILE_CHOICES = ("accept", "reject")


def _ocpp(section):
    # rate_unit and tx_default_profile have choices of their own here
    # (cfosproxy's files know other ones for rate_unit): read here, the
    # other keys by Section.
    raw = dict(section.raw)
    rate_unit = spell_rate_unit(raw.pop("rate_unit", OcppClientConfig.rate_unit))
    section.check(rate_unit, "rate_unit", "must be one of {}{}".format(
        ", ".join(RATE_UNIT_CHOICES), section.got("rate_unit")))
    tx_default = raw.pop("tx_default_profile", OcppClientConfig.tx_default_profile).strip().lower()
    section.check(tx_default in TX_DEFAULT_PROFILE_CHOICES, "tx_default_profile",
                  "must be one of {}{}".format(", ".join(TX_DEFAULT_PROFILE_CHOICES),
                                               section.got("tx_default_profile")))
    c = OcppClientConfig(
        **Section(section.path, section.name, raw).read(
            OcppClientConfig, rate_unit=rate_unit, tx_default_profile=tx_default
        )
    )
    scheme = check_ws_url(section, "url", c.url, password_key="password")
    section.check(scheme, "url", "must be ws://host/... or wss://host/...")
    section.check(c.client_id and "/" not in c.client_id, "client_id", "must be set, without /")
    section.check(c.connector_id >= 1, "connector_id", "must be 1 or more")
    section.check(len(c.id_tag) <= 20, "id_tag", "must be at most 20 characters (OCPP IdToken)")
    section.check(not c.private_key or c.certificate, "private_key", "needs certificate to be set too")
    section.check(scheme == "wss" or not (c.ca or c.certificate), "ca",
                  "ca and certificate need a wss:// url")
    section.check(c.max_stack_level >= 0, "max_stack_level",
                  "must be 0 or more{}".format(section.got("max_stack_level")))
    for key in ("max_periods", "max_profiles"):
        section.check(getattr(c, key) >= 1, key, "must be 1 or more{}".format(section.got(key)))
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
    # Mains voltage per phase, as cfosproxy's [wallbox:*] voltage.
    section.check(100 <= c.voltage <= 480, "voltage",
                  "must be 100 to 480 V per phase{}".format(section.got("voltage")))
    return c


# A number as cfosproxy's files write them: no "nan", "inf", "1e3" or "1_000".
_AMPERES = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)")


def _meter(section):
    # "type" has choices of its own in cfosproxy's files (ocpp | modbus),
    # which Section would check it against, and other_load is a list: both
    # are read here, the other keys by Section.
    raw = dict(section.raw)
    kind = raw.pop("type", MeterServerConfig.type).strip().lower()
    section.check(kind in METER_KINDS, "type",
                  "must be one of {}{}".format(", ".join(METER_KINDS), section.got("type")))
    other_load = _other_load(section, raw.pop("other_load", "0"))
    c = MeterServerConfig(
        **Section(section.path, section.name, raw).read(
            MeterServerConfig, type=kind, other_load=other_load
        )
    )
    section.check(_LISTEN.fullmatch(c.listen), "listen",
                  "must be tcp:PORT or tcp:PORT:interface=ADDRESS")
    section.check(1 <= c.unit_id <= 247, "unit_id", "must be 1 to 247")
    if c.control:
        control = loopback_by_default(c.control)
        section.listen("control", control)
        c = replace(c, control=control)
    return c


def _other_load(section, text):
    parts = [part.strip() for part in text.split(",")]
    ok = len(parts) in (1, 3) and all(_AMPERES.fullmatch(part) for part in parts)
    section.check(ok, "other_load",
                  "must be one number (A on every phase) or three separated by commas "
                  "(A on L1, L2, L3; negative: fed into the grid){}".format(
                      section.got("other_load")))
    amps = [float(part) for part in parts]
    section.check(all(math.isfinite(a) for a in amps), "other_load",
                  "must be finite{}".format(section.got("other_load")))
    return tuple(amps * 3 if len(amps) == 1 else amps)


def loopback_by_default(endpoint):
    """C{endpoint} (a Twisted server endpoint string), with the loopback
    interface added to a C{tcp:} or C{tcp6:} endpoint that names none: the
    control has no password, so it is not offered to the network unless
    the configuration says so."""
    kind, _, rest = endpoint.partition(":")
    if kind not in ("tcp", "tcp6") or re.search(r"(^|:)interface=", rest):
        return endpoint
    return "{}:interface={}".format(endpoint, "127.0.0.1" if kind == "tcp" else "\\:\\:1")


_READERS = {"ocpp": _ocpp, "modbus": _modbus, "car": _car, "meter": _meter}

__all__ = [
    "ConfigError",
    "load_wallbox_config",
    "wallbox_config_from_string",
    "MeterServerConfig",
    "WallboxSimConfig",
]
