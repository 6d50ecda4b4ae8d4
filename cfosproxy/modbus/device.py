"""Joins a Modbus wallbox to the site: the registry's view of it, the load
manager, and (with a gateway) its OCPP charge point. Sans-IO."""

from cfosproxy.modbus.powerbrain import OCPP_STATUS


class ModbusDevice:
    """Passes what a L{cfosproxy.modbus.wallbox.ModbusWallbox} reads on.

    @param device: the registry's L{cfosproxy.core.devices.Device}.
    @param manager: the L{cfosproxy.site.manager.LoadManager}.
    @param clock: L{IReactorTime}.
    @param chargepoint: the device's L{ModbusChargePoint}, or None.
    @param backend_limit: C{backend_limit(device)}: a backend's limit now,
        or None; when it moves (a schedule's next period), the limit is
        written again.
    """

    def __init__(self, device, manager, clock, chargepoint=None, backend_limit=lambda device: None):
        self.device = device
        self._manager = manager
        self._clock = clock
        self.chargepoint = chargepoint
        self._backend_limit = backend_limit
        self._last_backend_limit = None

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
        device.currents = list(reading.currents)
        device.currents_at = self._clock.seconds()
        self._manager.reading(device.name)
        device.last_seen = self._clock.seconds()
        if wallbox.serial:
            device.boot = {"chargePointVendor": "cFos", "chargePointModel": "Power Brain",
                           "chargePointSerialNumber": wallbox.serial}
        if self.chargepoint is not None:
            if self.chargepoint.closed:
                self.chargepoint.online(wallbox.serial)
            self.chargepoint.reading_changed(reading)
        backend = self._backend_limit(device)
        if backend != self._last_backend_limit:
            self._last_backend_limit = backend
            self._manager.reapply(device.name)
        else:
            self._manager.refresh()
