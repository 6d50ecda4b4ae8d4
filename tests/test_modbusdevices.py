"""The glue between a Modbus wallbox, the registry and the manager."""

from twisted.internet import task

from cfosproxy.config import config_from_string
from cfosproxy.core.devices import DeviceRegistry
from cfosproxy.modbus.device import ModbusDevice
from cfosproxy.modbus.powerbrain import Reading


class FakeManager:
    def __init__(self):
        self.events = []

    def device_online(self, name):
        self.events.append(("online", name))

    def device_offline(self, name):
        self.events.append(("offline", name))

    def reading(self, name):
        self.events.append(("reading", name))

    def refresh(self):
        self.events.append(("refresh",))

    def reapply(self, name):
        self.events.append(("reapply", name))


class Wallbox:
    serial = "PB-7"


def setup(backend=None):
    clock = task.Clock()
    registry = DeviceRegistry(config_from_string("[wallbox:pb]\ntype = modbus\naddress = 10.0.0.9:4701\n"), clock)
    manager = FakeManager()
    limits = {"now": backend}
    joint = ModbusDevice(registry.get("pb"), manager, clock, backend_limit=lambda device: limits["now"])
    return joint, registry.get("pb"), manager, limits


def reading(state="B", energy=100):
    return Reading(state=state, enabled=True, energy_wh=energy, power_w=50, currents=(1.0, 1.0, 1.0))


def test_reading_updates_the_device():
    """A reading shows as OCPP status, energy, power, the current on each
    phase and serial; the manager hears of the new currents (it learns
    the car's phases from them) and shares again."""
    joint, device, manager, _ = setup()
    joint.on_online(Wallbox(), True)
    joint.on_reading(Wallbox(), reading("C", 4200))
    state = device.as_json()
    assert (state["connected"], state["status"], state["energy_wh"], state["serial"]) == (True, "Charging", 4200, "PB-7")
    assert state["currents"] == [1.0, 1.0, 1.0]
    assert manager.events == [("online", "pb"), ("reading", "pb"), ("refresh",)]
    assert device.wants_current


def test_offline_is_reported():
    """A device that stops answering is not connected, and the manager hears
    of it (it keeps counting the limit the device holds)."""
    joint, device, manager, _ = setup()
    joint.on_online(Wallbox(), True)
    joint.on_online(Wallbox(), False)
    assert not device.connected and manager.events[-1] == ("offline", "pb")


def test_backend_limit_change_writes_again():
    """When a backend's limit moves (its schedule's next period), the limit
    is written again; otherwise the manager just shares as usual."""
    joint, device, manager, limits = setup(backend=None)
    joint.on_reading(Wallbox(), reading())
    limits["now"] = 8.0
    joint.on_reading(Wallbox(), reading())
    joint.on_reading(Wallbox(), reading())
    assert [e for e in manager.events if e[0] != "reading"] == [
        ("refresh",), ("reapply", "pb"), ("refresh",)
    ]


def test_modbus_wants_current_from_state_b():
    """Without a gateway a Power Brain wants current as soon as a car is
    detected (B): it cannot go on to C without it; not in A."""
    joint, device, manager, _ = setup()
    joint.on_reading(Wallbox(), reading("B"))
    assert device.wants_current
    joint.on_reading(Wallbox(), reading("A"))
    assert not device.wants_current
