"""The virtual wallbox behaves like real wallboxes that differ in the
charging profiles they take (``[ocpp]`` max_stack_level, rate_unit,
tx_default_profile, max_periods, max_profiles, configuration; ``[car]``
voltage), on a task.Clock without sockets."""

import functools
import os
import tempfile

import pytest
from twisted.internet import task
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from cfosproxy.config import ConfigError, WallboxConfig
from cfosproxy.core.devices import Device
from cfosproxy.modbus.powerbrain import Reading
from cfosproxy.ocpp.errors import ErrorCode
from cfosproxy.ocpp.frames import Call, CallError, CallResult
from cfosproxy.wallbox.chargepoint import VirtualChargePoint
from cfosproxy.wallbox.config import wallbox_config_from_string
from cfosproxy.wallbox.model import PowerBrainModel
from cfosproxy.wallbox.profilerules import ProfileRules, spell_rate_unit
from cfosproxy.wallbox.service import VirtualWallbox

pytestmark = pytest.mark.usefixtures("logged_errors", "no_reactor_timers")

TRANSACTION_ID = 7


class AcceptingGateway:
    """Accepts the charge point's id tag and transaction (transaction id
    L{TRANSACTION_ID}); swallows its other CALLs."""

    def answer(self, call):
        if call.action == "StartTransaction":
            return {"idTagInfo": {"status": "Accepted"}, "transactionId": TRANSACTION_ID}
        if call.action == "Authorize":
            return {"idTagInfo": {"status": "Accepted"}}
        return {}

    def chargepoint_online(self, chargepoint):
        pass

    def chargepoint_offline(self, chargepoint):
        pass


def charge_point(rules=ProfileRules(), on_allowed_changed=lambda: None, **kwargs):
    """A virtual charge point with C{rules}, its clock at 2026-11-23T10:00Z."""
    clock = task.Clock()
    clock.advance(1_795_428_000)
    device = Device(name="CB-1", type="modbus", address="CB-1", connector_id=1,
                    config=WallboxConfig(name="CB-1", type="modbus", address="v", id_tag="T"))
    return VirtualChargePoint(
        device, AcceptingGateway(), clock, on_allowed_changed, 32.0, rules=rules, **kwargs
    )


def start_transaction(cp):
    """Plug the car in: the charge point starts transaction L{TRANSACTION_ID}."""
    cp.reading_changed(Reading(state="B", enabled=True, energy_wh=0, power_w=0, currents=(0, 0, 0)))
    assert cp.transaction_id == TRANSACTION_ID


def profile(limit=10.0, purpose="TxDefaultProfile", profile_id=1, stack=0, unit="A",
            periods=1, transaction_id=None, number_phases=None):
    """A SetChargingProfile payload: C{periods} periods of C{limit}, an hour apart."""
    schedule_periods = [{"startPeriod": 3600 * i, "limit": limit} for i in range(periods)]
    if number_phases is not None:
        for period in schedule_periods:
            period["numberPhases"] = number_phases
    data = {
        "chargingProfileId": profile_id, "stackLevel": stack, "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Absolute",
        "chargingSchedule": {"startSchedule": "2026-11-23T00:00:00Z", "chargingRateUnit": unit,
                             "chargingSchedulePeriod": schedule_periods},
    }
    if transaction_id is not None:
        data["transactionId"] = transaction_id
    return {"connectorId": 1, "csChargingProfiles": data}


def answer(cp, action, payload):
    """The frame C{cp} answers a backend CALL with."""
    return cp.send_call(Call("1", action, payload)).result


def send(cp, action, payload):
    """The payload of C{cp}'s CALLRESULT to a backend CALL."""
    result = answer(cp, action, payload)
    assert isinstance(result, CallResult), result
    return result.payload


def status(cp, payload):
    """What C{cp} answers a SetChargingProfile with."""
    return send(cp, "SetChargingProfile", payload)["status"]


def configuration(cp, keys=None):
    """GetConfiguration: ({key: (value, readonly)}, unknownKey)."""
    result = send(cp, "GetConfiguration", {} if keys is None else {"key": keys})
    known = {e["key"]: (e["value"], e["readonly"]) for e in result["configurationKey"]}
    return known, result.get("unknownKey", [])


# -- GetConfiguration -------------------------------------------------------------


def test_configuration_reports_the_default_rules():
    """Asked for everything, the wallbox reports the four Smart Charging
    keys at their defaults, read-only, next to the keys it always had."""
    known, unknown = configuration(charge_point())
    assert known["ChargeProfileMaxStackLevel"] == ("8", True)
    assert known["ChargingScheduleAllowedChargingRateUnit"] == ("Current", True)
    assert known["ChargingScheduleMaxPeriods"] == ("24", True)
    assert known["MaxChargingProfilesInstalled"] == ("8", True)
    assert known["HeartbeatInterval"][1] is False
    assert known["SupportedFeatureProfiles"] == ("Core,SmartCharging,RemoteTrigger", True)
    assert unknown == []


def test_configuration_reports_the_configured_rules():
    """The configured rules are what GetConfiguration reports."""
    rules = ProfileRules(max_stack_level=0, rate_unit="Power", max_periods=1, max_profiles=3)
    known, _ = configuration(charge_point(rules))
    assert known["ChargeProfileMaxStackLevel"] == ("0", True)
    assert known["ChargingScheduleAllowedChargingRateUnit"] == ("Power", True)
    assert known["ChargingScheduleMaxPeriods"] == ("1", True)
    assert known["MaxChargingProfilesInstalled"] == ("3", True)


def test_configuration_asked_for_keys():
    """Asked for some keys, it answers those, in the order asked, and
    lists the ones it does not know in unknownKey."""
    cp = charge_point(ProfileRules(rate_unit="Current,Power"))
    result = send(cp, "GetConfiguration", {"key": [
        "ChargingScheduleAllowedChargingRateUnit", "NoSuchKey", "HeartbeatInterval",
    ]})
    assert [e["key"] for e in result["configurationKey"]] == [
        "ChargingScheduleAllowedChargingRateUnit", "HeartbeatInterval",
    ]
    assert result["configurationKey"][0]["value"] == "Current,Power"
    assert result["unknownKey"] == ["NoSuchKey"]


def test_configuration_no_answers_not_supported():
    """With configuration = no, GetConfiguration is a CALLERROR
    NotSupported: the wallbox tells nothing about itself."""
    result = answer(charge_point(ProfileRules(configuration=False)), "GetConfiguration", {})
    assert isinstance(result, CallError)
    assert result.error_code == ErrorCode.NotSupported


def test_rule_keys_cannot_be_changed():
    """ChangeConfiguration of a key the rules set is Rejected (read-only)
    and changes nothing; a writable key still changes."""
    cp = charge_point()
    for key in ("ChargingScheduleMaxPeriods", "MaxChargingProfilesInstalled",
                "ChargeProfileMaxStackLevel"):
        assert send(cp, "ChangeConfiguration", {"key": key, "value": "1"}) == {"status": "Rejected"}
    assert send(cp, "ChangeConfiguration", {"key": "HeartbeatInterval", "value": "60"}) == {
        "status": "Accepted"}
    known, _ = configuration(cp)
    assert known["ChargingScheduleMaxPeriods"] == ("24", True)
    assert known["HeartbeatInterval"] == ("60", False)


# -- SetChargingProfile -------------------------------------------------------------


def test_stack_level_above_the_maximum_rejected():
    """A profile above max_stack_level is Rejected and not held; one at
    it is taken."""
    cp = charge_point()
    assert status(cp, profile(stack=9)) == "Rejected"
    assert cp.ocpp_limit() is None
    assert status(cp, profile(stack=8)) == "Accepted"
    only_zero = charge_point(ProfileRules(max_stack_level=0))
    assert status(only_zero, profile(stack=1)) == "Rejected"
    assert status(only_zero, profile(stack=0)) == "Accepted"


@pytest.mark.parametrize(
    "rate_unit,unit,expected",
    [
        ("Current", "A", "Accepted"),
        ("Current", "W", "Rejected"),
        ("Power", "A", "Rejected"),
        ("Power", "W", "Accepted"),
        ("Current,Power", "A", "Accepted"),
        ("Current,Power", "W", "Accepted"),
    ],
)
def test_rate_unit(rate_unit, unit, expected):
    """A profile in a unit rate_unit does not allow (A: Current, W: Power)
    is Rejected."""
    cp = charge_point(ProfileRules(rate_unit=rate_unit))
    assert status(cp, profile(limit=6900.0 if unit == "W" else 10.0, unit=unit)) == expected
    assert (cp.ocpp_limit() is None) == (expected == "Rejected")


def test_tx_default_profile_rejected():
    """With tx_default_profile = reject every TxDefaultProfile is
    Rejected; a ChargePointMaxProfile is taken, and a TxProfile during the
    transaction, which then limits the car."""
    cp = charge_point(ProfileRules(tx_default_profile=False))
    assert status(cp, profile(purpose="TxDefaultProfile")) == "Rejected"
    assert status(cp, profile(16.0, purpose="ChargePointMaxProfile", profile_id=2)) == "Accepted"
    start_transaction(cp)
    assert status(cp, profile(8.0, purpose="TxDefaultProfile", profile_id=3)) == "Rejected"
    assert status(cp, profile(8.0, purpose="TxProfile", profile_id=4,
                              transaction_id=TRANSACTION_ID)) == "Accepted"
    assert cp.ocpp_limit() == 8.0


def test_tx_profile_for_the_running_transaction_only():
    """A TxProfile is taken only while a transaction runs, and only for
    it: one naming another transaction is Rejected, one naming none
    applies to the running one."""
    cp = charge_point()
    assert status(cp, profile(purpose="TxProfile", transaction_id=TRANSACTION_ID)) == "Rejected"
    start_transaction(cp)
    assert status(cp, profile(purpose="TxProfile", transaction_id=TRANSACTION_ID + 1)) == "Rejected"
    assert cp.ocpp_limit() is None
    assert status(cp, profile(9.0, purpose="TxProfile")) == "Accepted"
    assert cp.ocpp_limit() == 9.0


def test_more_periods_than_allowed_rejected():
    """A schedule with more periods than max_periods is Rejected; one with
    as many is taken."""
    cp = charge_point(ProfileRules(max_periods=2))
    assert status(cp, profile(periods=3)) == "Rejected"
    assert status(cp, profile(periods=2)) == "Accepted"
    assert status(charge_point(), profile(periods=25)) == "Rejected"


def test_more_profiles_than_allowed_rejected():
    """Once max_profiles are held, another one is Rejected, unless it
    replaces a held one (same id, or same purpose and stack level)."""
    cp = charge_point(ProfileRules(max_profiles=2))
    assert status(cp, profile(10.0, profile_id=1, stack=0)) == "Accepted"
    assert status(cp, profile(12.0, profile_id=2, stack=1)) == "Accepted"
    assert status(cp, profile(6.0, profile_id=3, stack=2)) == "Rejected"
    assert cp.ocpp_limit() == 12.0
    assert status(cp, profile(11.0, profile_id=2, stack=1)) == "Accepted"  # same id
    assert status(cp, profile(7.0, profile_id=4, stack=1)) == "Accepted"  # same purpose, level
    assert cp.ocpp_limit() == 7.0
    send(cp, "ClearChargingProfile", {"id": 1})
    assert status(cp, profile(6.0, profile_id=5, stack=2)) == "Accepted"


def test_rejection_logged_with_its_reason():
    """A Rejected profile is one info line naming the profile and why."""
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        status(charge_point(), profile(stack=9, profile_id=42))
    finally:
        globalLogPublisher.removeObserver(events.append)
    lines = [e for e in events if "SetChargingProfile" in e.get("log_format", "")]
    assert len(lines) == 1 and lines[0]["log_level"] == LogLevel.info
    text = formatEvent(lines[0])
    assert "42" in text and "max_stack_level" in text


def test_default_rules_take_what_cfosproxy_sends():
    """With the default rules the manager's own profile (TxDefaultProfile,
    stack level 1, A) is taken as it always was."""
    cp = charge_point()
    assert status(cp, profile(16.0, profile_id=1952001, stack=1)) == "Accepted"
    assert cp.ocpp_limit() == 16.0


# -- limits in W ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "watts,volts,number_phases,amps",
    [
        (6900.0, 230.0, None, 10.0),
        (6900.0, 230.0, 1, 10.0),  # the car draws on three phases all the same
        (4320.0, 120.0, None, 12.0),
    ],
)
def test_watts_limit_as_amperes(watts, volts, number_phases, amps):
    """A limit in W allows W / (voltage x 3) A per phase: the car draws on
    three phases, whatever numberPhases says."""
    cp = charge_point(ProfileRules(rate_unit="Power"), volts_per_phase=volts)
    assert status(cp, profile(watts, unit="W", number_phases=number_phases)) == "Accepted"
    assert cp.ocpp_limit() == pytest.approx(amps)


def test_watts_limit_limits_the_car():
    """Through the running wallbox, a W profile limits what the car draws,
    and its power is counted at the car's voltage; GetCompositeSchedule
    answers in A."""
    clock = task.Clock()
    clock.advance(1_795_428_000)
    model = PowerBrainModel(clock, plugged=True, volts_per_phase=120.0)
    device = Device(name="CB-1", type="modbus", address="CB-1", connector_id=1,
                    config=WallboxConfig(name="CB-1", type="modbus", address="v", id_tag="T"))
    virtual = VirtualWallbox(model, functools.partial(
        VirtualChargePoint, device, AcceptingGateway(), clock, car_max_current=32.0,
        rules=ProfileRules(rate_unit="Power"), volts_per_phase=120.0,
    ))
    virtual.tick()
    assert model.current == 32.0
    send(virtual.chargepoint, "SetChargingProfile", profile(4320.0, unit="W"))
    assert (model.current, model.power_w) == (12.0, 4320)
    schedule = send(virtual.chargepoint, "GetCompositeSchedule",
                    {"connectorId": 1, "duration": 60})["chargingSchedule"]
    assert schedule["chargingRateUnit"] == "A"
    assert schedule["chargingSchedulePeriod"][0]["limit"] == 12.0


def test_grid_meter_counts_power_at_the_car_voltage():
    """The grid meter's powers are at the wallbox's voltage, as the car's
    power is."""
    from cfosproxy.wallbox.meter import BuildingMeter

    model = PowerBrainModel(task.Clock(), plugged=True, volts_per_phase=120.0)
    model.set_ocpp(10.0, True)
    meter = BuildingMeter(model, 5.0)
    assert meter.powers() == (1800.0, 1800.0, 1800.0)
    assert meter.snapshot()["powers"] == [1800.0, 1800.0, 1800.0]


# -- the configuration file ------------------------------------------------------------


def test_config_defaults_are_the_default_rules():
    """An [ocpp] without the keys gives the default rules and 230 V."""
    config = wallbox_config_from_string("[ocpp]\n[car]\n", "w.ini")
    assert config.ocpp.rules == ProfileRules()
    assert config.car.voltage == 230.0


def test_config_values():
    """Each key reaches the rules; rate_unit and tx_default_profile are
    read in any case, rate_unit in either order."""
    config = wallbox_config_from_string(
        "[ocpp]\nmax_stack_level = 0\nrate_unit = power, CURRENT\ntx_default_profile = Reject\n"
        "max_periods = 1\nmax_profiles = 2\nconfiguration = no\n[car]\nvoltage = 120\n",
        "w.ini",
    )
    assert config.ocpp.rules == ProfileRules(
        max_stack_level=0, rate_unit="Current,Power", tx_default_profile=False,
        max_periods=1, max_profiles=2, configuration=False,
    )
    assert config.car.voltage == 120.0


@pytest.mark.parametrize(
    "text,section,key",
    [
        ("[ocpp]\nmax_stack_level = -1\n", "ocpp", "max_stack_level"),
        ("[ocpp]\nmax_stack_level = high\n", "ocpp", "max_stack_level"),
        ("[ocpp]\nrate_unit = A\n", "ocpp", "rate_unit"),
        ("[ocpp]\nrate_unit = Current,Current\n", "ocpp", "rate_unit"),
        ("[ocpp]\nrate_unit =\n", "ocpp", "rate_unit"),
        ("[ocpp]\ntx_default_profile = maybe\n", "ocpp", "tx_default_profile"),
        ("[ocpp]\nmax_periods = 0\n", "ocpp", "max_periods"),
        ("[ocpp]\nmax_profiles = 0\n", "ocpp", "max_profiles"),
        ("[ocpp]\nconfiguration = perhaps\n", "ocpp", "configuration"),
        ("[ocpp]\nmax_stack_levels = 8\n", "ocpp", "max_stack_levels"),
        ("[car]\nvoltage = 50\n", "car", "voltage"),
        ("[car]\nvoltage = 230V\n", "car", "voltage"),
    ],
)
def test_config_errors_name_file_section_and_key(text, section, key):
    """A bad value or an unknown key is a ConfigError naming the file, the
    section and the key."""
    with pytest.raises(ConfigError) as e:
        wallbox_config_from_string(text, "w.ini")
    assert (e.value.path, e.value.section, e.value.key) == ("w.ini", section, key)


def test_example_file_documents_the_defaults():
    """etc/cfoswallbox.ini shows the new keys commented out at their
    defaults: uncommented, they give the default rules and 230 V."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "etc", "cfoswallbox.ini"), encoding="utf-8") as f:
        text = f.read()
    keys = ("max_stack_level", "rate_unit", "tx_default_profile", "max_periods",
            "max_profiles", "configuration", "voltage")
    shown = [";{} =".format(key) for key in keys]
    lines = [line[1:] if line.startswith(tuple(shown)) else line for line in text.splitlines()]
    assert sum(line.startswith(keys) for line in lines) == len(keys)
    config = wallbox_config_from_string("\n".join(lines), "cfoswallbox.ini")
    assert config.ocpp.rules == ProfileRules()
    assert config.car.voltage == 230.0


def test_bad_rate_unit_lists_the_choices():
    """The error for rate_unit says what it may be and what it got."""
    with pytest.raises(ConfigError) as e:
        wallbox_config_from_string("[ocpp]\nrate_unit = Watts\n", "w.ini")
    assert "Current, Power, Current,Power" in str(e.value) and "Watts" in str(e.value)


def test_spell_rate_unit():
    """rate_unit is spelled as OCPP writes it, Current before Power."""
    assert spell_rate_unit("current") == "Current"
    assert spell_rate_unit(" Power ,current") == "Current,Power"
    assert spell_rate_unit("Current,Power,Current") is None
    assert spell_rate_unit("Current;Power") is None


def test_built_wallbox_follows_its_file():
    """``twistd cfoswallbox`` gives its charge point the rules of [ocpp]
    and its car the voltage of [car]."""
    from cfosproxy.wallbox.tap import Options, makeService

    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "cfoswallbox.ini")
        with open(path, "w", encoding="utf-8") as f:
            f.write("[ocpp]\nrate_unit = Power\nmax_profiles = 3\n[car]\nvoltage = 120\n")
        options = Options()
        options.parseOptions(["--config", path])
        top = makeService(options)
    virtual = [s for s in top if hasattr(s, "_virtual")][0]._virtual
    assert virtual.chargepoint.rules == ProfileRules(rate_unit="Power", max_profiles=3)
    assert virtual.model.volts_per_phase == 120.0
    assert status(virtual.chargepoint, profile(4320.0, unit="W")) == "Accepted"
    assert virtual.chargepoint.ocpp_limit() == pytest.approx(12.0)
