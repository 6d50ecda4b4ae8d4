"""A backend that flaps (up and down every second or so), in simulated time.

The gateway runs with a real SQLite store in a temporary directory, a
L{task.Clock}, a fake backend link and a scripted backend behind it, and a
wallbox session fed by a scripted charge point. The wallbox sends a stream
of transactions (StartTransaction, MeterValues, DataTransfer,
StopTransaction) and Heartbeats, one CALL at a time, as a charge point does,
while the link opens and closes and the backend answers at once, slowly
(often after the link is gone) or not at all.

What must hold once the backend has stayed up long enough:

  - every transaction message reached the backend, in the order the wallbox
    sent it;
  - a message reached it more than once only if it was the one in flight:
    the backend got it, its answer never reached the gateway, and the next
    transaction message the backend saw was that same message again;
  - every transaction id in a MeterValues or StopTransaction the backend
    sees is the id the backend gave that very transaction (in the answer
    that reached the gateway), so always one the backend gave out;
  - the wallbox got exactly one answer to each of its CALLs.
"""

import inspect
import itertools
import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import task
from zope.interface import implementer

from cfosproxy.core.gateway import TRANSACTION_ACTIONS, Gateway
from cfosproxy.core.localcs import LocalCentralSystem
from cfosproxy.core.interfaces import IPeerConnection
from cfosproxy.core.session import OcppSession
from cfosproxy.store import Store

CALL_TIMEOUT = 30.0
TIMESTAMP = "2026-11-23T10:00:00Z"
# Simulated seconds between two steps of the simulation: fine enough that
# link changes, answers and the wallbox's next CALL interleave.
STEP = 0.05


def temporary_store(clock):
    """A store in a fresh temporary directory, removed by the caller.

    Where the store commits its writes in groups (the daemon's
    configuration: a commit at the end of the reactor's turn), it does so
    here on the simulated clock, so that answers waiting for the commit are
    part of the simulation too.
    """
    # /dev/shm where there is one: the hypothesis variant writes a few
    # thousand small transactions, and fsync on a tmpfs costs nothing.
    directory = tempfile.mkdtemp(
        prefix="cfosproxy-flap-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None
    )
    path = os.path.join(directory, "store.sqlite")
    if "schedule_commit" in inspect.signature(Store).parameters:
        store = Store(path, schedule_commit=lambda commit: clock.callLater(0, commit))
    else:
        store = Store(path)
    return directory, store


# -- the backend ---------------------------------------------------------------


@dataclass
class Receipt:
    """One CALL as the backend got it, on which connection, and whether its
    answer reached the gateway."""

    connection: int
    frame: list
    answer: dict
    answered: bool = False


class Backend:
    """A central system behind the fake link: transaction ids from
    C{first_id} up; C{delay(frame)} says when it answers a CALL (seconds, or
    None for never). An answer is lost when the connection it belongs to
    closed before it was sent, as on a real socket."""

    def __init__(self, clock, delay, first_id=1000):
        self.clock = clock
        self.delay = delay
        self.gateway = None
        self.connection = None  # the number of the open connection, or None
        self.connections = 0
        self.receipts = []
        self._ids = itertools.count(first_id)
        self.given = set()

    def open(self):
        self.connections += 1
        self.connection = self.connections

    def close(self):
        self.connection = None

    def receive(self, text):
        frame = json.loads(text)
        # The backend sends no CALLs of its own here, so all it gets are CALLs.
        assert frame[0] == 2, frame
        receipt = Receipt(self.connection, frame, self._answer(frame))
        self.receipts.append(receipt)
        delay = self.delay(frame)
        if delay is not None:
            self.clock.callLater(delay, self._send, receipt)

    def _answer(self, frame):
        action, payload = frame[2], frame[3]
        if action == "BootNotification":
            return {"status": "Accepted", "currentTime": TIMESTAMP, "interval": 300}
        if action == "Heartbeat":
            return {"currentTime": TIMESTAMP}
        if action == "StartTransaction":
            # Given out when the message arrives, even if the answer is then
            # lost: a real backend opens the transaction at that moment.
            transaction_id = next(self._ids)
            self.given.add(transaction_id)
            return {"transactionId": transaction_id, "idTagInfo": {"status": "Accepted"}}
        if action == "DataTransfer":
            return {"status": "Accepted", "data": payload.get("data")}
        return {}

    def answer(self, unique_id):
        """Answer the CALL C{unique_id} now (for a backend whose C{delay}
        says never, driven by hand)."""
        [receipt] = [r for r in self.receipts if r.frame[1] == unique_id and r.connection == self.connection]
        self._send(receipt)

    def _send(self, receipt):
        if receipt.connection != self.connection:
            return  # that connection is gone, and the answer with it
        receipt.answered = True
        self.gateway.text_received(json.dumps([3, receipt.frame[1], receipt.answer]))


class Link:
    """The gateway's backend link, as far as the gateway uses it: frames
    sent while it is open go to the backend; one sent while it is not is
    dropped and the gateway hears that the link closed (as
    L{cfosproxy.ws.backend.BackendLink.send_text} does)."""

    url = "ws://backend.example/ocpp/CB-1"
    last_error = None

    def __init__(self, backend):
        self.backend = backend
        self.state = "connecting"

    def start(self):
        pass

    def stop(self):
        pass

    @property
    def peer(self):
        return self.url

    def send_text(self, text):
        if self.backend.connection is None:
            self.backend.gateway.link_closed("the link to the backend is closing")
            return False
        self.backend.receive(text)
        return True

    def close(self, code=1000, reason=""):
        pass


# -- the wallbox ---------------------------------------------------------------


@dataclass
class Sent:
    """One CALL of the wallbox: which transaction it belongs to (an index in
    the script, or None) and the answers it got."""

    unique_id: str
    action: str
    payload: dict
    transaction: int | None
    answers: list = field(default_factory=list)


@implementer(IPeerConnection)
class Wallbox:
    """A charge point, scripted: it sends one CALL at a time, the next one
    C{gap} seconds after the answer to the last, and uses the transaction id
    its StartTransaction was answered with in that transaction's later
    messages, as a real one does. A test may also L{send} CALLs by hand.

    @param script: steps C{(action, transaction index or None)}, all on
        connector 1.
    """

    peer = "192.0.2.10:50000"

    def __init__(self, clock, gateway, script, gap):
        self.clock = clock
        self.script = list(script)
        self.gap = gap
        self.sent = []
        self.stray = []  # frames the wallbox did not expect
        self.triggers = 0  # TriggerMessages the gateway sent after outages
        self.transaction_ids = {}
        self._ids = (str(n) for n in itertools.count(1))
        self._outstanding = None
        self._meter = itertools.count(1000, 250)
        self.session = OcppSession("CB-1", self, gateway.answer, (), clock, CALL_TIMEOUT)

    @property
    def done(self):
        return not self.script and self._outstanding is None

    # IPeerConnection: what the session sends to the wallbox.

    def send_text(self, text):
        frame = json.loads(text)
        if frame[0] == 2 and frame[2] == "TriggerMessage":
            # After each outage the gateway asks for the status again; a
            # real charge point accepts (and reports, which changes nothing
            # here).
            self.triggers += 1
            self.clock.callLater(
                0, self.session.text_received, json.dumps([3, frame[1], {"status": "Accepted"}])
            )
            return
        if frame[0] == 2:
            # No manager here, and the backend sends no CALLs: none expected.
            self.stray.append(frame)
            return
        matching = [s for s in self.sent if s.unique_id == frame[1]]
        if not matching:
            self.stray.append(frame)
            return
        matching[0].answers.append(frame)
        if self._outstanding is matching[0]:
            self._outstanding = None
            if frame[0] == 3 and matching[0].action == "StartTransaction":
                self.transaction_ids[matching[0].transaction] = frame[2]["transactionId"]
            self.clock.callLater(self.gap, self.send_next)

    def close(self, code, reason):
        self.stray.append(("closed", code, reason))

    # The charge point's side.

    def boot(self):
        self.send("BootNotification", {"chargePointVendor": "cFos", "chargePointModel": "Power Brain"})

    def send_next(self):
        if self._outstanding is not None or not self.script:
            return
        action, transaction = self.script.pop(0)
        self.send(action, self._payload(action, transaction), transaction)

    def _payload(self, action, transaction):
        timestamp = TIMESTAMP
        if action == "Heartbeat":
            return {}
        if action == "StartTransaction":
            return {"connectorId": 1, "idTag": "TAG{}".format(transaction), "meterStart": next(self._meter), "timestamp": timestamp}
        if action == "DataTransfer":
            return {"vendorId": "com.example.terminal", "messageId": "Receipt", "data": "tx {}".format(transaction)}
        transaction_id = self.transaction_ids[transaction]
        if action == "MeterValues":
            return {
                "connectorId": 1,
                "transactionId": transaction_id,
                "meterValue": [{"timestamp": timestamp, "sampledValue": [{"value": str(next(self._meter))}]}],
            }
        assert action == "StopTransaction", action
        return {"transactionId": transaction_id, "meterStop": next(self._meter), "timestamp": timestamp}

    def send(self, action, payload, transaction=None):
        """Send one CALL; returns its L{Sent}, where the answer will be."""
        sent = Sent(next(self._ids), action, payload, transaction)
        self.sent.append(sent)
        self._outstanding = sent
        self.session.text_received(json.dumps([2, sent.unique_id, action, payload]))
        return sent


def transactions(count, meter_values=3, data_transfer=True, heartbeats=True):
    """A script of C{count} transactions in a row, each with its meter
    values, a payment DataTransfer and Heartbeats between them."""
    script = []
    for n in range(count):
        script.append(("StartTransaction", n))
        if heartbeats:
            script.append(("Heartbeat", None))
        script.extend(("MeterValues", n) for _ in range(meter_values))
        if data_transfer:
            script.append(("DataTransfer", n))
        script.append(("StopTransaction", n))
        if heartbeats:
            script.append(("Heartbeat", None))
    return script


# -- the simulation ------------------------------------------------------------


class Simulation:
    """Gateway, store, link, backend and wallbox on one simulated clock.

    @param flaps: C{[(up, down), ...]} seconds, the backend's schedule; after
        the last pair the link opens for good.
    @param delay: the backend's C{delay(frame)} while it flaps.
    """

    def __init__(self, flaps, delay, script, gap=0.2, first_id=1000):
        self.clock = task.Clock()
        self.clock.advance(1_700_000_000)
        self.directory, self.store = temporary_store(self.clock)
        local = LocalCentralSystem(self.clock, 300, self.store.next_transaction_id)
        self.backend = Backend(self.clock, delay, first_id)
        self.link = Link(self.backend)
        self.gateway = Gateway(
            "CB-1", "CB-1", lambda: self.store, local, self.clock, CALL_TIMEOUT, "accept",
            link=lambda handler: self.link,
        )
        self.backend.gateway = self.gateway
        self.wallbox = Wallbox(self.clock, self.gateway, script, gap)
        self.gateway.session_opened(self.wallbox.session)
        self.flaps = list(flaps)

    def close(self):
        self.gateway.stop()
        self.store.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def open_link(self):
        self.backend.open()
        self.link.state = "connected"
        self.gateway.link_opened(self.link)

    def close_link(self):
        # As BackendLink does: the socket is gone first, then the handler
        # hears of it.
        self.backend.close()
        self.link.state = "connecting"
        self.gateway.link_closed("connection lost")

    def advance(self, seconds):
        for _ in range(max(1, round(seconds / STEP))):
            self.clock.advance(STEP)

    def run(self, settle=600.0):
        """The wallbox boots (backend down), then the backend flaps while the
        wallbox works through its script; then the backend stays up, answers
        at once, and the simulation runs until the wallbox is done and the
        queue is empty (or C{settle} simulated seconds passed)."""
        self.wallbox.boot()
        self.advance(0.5)
        self.wallbox.send_next()
        for up, down in self.flaps:
            self.open_link()
            self.advance(up)
            self.close_link()
            self.advance(down)
        self.backend.delay = lambda frame: 0.01
        self.open_link()
        waited = 0.0
        while not (self.wallbox.done and self.store.queue_length("CB-1") == 0) and waited < settle:
            self.advance(1.0)
            waited += 1.0
        # Answers still on their way (and the store's last commit).
        self.advance(1.0)

    # -- the checks ------------------------------------------------------------

    def check(self):
        """Assert everything the module docstring promises."""
        wallbox, backend = self.wallbox, self.backend
        assert wallbox.done, "the wallbox's script did not finish"
        assert wallbox.stray == []
        assert self.store.queue_length("CB-1") == 0
        assert self.store.dead_letters("CB-1") == []

        # One answer per CALL, and never a CALLERROR (the backend and the
        # local central system accept all of these).
        for sent in wallbox.sent:
            assert len(sent.answers) == 1, (sent.action, sent.unique_id, sent.answers)
            assert sent.answers[0][0] == 3, sent.answers[0]

        expected = [s for s in wallbox.sent if s.action in TRANSACTION_ACTIONS]
        receipts = [r for r in backend.receipts if r.frame[2] in TRANSACTION_ACTIONS]

        # In order, each once, except right-repeated (in-flight) ones.
        collapsed = [r.frame[1] for i, r in enumerate(receipts) if i == 0 or receipts[i - 1].frame[1] != r.frame[1]]
        assert collapsed == [s.unique_id for s in expected]

        # A repeated receipt: the earlier one was the message in flight; its
        # answer never reached the gateway.
        for earlier, later in zip(receipts, receipts[1:]):
            if earlier.frame[1] == later.frame[1]:
                assert not earlier.answered, earlier
        # The last receipt of each message was answered: that is how the
        # gateway knew it was delivered.
        last = {r.frame[1]: r for r in receipts}
        assert all(r.answered for r in last.values())

        # The backend's transaction id for each of the wallbox's
        # transactions: the one in the answer to its StartTransaction that
        # reached the gateway.
        backend_ids = {s.transaction: last[s.unique_id].answer["transactionId"] for s in expected if s.action == "StartTransaction"}
        by_id = {s.unique_id: s for s in expected}
        for receipt in receipts:
            sent = by_id[receipt.frame[1]]
            action, payload = receipt.frame[2], receipt.frame[3]
            if action in ("MeterValues", "StopTransaction"):
                assert payload["transactionId"] in backend.given
                assert payload["transactionId"] == backend_ids[sent.transaction], (receipt, backend_ids)
                # Nothing else in the message changed.
                assert payload == dict(sent.payload, transactionId=backend_ids[sent.transaction])
            else:
                assert payload == sent.payload

    def summary(self):
        """Counts, to show that the scenario exercised what it claims to."""
        receipts = [r for r in self.backend.receipts if r.frame[2] in TRANSACTION_ACTIONS]
        local = [
            s for s in self.wallbox.sent
            if s.action == "StartTransaction" and s.answers[0][2]["transactionId"] not in self.backend.given
        ]
        return {
            "connections": self.backend.connections,
            "messages": len([s for s in self.wallbox.sent if s.action in TRANSACTION_ACTIONS]),
            "duplicates": len(receipts) - len({r.frame[1] for r in receipts}),
            "started_locally": len(local),
        }


def seeded_delays(seed):
    """The backend's mood per CALL: mostly at once, often slowly (up to
    2.5 s, so longer than the link stays up), sometimes never."""
    rng = random.Random(seed)

    def delay(frame):
        roll = rng.random()
        if roll < 0.65:
            return 0.0
        if roll < 0.9:
            return rng.uniform(0.2, 2.5)
        return None

    return delay


def test_one_minute_of_flapping_loses_and_duplicates_nothing_but_in_flight():
    """For one simulated minute the backend link opens and closes every
    second while the backend answers at once, slowly or never, and the
    wallbox runs twelve transactions with meter values, payment
    DataTransfers and Heartbeats: every transaction message reaches the
    backend in order, each once except the message in flight at a drop;
    MeterValues and StopTransaction carry the backend's own id of their
    transaction; the wallbox gets one answer per CALL."""
    simulation = Simulation(
        flaps=[(1.0, 1.0)] * 30,
        delay=seeded_delays(1952),
        script=transactions(12),
        gap=1.0,
    )
    try:
        simulation.run()
        simulation.check()
        summary = simulation.summary()
    finally:
        simulation.close()
    # The scenario really flapped, re-sent in-flight messages and started
    # transactions both locally and at the backend (otherwise the checks
    # above would prove less than they claim).
    assert summary["connections"] == 31
    assert summary["duplicates"] > 0
    assert 0 < summary["started_locally"] < 12


def meter_values(connector_id, transaction_id):
    return {
        "connectorId": connector_id,
        "transactionId": transaction_id,
        "meterValue": [{"timestamp": TIMESTAMP, "sampledValue": [{"value": "1500"}]}],
    }


def test_start_that_meets_the_answer_before_it_in_one_turn_keeps_the_backend_id():
    """A StartTransaction arrives in the same reactor turn as the backend's
    answer to the queued message before it (two sockets readable at once:
    the moment a flapping backend catches up). Whether the wallbox then
    gets the backend's id or a local one, its MeterValues must reach the
    backend with the backend's id for that transaction.

    (The case the one-minute run above trips over, alone: the answer lets
    the queue move on to the StartTransaction before its enqueue is
    committed; the commit then finds it in flight, answers the wallbox with
    a local id, and that id is never mapped, because the delivery holds the
    queued row as it was read before the local id was noted.)"""
    simulation = Simulation(flaps=[], delay=lambda frame: None, script=[])
    try:
        wallbox, backend = simulation.wallbox, simulation.backend
        wallbox.boot()
        # While the backend is away, a payment DataTransfer is queued.
        wallbox.send("DataTransfer", {"vendorId": "com.example.terminal", "data": "paid"})
        simulation.advance(0.5)
        simulation.open_link()
        backend.answer(backend.receipts[-1].frame[1])  # the gateway's boot
        simulation.advance(0.5)
        in_flight = backend.receipts[-1].frame
        assert in_flight[2] == "DataTransfer"

        # One reactor turn: the wallbox's StartTransaction, then the
        # backend's answer to the DataTransfer; the turn ends after both.
        start = wallbox.send("StartTransaction", {"connectorId": 1, "idTag": "TAG1", "meterStart": 0, "timestamp": TIMESTAMP})
        backend.answer(in_flight[1])
        simulation.clock.advance(0)

        simulation.advance(0.5)
        assert backend.receipts[-1].frame[2] == "StartTransaction"
        backend.answer(start.unique_id)  # the backend's id: 1000
        simulation.advance(0.5)
        assert len(start.answers) == 1
        wallbox_id = start.answers[0][2]["transactionId"]

        # The queue is empty now: the MeterValues goes out at once.
        meter = wallbox.send("MeterValues", meter_values(1, wallbox_id))
        simulation.advance(0.5)
        [received] = [r.frame for r in backend.receipts if r.frame[1] == meter.unique_id]
        backend.answer(meter.unique_id)
        simulation.advance(0.5)
        assert received[3]["transactionId"] == 1000
        assert len(meter.answers) == 1
    finally:
        simulation.close()


def test_local_id_of_one_connector_is_not_the_backend_id_of_the_other():
    """A wallbox with two connectors behind one gateway, and a backend that
    counts its transaction ids from 1 (as many do), like cfosproxy's own
    counter: connector 1 starts while the backend is up and gets the
    backend's id 1; the link drops and connector 2 starts on a local id.
    The two running transactions must not share an id, and connector 1's
    MeterValues must still reach the backend with its own id 1, not be
    "mapped" to connector 2's transaction."""
    simulation = Simulation(flaps=[], delay=lambda frame: 0.0, script=[], first_id=1)
    try:
        wallbox, backend = simulation.wallbox, simulation.backend
        wallbox.boot()
        simulation.advance(0.5)
        simulation.open_link()
        simulation.advance(0.5)
        first = wallbox.send("StartTransaction", {"connectorId": 1, "idTag": "TAG1", "meterStart": 0, "timestamp": TIMESTAMP})
        simulation.advance(0.5)
        first_id = first.answers[0][2]["transactionId"]
        assert first_id == 1  # the backend's

        simulation.close_link()  # the backend flaps
        second = wallbox.send("StartTransaction", {"connectorId": 2, "idTag": "TAG2", "meterStart": 0, "timestamp": TIMESTAMP})
        simulation.advance(0.5)
        second_id = second.answers[0][2]["transactionId"]
        assert second_id != first_id, "two running transactions of one wallbox share id {}".format(first_id)

        simulation.open_link()
        simulation.advance(1.0)
        meter = wallbox.send("MeterValues", meter_values(1, first_id))
        simulation.advance(1.0)
        [received] = [r.frame for r in backend.receipts if r.frame[1] == meter.unique_id]
        assert received[3]["transactionId"] == 1
    finally:
        simulation.close()


# -- the property variant ------------------------------------------------------

# Durations in whole steps of the simulation (up to 3 s): events that fall
# into one step happen in one reactor turn, and whole steps make such
# meetings (an answer and the wallbox's next CALL at once) common enough
# for the search to find the races they may hide.
durations = st.integers(min_value=1, max_value=60).map(lambda n: n * STEP)

# One backend mood: answer after this many seconds, or never (None).
moods = st.one_of(st.just(0.0), durations, st.none())


@st.composite
def scenarios(draw):
    """A flapping schedule, the backend's answers and the wallbox's stream."""
    flaps = draw(
        st.lists(
            st.tuples(durations, durations),
            min_size=1,
            max_size=25,
        )
    )
    answers = draw(st.lists(moods, min_size=1, max_size=40))
    script = []
    for n in range(draw(st.integers(min_value=1, max_value=5))):
        script.append(("StartTransaction", n))
        for _ in range(draw(st.integers(min_value=0, max_value=3))):
            script.append(draw(st.sampled_from([("MeterValues", n), ("Heartbeat", None), ("DataTransfer", n)])))
        script.append(("StopTransaction", n))
        if draw(st.booleans()):
            script.append(("Heartbeat", None))
    gap = draw(st.sampled_from([0.0, STEP, 0.5, 1.5]))
    return flaps, answers, script, gap


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_any_flapping_schedule(scenario):
    """Whatever the schedule of ups and downs, the backend's speed per CALL
    (at once, slow, never) and the wallbox's stream of transactions and
    Heartbeats: nothing is lost, nothing is reordered, only an in-flight
    message is repeated, the backend's ids are used, and each CALL of the
    wallbox is answered once."""
    flaps, answers, script, gap = scenario
    cycle = itertools.cycle(answers)
    simulation = Simulation(flaps=flaps, delay=lambda frame: next(cycle), script=script, gap=gap)
    try:
        simulation.run()
        simulation.check()
    finally:
        simulation.close()
