"""Joins a Modbus wallbox to the site: the registry's view of it, the load
manager, and (with a gateway) its OCPP charge point. Sans-IO."""

from cfosproxy.powerbrain import OCPP_STATUS


class ModbusDevice:
    """Passes what a L{cfosproxy.modbus.ModbusWallbox} reads on.

    @param device: the registry's L{cfosproxy.devices.Device}.
    @param manager: the L{cfosproxy.manager.LoadManager}.
    @param clock: L{IReactorTime}.
    @param chargepoint: the device's L{ModbusChargePoint}, or None.
    """

    def __init__(self, device, manager, clock, chargepoint=None):
        self.device = device
        self._manager = manager
        self._clock = clock
        self.chargepoint = chargepoint

    def on_online(self, wallbox, online):
        """The Modbus device started or stopped answering."""
        self.device.connected = online
        self.device.peer = "{}:{}".format(self.device.config.host, self.device.config.port)
        if online:
            self._manager.device_online(self.device.name)
        else:
            self._manager.device_offline(self.device.name)
            if self.chargepoint is not None and not self.chargepoint.closed:
                self.chargepoint.offline()

    def on_reading(self, wallbox, reading):
        """A poll result: the device's state, energy and power."""
        device = self.device
        device.status = OCPP_STATUS[reading.state]
        device.energy_wh = reading.energy_wh
        device.power_w = reading.power_w
        device.last_seen = self._clock.seconds()
        if wallbox.serial:
            device.boot = {"chargePointVendor": "cFos", "chargePointModel": "Power Brain",
                           "chargePointSerialNumber": wallbox.serial}
        if self.chargepoint is not None:
            if self.chargepoint.closed:
                self.chargepoint.online(wallbox.serial)
            self.chargepoint.reading_changed(reading)
        self._manager.refresh()
