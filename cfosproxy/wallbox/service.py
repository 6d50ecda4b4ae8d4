"""The virtual Power Brain running: the simulated device and its OCPP
charge point, kept in step once a second."""

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger

from cfosproxy.modbus.powerbrain import Reading
from cfosproxy.store.database import Store

TICK = 1.0


class VirtualWallbox:
    """Passes the device's state to the charge point and the charge
    point's permission and limit back to the device.

    @param model: the L{cfosproxy.wallbox.model.PowerBrainModel}.
    @param chargepoint: its L{VirtualChargePoint}.
    """

    _log = Logger()

    def __init__(self, model, chargepoint):
        self.model = model
        self.chargepoint = chargepoint

    def tick(self):
        """One step: integrate, tell the charge point, apply OCPP."""
        model = self.model
        model.update()
        self.chargepoint.reading_changed(
            Reading(
                state=model.state,
                enabled=model.modbus_enabled,
                energy_wh=int(model.energy_wh),
                power_w=int(model.power_w),
                currents=tuple(model.currents),
            )
        )
        self.allowed_changed()

    def allowed_changed(self):
        """OCPP's side changed (a transaction, availability, a profile)."""
        self.model.set_ocpp(self.chargepoint.ocpp_limit(), self.chargepoint.allows_charging)


def log_change(model, _log=Logger(namespace="cfoswallbox")):
    """The one log line per change of state, current and energy."""
    _log.info(
        "state {state}: {current:.1f} A, {power} W, {energy} Wh "
        "(Modbus {limit:.1f} A {enabled}, OCPP {ocpp})",
        state=model.state,
        current=model.current,
        power=int(model.power_w),
        energy=int(model.energy_wh),
        limit=model.modbus_limit,
        enabled="on" if model.modbus_enabled else "off",
        ocpp="allows" if model.ocpp_allows else "does not allow",
    )


class VirtualWallboxService(service.Service):
    """Runs the charge point's link and the once-a-second step.

    The offline queue of transaction messages is kept in memory (an SQLite
    database in memory): a real Power Brain keeps it across a restart, the
    virtual one does not.
    """

    def __init__(self, virtual, gateway, clock):
        self._virtual = virtual
        self._gateway = gateway
        self._clock = clock
        self._loop = None
        self.store = None

    def startService(self):
        service.Service.startService(self)
        self.store = Store(":memory:")
        log_change(self._virtual.model)  # where it starts from
        self._virtual.chargepoint.online(self._virtual.model.serial)
        self._loop = task.LoopingCall(self._virtual.tick)
        self._loop.clock = self._clock
        self._loop.start(TICK, now=True)

    def stopService(self):
        service.Service.stopService(self)
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._virtual.chargepoint.stop()
        self._gateway.stop()
        d = self._gateway.link.stop()
        d.addBoth(lambda result: self.store.close() or result)
        return d if d is not None else defer.succeed(None)
