"""The virtual Power Brain running: the simulated device and its OCPP
charge point, kept in step once a second."""

from twisted.application import service
from twisted.internet import task
from twisted.logger import Logger

from cfosproxy.modbus.powerbrain import Reading
from cfosproxy.store import Store

TICK = 1.0


class VirtualWallbox:
    """Passes the device's state to the charge point and the charge
    point's permission and limit back to the device.

    @param model: the L{cfosproxy.wallbox.model.PowerBrainModel}.
    @param make_chargepoint: C{make_chargepoint(on_allowed_changed)} makes
        its L{cfosproxy.wallbox.chargepoint.VirtualChargePoint}, which calls
        C{on_allowed_changed()} when OCPP's side changes: this object's
        L{allowed_changed}, so the charge point is made here.
    @ivar chargepoint: the charge point.
    """

    _log = Logger()

    def __init__(self, model, make_chargepoint):
        self.model = model
        self.chargepoint = make_chargepoint(self.allowed_changed)

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


class MemoryStoreService(service.Service):
    """The virtual wallbox's store, open while it runs: the offline queue
    of transaction messages is kept in memory (an SQLite database in
    memory), as a real Power Brain keeps it across a restart and the
    virtual one does not.

    @ivar store: the open L{Store}; None before the service starts.
    """

    def __init__(self):
        self.store = None

    def startService(self):
        service.Service.startService(self)
        self.store = Store(":memory:")

    def stopService(self):
        service.Service.stopService(self)
        self.store.close()


class VirtualWallboxService(service.Service):
    """Runs the once-a-second step, and the charge point while the
    wallbox runs."""

    def __init__(self, virtual, clock):
        self._virtual = virtual
        self._clock = clock
        self._loop = None

    def startService(self):
        service.Service.startService(self)
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
