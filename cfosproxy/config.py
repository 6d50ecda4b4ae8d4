"""The INI configuration file (DESIGN.md §3), read into frozen dataclasses.

Every mistake in the file is a :class:`ConfigError` naming the file, the
section and the key, so that ``twistd`` refuses to start with a message an
operator can act on, instead of failing later on the first wallbox.

Paths (``state_dir``, certificates, ...) are kept as written: relative ones
are relative to the working directory, like twistd's own pid and log files.
"""

import configparser
import ipaddress
import math
import os
import re
from dataclasses import dataclass, field, fields, replace
from urllib.parse import urlsplit

# Only the parser: building an endpoint with reactor None imports no reactor.
from twisted.internet.endpoints import serverFromString

from cfosproxy.site.phases import WIRINGS

MODBUS_PORT = 4701
"""The cFos Power Brain's Modbus TCP port, used when an address has none."""

METER_PORT = 502
"""The Modbus TCP port of a meter whose address has none (the standard one)."""

METER_TYPES = ("sdm630", "sunspec", "api")
"""What ``[meter:*] type`` may be: Modbus TCP meters, or readings pushed
over the status API."""


class ConfigError(Exception):
    """A mistake in a configuration file.

    ``section`` and ``key`` are None where the mistake is not inside one (an
    unreadable file, a line that is not INI).  ``str(err)`` reads like
    ``"etc/cfosproxy.ini: [server] tls: must be one of off, detect, on (got 'maybe')"``.
    """

    def __init__(self, path, section, key, message):
        super().__init__(path, section, key, message)
        self.path = path
        self.section = section
        self.key = key
        self.message = message

    def __str__(self):
        where = []
        if self.section is not None:
            where.append(f"[{self.section}]")
        if self.key is not None:
            where.append(self.key)
        parts = [self.path, " ".join(where), self.message]
        return ": ".join(part for part in parts if part)


@dataclass(frozen=True)
class ServerConfig:
    """``[server]``: the OCPP server that wallboxes connect to."""

    listen: str = "tcp:19520"
    tls: str = "detect"
    password: str = field(default="", repr=False)
    certificate: str = ""
    private_key: str = ""
    client_ca: str = ""
    require_client_certificate: bool = False
    client_certificate_identity: str = "cn"
    accept_unknown: bool = False
    max_message_size: int = 65536
    ping_interval: int = 60
    heartbeat_interval: int = 300
    call_timeout: int = 30
    boot_wait: float = 5.0
    password_failures: int = 10
    password_backoff_max: int = 60
    fast_path: bool = True


@dataclass(frozen=True)
class ManagerConfig:
    """``[manager]``: load management and the state kept on disk."""

    mode: str = "control"
    max_current: float = 32.0
    on_deactivate: str = "lift_limit"
    state_dir: str = "var"
    offline_authorize: str = "cache"
    max_imbalance: float = 0.0
    meter: str = ""
    reserve: float = 2.0
    failsafe_current: float = 0.0


@dataclass(frozen=True)
class CircuitConfig:
    """``[circuit:<name>]``: a sub-feeder with its own fuses, in a tree
    under the site.

    ``max_current`` is in ampere per phase, for everything below the
    circuit; ``parent`` names the circuit it hangs on, empty for directly
    under the site; ``meter`` names the L{MeterConfig} that measures the
    circuit, empty for none.
    """

    name: str
    max_current: float
    parent: str = ""
    meter: str = ""


class _ModbusAddress:
    """``host`` and ``port`` of a device read over Modbus TCP, from its
    ``address`` (``host:port``; the class's ``default_port`` when it names
    none)."""

    default_port = MODBUS_PORT

    @property
    def host(self):
        """Host name or IP address (ValueError for a device not read over Modbus)."""
        return self._host_port()[0]

    @property
    def port(self):
        """TCP port, ``default_port`` when the address has none."""
        return self._host_port()[1]

    def _host_port(self):
        if not self.over_modbus:
            raise ValueError(f"{self.name} is not read over Modbus: it has no host and port")
        return _split_host_port(self.address, self.default_port)


@dataclass(frozen=True)
class MeterConfig(_ModbusAddress):
    """``[meter:<name>]``: a meter that measures a circuit or the site.

    ``type`` is one of L{METER_TYPES}; ``address`` (``host:port``) and
    ``id`` (the Modbus unit id) are for the Modbus types; a meter with no
    reading for ``timeout`` seconds is silent.
    """

    name: str
    type: str
    address: str = ""
    id: int = 1
    poll_interval: float = 1.0
    timeout: float = 10.0

    default_port = METER_PORT

    @property
    def over_modbus(self):
        """Whether cfosproxy polls the meter (not an ``api`` meter, whose
        readings are pushed)."""
        return self.type != "api"


@dataclass(frozen=True)
class StatusConfig:
    """``[status]``: the HTTP status page and JSON API.

    ``allowed_hosts`` is what was configured (lower case, IPv6 addresses
    without brackets), empty when nothing was; :attr:`host_allow_list` is
    what applies.
    """

    listen: str = "tcp:19580:interface=127.0.0.1"
    token: str = field(default="", repr=False)
    allowed_hosts: tuple = ()

    @property
    def host_allow_list(self):
        """The host names and addresses a request may name in its ``Host``
        header: ``allowed_hosts``, or else the address ``listen`` binds to
        (when it names one) with ``localhost``, ``127.0.0.1`` and ``::1``."""
        return self.allowed_hosts or default_allowed_hosts(self.listen)


def default_allowed_hosts(listen):
    """``localhost``, ``127.0.0.1``, ``::1`` and the address the endpoint
    string ``listen`` binds to, unless it binds to every address."""
    hosts = ("localhost", "127.0.0.1", "::1")
    interface = _endpoint_option(listen, "interface").lower()
    if interface and interface not in ("0.0.0.0", "::") and interface not in hosts:
        hosts += (interface,)
    return hosts


def _endpoint_option(description, name):
    """The value of option C{name} in a Twisted endpoint string such as
    ``tcp:19580:interface=\\:\\:1``, or empty: its fields are separated by
    colons, and a backslash takes the next character as it is (Twisted's
    own parser keeps what it read in private attributes)."""
    fields, current, escaped = [], [], False
    for character in description:
        if escaped:
            current.append(character)
            escaped = False
        elif character == "\\":
            escaped = True
        elif character == ":":
            fields.append("".join(current))
            current = []
        else:
            current.append(character)
    fields.append("".join(current))
    for field_ in fields[1:]:
        key, equals, value = field_.partition("=")
        if equals and key == name:
            return value
    return ""


@dataclass(frozen=True)
class ManholeConfig:
    """``[manhole]``: the SSH admin shell; an empty ``listen`` means none."""

    listen: str = ""
    authorized_keys: str = ""


@dataclass(frozen=True)
class WallboxConfig(_ModbusAddress):
    """``[wallbox:<name>]``: one device, an OCPP or a Modbus wallbox.

    ``address`` is the ChargeBox-ID of an OCPP wallbox, or ``host:port`` of a
    Modbus one; ``id`` is the connector id or the Modbus unit id.
    ``circuit`` names the L{CircuitConfig} it hangs on, empty for directly
    under the site; ``wiring`` is one of
    L{cfosproxy.site.phases.WIRINGS}; a higher ``priority`` is served
    first. ``charging_profile``, ``stack_level`` and ``rate_unit`` say how
    an OCPP wallbox takes its limits (``auto``: learnt, see
    L{cfosproxy.site.strategy}); ``voltage`` turns amperes into watts for
    one that takes watts.
    """

    name: str
    type: str
    address: str
    id: int = 1
    enabled: bool = True
    min_current: float = 6.0
    max_current: float = 16.0
    id_tag: str = ""
    poll_interval: float = 2.0
    circuit: str = ""
    wiring: str = "L1L2L3"
    priority: int = 0
    charging_profile: str = "auto"
    stack_level: str = "auto"
    rate_unit: str = "auto"
    voltage: float = 230.0
    gateway_url: str = ""
    gateway_password: str = field(default="", repr=False)
    gateway_client_id: str = ""
    gateway_ca: str = ""
    gateway_certificate: str = ""
    gateway_private_key: str = ""

    @property
    def client_id(self):
        """The id presented to the backend: ChargeBox-ID, or the device name for Modbus."""
        if self.gateway_client_id:
            return self.gateway_client_id
        return self.address if self.type == "ocpp" else self.name

    @property
    def over_modbus(self):
        """Whether the device is a Modbus wallbox (its ``address`` is
        ``host:port``, default port 4701)."""
        return self.type == "modbus"

    @property
    def explicit_stack_level(self):
        """The configured stack level as a number, or None for ``auto``."""
        return None if self.stack_level == "auto" else int(self.stack_level)


# The keys that say how an OCPP wallbox takes its limits (DESIGN §8), each
# with its spellings: read in any case, kept as OCPP spells them.
PROFILE_CHOICES = {
    "charging_profile": ("auto", "TxDefaultProfile", "TxProfile"),
    "rate_unit": ("auto", "A", "W"),
}
# The highest stack level a configuration may name: OCPP 1.6 leaves it to the
# wallbox (ChargeProfileMaxStackLevel); no wallbox known offers more.
MAX_STACK_LEVEL = 99


_GATEWAY_KEYS = tuple(f.name for f in fields(WallboxConfig) if f.name.startswith("gateway_"))


@dataclass(frozen=True)
class Config:
    """The whole configuration file."""

    path: str
    server: ServerConfig = field(default_factory=ServerConfig)
    manager: ManagerConfig = field(default_factory=ManagerConfig)
    status: StatusConfig = field(default_factory=StatusConfig)
    manhole: ManholeConfig = field(default_factory=ManholeConfig)
    wallboxes: tuple[WallboxConfig, ...] = ()
    circuits: tuple[CircuitConfig, ...] = ()
    meters: tuple[MeterConfig, ...] = ()

    def devices_for(self, chargebox_id):
        """The OCPP wallboxes (one per connector) with this ChargeBox-ID, maybe none."""
        return tuple(w for w in self.wallboxes if w.type == "ocpp" and w.address == chargebox_id)

    def wallbox(self, name):
        """The device called ``name``; KeyError if there is none."""
        for w in self.wallboxes:
            if w.name == name:
                return w
        raise KeyError(name)

    def circuit(self, name):
        """The circuit called ``name``; KeyError if there is none."""
        for c in self.circuits:
            if c.name == name:
                return c
        raise KeyError(name)

    def used_meters(self):
        """The meters that measure a place (the site or a circuit): the
        ones that are read."""
        used = {self.manager.meter} | {c.meter for c in self.circuits}
        return tuple(m for m in self.meters if m.name in used)

    def meter(self, name):
        """The meter called ``name``; KeyError if there is none."""
        for m in self.meters:
            if m.name == name:
                return m
        raise KeyError(name)

    def warnings(self):
        """Settings that start, but cannot do what the operator wants: each
        a message naming file, section and key, for the log at start."""
        return self._site_warnings() + self._circuit_warnings() + self._meter_warnings()

    def _meter_warnings(self):
        """Meters that measure nothing: no place names them."""
        used = self.used_meters()
        return [
            f"{self.path}: [meter:{m.name}] measures nothing: name it in [manager] meter "
            "or in a [circuit:*] meter; it is not read"
            for m in self.meters
            if m not in used
        ]

    def _site_warnings(self):
        """Devices that the site limit leaves without current."""
        site = self.manager.max_current
        starved = [w for w in self.wallboxes if w.min_current > site]
        if starved and len(starved) == len(self.wallboxes):
            return [
                f"{self.path}: [manager] max_current: {site:g} A is below the "
                f"min_current of every device; no wallbox will ever be given current"
            ]
        return [
            f"{self.path}: [wallbox:{w.name}] min_current: {w.min_current:g} A is above "
            f"[manager] max_current {site:g} A; this device will never be given current"
            for w in starved
        ]

    def _circuit_warnings(self):
        """Circuits that no device below them can charge under, and
        circuits whose limit their parent (or the site) makes moot."""
        by_name = {c.name: c for c in self.circuits}
        below = {c.name: [] for c in self.circuits}
        for w in self.wallboxes:
            for name in _circuit_path(w.circuit, by_name):
                below[name].append(w)
        warnings = []
        for c in self.circuits:
            where = f"{self.path}: [circuit:{c.name}] max_current: {c.max_current:g} A"
            devices = below[c.name]
            if devices and all(w.min_current > c.max_current for w in devices):
                warnings.append(f"{where} is below the min_current of every device below it; "
                                "none of them will ever be given current")
            if c.parent in by_name:
                parent, limit = f"[circuit:{c.parent}]", by_name[c.parent].max_current
            elif not c.parent:
                parent, limit = "[manager]", self.manager.max_current
            else:
                continue
            if c.max_current > limit:
                warnings.append(f"{where} is above {parent} max_current {limit:g} A, "
                                f"which limits it to {limit:g} A anyway")
        return warnings


def _circuit_path(name, by_name):
    """The names of circuit ``name`` and of every circuit above it, nearest
    first; it stops at a name that is not in ``by_name`` and at a loop, so
    that it is safe on a L{Config} built without L{load_config}'s checks."""
    path = []
    while name in by_name and name not in path:
        path.append(name)
        name = by_name[name].parent
    return path


def load_config(path):
    """Read and check the INI file at ``path``; raise ConfigError on any mistake."""
    path = os.fspath(path)
    return config_from_string(read_config_text(path), path)


def read_config_text(path):
    """The text of a configuration file; a ConfigError naming it if it
    cannot be read."""
    try:
        # utf-8-sig: editors on Windows put a BOM in front of the first section.
        with open(path, encoding="utf-8-sig") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(path, None, None, f"cannot read file: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(path, None, None, f"not UTF-8 text (byte {e.start})") from None


def parse_sections(text, path):
    """The sections of INI text as L{Section}s, in file order (the rules of
    the file: comments after values, no [DEFAULT], no continued lines)."""
    parser = configparser.ConfigParser(
        interpolation=None,
        inline_comment_prefixes=(";", "#"),
        empty_lines_in_values=False,
        # "" can never be a section header, so [DEFAULT] is just an unknown
        # section instead of silently feeding keys into every other one.
        default_section="",
    )
    try:
        parser.read_string(text.removeprefix("\ufeff"), source=path)
    except configparser.Error as e:
        raise _parse_error(path, e) from None
    return [Section(path, name, parser.items(name, raw=True)) for name in parser.sections()]


def config_from_string(text, path="<string>"):
    """Like :func:`load_config`, for INI text; ``path`` only names it in errors."""
    path = os.fspath(path)
    parts = {}
    wallboxes = []
    circuits = []
    meters = []
    read = {}
    for section in parse_sections(text, path):
        name = section.name
        if name in _READERS:
            parts[name] = _READERS[name](section)
            read[name] = section
        elif name.startswith("wallbox:"):
            wallboxes.append((section, _wallbox(section, name.removeprefix("wallbox:"))))
        elif name.startswith("circuit:"):
            circuits.append((section, _circuit(section, name.removeprefix("circuit:"))))
        elif name.startswith("meter:"):
            meters.append((section, _meter(section, name.removeprefix("meter:"))))
        else:
            raise section.error(
                None, "unknown section (known: server, manager, status, manhole, "
                "circuit:<name>, meter:<name>, wallbox:<name>)"
            )
    _check_circuits(circuits)
    _check_devices(wallboxes)
    _check_device_circuits(wallboxes, circuits)
    config = Config(path=path, wallboxes=tuple(w for _, w in wallboxes),
                    circuits=tuple(c for _, c in circuits),
                    meters=tuple(m for _, m in meters), **parts)
    _check_meter_uses(config, read.get("manager"), circuits, meters)
    return config


def _parse_error(path, err):
    # The offending line is not quoted: it may well be a mistyped password.
    if isinstance(err, configparser.DuplicateSectionError):
        return ConfigError(path, err.section, None, f"section appears twice (line {err.lineno})")
    if isinstance(err, configparser.DuplicateOptionError):
        return ConfigError(path, err.section, err.option, f"key appears twice (line {err.lineno})")
    if isinstance(err, configparser.MissingSectionHeaderError):
        return ConfigError(path, None, None, f"line {err.lineno}: key outside of any [section]")
    if isinstance(err, configparser.ParsingError):
        lines = ", ".join(str(lineno) for lineno, _ in err.errors)
        return ConfigError(path, None, None, f"line {lines}: not a [section] or a 'key = value' line")
    return ConfigError(path, None, None, str(err))


_SECRET_KEYS = frozenset({"password", "gateway_password", "token"})
_CHOICES = {
    "tls": ("off", "detect", "on"),
    "client_certificate_identity": ("cn", "serial_number", "san_dns"),
    "mode": ("control", "observe"),
    "on_deactivate": ("lift_limit", "keep_limit"),
    "offline_authorize": ("cache", "accept", "reject"),
    "type": ("ocpp", "modbus"),
}
# Keys whose choices depend on the section: {section prefix: {key: choices}}.
_SECTION_CHOICES = {"meter:": {"type": METER_TYPES}}
_BOOLEANS = {"yes": True, "true": True, "on": True, "1": True,
             "no": False, "false": False, "off": False, "0": False}
# Stricter than int()/float(), which also take "1_000", "inf", "nan" and "1e3".
_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)")
# No ':': wallboxes that are not configured are shown as "unknown:<id>:<n>"
# (cfosproxy.core.devices), a name no configured device can take.
_DEVICE_NAME = re.compile(r"[A-Za-z0-9._-]+")


class Section:
    """One INI section: turns its text into typed values, or into ConfigErrors naming it.

    Shared with the configuration of the virtual wallbox (L{cfosproxy.wallbox.config})."""

    def __init__(self, path, name, items):
        self.path = path
        self.name = name
        self.raw = dict(items)

    def error(self, key, message):
        return ConfigError(self.path, self.name, key, message)

    def check(self, ok, key, message):
        if not ok:
            raise self.error(key, message)

    def got(self, key):
        """The given text, to end a message with; nothing for a secret."""
        if key in _SECRET_KEYS or key not in self.raw:
            return ""
        return f" (got {self.raw[key]!r})"

    def read(self, cls, **given):
        """Keyword arguments for ``cls``: ``given`` plus the section's converted values."""
        types = {f.name: f.type for f in fields(cls) if f.name not in given}
        for key, text in self.raw.items():
            if key not in types:
                raise self.error(key, "unknown key")
            given[key] = self._convert(key, text, types[key])
        return given

    def _convert(self, key, text, kind):
        # An indented line continues the value above it in configparser;
        # here that is always a mistake.
        self.check("\n" not in text, key, "value continues on an indented line")
        if kind is bool:
            self.check(text.lower() in _BOOLEANS, key, f"must be yes or no{self.got(key)}")
            return _BOOLEANS[text.lower()]
        if kind is int:
            self.check(_INT.fullmatch(text), key, f"must be a whole number{self.got(key)}")
            return int(text)
        if kind is float:
            self.check(_FLOAT.fullmatch(text), key, f"must be a number{self.got(key)}")
            return float(text)
        choices = next(
            (keys[key] for prefix, keys in _SECTION_CHOICES.items()
             if self.name.startswith(prefix) and key in keys),
            _CHOICES.get(key),
        )
        if choices is not None:
            self.check(text.lower() in choices, key,
                       f"must be one of {', '.join(choices)}{self.got(key)}")
            return text.lower()
        return text

    def positive(self, key, value):
        self.check(value > 0 and math.isfinite(value), key,
                   f"must be greater than 0{self.got(key)}")

    def listen(self, key, value):
        try:
            serverFromString(None, value)
        except (ValueError, TypeError, KeyError, OSError) as e:
            # OSError: ssl: endpoints read their certificate files right away.
            raise self.error(key, f"not a Twisted endpoint such as tcp:19520 ({e})") from None


def _server(section):
    c = ServerConfig(**section.read(ServerConfig))
    section.listen("listen", c.listen)
    section.check(c.max_message_size >= 1024, "max_message_size",
                  f"must be at least 1024{section.got('max_message_size')}")
    for key in ("ping_interval", "heartbeat_interval", "call_timeout"):
        section.positive(key, getattr(c, key))
    section.check(0 <= c.boot_wait <= 60, "boot_wait",
                  f"must be 0 to 60 seconds{section.got('boot_wait')}")
    section.check(not c.private_key or c.certificate, "private_key",
                  "needs certificate to be set too")
    section.check(c.password_failures >= 0, "password_failures",
                  f"must be 0 or more{section.got('password_failures')}")
    section.check(1 <= c.password_backoff_max <= 3600, "password_backoff_max",
                  f"must be 1 to 3600 seconds{section.got('password_backoff_max')}")
    if c.require_client_certificate:
        section.check(c.client_ca, "require_client_certificate", "needs client_ca to be set")
        section.check(c.tls != "off", "require_client_certificate", "needs tls = detect or on")
    return c


def _manager(section):
    c = ManagerConfig(**section.read(ManagerConfig))
    for key in ("max_current", "max_imbalance", "reserve", "failsafe_current"):
        section.check(getattr(c, key) >= 0, key, f"must be 0 or more{section.got(key)}")
    section.check(c.state_dir, "state_dir", "must not be empty")
    return c


def _status(section):
    c = StatusConfig(**section.read(StatusConfig))
    section.listen("listen", c.listen)
    if c.allowed_hosts:
        c = replace(c, allowed_hosts=_host_list(section, "allowed_hosts", c.allowed_hosts))
    return c


# A host name (letters, digits, '-', '_', dots), or * for any.
_HOST_NAME = re.compile(r"[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?\.?|\*")


def _host_list(section, key, text):
    """The host names and IP addresses in ``text``, separated by commas or
    spaces: lower case, IPv6 addresses without brackets."""
    hosts = []
    for item in text.replace(",", " ").split():
        host = item.lower()
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        try:
            host = str(ipaddress.ip_address(host))
        except ValueError:
            section.check(
                _HOST_NAME.fullmatch(host), key,
                f"{item!r} is not a host name or IP address (without a port; "
                "separate several with commas)",
            )
            host = host.rstrip(".")
        hosts.append(host)
    return tuple(hosts)


def _manhole(section):
    c = ManholeConfig(**section.read(ManholeConfig))
    if c.listen:
        section.listen("listen", c.listen)
        # Without keys nobody could log in; better said at start than at login.
        section.check(c.authorized_keys, "authorized_keys", "must be set when listen is set")
    return c


_READERS = {"server": _server, "manager": _manager, "status": _status, "manhole": _manhole}


def _wallbox(section, name):
    section.check(_DEVICE_NAME.fullmatch(name), None,
                  "device name must be letters, digits, '-', '_' or '.'")
    values = section.read(WallboxConfig, name=name)
    for key in ("type", "address"):
        section.check(values.get(key), key, "is required")
    w = WallboxConfig(**values)

    if w.type == "ocpp":
        # The ChargeBox-ID is the last segment of the wallbox's URL path.
        section.check("/" not in w.address, "address", "a ChargeBox-ID cannot contain '/'")
        section.check(w.id >= 1, "id", f"connector id must be 1 or more{section.got('id')}")
    else:
        try:
            _split_host_port(w.address)
        except ValueError as e:
            raise section.error("address", f"{e}{section.got('address')}") from None
        section.check(1 <= w.id <= 247, "id", f"Modbus unit id must be 1 to 247{section.got('id')}")

    for key in ("min_current", "max_current"):
        section.check(getattr(w, key) >= 0, key, f"must be 0 or more{section.got(key)}")
    section.check(w.min_current <= w.max_current, "min_current",
                  f"{w.min_current:g} is above max_current {w.max_current:g}")
    section.positive("poll_interval", w.poll_interval)
    # Upper case only, as the status API and the log spell it: one way to
    # write a wiring leaves nothing to misread when checking a fuse.
    section.check(w.wiring in WIRINGS, "wiring",
                  f"must be one of {', '.join(WIRINGS)}{section.got('wiring')}")
    # OCPP 1.6 IdToken is CiString20Type.
    section.check(len(w.id_tag) <= 20, "id_tag", "OCPP allows at most 20 characters")
    w = _profile_keys(section, w)

    scheme = _check_gateway_url(section, w.gateway_url)
    for key in ("gateway_ca", "gateway_certificate"):
        section.check(not getattr(w, key) or scheme == "wss", key, "needs a wss:// gateway_url")
    section.check(not w.gateway_private_key or w.gateway_certificate, "gateway_private_key",
                  "needs gateway_certificate to be set too")
    section.check("/" not in w.gateway_client_id, "gateway_client_id", "cannot contain '/'")
    return w


def _profile_keys(section, w):
    """Check and spell the keys of DESIGN §8 (how limits are sent)."""
    if w.type != "ocpp":
        for key in (*PROFILE_CHOICES, "stack_level", "voltage"):
            section.check(key not in section.raw, key,
                          "means nothing for type = modbus: a Modbus wallbox takes its "
                          "limit in register 8093")
        return w
    spelled = {}
    for key, choices in PROFILE_CHOICES.items():
        given = getattr(w, key)
        match = [c for c in choices if c.lower() == given.lower()]
        section.check(match, key, f"must be one of {', '.join(choices)}{section.got(key)}")
        spelled[key] = match[0]
    level = w.stack_level.lower()
    if level != "auto":
        section.check(_INT.fullmatch(level) and 0 <= int(level) <= MAX_STACK_LEVEL,
                      "stack_level",
                      f"must be auto or a whole number 0 to {MAX_STACK_LEVEL}"
                      f"{section.got('stack_level')}")
        level = str(int(level))
    # Mains voltage per phase: 230 V in Europe, 120/277 V elsewhere.
    section.check(100 <= w.voltage <= 480, "voltage",
                  f"must be 100 to 480 V per phase{section.got('voltage')}")
    return replace(w, stack_level=level, **spelled)


def _circuit(section, name):
    section.check(_DEVICE_NAME.fullmatch(name), None,
                  "circuit name must be letters, digits, '-', '_' or '.'")
    # The status API and /metrics show the whole site under this name; any
    # spelling of it would read as the site there.
    section.check(name.lower() != "site", None,
                  f"the name {name!r} stands for the whole site (status API, /metrics); "
                  "choose another")
    values = section.read(CircuitConfig, name=name)
    section.check("max_current" in values, "max_current", "is required")
    c = CircuitConfig(**values)
    section.check(c.max_current >= 0, "max_current",
                  f"must be 0 or more{section.got('max_current')}")
    section.check(c.parent != c.name, "parent", "a circuit cannot be its own parent")
    return c


def _meter(section, name):
    section.check(_DEVICE_NAME.fullmatch(name), None,
                  "meter name must be letters, digits, '-', '_' or '.'")
    values = section.read(MeterConfig, name=name)
    section.check(values.get("type"), "type", f"is required (one of {', '.join(METER_TYPES)})")
    m = MeterConfig(**values)
    if m.type == "api":
        for key in ("address", "id", "poll_interval"):
            section.check(key not in section.raw, key,
                          "means nothing for type = api: its readings are pushed "
                          "with POST /api/meters/<name>")
    else:
        section.check(m.address, "address", "is required for a Modbus meter (host:port)")
        try:
            _split_host_port(m.address, METER_PORT)
        except ValueError as e:
            raise section.error("address", f"{e}{section.got('address')}") from None
        section.check(1 <= m.id <= 247, "id", f"Modbus unit id must be 1 to 247{section.got('id')}")
        section.positive("poll_interval", m.poll_interval)
    section.positive("timeout", m.timeout)
    if m.type != "api":
        # Silent after one missed poll would be flapping; after two, a
        # meter that answers at all stays heard.
        section.check(m.timeout >= 2 * m.poll_interval, "timeout",
                      f"is {m.timeout:g} s; it must be at least twice poll_interval "
                      f"({m.poll_interval:g} s)")
    return m


def _check_meter_uses(config, manager, circuits, meters):
    """Each meter named by [manager] meter or a circuit exists, and
    measures one place only."""
    by_name = {m.name: m for _, m in meters}
    if by_name:
        known = f"known: {', '.join(by_name)}"
    else:
        known = "it has no [meter:*] sections"
    uses = {}
    places = []
    if config.manager.meter:
        places.append((manager, "[manager]", config.manager.meter))
    for section, c in circuits:
        if c.meter:
            places.append((section, f"[circuit:{c.name}]", c.meter))
    for section, where, name in places:
        section.check(name in by_name, "meter", f"no [meter:{name}] in this file ({known})")
        other = uses.setdefault(name, where)
        section.check(other == where, "meter",
                      f"[meter:{name}] already measures {other}; a meter measures one place")


def _check_circuits(circuits):
    """Checks across circuits: every parent exists, and parents form a tree."""
    by_name = {c.name: c for _, c in circuits}
    for section, c in circuits:
        section.check(not c.parent or c.parent in by_name, "parent",
                      _missing_circuit(c.parent, by_name))
    for section, c in circuits:
        loop = [c.name]
        parent = c.parent
        while parent and parent not in loop:
            loop.append(parent)
            parent = by_name[parent].parent
        section.check(parent != c.name, "parent",
                      f"circuits form a loop: {' > '.join(loop + [c.name])}")


def _check_device_circuits(wallboxes, circuits):
    """Each device's circuit is one of the file's circuits."""
    by_name = {c.name: c for _, c in circuits}
    for section, w in wallboxes:
        section.check(not w.circuit or w.circuit in by_name, "circuit",
                      _missing_circuit(w.circuit, by_name))


def _missing_circuit(name, by_name):
    """The message for a reference to circuit ``name``, which is not there."""
    if not by_name:
        known = "it has no [circuit:*] sections"
    else:
        known = f"known: {', '.join(by_name)}"
    message = f"no [circuit:{name}] in this file ({known})"
    if name.lower() == "site":
        message += "; leave it empty for directly under the site"
    return message


def _check_gateway_url(section, url):
    """The URL's scheme ("ws" or "wss"), or "" when there is no gateway."""
    return check_ws_url(section, "gateway_url", url, password_key="gateway_password")


def check_ws_url(section, key, url, password_key):
    """Check a ws:// or wss:// URL the client id is appended to; return its
    scheme, or "" when the URL is empty."""
    if not url:
        return ""
    # The URL itself is never shown: it might hold a user:password@.
    section.check(not any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url), key,
                  "must not contain spaces or control characters (write a space in the "
                  "path as %20)")
    try:
        parts = urlsplit(url)
    except ValueError as e:
        # urlsplit refuses a broken [IPv6] address; its text holds no secret.
        raise section.error(key, f"is not a valid URL: {e}") from None
    try:
        parts.port
    except ValueError:
        raise section.error(key, "has an invalid port") from None
    section.check(parts.scheme in ("ws", "wss") and parts.hostname, key,
                  "must be ws://host/... or wss://host/...")
    section.check("@" not in parts.netloc, key,
                  f"must not hold a user or password: use {password_key}")
    section.check(_is_host(parts.hostname), key,
                  "has an invalid host name (letters, digits, '-' and '.'; an IPv6 "
                  "address goes in [brackets]; an international name in its xn-- form)")
    # The client id is appended to the path, which a query or fragment would break.
    section.check(not parts.query and not parts.fragment, key,
                  "cannot have a query (?) or fragment (#)")
    return parts.scheme


_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


def _is_host(host):
    """Whether C{host} (from urlsplit: lower case, brackets gone) is a DNS
    name or an IP address that a connection can be made to."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    labels = host.removesuffix(".").split(".")
    return len(host) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels)


def _check_devices(wallboxes):
    """Checks across devices: one device per connector, one gateway link per client id."""
    places = {}  # (type, address, id) -> device
    shared = {}  # ChargeBox-ID -> first OCPP device with it
    links = {}  # (gateway_url, client_id) -> device owning that backend connection
    for section, w in wallboxes:
        if w.type == "ocpp":
            place, what = ("ocpp", w.address, w.id), f"connector {w.id} of {w.address}"
        else:
            host, port = _split_host_port(w.address)
            place, what = ("modbus", host.lower(), port, w.id), f"unit {w.id} at {w.address}"
        if place in places:
            raise section.error("id", f"{what} is already [wallbox:{places[place].name}]")
        places[place] = w

        if w.type == "ocpp":
            first = shared.setdefault(w.address, w)
            # Connectors of one wallbox share its single backend connection.
            for key in _GATEWAY_KEYS:
                section.check(getattr(w, key) == getattr(first, key), key,
                              f"differs from [wallbox:{first.name}], which has the same "
                              f"ChargeBox-ID {w.address}")
            if first is not w:
                continue
        if w.gateway_url:
            other = links.setdefault((w.gateway_url, w.client_id), w)
            section.check(other is w, "gateway_client_id",
                          f"[wallbox:{other.name}] already connects to this gateway_url "
                          f"as {w.client_id!r}")


def _split_host_port(address, default_port=MODBUS_PORT):
    """``"host"``, ``"host:port"``, ``"[v6]"`` or ``"[v6]:port"`` as (host, port),
    C{default_port} when it names none."""
    if address.startswith("["):
        host, bracket, rest = address[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError("must be host:port, an IPv6 address in [brackets]")
        port = rest[1:] if rest else None
    elif address.count(":") > 1:
        raise ValueError("an IPv6 address goes in brackets: [::1]:4701")
    else:
        host, colon, port = address.partition(":")
        port = port if colon else None
    if not host or any(c.isspace() or c == "/" for c in host):
        raise ValueError("must be host:port, e.g. 192.168.1.20:4701")
    if port is None:
        return host, default_port
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError("port must be 1 to 65535")
    return host, int(port)
