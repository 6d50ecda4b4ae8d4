"""The virtual wallbox's configuration file."""

import os

import pytest

from cfosproxy.config import ConfigError
from cfosproxy.wallbox.config import load_wallbox_config, wallbox_config_from_string

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_example_loads():
    """etc/cfoswallbox.ini loads with the documented defaults."""
    config = load_wallbox_config(os.path.join(ROOT, "etc", "cfoswallbox.ini"))
    assert config.ocpp.url == "ws://127.0.0.1:19520/" and config.ocpp.client_id == "CB-0001"
    assert (config.modbus.host, config.modbus.port, config.modbus.unit_id) == ("127.0.0.1", 4701, 1)
    assert config.car.plugged is False and config.car.max_current == 32.0


@pytest.mark.parametrize(
    "text,section,key",
    [
        ("[ocpp]\nurl = http://x/\n", "ocpp", "url"),
        ("[ocpp]\nurl = ws://x/\nca = ca.pem\n", "ocpp", "ca"),
        ("[ocpp]\nid_tag = " + "X" * 21 + "\n", "ocpp", "id_tag"),
        ("[ocpp]\nconnector_id = 0\n", "ocpp", "connector_id"),
        ("[modbus]\nlisten = 4701\n", "modbus", "listen"),
        ("[modbus]\nunit_id = 300\n", "modbus", "unit_id"),
        ("[car]\nmax_current = 4\n", "car", "max_current"),
        ("[car]\ncolour = red\n", "car", "colour"),
        ("[garage]\n", "garage", None),
    ],
)
def test_errors_name_section_and_key(text, section, key):
    """Each mistake is a ConfigError naming its section and key."""
    with pytest.raises(ConfigError) as e:
        wallbox_config_from_string(text, "w.ini")
    assert (e.value.section, e.value.key) == (section, key)


def test_password_not_in_errors():
    """The OCPP password never appears in an error message."""
    with pytest.raises(ConfigError) as e:
        wallbox_config_from_string("[ocpp]\npassword = s3cr3t\nurl = ftp://x/\n", "w.ini")
    assert "s3cr3t" not in str(e.value)
