"""The load manager with wallboxes that take limits in their own ways
(DESIGN §8), and across a restart of the daemon: it learns a wallbox's state
before its first limit, counts limits in W by what they let a car draw,
keeps what a restart needs, and does not stop a charging car."""

from twisted.internet import defer, task

from cfosproxy.config import config_from_string
from cfosproxy.core.devices import DeviceRegistry
from cfosproxy.core.errors import UnitChanged
from cfosproxy.core.interfaces import NO_LIMIT_HELD
from cfosproxy.ocpp.frames import Call, CallResult
from cfosproxy.site.manager import STATE_WAIT, LoadManager
from cfosproxy.site.strategy import LimitStrategy

START = {"connectorId": 1, "idTag": "T", "meterStart": 1000, "timestamp": "t"}


class Actuator:
    """Records what the manager asks; the test answers.

    @ivar status_coming: what C{prepare} fires with (whether the wallbox's
        StatusNotification is on its way)."""

    def __init__(self):
        self.prepared = []
        self.sent = []
        self.pending = {}
        self.status_coming = True
        self.save_log = None

    def prepare(self, device):
        self.prepared.append(device.name)
        return defer.succeed(self.status_coming)

    def set_limit(self, device, amps):
        if self.save_log is not None:
            self.save_log.append(("sent", device.name, amps))
        self.sent.append((device.name, amps))
        d = defer.Deferred()
        self.pending[device.name] = d
        return d

    def lift(self, device):
        return defer.succeed(None)

    def answer(self, name, result=None):
        self.pending.pop(name).callback(result)

    def fail(self, name, error):
        self.pending.pop(name).errback(error)


class Daemon:
    """A registry and a manager as the daemon wires them, with a store of
    kept states that outlives a restart (L{restart})."""

    def __init__(self, text, kept=None, clock=None):
        self.text = text
        self.clock = clock or task.Clock()
        self.kept = {} if kept is None else kept
        self.config = config_from_string(text)
        self.registry = DeviceRegistry(self.config, self.clock)
        self.actuator = Actuator()
        self.manager = LoadManager(
            self.config, self.registry, self.clock, lambda *a: None,
            save_state=self.save,
        )
        self.manager.connect_actuators({"ocpp": self.actuator})
        self.manager.restore_state(self.kept)

    def save(self, name, state):
        if self.actuator.save_log is not None:
            self.actuator.save_log.append(("kept", name, state["limit"], state["pending"]))
        self.kept[name] = dict(state)

    def restart(self):
        """A new daemon on the same kept states (the wallboxes go on)."""
        self.manager.stop()
        return Daemon(self.text, self.kept, self.clock)

    def device(self, name="A"):
        return self.registry.get(name)

    def connect(self, name="A", boot=True):
        for observer in (self.registry, self.manager):
            observer.connected(f"CB-{name}", "peer", None)
        self.clock.advance(0)
        if boot:
            self.deliver(name, "BootNotification", {"chargePointVendor": "v", "chargePointModel": "m"},
                         {"status": "Accepted", "currentTime": "t", "interval": 300})

    def deliver(self, name, action, payload, result=None):
        call, answer = Call("1", action, payload), CallResult("1", result or {})
        for observer in (self.registry, self.manager):
            observer.exchange(f"CB-{name}", call, answer)
        self.clock.advance(0)

    def status(self, name, status):
        self.deliver(name, "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": status})

    def start(self, name="A", transaction=7):
        self.deliver(name, "StartTransaction", START, {"transactionId": transaction, "idTagInfo": {"status": "Accepted"}})
        self.status(name, "Charging")

    def currents(self, name, amps):
        self.deliver(name, "MeterValues", {"connectorId": 1, "meterValue": [{"timestamp": "t", "sampledValue": [
            {"measurand": "Current.Import", "phase": p, "unit": "A", "value": str(a)}
            for p, a in zip(("L1", "L2", "L3"), amps)
        ] + [{"measurand": "Power.Active.Import", "unit": "W", "value": str(sum(amps) * 230)},
             {"measurand": "Energy.Active.Import.Register", "unit": "Wh", "value": "3500"}]}]})


def site(max_current=20, extra="", devices=("A",)):
    text = f"[manager]\nmax_current = {max_current}\n"
    for name in devices:
        text += f"[wallbox:{name}]\ntype = ocpp\naddress = CB-{name}\nmax_current = 16\n{extra}"
    return text


def test_the_first_limit_waits_for_the_state_the_wallbox_was_asked_for():
    """After the boot the wallbox is prepared; its first limit waits for
    the StatusNotification it was asked for, and goes as soon as it comes."""
    daemon = Daemon(site())
    daemon.connect()
    assert daemon.actuator.prepared == ["A"]
    assert daemon.actuator.sent == []
    daemon.status("A", "Available")
    assert daemon.actuator.sent == [("A", 0.0)]


def test_without_its_state_the_first_limit_goes_after_a_moment():
    """A wallbox whose StatusNotification does not come gets its limit
    after STATE_WAIT; one that said it will not send it, at once."""
    daemon = Daemon(site(devices=("A", "B")))
    daemon.connect("A")
    daemon.clock.advance(STATE_WAIT - 0.1)
    assert daemon.actuator.sent == []
    daemon.clock.advance(0.1)
    assert daemon.actuator.sent == [("A", 0.0)]
    daemon.actuator.status_coming = False
    daemon.connect("B")
    assert daemon.actuator.sent[-1] == ("B", 0.0)


def test_a_reconnect_without_boot_is_prepared_after_the_grace():
    """A wallbox that reconnects without a BootNotification is prepared
    (asked for its state) after BOOT_GRACE, like a booted one."""
    from cfosproxy.site.manager import BOOT_GRACE

    daemon = Daemon(site())
    daemon.connect(boot=False)
    assert daemon.actuator.prepared == []
    daemon.clock.advance(BOOT_GRACE)
    assert daemon.actuator.prepared == ["A"]


def test_a_limit_is_kept_on_disk_before_it_goes_out():
    """A raise is kept (as the limit in flight) before the actuator is
    called, and as the accepted limit once taken: a crash in between never
    leaves a kept limit lower than what the wallbox may hold."""
    daemon = Daemon(site())
    daemon.actuator.status_coming = False
    daemon.connect()
    daemon.actuator.answer("A")
    daemon.actuator.save_log = log = []
    daemon.start()
    sent = log.index(("sent", "A", 16.0))
    assert log[sent - 1] == ("kept", "A", 0.0, 16.0)
    daemon.actuator.answer("A")
    assert daemon.kept["A"]["limit"] == 16.0 and daemon.kept["A"]["pending"] is None
    assert daemon.kept["A"]["transaction_id"] == 7 and daemon.kept["A"]["status"] == "Charging"


def test_a_restart_does_not_stop_a_charging_car():
    """A car charges at 16 A; the daemon restarts. Before the wallbox is
    back the device counts at its kept 16 A; once back, it shows its
    transaction, and the first limit it gets is its grant, never 0 A."""
    daemon = Daemon(site(max_current=32, devices=("A", "B")))
    daemon.actuator.status_coming = False
    daemon.connect("A")
    daemon.connect("B")
    daemon.actuator.answer("A")
    daemon.actuator.answer("B")
    daemon.start("A")
    daemon.actuator.answer("A")
    assert daemon.device("A").accepted_limit == 16.0

    daemon = daemon.restart()
    device = daemon.device("A")
    assert device.accepted_limit == 16.0 and daemon.manager.exposure(device) == 16.0
    assert (device.transaction_id, device.status, device.meter_start) == (7, "Charging", 1000)
    daemon.connect("A")
    assert daemon.actuator.sent == []
    daemon.status("A", "Charging")
    assert daemon.actuator.sent == [("A", 16.0)]


def test_a_car_that_left_during_the_restart_gets_no_grant():
    """The kept transaction said charging; the StatusNotification the
    wallbox was asked for says Available: its limit goes to 0."""
    daemon = Daemon(site())
    daemon.actuator.status_coming = False
    daemon.connect()
    daemon.actuator.answer("A")
    daemon.start()
    daemon.actuator.answer("A")
    daemon = daemon.restart()
    daemon.connect()
    daemon.status("A", "Available")
    assert daemon.actuator.sent == [("A", 0.0)]
    assert daemon.device().power_w in (None, 0.0)


def test_a_kept_limit_in_flight_counts_as_possibly_taken():
    """The daemon stopped while a raise was in flight: after the restart
    the device counts at the higher limit until it answers a new one."""
    daemon = Daemon(site())
    daemon.actuator.status_coming = False
    daemon.connect()
    daemon.actuator.answer("A")
    daemon.start()
    assert daemon.device().pending_limit == 16.0
    daemon = daemon.restart()
    assert daemon.manager.exposure(daemon.device()) == 16.0


def test_a_stop_zeroes_power_and_currents_and_ends_the_transaction():
    """After StopTransaction the API shows no transaction, 0 W and 0 A,
    and the session's energy."""
    daemon = Daemon(site())
    daemon.connect()
    daemon.start()
    daemon.currents("A", [10.0, 10.0, 10.0])
    daemon.deliver("A", "StopTransaction", {"transactionId": 7, "meterStop": 4000, "timestamp": "t"})
    shown = daemon.device().as_json()
    assert (shown["transaction_id"], shown["id_tag"], shown["power_w"]) == (None, None, 0.0)
    assert shown["currents"] == [0.0, 0.0, 0.0]
    assert shown["session_energy_wh"] == 3000.0


def test_an_idle_status_zeroes_power_whatever_the_transaction_said():
    """A connector that shows Available draws nothing, also when the stop
    of its transaction never reached cfosproxy."""
    daemon = Daemon(site())
    daemon.connect()
    daemon.currents("A", [10.0, 10.0, 10.0])
    daemon.status("A", "Available")
    assert daemon.device().power_w == 0.0 and daemon.device().currents == [0.0, 0.0, 0.0]


def test_a_limit_in_watts_counts_until_the_phases_are_known():
    """A 32 A wallbox limited in W on a 20 A site: its limit of 6.6 A (sent
    as 6.6 × 230 × 3 W) counts at 3 × 6.6 = 19.8 A on each phase until a
    reading shows which phases the car uses; seen on all three, at 6.6 A;
    seen on L1 only, the same watts count 19.8 A there."""
    text = ("[manager]\nmax_current = 20\n[wallbox:A]\ntype = ocpp\naddress = CB-A\n"
            "max_current = 32\nrate_unit = W\ncharging_profile = TxDefaultProfile\nstack_level = 1\n")
    daemon = Daemon(text)
    daemon.actuator.status_coming = False
    daemon.connect()
    daemon.actuator.answer("A")
    daemon.start()
    device = daemon.device()
    assert daemon.actuator.sent[-1] == ("A", 6.6)
    daemon.actuator.answer("A")
    assert round(daemon.manager.exposure(device), 6) == 19.8
    daemon.currents("A", [6.6, 6.6, 6.6])
    assert round(daemon.manager.exposure(device), 6) == 6.6
    daemon.start("A", transaction=8)
    daemon.currents("A", [19.8, 0.0, 0.0])
    assert device.phases == ("L1",)
    assert round(daemon.manager.exposure(device), 6) == 19.8


def test_watts_on_a_tight_site_are_sent_for_the_worst_car():
    """On a 16 A site a 32 A wallbox limited in W would let a single-phase
    car draw 3 × its limit: until its phases are known it needs 3 × its
    6 A minimum, which does not fit, so it waits with a grant of 0 (shown
    as such, not a grant it is held below)."""
    text = "[manager]\nmax_current = 16\n[wallbox:A]\ntype = ocpp\naddress = CB-A\nmax_current = 32\nrate_unit = W\n"
    daemon = Daemon(text)
    daemon.actuator.status_coming = False
    daemon.connect()
    daemon.actuator.answer("A")
    daemon.start()
    assert daemon.device().grant == 0.0
    assert daemon.actuator.sent == [("A", 0.0)]
    assert daemon.manager.exposure(daemon.device()) == 0.0


def test_a_limit_refused_in_amperes_goes_again_at_once_in_watts():
    """UnitChanged: the next way is in W; the manager sends again at once
    (not after the retry delay) and counts it in W."""
    daemon = Daemon(site(max_current=32))
    daemon.actuator.status_coming = False
    daemon.connect()
    daemon.actuator.fail("A", UnitChanged("A refused; next: W"))
    daemon.clock.advance(0)
    assert daemon.actuator.sent == [("A", 0.0), ("A", 0.0)]


def test_no_limit_held_counts_the_wallbox_at_its_maximum_while_it_charges():
    """A wallbox that takes limits only for a transaction and no default:
    NO_LIMIT_HELD leaves it without a limit (nothing more is sent while it
    is idle); when its car starts it counts at max_current until its
    transaction's limit is accepted."""
    daemon = Daemon(site(extra="charging_profile = TxProfile\n"))
    daemon.actuator.status_coming = False
    daemon.connect()
    strategy = daemon.device().strategy
    assert isinstance(strategy, LimitStrategy)
    strategy.default_limit = False
    daemon.actuator.answer("A", NO_LIMIT_HELD)
    device = daemon.device()
    assert device.accepted_limit is None and daemon.manager.exposure(device) == 0.0
    daemon.clock.advance(120)
    assert daemon.actuator.sent == [("A", 0.0)]
    daemon.deliver("A", "StartTransaction", START, {"transactionId": 7, "idTagInfo": {"status": "Accepted"}})
    assert daemon.manager.exposure(device) == 16.0
    assert daemon.actuator.sent[-1] == ("A", 16.0)
    daemon.actuator.answer("A")
    assert daemon.manager.exposure(device) == 16.0 and device.accepted_limit == 16.0
    daemon.deliver("A", "StopTransaction", {"transactionId": 7, "meterStop": 4000, "timestamp": "t"})
    assert device.accepted_limit is None


def test_a_transaction_profile_goes_with_its_transaction_only():
    """Two connectors of one wallbox, limits as TxProfiles: a transaction
    starting on connector 2 leaves connector 1's limit as it is; the end of
    connector 1's transaction ends its limit."""
    text = "[manager]\nmax_current = 32\n" + "".join(
        f"[wallbox:{n}]\ntype = ocpp\naddress = CB-A\nid = {i}\nmax_current = 16\ncharging_profile = TxProfile\n"
        for i, n in ((1, "one"), (2, "two"))
    )
    daemon = Daemon(text)
    daemon.actuator.status_coming = False
    for observer in (daemon.registry, daemon.manager):
        observer.connected("CB-A", "peer", None)
    daemon.deliver("A", "BootNotification", {"chargePointVendor": "v", "chargePointModel": "m"},
                   {"status": "Accepted", "currentTime": "t", "interval": 300})
    for name in ("one", "two"):
        daemon.device(name).strategy.default_limit = False
        daemon.actuator.answer(name, NO_LIMIT_HELD)
    daemon.deliver("A", "StartTransaction", START, {"transactionId": 7, "idTagInfo": {"status": "Accepted"}})
    daemon.actuator.answer("one")
    one = daemon.device("one")
    assert one.accepted_limit == 16.0
    daemon.deliver("A", "StartTransaction", {**START, "connectorId": 2},
                   {"transactionId": 8, "idTagInfo": {"status": "Accepted"}})
    assert one.accepted_limit == 16.0
    daemon.deliver("A", "StopTransaction", {"transactionId": 7, "meterStop": 4000, "timestamp": "t"})
    assert one.accepted_limit is None


def test_after_a_restart_a_new_transaction_does_not_inherit_the_old_profile():
    """Kept: a 10 A TxProfile for transaction 7 on a wallbox without a
    default limit. After the restart the wallbox reports transaction 9:
    the old limit is gone with its transaction, and the device counts at
    its maximum until its new limit is taken."""
    daemon = Daemon(site(max_current=10, extra="charging_profile = TxProfile\n"))
    daemon.actuator.status_coming = False
    daemon.connect()
    daemon.device().strategy.default_limit = False
    daemon.actuator.answer("A", NO_LIMIT_HELD)
    daemon.start()
    daemon.actuator.answer("A")
    assert daemon.kept["A"]["limit_transaction"] == 7
    daemon = daemon.restart()
    device = daemon.device()
    assert daemon.manager.exposure(device) == 10.0
    daemon.connect()
    daemon.deliver("A", "StartTransaction", START, {"transactionId": 9, "idTagInfo": {"status": "Accepted"}})
    daemon.status("A", "Charging")
    assert device.accepted_limit is None
    assert daemon.manager.exposure(device) == 16.0


def test_observe_mode_asks_the_wallbox_nothing():
    """In mode = observe the manager neither asks a wallbox how it takes
    limits nor sends it any."""
    daemon = Daemon("[manager]\nmode = observe\n" + site().split("\n", 2)[2])
    daemon.connect()
    daemon.start()
    daemon.clock.advance(STATE_WAIT)
    assert (daemon.actuator.prepared, daemon.actuator.sent) == ([], [])


def test_a_wallbox_in_watts_is_shared_what_its_limit_counts_for():
    """A 32 A wallbox limited in W, phases not known, on a 20 A site: it is
    shared 20 A of what it counts for, so its limit is 20 / 3 = 6.6 A (sent
    as 6.6 × 230 × 3 W, which a single-phase car could draw as 19.8 A);
    beside a car in A it is admitted only when 3 × its 6 A minimum fit."""
    text = ("[manager]\nmax_current = 20\n"
            "[wallbox:W]\ntype = ocpp\naddress = CB-W\nmax_current = 32\nrate_unit = W\n"
            "[wallbox:A]\ntype = ocpp\naddress = CB-A\nmax_current = 16\n")
    daemon = Daemon(text)
    daemon.actuator.status_coming = False
    for name in ("W", "A"):
        daemon.connect(name)
        daemon.actuator.answer(name)
    daemon.start("W")
    assert daemon.actuator.sent[-1] == ("W", 6.6)
    assert daemon.device("W").grant == 6.6
    daemon.actuator.answer("W")
    assert daemon.manager.exposure(daemon.device("W")) <= 20.0
    daemon.deliver("W", "StopTransaction", {"transactionId": 7, "meterStop": 4000, "timestamp": "t"})
    daemon.status("W", "Available")
    daemon.actuator.answer("W")
    daemon.start("A", transaction=8)
    daemon.actuator.answer("A")
    daemon.start("W", transaction=9)
    # 20 - A's 6 A minimum leaves 14: less than 18, W's minimum in W.
    assert daemon.device("W").grant == 0.0
