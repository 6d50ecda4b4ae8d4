"""The INI file: defaults, the shipped example, and errors that name file, section and key."""

import dataclasses
import pickle
import re
from pathlib import Path

import pytest

from cfosproxy.config import (
    CircuitConfig,
    Config,
    ConfigError,
    ManagerConfig,
    ServerConfig,
    WallboxConfig,
    config_from_string,
    load_config,
)
from cfosproxy.site.circuits import WIRINGS

EXAMPLE = Path(__file__).resolve().parent.parent / "etc" / "cfosproxy.ini"

OCPP = "[wallbox:a]\ntype = ocpp\naddress = CB-1\n"


def test_empty_file_gives_defaults():
    """A file without sections is every default of DESIGN §3, and no devices."""
    config = config_from_string("")
    assert config.path == "<string>"
    assert config.server.listen == "tcp:19520"
    assert config.server.tls == "detect"
    assert config.server.require_client_certificate is False
    assert config.server.max_message_size == 65536
    assert (config.server.ping_interval, config.server.heartbeat_interval,
            config.server.call_timeout) == (60, 300, 30)
    assert config.manager == ManagerConfig("control", 32.0, "lift_limit", "var", "cache")
    assert config.status.listen == "tcp:19580:interface=127.0.0.1"
    assert config.status.token == ""
    assert config.manhole.listen == ""
    assert config.wallboxes == ()


def test_meters():
    """[meter:*] sections become MeterConfigs with the defaults of DESIGN §3;
    [manager] and [circuit:*] name the meter that measures them."""
    config = config_from_string(
        "[manager]\nmeter = grid\nreserve = 3\nfailsafe_current = 6\n"
        "[meter:grid]\ntype = sdm630\naddress = 192.168.1.50\n"
        "[meter:carport]\ntype = sunspec\naddress = [fd00::5]:1502\nid = 126\n"
        "poll_interval = 2\ntimeout = 5\n"
        "[meter:house]\ntype = api\n"
        "[circuit:carport]\nmax_current = 25\nmeter = carport\n"
    )
    assert (config.manager.meter, config.manager.reserve, config.manager.failsafe_current) == (
        "grid", 3.0, 6.0)
    grid = config.meter("grid")
    assert (grid.type, grid.host, grid.port, grid.id, grid.poll_interval, grid.timeout) == (
        "sdm630", "192.168.1.50", 502, 1, 1.0, 10.0)
    carport = config.meter("carport")
    assert (carport.type, carport.host, carport.port, carport.id) == ("sunspec", "fd00::5", 1502, 126)
    assert config.meter("house").type == "api"
    with pytest.raises(ValueError, match="not read over Modbus"):
        config.meter("house").host
    assert config.circuit("carport").meter == "carport"
    with pytest.raises(KeyError):
        config.meter("pv")


def test_meter_defaults():
    """Without meters the site limit is static: no meter, reserve 2 A,
    fail-safe 0 A (DESIGN §3)."""
    config = config_from_string("")
    assert (config.manager.meter, config.manager.reserve, config.manager.failsafe_current) == (
        "", 2.0, 0.0)
    assert config.meters == ()


def test_site_model_defaults():
    """Without the keys of the site model, a device hangs directly on the
    site, on all three phases in order, at priority 0; there are no
    circuits and no limit on unbalanced load."""
    config = config_from_string(OCPP)
    (w,) = config.wallboxes
    assert (w.circuit, w.wiring, w.priority) == ("", "L1L2L3", 0)
    assert config.manager.max_imbalance == 0.0
    assert config.circuits == ()
    assert config_from_string("").circuits == ()


def test_example_file_loads():
    """etc/cfosproxy.ini, with its inline comments, loads as documented."""
    config = load_config(EXAMPLE)
    assert config.path == str(EXAMPLE)
    assert config.server.listen == "tcp:19520"
    assert config.server.tls == "detect"
    assert config.server.password == ""
    assert config.manager.state_dir == "var"
    assert config.status.listen == "tcp:19580:interface=127.0.0.1"
    assert config.manhole.listen == ""
    (garage,) = config.wallboxes
    assert garage == WallboxConfig(name="garage-1", type="ocpp", address="CB-0001", id=1,
                                   min_current=6.0, max_current=16.0)
    assert config.devices_for("CB-0001") == (garage,)
    assert config.wallbox("garage-1") is garage


def test_commented_site_keys_in_example_are_valid():
    """The commented-out site model keys in etc/cfosproxy.ini (the
    ``[circuit:carport]`` example, ``max_imbalance``, the wallbox's
    ``circuit``, ``wiring``, ``priority`` and how limits are sent) load when
    uncommented, with the values the comments document."""
    text = EXAMPLE.read_text(encoding="utf-8")
    disabled = re.compile(
        r"^;(?=\[circuit:|(max_imbalance|max_current|parent|circuit|wiring|priority"
        r"|charging_profile|stack_level|rate_unit|voltage) =)",
        re.MULTILINE,
    )
    assert len(disabled.findall(text)) == 11
    config = config_from_string(disabled.sub("", text), "example.ini")
    assert config.circuits == (CircuitConfig(name="carport", max_current=25.0, parent=""),)
    assert config.manager.max_imbalance == 0.0
    (garage,) = config.wallboxes
    assert (garage.circuit, garage.wiring, garage.priority) == ("", "L1L2L3", 0)
    assert (garage.charging_profile, garage.stack_level, garage.rate_unit, garage.voltage) == (
        "auto", "auto", "auto", 230.0)


@pytest.mark.parametrize("given, expected", [
    ("charging_profile = txprofile\nstack_level = 00\nrate_unit = w\nvoltage = 120\n",
     ("TxProfile", "0", 0, "W", 120.0)),
    ("charging_profile = TXDEFAULTPROFILE\nstack_level = AUTO\nrate_unit = a\n",
     ("TxDefaultProfile", "auto", None, "A", 230.0)),
])
def test_profile_keys_are_spelled_as_ocpp_does(given, expected):
    """The keys of how limits are sent are read in any case and kept as
    OCPP spells them; the stack level as a number when explicit."""
    (w,) = config_from_string(OCPP + given).wallboxes
    assert (w.charging_profile, w.stack_level, w.explicit_stack_level, w.rate_unit, w.voltage) == expected


def test_values_are_typed():
    """Booleans, numbers and choices are converted, case-insensitively where it makes sense."""
    config = config_from_string(
        "[server]\ntls = ON\nrequire_client_certificate = True\nclient_ca = ca.pem\n"
        "accept_unknown = 1\nmax_message_size = 1024\n"
        "[manager]\nmode = Observe\nmax_current = 12.5\n"
        "[wallbox:x.y_z-1]\ntype = modbus\naddress = 10.0.0.2\nenabled = off\n"
        "min_current = 0\nmax_current = .5\npoll_interval = 0.5\n"
    )
    assert config.server.tls == "on"
    assert config.server.require_client_certificate is True
    assert config.server.accept_unknown is True
    assert config.server.max_message_size == 1024
    assert config.manager.mode == "observe"
    assert config.manager.max_current == 12.5
    (w,) = config.wallboxes
    assert (w.name, w.enabled, w.min_current, w.max_current, w.poll_interval) == (
        "x.y_z-1", False, 0.0, 0.5, 0.5)


@pytest.mark.parametrize("wiring", list(WIRINGS))
def test_every_wiring_is_taken(wiring):
    """Each wiring of DESIGN §3, written in upper case, is kept as it is."""
    (w,) = config_from_string(OCPP + f"wiring = {wiring}\n").wallboxes
    assert w.wiring == wiring


def test_site_model_values_are_read():
    """Circuits (in file order, nested with parent), a device's circuit,
    wiring and priority (negative too), and max_imbalance are read and
    typed; Config.circuit finds a circuit by name."""
    config = config_from_string(
        "[manager]\nmax_imbalance = 20\n"
        "[circuit:garage]\nmax_current = 35\n"
        "[circuit:carport]\nmax_current = 25.5\nparent = garage\n"
        "[circuit:spare]\nmax_current = 0\n"
        + OCPP + "circuit = carport\nwiring = L2\npriority = -2\n"
        "[wallbox:b]\ntype = ocpp\naddress = CB-2\ncircuit = garage\nwiring = L3L1L2\n"
        "priority = +3\n"
    )
    assert config.manager.max_imbalance == 20.0
    assert config.circuits == (
        CircuitConfig("garage", 35.0),
        CircuitConfig("carport", 25.5, parent="garage"),
        CircuitConfig("spare", 0.0),
    )
    assert config.circuit("carport") is config.circuits[1]
    with pytest.raises(KeyError):
        config.circuit("site")
    a, b = config.wallboxes
    assert (a.circuit, a.wiring, a.priority) == ("carport", "L2", -2)
    assert (b.circuit, b.wiring, b.priority) == ("garage", "L3L1L2", 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.circuits[0].max_current = 63


def test_circuit_names_like_device_names():
    """A circuit may be named with letters, digits, '.', '_' and '-', and
    share its name with a device: they are different things."""
    config = config_from_string(
        "[circuit:Hall_2.b-1]\nmax_current = 16\n"
        "[wallbox:Hall_2.b-1]\ntype = ocpp\naddress = CB-1\ncircuit = Hall_2.b-1\n"
    )
    assert config.circuit("Hall_2.b-1").max_current == 16.0
    assert config.wallbox("Hall_2.b-1").circuit == "Hall_2.b-1"


def test_client_id_defaults():
    """The backend sees the ChargeBox-ID (ocpp) or the device name (modbus) unless set."""
    config = config_from_string(
        OCPP + "[wallbox:b]\ntype = modbus\naddress = pb.local\n"
        "[wallbox:c]\ntype = modbus\naddress = pb2.local\ngateway_client_id = PB-2\n"
    )
    assert [w.client_id for w in config.wallboxes] == ["CB-1", "b", "PB-2"]


@pytest.mark.parametrize("address, host, port", [
    ("pb.local", "pb.local", 4701),
    ("192.168.1.20:502", "192.168.1.20", 502),
    ("[::1]:4702", "::1", 4702),
    ("[fe80::1]", "fe80::1", 4701),
])
def test_modbus_host_and_port(address, host, port):
    """A Modbus address is host[:port], IPv6 in brackets, port 4701 when left out."""
    (w,) = config_from_string(f"[wallbox:m]\ntype = modbus\naddress = {address}\n").wallboxes
    assert (w.host, w.port) == (host, port)


def test_ocpp_device_has_no_host():
    """host/port belong to Modbus wallboxes; asking an OCPP one is a clear error."""
    (w,) = config_from_string(OCPP).wallboxes
    with pytest.raises(ValueError):
        w.host


def test_devices_share_a_chargebox():
    """Two connectors of one wallbox are two devices found by the one ChargeBox-ID."""
    config = config_from_string(
        OCPP + "[wallbox:b]\ntype = ocpp\naddress = CB-1\nid = 2\n"
        "[wallbox:c]\ntype = ocpp\naddress = CB-2\n"
    )
    assert [w.name for w in config.devices_for("CB-1")] == ["a", "b"]
    assert config.devices_for("CB-3") == ()
    with pytest.raises(KeyError):
        config.wallbox("nope")


def test_config_is_frozen():
    """Nothing can change the configuration after it was loaded."""
    config = config_from_string(OCPP)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.server.tls = "off"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.wallboxes[0].max_current = 63
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.wallboxes = ()


def test_utf8_bom_accepted(tmp_path):
    """A file saved by a Windows editor, with a byte order mark, reads like any other."""
    path = tmp_path / "bom.ini"
    path.write_bytes(b"\xef\xbb\xbf[server]\ntls = off\n")
    assert load_config(path).server.tls == "off"


def test_error_text():
    """str(ConfigError) names file, section and key, and what was given."""
    with pytest.raises(ConfigError) as info:
        config_from_string("[server]\ntls = maybe\n", "etc/cfosproxy.ini")
    err = info.value
    assert (err.path, err.section, err.key) == ("etc/cfosproxy.ini", "server", "tls")
    assert str(err) == "etc/cfosproxy.ini: [server] tls: must be one of off, detect, on (got 'maybe')"
    assert str(pickle.loads(pickle.dumps(err))) == str(err)


def test_missing_file(tmp_path):
    """A file that isn't there is an error naming the file, with no section or key."""
    path = tmp_path / "nope.ini"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert (info.value.section, info.value.key) == (None, None)
    assert str(info.value) == f"{path}: cannot read file: No such file or directory"


# (ini text, section, key, words the message contains)
BAD = [
    ("[serveur]\n", "serveur", None, "unknown section"),
    ("[circuits:a]\nmax_current = 1\n", "circuits:a", None,
     "unknown section (known: server, manager, status, manhole, circuit:<name>, meter:<name>, "
     "wallbox:<name>)"),
    ("[DEFAULT]\nlisten = tcp:1\n", "DEFAULT", None, "unknown section"),
    ("[wallbox:]\ntype = ocpp\naddress = X\n", "wallbox:", None, "device name"),
    ("[wallbox:a b]\ntype = ocpp\naddress = X\n", "wallbox:a b", None, "device name"),
    ("[server]\nport = 19520\n", "server", "port", "unknown key"),
    (OCPP + "name = b\n", "wallbox:a", "name", "unknown key"),
    ("[server]\naccept_unknown = maybe\n", "server", "accept_unknown", "yes or no"),
    ("[server]\nping_interval = 1.5\n", "server", "ping_interval", "whole number"),
    ("[server]\nmax_message_size = 1_000_000\n", "server", "max_message_size", "whole number"),
    ("[server]\nmax_message_size = 1000\n", "server", "max_message_size", "at least 1024"),
    ("[server]\ncall_timeout = 0\n", "server", "call_timeout", "greater than 0"),
    ("[server]\nheartbeat_interval =\n", "server", "heartbeat_interval", "whole number"),
    ("[manager]\nmax_current = nan\n", "manager", "max_current", "number"),
    ("[manager]\nmax_current = 6,5\n", "manager", "max_current", "number"),
    ("[manager]\nmax_current = -1\n", "manager", "max_current", "0 or more"),
    ("[manager]\nmode = manage\n", "manager", "mode", "control, observe"),
    ("[manager]\non_deactivate = lift\n", "manager", "on_deactivate", "lift_limit, keep_limit"),
    ("[manager]\noffline_authorize = maybe\n", "manager", "offline_authorize", "cache, accept, reject"),
    ("[manager]\nstate_dir =\n", "manager", "state_dir", "empty"),
    ("[server]\nlisten = tcp:port\n", "server", "listen", "endpoint"),
    ("[server]\nlisten = 19520\n", "server", "listen", "endpoint"),
    ("[status]\nlisten =\n", "status", "listen", "endpoint"),
    ("[status]\nlisten = tcp:1:iface=lo\n", "status", "listen", "endpoint"),
    ("[manhole]\nlisten = ssh:22\nauthorized_keys = k\n", "manhole", "listen", "endpoint"),
    ("[manhole]\nlisten = tcp:19522\n", "manhole", "authorized_keys", "must be set"),
    ("[server]\nrequire_client_certificate = yes\n", "server", "require_client_certificate",
     "client_ca"),
    ("[server]\nrequire_client_certificate = yes\nclient_ca = ca.pem\ntls = off\n", "server",
     "require_client_certificate", "tls"),
    ("[server]\nprivate_key = key.pem\n", "server", "private_key", "certificate"),
    ("[server]\nclient_certificate_identity = uid\n", "server", "client_certificate_identity",
     "cn, serial_number, san_dns"),
    ("[server]\npassword_failures = -1\n", "server", "password_failures", "0 or more"),
    ("[server]\npassword_backoff_max = 0\n", "server", "password_backoff_max", "1 to 3600"),
    ("[server]\npassword_backoff_max = 0.5\n", "server", "password_backoff_max", "whole number"),
    ("[wallbox:a]\naddress = CB-1\n", "wallbox:a", "type", "required"),
    ("[wallbox:a]\ntype = ocpp\n", "wallbox:a", "address", "required"),
    ("[wallbox:a]\ntype = rs485\naddress = X\n", "wallbox:a", "type", "ocpp, modbus"),
    ("[wallbox:a]\ntype = ocpp\naddress = site/CB-1\n", "wallbox:a", "address", "/"),
    (OCPP + "id = 0\n", "wallbox:a", "id", "connector id"),
    (OCPP + "min_current = 20\n", "wallbox:a", "min_current", "above max_current"),
    (OCPP + "max_current = -6\n", "wallbox:a", "max_current", "0 or more"),
    (OCPP + "poll_interval = 0\n", "wallbox:a", "poll_interval", "greater than 0"),
    (OCPP + "id_tag = 0123456789abcdef01234\n", "wallbox:a", "id_tag", "20 characters"),
    (OCPP + "enabled = yes\n  no\n", "wallbox:a", "enabled", "indented line"),
    ("[wallbox:m]\ntype = modbus\naddress = pb:0\n", "wallbox:m", "address", "port"),
    ("[wallbox:m]\ntype = modbus\naddress = pb:http\n", "wallbox:m", "address", "port"),
    ("[wallbox:m]\ntype = modbus\naddress = ::1\n", "wallbox:m", "address", "brackets"),
    ("[wallbox:m]\ntype = modbus\naddress = :502\n", "wallbox:m", "address", "host:port"),
    ("[wallbox:m]\ntype = modbus\naddress = pb\nid = 248\n", "wallbox:m", "id", "1 to 247"),
    (OCPP + "[wallbox:b]\ntype = ocpp\naddress = CB-1\n", "wallbox:b", "id",
     "connector 1 of CB-1 is already [wallbox:a]"),
    ("[wallbox:m]\ntype = modbus\naddress = PB\n[wallbox:n]\ntype = modbus\naddress = pb:4701\n",
     "wallbox:n", "id", "already [wallbox:m]"),
    (OCPP + "gateway_url = ws://backend/ocpp\n[wallbox:b]\ntype = ocpp\naddress = CB-1\nid = 2\n",
     "wallbox:b", "gateway_url", "differs from [wallbox:a]"),
    (OCPP + "gateway_url = ws://b/\n[wallbox:b]\ntype = ocpp\naddress = CB-1\nid = 2\n"
     "gateway_url = ws://b/\ngateway_client_id = other\n",
     "wallbox:b", "gateway_client_id", "differs from [wallbox:a]"),
    (OCPP + "gateway_url = ws://b/\n[wallbox:m]\ntype = modbus\naddress = pb\n"
     "gateway_url = ws://b/\ngateway_client_id = CB-1\n",
     "wallbox:m", "gateway_client_id", "already connects"),
    (OCPP + "gateway_url = http://backend/ocpp\n", "wallbox:a", "gateway_url", "ws://"),
    (OCPP + "gateway_url = ws:///ocpp\n", "wallbox:a", "gateway_url", "ws://"),
    (OCPP + "gateway_url = wss://backend:99999/\n", "wallbox:a", "gateway_url", "port"),
    (OCPP + "gateway_url = wss://backend/?x=1\n", "wallbox:a", "gateway_url", "query"),
    (OCPP + "gateway_url = ws://exa mple.com/\n", "wallbox:a", "gateway_url", "spaces"),
    (OCPP + "gateway_url = ws://exa%20mple.com/\n", "wallbox:a", "gateway_url", "host name"),
    (OCPP + "gateway_url = ws://-backend/\n", "wallbox:a", "gateway_url", "host name"),
    (OCPP + "gateway_url = ws://back\u00e9nd.example/\n", "wallbox:a", "gateway_url", "host name"),
    (OCPP + "gateway_url = wss://[::1/\n", "wallbox:a", "gateway_url", "not a valid URL"),
    (OCPP + "gateway_url = wss://[::1]:8443/ocpp\n[wallbox:b]\ntype = ocpp\naddress = CB-2\n"
     "gateway_url = ws://\n", "wallbox:b", "gateway_url", "ws://"),
    (OCPP + "gateway_ca = ca.pem\n", "wallbox:a", "gateway_ca", "wss://"),
    (OCPP + "gateway_url = ws://b/\ngateway_certificate = c.pem\n", "wallbox:a",
     "gateway_certificate", "wss://"),
    (OCPP + "gateway_url = wss://b/\ngateway_private_key = k.pem\n", "wallbox:a",
     "gateway_private_key", "gateway_certificate"),
    (OCPP + "gateway_client_id = a/b\n", "wallbox:a", "gateway_client_id", "/"),
    ("[manager]\nmax_imbalance = -1\n", "manager", "max_imbalance", "must be 0 or more (got '-1')"),
    ("[manager]\nmax_imbalance = inf\n", "manager", "max_imbalance", "must be a number"),
    ("[manager]\nmeter = grid\n", "manager", "meter",
     "no [meter:grid] in this file (it has no [meter:*] sections)"),
    ("[meter:pv]\ntype = api\n[manager]\nmeter = grid\n", "manager", "meter",
     "no [meter:grid] in this file (known: pv)"),
    ("[manager]\nreserve = -1\n", "manager", "reserve", "must be 0 or more (got '-1')"),
    ("[manager]\nfailsafe_current = -2\n", "manager", "failsafe_current",
     "must be 0 or more (got '-2')"),
    ("[meter:grid]\n", "meter:grid", "type", "is required (one of sdm630, sunspec, api)"),
    ("[meter:grid]\ntype = SDM 630\n", "meter:grid", "type",
     "must be one of sdm630, sunspec, api (got 'SDM 630')"),
    ("[meter:grid]\ntype = ocpp\n", "meter:grid", "type", "must be one of sdm630, sunspec, api"),
    ("[meter:grid]\ntype = sdm630\n", "meter:grid", "address", "is required for a Modbus meter"),
    ("[meter:grid]\ntype = sunspec\naddress = meter:99999\n", "meter:grid", "address",
     "port must be 1 to 65535"),
    ("[meter:grid]\ntype = sdm630\naddress = m\nid = 0\n", "meter:grid", "id",
     "Modbus unit id must be 1 to 247 (got '0')"),
    ("[meter:grid]\ntype = sdm630\naddress = m\npoll_interval = 0\n", "meter:grid",
     "poll_interval", "must be greater than 0"),
    ("[meter:grid]\ntype = sdm630\naddress = m\ntimeout = 0\n", "meter:grid", "timeout",
     "must be greater than 0"),
    ("[meter:grid]\ntype = sdm630\naddress = m\npoll_interval = 6\n", "meter:grid", "timeout",
     "is 10 s; it must be at least twice poll_interval (6 s)"),
    ("[meter:grid]\ntype = api\naddress = 10.0.0.5\n", "meter:grid", "address",
     "means nothing for type = api"),
    ("[meter:grid]\ntype = api\nfeed = 1\n", "meter:grid", "feed", "unknown key"),
    ("[meter:my grid]\ntype = api\n", "meter:my grid", None, "meter name"),
    ("[meter:grid]\ntype = api\n[manager]\nmeter = grid\n[circuit:c]\nmax_current = 16\n"
     "meter = grid\n", "circuit:c", "meter",
     "[meter:grid] already measures [manager]; a meter measures one place"),
    (OCPP + "wiring = l1\n", "wallbox:a", "wiring",
     "must be one of L1L2L3, L2L3L1, L3L1L2, L1, L2, L3 (got 'l1')"),
    (OCPP + "wiring = L1L3L2\n", "wallbox:a", "wiring",
     "must be one of L1L2L3, L2L3L1, L3L1L2, L1, L2, L3 (got 'L1L3L2')"),
    (OCPP + "wiring = L1 L2 L3\n", "wallbox:a", "wiring", "must be one of L1L2L3"),
    (OCPP + "wiring =\n", "wallbox:a", "wiring", "must be one of L1L2L3, L2L3L1, L3L1L2, L1, L2, L3 (got '')"),
    (OCPP + "priority = 1.5\n", "wallbox:a", "priority", "must be a whole number (got '1.5')"),
    (OCPP + "priority = high\n", "wallbox:a", "priority", "must be a whole number (got 'high')"),
    (OCPP + "circuit = carport\n", "wallbox:a", "circuit",
     "no [circuit:carport] in this file (it has no [circuit:*] sections)"),
    ("[circuit:garage]\nmax_current = 35\n[circuit:pool]\nmax_current = 20\n" + OCPP
     + "circuit = Garage\n", "wallbox:a", "circuit",
     "no [circuit:Garage] in this file (known: garage, pool)"),
    ("[circuit:garage]\nmax_current = 35\n" + OCPP + "circuit = site\n", "wallbox:a", "circuit",
     "no [circuit:site] in this file (known: garage); leave it empty for directly under the site"),
    ("[circuit:carport]\n", "circuit:carport", "max_current", "is required"),
    ("[circuit:carport]\nparent =\n", "circuit:carport", "max_current", "is required"),
    ("[circuit:carport]\nmax_current =\n", "circuit:carport", "max_current", "must be a number (got '')"),
    ("[circuit:carport]\nmax_current = -25\n", "circuit:carport", "max_current",
     "must be 0 or more (got '-25')"),
    ("[circuit:carport]\nmax_current = 25\nmeter = grid\n", "circuit:carport", "meter",
     "no [meter:grid] in this file"),
    ("[circuit:carport]\nmax_current = 25\nname = x\n", "circuit:carport", "name", "unknown key"),
    ("[circuit:]\nmax_current = 25\n", "circuit:", None,
     "circuit name must be letters, digits, '-', '_' or '.'"),
    ("[circuit:car port]\nmax_current = 25\n", "circuit:car port", None, "circuit name"),
    ("[circuit:a:b]\nmax_current = 25\n", "circuit:a:b", None, "circuit name"),
    ("[circuit:site]\nmax_current = 25\n", "circuit:site", None,
     "the name 'site' stands for the whole site"),
    ("[circuit:Site]\nmax_current = 25\n", "circuit:Site", None,
     "the name 'Site' stands for the whole site"),
    ("[circuit:a]\nmax_current = 25\n[circuit:a]\nmax_current = 16\n", "circuit:a", None,
     "section appears twice (line 3)"),
    ("[circuit:a]\nmax_current = 25\nparent = b\n", "circuit:a", "parent",
     "no [circuit:b] in this file (known: a)"),
    ("[circuit:a]\nmax_current = 25\nparent = site\n", "circuit:a", "parent",
     "leave it empty for directly under the site"),
    ("[circuit:a]\nmax_current = 25\nparent = a\n", "circuit:a", "parent",
     "a circuit cannot be its own parent"),
    ("[circuit:a]\nmax_current = 25\nparent = b\n[circuit:b]\nmax_current = 16\nparent = a\n",
     "circuit:a", "parent", "circuits form a loop: a > b > a"),
    ("[circuit:top]\nmax_current = 63\n[circuit:x]\nmax_current = 25\nparent = y\n"
     "[circuit:y]\nmax_current = 25\nparent = z\n[circuit:z]\nmax_current = 16\nparent = y\n",
     "circuit:y", "parent", "circuits form a loop: y > z > y"),
    ("[circuit:a]\nmax_current = 25\nparent = c\n[circuit:b]\nmax_current = 16\nparent = a\n"
     "[circuit:c]\nmax_current = 16\nparent = b\n", "circuit:a", "parent",
     "circuits form a loop: a > c > b > a"),
    (OCPP + "charging_profile = ChargePointMaxProfile\n", "wallbox:a", "charging_profile",
     "must be one of auto, TxDefaultProfile, TxProfile"),
    (OCPP + "stack_level = -1\n", "wallbox:a", "stack_level", "auto or a whole number 0 to 99"),
    (OCPP + "stack_level = 1.5\n", "wallbox:a", "stack_level", "auto or a whole number 0 to 99"),
    (OCPP + "rate_unit = kW\n", "wallbox:a", "rate_unit", "must be one of auto, A, W"),
    (OCPP + "voltage = 0.23\n", "wallbox:a", "voltage", "must be 100 to 480 V per phase"),
    ("[wallbox:m]\ntype = modbus\naddress = pb\nrate_unit = W\n", "wallbox:m", "rate_unit",
     "means nothing for type = modbus"),
    ("[server]\ntls = on\n[server]\n", "server", None, "section appears twice (line 3)"),
    ("[server]\ntls = on\nTLS = off\n", "server", "tls", "key appears twice (line 3)"),
    ("tls = on\n", None, None, "line 1"),
    ("[server]\njunk line\n", None, None, "line 2"),
]


@pytest.mark.parametrize("text, section, key, words", BAD)
def test_error_names_section_and_key(text, section, key, words):
    """Each kind of mistake is a ConfigError naming the file, section and key, saying why."""
    with pytest.raises(ConfigError) as info:
        config_from_string(text, "site.ini")
    err = info.value
    assert (err.path, err.section, err.key) == ("site.ini", section, key)
    assert words in err.message
    assert str(err).startswith("site.ini: ")


@pytest.mark.parametrize("text", [
    "[server]\npassword secret-XYZ\n",
    "[server]\npassword = secret-XYZ\n  more\n",
    "[status]\ntoken = secret-XYZ\n  more\n",
    "[server]\npasword = secret-XYZ\n",
    "[server]\npassword = secret-XYZ\npassword = secret-XYZ\n",
    OCPP + "gateway_url = ws://b/\ngateway_password = secret-XYZ\n"
    "[wallbox:b]\ntype = ocpp\naddress = CB-1\nid = 2\ngateway_url = ws://b/\n",
    OCPP + "gateway_url = ftp://cb:secret-XYZ@backend/\n",
    OCPP + "gateway_url = ws://cb:secret-XYZ@backend/\n",
])
def test_secrets_not_in_errors(text):
    """Passwords, tokens and credentials in URLs never show up in an error message."""
    with pytest.raises(ConfigError) as info:
        config_from_string(text)
    assert "secret-XYZ" not in str(info.value)
    assert "secret-XYZ" not in repr(info.value)


def test_secrets_not_in_repr():
    """Logging a config object does not log its passwords."""
    config = config_from_string(
        "[server]\npassword = secret-XYZ\n[status]\ntoken = secret-XYZ\n"
        + OCPP + "gateway_url = ws://b/\ngateway_password = secret-XYZ\n"
    )
    assert config.server.password == "secret-XYZ"
    assert config.wallboxes[0].gateway_password == "secret-XYZ"
    assert "secret-XYZ" not in repr(config)


def test_config_without_file():
    """Other modules' tests can build a Config directly; it holds the defaults."""
    config = Config("test.ini", wallboxes=(WallboxConfig("w", "ocpp", "CB-9"),))
    assert config.server == ServerConfig()
    assert config.devices_for("CB-9")[0].name == "w"


def test_good_gateway_hosts_are_taken():
    """Host names, IPv4 and bracketed IPv6 addresses, with ports and paths,
    are accepted as gateway_url hosts."""
    for url in ("ws://backend.example/ocpp", "wss://10.0.0.7:8443/cs/", "wss://[fe80::1]:443/",
                "ws://my_backend.local./ocpp", "ws://xn--bcher-kva.example/"):
        config = config_from_string(OCPP + "gateway_url = {}\n".format(url))
        assert config.wallboxes[0].gateway_url == url


def test_warns_when_no_device_can_charge():
    """A site max_current below every device's min_current starts, with a
    warning naming file, section and key; one device above it gets a
    warning of its own; a sane site gets none."""
    config = config_from_string("[manager]\nmax_current = 4\n" + OCPP, "site.ini")
    assert config.warnings() == [
        "site.ini: [manager] max_current: 4 A is below the min_current of every device; "
        "no wallbox will ever be given current"
    ]
    config = config_from_string(
        "[manager]\nmax_current = 10\n" + OCPP + "[wallbox:b]\ntype = ocpp\naddress = CB-2\n"
        "min_current = 16\nmax_current = 32\n", "site.ini"
    )
    assert config.warnings() == [
        "site.ini: [wallbox:b] min_current: 16 A is above [manager] max_current 10 A; "
        "this device will never be given current"
    ]
    assert config_from_string(OCPP).warnings() == []


def test_warns_when_no_device_can_charge_under_a_circuit():
    """A circuit whose max_current is below the min_current of every device
    below it, directly or through a sub-circuit, starts with a warning
    naming the circuit; one device that fits, or a circuit without devices,
    gets none."""
    text = (
        "[circuit:hall]\nmax_current = 5\n"
        "[circuit:row]\nmax_current = 5\nparent = hall\n"
        "[circuit:empty]\nmax_current = 1\n"
        + OCPP + "circuit = hall\n"
        "[wallbox:b]\ntype = ocpp\naddress = CB-2\ncircuit = row\nmin_current = 5.5\n"
    )
    config = config_from_string(text, "site.ini")
    assert config.warnings() == [
        "site.ini: [circuit:hall] max_current: 5 A is below the min_current of every device "
        "below it; none of them will ever be given current",
        "site.ini: [circuit:row] max_current: 5 A is below the min_current of every device "
        "below it; none of them will ever be given current",
    ]
    fits = text + "[wallbox:c]\ntype = ocpp\naddress = CB-3\ncircuit = row\nmin_current = 5\n"
    assert config_from_string(fits).warnings() == []


def test_warns_when_a_circuit_is_above_its_parent():
    """A circuit allowed more than its parent circuit, or than the site for a
    circuit directly under it, starts with a warning that the parent limits
    it anyway; the same limit as the parent is fine."""
    config = config_from_string(
        "[manager]\nmax_current = 32\n"
        "[circuit:garage]\nmax_current = 35\n"
        "[circuit:carport]\nmax_current = 40\nparent = garage\n"
        "[circuit:shed]\nmax_current = 35\nparent = garage\n"
        "[circuit:hall]\nmax_current = 32\n",
        "site.ini",
    )
    assert config.warnings() == [
        "site.ini: [circuit:garage] max_current: 35 A is above [manager] max_current 32 A, "
        "which limits it to 32 A anyway",
        "site.ini: [circuit:carport] max_current: 40 A is above [circuit:garage] max_current "
        "35 A, which limits it to 35 A anyway",
    ]


def test_warns_about_a_meter_that_measures_nothing():
    """A meter that no place names is not read, and the log says so at
    start; the used ones are what the daemon reads."""
    config = config_from_string(
        "[manager]\nmeter = grid\n[meter:grid]\ntype = api\n[meter:pv]\ntype = sdm630\naddress = pv\n",
        "site.ini",
    )
    assert config.warnings() == [
        "site.ini: [meter:pv] measures nothing: name it in [manager] meter or in a "
        "[circuit:*] meter; it is not read"
    ]
    assert [m.name for m in config.used_meters()] == ["grid"]


def test_warnings_on_a_config_built_in_code():
    """warnings() does not fail or hang on a Config built without the file's
    checks, with a device on a missing circuit and circuits in a loop."""
    config = Config(
        "test.ini",
        wallboxes=(WallboxConfig("w", "ocpp", "CB-9", circuit="a"),
                   WallboxConfig("v", "ocpp", "CB-8", circuit="nowhere")),
        circuits=(CircuitConfig("a", 1, parent="b"), CircuitConfig("b", 1, parent="a")),
    )
    assert config.warnings() == [
        "test.ini: [circuit:a] max_current: 1 A is below the min_current of every device "
        "below it; none of them will ever be given current",
        "test.ini: [circuit:b] max_current: 1 A is below the min_current of every device "
        "below it; none of them will ever be given current",
    ]
