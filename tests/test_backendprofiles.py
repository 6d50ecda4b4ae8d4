"""A backend's charging profiles: kept, combined, cleared, or passed on."""

import pytest
from twisted.internet import defer, task

from cfosproxy.core.backendprofiles import BackendProfiles
from cfosproxy.config import config_from_string
from cfosproxy.core.devices import DeviceRegistry
from cfosproxy.ocpp.errors import OcppError
from cfosproxy.ocpp.frames import Call

CONFIG = "[wallbox:a]\ntype = ocpp\naddress = CB-1\nid = 1\n"


class FakeManager:
    """Steers or not; records reapply calls and answers them."""

    def __init__(self, steers=True, accepts=True):
        self.steers = steers
        self.accepts = accepts
        self.reapplied = []

    def controls(self, device):
        return self.steers

    def reapply(self, name):
        self.reapplied.append(name)
        return defer.succeed(self.accepts)


class FakeGateway:
    """What L{BackendProfiles.handle} uses of a gateway: its ChargeBox-ID,
    and passing a CALL on to the wallbox (recorded here)."""

    chargebox_id = "CB-1"

    def __init__(self):
        self.forwarded = []

    def pass_to_wallbox(self, call):
        self.forwarded.append(call)
        return defer.succeed("forwarded")


def profile_call(limit, profile_id=7, stack=0, purpose="TxDefaultProfile"):
    return Call("1", "SetChargingProfile", {"connectorId": 1, "csChargingProfiles": {
        "chargingProfileId": profile_id, "stackLevel": stack, "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Absolute",
        "chargingSchedule": {"startSchedule": "2026-11-23T00:00:00Z", "chargingRateUnit": "A",
                             "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}]}}})


def setup(manager):
    clock = task.Clock()
    clock.advance(1_795_428_000)  # 2026-11-23T10:00Z, after the startSchedule
    registry = DeviceRegistry(config_from_string(CONFIG), clock)
    profiles = BackendProfiles()
    profiles.serve(registry, manager)
    return profiles, registry.get("a"), clock, FakeGateway()


def test_set_keeps_limit_and_reapplies():
    """SetChargingProfile is kept (not forwarded), the manager sends the
    wallbox its combined profile, and the backend gets Accepted."""
    manager = FakeManager()
    profiles, device, clock, gateway = setup(manager)
    d = profiles.handle(gateway, profile_call(10.0))
    assert d.result == {"status": "Accepted"}
    assert manager.reapplied == ["a"] and gateway.forwarded == []
    assert profiles.limit_now(device, clock.seconds()) == 10.0


def test_same_id_or_level_replaces():
    """A profile with the same id, or the same purpose and stack level,
    replaces the one before (OCPP 1.6 §3.13.2)."""
    profiles, device, clock, gateway = setup(FakeManager())
    profiles.handle(gateway, profile_call(10.0, profile_id=7))
    profiles.handle(gateway, profile_call(20.0, profile_id=8))
    assert profiles.limit_now(device, clock.seconds()) == 20.0


def test_wallbox_refusal_reaches_backend():
    """When the wallbox does not accept the combined profile, the backend
    hears Rejected."""
    profiles, device, clock, gateway = setup(FakeManager(accepts=False))
    assert profiles.handle(gateway, profile_call(10.0)).result == {"status": "Rejected"}


def test_clear():
    """ClearChargingProfile removes the backend's profile (Accepted) and the
    local limit alone applies; nothing matching → Unknown."""
    manager = FakeManager()
    profiles, device, clock, gateway = setup(manager)
    profiles.handle(gateway, profile_call(10.0))
    clear = profiles.handle(gateway, Call("2", "ClearChargingProfile", {"id": 7}))
    assert clear.result == {"status": "Accepted"}
    assert profiles.limit_now(device, clock.seconds()) is None
    again = profiles.handle(gateway, Call("3", "ClearChargingProfile", {"id": 7}))
    assert again == {"status": "Unknown"}


def test_passed_through_when_not_steering():
    """In observe mode (the manager does not steer) the backend's profile
    goes to the wallbox unchanged."""
    profiles, device, clock, gateway = setup(FakeManager(steers=False))
    call = profile_call(10.0)
    assert profiles.handle(gateway, call).result == "forwarded"
    assert gateway.forwarded == [call]


def test_invalid_profile_refused():
    """A profile that breaks the schema gets a CALLERROR."""
    profiles, device, clock, gateway = setup(FakeManager())
    bad = Call("1", "SetChargingProfile", {"connectorId": 1, "csChargingProfiles": {"chargingProfileId": 1}})
    with pytest.raises(OcppError):
        profiles.handle(gateway, bad)
