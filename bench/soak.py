"""Soak benchmark: many wallboxes with realistic intervals through cfosproxy's
gateway for a long run, with the backend restarted twice; every transaction
message accounted for at the backend, cfosproxy's memory flat.

    python bench/soak.py [--wallboxes 500] [--minutes 10] [--down 25] [--json out.json]

Three processes on loopback: the backend (bench/backend.py, which logs every
CALL it receives), cfosproxy under ``twistd -n`` with a gateway per wallbox
(``mode = control`` with a site limit that never binds, so the manager's
profiles flow too), and this load generator. Each simulated wallbox keeps
its own rhythm, every interval jittered:

- Heartbeat about every 60 s;
- a charging cycle: StatusNotification Preparing, Authorize,
  StartTransaction, Charging, MeterValues every 10-30 s with the meter
  growing at the car's power, StopTransaction with meterStop after 1-4
  minutes, Finishing, Available; idle for 0.5-2 minutes; again.

``--scale`` divides every interval (a quicker, denser run). The backend is
stopped at 1/3 and 2/3 of the run for ``--down`` seconds; meanwhile
cfosproxy answers the wallboxes itself and queues their transaction
messages, and delivers them once the backend is back.

What it checks at the end, after cfosproxy's queues are empty:

- every StartTransaction, StopTransaction and MeterValues the wallboxes
  sent reached the backend: missing, duplicated, unexpected, altered (the
  payload apart from the transaction id), out of order per wallbox; keyed by
  wallbox and the message's own timestamp (unique per wallbox), not by the
  transaction id, which cfosproxy may rewrite;
- every StopTransaction and MeterValues reached the backend with the id the
  backend gave that session's StartTransaction (reconstructed from the
  backend's log: it hands out ids in log order, starting after the lines
  already in the log);
- cfosproxy's RSS every 10 s (slope after warm-up, and within each steady
  stretch between the outages, where a leak shows) and its CPU time, against
  the backend's in the same run, and against the same load sent directly to
  a backend for a shorter baseline run (``--baseline-minutes``, 0: none);
- warnings and errors in cfosproxy's twistd.log.

Duplicates are not losses: a message the backend received (and logged) just
before it went down, whose answer never reached cfosproxy, is delivered
again after the restart (at-least-once delivery; OCPP 1.6 has no other
way). They are reported apart, with whether both copies lie on either side
of a restart.
"""

import argparse
import asyncio
import collections
import json
import os
import random
import re
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timezone

import websockets

import common

TX_ACTIONS = ("StartTransaction", "StopTransaction", "MeterValues")

# Realistic intervals, in seconds (divided by --scale).
HEARTBEAT = 60.0
METER_INTERVAL = (10.0, 30.0)
CHARGE_TIME = (60.0, 240.0)
IDLE_TIME = (30.0, 120.0)
POWERS_W = (3700, 7400, 11000, 22000)

# A wallbox waits this long for an answer; cfosproxy answers itself after
# its call_timeout (30 s) at the latest.
CALL_WAIT = 120.0


class SoakWallbox(common.Wallbox):
    """A wallbox that reads all the time: CALLs from the server (the
    manager's profiles) are answered at once, also while the wallbox idles,
    and WebSocket pings are answered as they come. One CALL of its own at a
    time, as OCPP-J asks."""

    def __init__(self, ws):
        super().__init__(ws)
        self._pending = {}
        self._lock = asyncio.Lock()
        self.server_calls = collections.Counter()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self):
        try:
            async for text in self.ws:
                frame = json.loads(text)
                if frame[0] == 2:
                    self.server_calls[frame[2]] += 1
                    await self.ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))
                    continue
                waiter = self._pending.pop(frame[1], None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(frame)
        except websockets.ConnectionClosed:
            pass
        finally:
            for waiter in self._pending.values():
                if not waiter.done():
                    waiter.set_exception(ConnectionError("connection closed"))
            self._pending.clear()

    async def call(self, action, payload):
        return (await self.send(action, payload))[1]

    async def send(self, action, payload):
        """Send a CALL; C{(unique id, answer frame, seconds from sending to
        the answer)}.

        @raise ConnectionError: the connection closed first.
        @raise asyncio.TimeoutError: no answer within L{CALL_WAIT}.
        """
        async with self._lock:
            self.n += 1
            unique_id = "m{}".format(self.n)
            if self._reader.done():
                raise ConnectionError("connection closed")
            waiter = asyncio.get_running_loop().create_future()
            self._pending[unique_id] = waiter
            started = time.monotonic()
            try:
                await self.ws.send(json.dumps([2, unique_id, action, payload]))
                answer = await asyncio.wait_for(waiter, CALL_WAIT)
                return unique_id, answer, time.monotonic() - started
            except websockets.ConnectionClosed as e:
                raise ConnectionError("connection closed") from e
            finally:
                self._pending.pop(unique_id, None)

    async def close(self):
        await self.ws.close()
        await self._reader


class Ledger:
    """What the wallboxes sent and what happened to it, for one phase."""

    def __init__(self):
        self.sent = []  # one dict per transaction message
        self.rtt = collections.defaultdict(list)  # action -> seconds
        self.errors = collections.Counter()  # "action: what" -> count
        self.authorize_refused = 0
        self.start_refused = 0
        self.sessions = 0
        self.reconnects = 0
        self.server_calls = collections.Counter()


async def pause(stop, seconds):
    """Sleep C{seconds}; True at once when C{stop} is set."""
    if seconds <= 0:
        return stop.is_set()
    try:
        await asyncio.wait_for(stop.wait(), seconds)
        return True
    except asyncio.TimeoutError:
        return False


class Station:
    """One simulated wallbox's behaviour: its meter, its sessions, its
    heartbeat."""

    def __init__(self, index, url, box, ledger, rng, scale):
        self.index = index
        self.client = url.rstrip("/").rsplit("/", 1)[-1]
        self.url = url
        self.box = box
        self.ledger = ledger
        self.rng = rng
        self.scale = scale
        self.id_tag = "TAG{:05d}".format(index)
        self.energy = float(rng.randint(100_000, 5_000_000))  # Wh on the meter
        self.session = 0
        self._last_ms = 0
        self._reconnecting = asyncio.Lock()

    def stamp(self):
        """Now as an OCPP time, strictly increasing per wallbox: the key by
        which a message is found again at the backend."""
        ms = max(int(time.time() * 1000), self._last_ms + 1)
        self._last_ms = ms
        return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%S.{:03d}Z".format(ms % 1000)
        )

    def interval(self, low, high=None):
        seconds = self.rng.uniform(low, high) if high is not None else low * self.rng.uniform(0.9, 1.1)
        return seconds / self.scale

    async def call(self, action, payload):
        """Send a CALL; the answer frame, or None when none came (counted).
        Transaction messages go into the ledger, answered or not."""
        record = None
        if action in TX_ACTIONS:
            if action == "MeterValues":
                key = payload["meterValue"][0]["timestamp"]
            else:
                key = payload["timestamp"]
            record = {
                "client": self.client, "action": action, "key": key, "payload": payload,
                "session": self.session, "answer": None, "unique_id": None,
            }
            self.ledger.sent.append(record)
        box = self.box
        try:
            unique_id, answer, seconds = await box.send(action, payload)
        except asyncio.TimeoutError:
            self.ledger.errors[action + ": no answer"] += 1
            return None
        except ConnectionError:
            self.ledger.errors[action + ": connection lost"] += 1
            await self.reconnect(box)
            return None
        self.ledger.rtt[action].append(seconds)
        if record is not None:
            record["unique_id"] = unique_id
            record["answer"] = "result" if answer[0] == 3 else "error"
        if answer[0] != 3:
            self.ledger.errors["{}: CALLERROR {}".format(action, answer[2])] += 1
            return None
        return answer

    async def reconnect(self, lost):
        """cfosproxy dropped the wallbox: connect again, as a wallbox does
        (once, when the heartbeat and the session both notice)."""
        async with self._reconnecting:
            if self.box is not lost:
                return
            self.ledger.reconnects += 1
            self.ledger.server_calls.update(lost.server_calls)
            while True:
                try:
                    box = await SoakWallbox.connect(self.url, compression=None)
                    break
                except Exception:
                    await asyncio.sleep(5)
            # Unique ids go on from where the lost connection stopped.
            box.n = max(box.n, lost.n)
            self.box = box

    async def status(self, status):
        await self.call("StatusNotification", {
            "connectorId": 1, "errorCode": "NoError", "status": status, "timestamp": self.stamp(),
        })

    async def heartbeat(self, stop):
        while not await pause(stop, self.interval(HEARTBEAT)):
            await self.call("Heartbeat", {})

    async def run(self, stop):
        # Wallboxes come up at different moments, not all in one second.
        if await pause(stop, self.interval(0, 10)):
            return
        heartbeat = asyncio.get_running_loop().create_task(self.heartbeat(stop))
        await self.status("Available")
        # The first car comes at a random moment, so that the wallboxes'
        # cycles are spread out from the start.
        if not await pause(stop, self.interval(0, IDLE_TIME[1])):
            while True:
                await self.charge(stop)
                if await pause(stop, self.interval(*IDLE_TIME)):
                    break
        await heartbeat
        self.ledger.server_calls.update(self.box.server_calls)

    async def charge(self, stop):
        """One session: plug in, authorize, charge with meter values, stop."""
        self.session += 1
        self.ledger.sessions += 1
        await self.status("Preparing")
        answer = await self.call("Authorize", {"idTag": self.id_tag})
        if answer is None or answer[2]["idTagInfo"]["status"] != "Accepted":
            # Backend away and the tag not in cfosproxy's cache (yet): the
            # driver gives up, as at a real wallbox.
            self.ledger.authorize_refused += answer is not None
            await self.status("Available")
            return
        answer = await self.call("StartTransaction", {
            "connectorId": 1, "idTag": self.id_tag, "meterStart": int(self.energy),
            "timestamp": self.stamp(),
        })
        if answer is None:
            await self.status("Available")
            return
        transaction_id = answer[2]["transactionId"]
        reason = "EVDisconnected"
        if answer[2]["idTagInfo"]["status"] != "Accepted":
            self.ledger.start_refused += 1
            reason = "DeAuthorized"
        else:
            await self.status("Charging")
            power = self.rng.choice(POWERS_W) * self.rng.uniform(0.85, 1.0)
            end = time.monotonic() + self.interval(*CHARGE_TIME)
            last = time.monotonic()
            while True:
                wait = min(self.interval(*METER_INTERVAL), end - time.monotonic())
                stopped = await pause(stop, wait)
                now = time.monotonic()
                # The meter runs in real time, however compressed the run.
                self.energy += power * (now - last) * self.scale / 3600
                last = now
                if stopped or now >= end:
                    break
                await self.call("MeterValues", {
                    "connectorId": 1, "transactionId": transaction_id,
                    "meterValue": [{"timestamp": self.stamp(), "sampledValue": [
                        {"value": str(int(self.energy)), "context": "Sample.Periodic",
                         "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
                        {"value": str(int(power)), "context": "Sample.Periodic",
                         "measurand": "Power.Active.Import", "unit": "W"},
                        {"value": "{:.1f}".format(power / 690), "context": "Sample.Periodic",
                         "measurand": "Current.Import", "phase": "L1", "unit": "A"},
                    ]}],
                })
            await self.status("Finishing")
        await self.call("StopTransaction", {
            "transactionId": transaction_id, "meterStop": int(self.energy),
            "timestamp": self.stamp(), "idTag": self.id_tag, "reason": reason,
        })
        await self.status("Available")


async def connect_all(urls, concurrency=50):
    limit = asyncio.Semaphore(concurrency)

    async def one(url):
        async with limit:
            # Without permessage-deflate, as wallboxes talk to cfosproxy: the
            # websockets client and the bench backend would otherwise agree
            # on it, and the direct baseline would not be comparable.
            return await SoakWallbox.connect(url, compression=None)

    return await asyncio.gather(*(one(url) for url in urls))


def devices(status_port):
    """cfosproxy's status API, C{/api/devices}."""
    url = "http://127.0.0.1:{}/api/devices".format(status_port)
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.load(response)["devices"]


def gateway_summary(status_port):
    """C{(links connected and booted, queued messages, dead letters)}."""
    ready = queued = dead = 0
    for device in devices(status_port):
        gateway = device.get("gateway") or {}
        ready += gateway.get("link") == "connected" and bool(gateway.get("booted"))
        queued += gateway.get("queue_length") or 0
        dead += gateway.get("dead_letters") or 0
    return ready, queued, dead


def count_lines(path):
    """Lines in C{path}, counted as bench/backend.py counts them when it
    starts (its first transaction id is this plus one)."""
    try:
        with open(path) as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def slope_per_minute(samples):
    """Least-squares slope of C{[(seconds, value)]}, per minute."""
    if len(samples) < 2:
        return None
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_v = sum(v for _, v in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    if var == 0:
        return None
    return 60 * sum((t - mean_t) * (v - mean_v) for t, v in samples) / var


def steady_slopes(samples, windows):
    """The slope of C{[(seconds, value)]} within each window, per minute
    (None where a window holds fewer than two samples): a step at an outage
    must not pass for a trend, and the last stretch, with everything warmed
    up, says most about a leak."""
    return [slope_per_minute([(t, v) for t, v in samples if start <= t <= end]) for start, end in windows]


def _key(action, payload):
    if action == "MeterValues":
        return payload["meterValue"][0]["timestamp"]
    return payload["timestamp"]


def _without_tx(payload):
    return {k: v for k, v in payload.items() if k != "transactionId"}


def account(ledger, log_path, starts):
    """Compare what the wallboxes sent with the backend's log.

    @param starts: the log's line count at each start of the backend, in
        order: the backend gives out transaction ids from that count + 1, in
        the order of its log lines.
    """
    received = collections.defaultdict(list)  # (client, action, key) -> copies
    given = {}  # client -> set of transaction ids the backend gave it
    segment = -1
    next_id = None
    with open(log_path) as f:
        for line_no, line in enumerate(f):
            while segment + 1 < len(starts) and line_no >= starts[segment + 1]:
                segment += 1
                next_id = starts[segment] + 1
            client, unique_id, action, payload = json.loads(line)
            if action not in TX_ACTIONS:
                continue
            copy = {"line": line_no, "segment": segment, "unique_id": unique_id, "payload": payload}
            if action == "StartTransaction":
                copy["given_id"] = next_id
                given.setdefault(client, set()).add(next_id)
                next_id += 1
            received[(client, action, _key(action, payload))].append(copy)

    kinds = {
        action: collections.Counter(sent=0, received=0, missing=0, missing_answered=0,
                                     duplicates=0, altered=0, unique_id_changed=0)
        for action in TX_ACTIONS
    }
    duplicates = {"across_restart": 0, "same_backend_run": 0, "examples": []}
    tx = collections.Counter(checked=0, rewritten=0, ok=0, start_missing=0,
                             other_session=0, not_given_by_backend=0)
    bad_tx = []
    missing = []
    start_ids = {}  # (client, session) -> ids the backend gave that Start's copies
    sent_keys = set()
    order = collections.defaultdict(list)  # client -> first line of each message, in sent order
    for record in ledger.sent:
        if record["action"] == "StartTransaction":
            copies = received.get((record["client"], record["action"], record["key"]), [])
            start_ids[(record["client"], record["session"])] = {c["given_id"] for c in copies}
    for record in ledger.sent:
        action, client = record["action"], record["client"]
        key = (client, action, record["key"])
        sent_keys.add(key)
        kind = kinds[action]
        kind["sent"] += 1
        copies = received.get(key, [])
        if not copies:
            kind["missing"] += 1
            kind["missing_answered"] += record["answer"] is not None
            if len(missing) < 20:
                missing.append({k: record[k] for k in ("client", "action", "key", "answer", "unique_id")})
            continue
        kind["received"] += 1
        order[client].append(copies[0]["line"])
        if len(copies) > 1:
            kind["duplicates"] += len(copies) - 1
            if len({c["segment"] for c in copies}) == len(copies):
                duplicates["across_restart"] += len(copies) - 1
            else:
                duplicates["same_backend_run"] += len(copies) - 1
            if len(duplicates["examples"]) < 10:
                duplicates["examples"].append({
                    "client": client, "action": action, "key": record["key"],
                    "lines": [c["line"] for c in copies], "backend_runs": [c["segment"] for c in copies],
                })
        sent_tx = record["payload"].get("transactionId")
        for copy in copies:
            if _without_tx(copy["payload"]) != _without_tx(record["payload"]):
                kind["altered"] += 1
            if record["unique_id"] is not None and copy["unique_id"] != record["unique_id"]:
                kind["unique_id_changed"] += 1
            if action == "StartTransaction":
                continue
            tx["checked"] += 1
            got = copy["payload"].get("transactionId")
            tx["rewritten"] += got != sent_tx
            expected = start_ids.get((client, record["session"]), set())
            if not expected:
                tx["start_missing"] += 1
            elif got in expected:
                tx["ok"] += 1
                continue
            elif got in given.get(client, ()):
                tx["other_session"] += 1
            else:
                tx["not_given_by_backend"] += 1
            if len(bad_tx) < 10:
                bad_tx.append({"client": client, "action": action, "key": record["key"],
                               "sent_id": sent_tx, "received_id": got, "expected": sorted(expected)})
    unexpected = sum(len(c) for k, c in received.items() if k not in sent_keys)
    out_of_order = sum(
        sum(1 for a, b in zip(lines, lines[1:]) if b < a) for lines in order.values()
    )
    total = {name: sum(kinds[a][name] for a in TX_ACTIONS) for name in kinds["MeterValues"]}
    return {
        "total": total,
        "per_kind": {a: dict(c) for a, c in kinds.items()},
        "unexpected": unexpected,
        "out_of_order": out_of_order,
        "duplicates": duplicates,
        "transaction_ids": dict(tx),
        "bad_transaction_ids": bad_tx,
        "missing_examples": missing,
    }


def scan_log(path):
    """Warnings and errors in twistd.log, grouped by their text with the
    numbers taken out."""
    levels = collections.Counter()
    kinds = collections.Counter()
    errors = []
    level = re.compile(r"^\S+ \[[^\]#]*#(\w+)\] (.*)$")
    try:
        with open(path, errors="replace") as f:
            for line in f:
                match = level.match(line)
                if match:
                    name, text = match.groups()
                    levels[name] += 1
                    if name in ("warn", "error", "critical"):
                        kinds["{}: {}".format(name, re.sub(r"\d+", "N", text)[:160])] += 1
                    if name in ("error", "critical") and len(errors) < 20:
                        errors.append(line.rstrip())
                elif line.startswith("Traceback") or "Traceback (most recent call last)" in line:
                    levels["traceback"] += 1
                    if len(errors) < 20:
                        errors.append(line.rstrip())
    except FileNotFoundError:
        pass
    return {"levels": dict(levels), "warnings_and_errors": dict(kinds.most_common(30)), "error_lines": errors}


def latency(ledger):
    values = [v for action, values in ledger.rtt.items() for v in values]
    tx = [v for action in TX_ACTIONS for v in ledger.rtt.get(action, [])]
    if not values:
        return {}
    return {
        "calls": len(values),
        "p50_ms": 1000 * common.percentile(values, 0.5),
        "p99_ms": 1000 * common.percentile(values, 0.99),
        "max_ms": 1000 * max(values),
        "tx_p99_ms": 1000 * common.percentile(tx, 0.99) if tx else None,
    }


async def make_stations(urls, scale, seed, ledger):
    """Connect (and boot) a wallbox per URL; its station, and the event that
    ends the load."""
    boxes = await connect_all(urls)
    stop = asyncio.Event()
    stations = [
        Station(i, url, box, ledger, random.Random(seed * 1_000_003 + i), scale)
        for i, (url, box) in enumerate(zip(urls, boxes))
    ]
    return stations, stop


async def run_stations(stations, stop, seconds):
    tasks = [asyncio.get_running_loop().create_task(s.run(stop)) for s in stations]
    await asyncio.sleep(seconds)
    stop.set()
    # Sessions under way end with a StopTransaction.
    await asyncio.gather(*tasks)


async def close_all(stations):
    await asyncio.gather(*(s.box.close() for s in stations), return_exceptions=True)


async def baseline(args, directory):
    """The same load straight to a backend: its CPU and memory, and a check
    of the load generator and the accounting (nothing may be missing)."""
    log = os.path.join(directory, "direct.jsonl")
    backend = common.Backend(log=log).start()
    ledger = Ledger()
    seconds = args.baseline_minutes * 60
    try:
        urls = [backend.url + "CB-{}".format(i) for i in range(args.wallboxes)]
        stations, stop = await make_stations(urls, args.scale, args.seed, ledger)
        cpu0, wall0, own0 = common.cpu_seconds(backend.process.pid), time.monotonic(), time.process_time()
        rss = []

        async def sample():
            while not stop.is_set():
                rss.append(common.rss_kib(backend.process.pid))
                await pause(stop, 10)

        sampler = asyncio.get_running_loop().create_task(sample())
        await run_stations(stations, stop, seconds)
        await sampler
        wall = time.monotonic() - wall0
        cpu = common.cpu_seconds(backend.process.pid) - cpu0
        own = time.process_time() - own0
        await close_all(stations)
    finally:
        await asyncio.to_thread(backend.stop)
    return {
        "seconds": round(wall, 1),
        "backend_cpu_percent": 100 * cpu / wall,
        "generator_cpu_percent": 100 * own / wall,
        "backend_rss_max_kib": max(rss),
        "latency": latency(ledger),
        "sessions": ledger.sessions,
        "authorize_refused": ledger.authorize_refused,
        "wallbox_errors": dict(ledger.errors),
        "accounting": account(ledger, log, [0]),
        "log": log,
    }


async def soak(args, directory):
    log = os.path.join(directory, "backend.jsonl")
    # The backend's tracebacks (an answer it could not send as it stopped:
    # the message will come again) go to a file, counted at the end.
    backend_errors = open(os.path.join(directory, "backend.stderr"), "w")
    backend = common.Backend(log=log, stderr=backend_errors)
    starts = [count_lines(log)]
    backend.start()
    wallboxes = [("w{}".format(i), "CB-{}".format(i), backend.url) for i in range(args.wallboxes)]
    proxy = common.Proxy(
        wallboxes, mode=args.mode, server="tls = off\nheartbeat_interval = {}\n".format(int(HEARTBEAT)),
        manager="max_current = {}\n".format(16 * args.wallboxes),
    )
    proxy.start()
    print("cfosproxy directory:", proxy.directory, file=sys.stderr, flush=True)
    ledger = Ledger()
    seconds = args.minutes * 60
    result = {"proxy_directory": proxy.directory, "backend_log": log, "startup_s": proxy.startup_s}
    samples = []  # (t, rss KiB, queued, backend up)
    outages = []
    backend_cpu = 0.0
    crashed = None
    try:
        idle_rss = common.rss_kib(proxy.process.pid)
        urls = [proxy.url(cbid) for _, cbid, _ in wallboxes]
        stations, stop = await make_stations(urls, args.scale, args.seed, ledger)
        # The gateways open their backend legs once their wallbox is there.
        deadline = time.monotonic() + 180
        while True:
            ready, queued, _ = await asyncio.to_thread(gateway_summary, proxy.status_port)
            if ready == args.wallboxes:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("only {} of {} backend legs open".format(ready, args.wallboxes))
            await asyncio.sleep(1)
        connected_rss = common.rss_kib(proxy.process.pid)
        # What one look at the status API costs cfosproxy (it is polled
        # during the run), measured while nothing else happens.
        polls = 10
        before = common.cpu_seconds(proxy.process.pid)
        for _ in range(polls):
            await asyncio.to_thread(gateway_summary, proxy.status_port)
        result["status_poll_cpu_s"] = (common.cpu_seconds(proxy.process.pid) - before) / polls
        polled = 0
        t0 = time.monotonic()
        cpu0, own0 = common.cpu_seconds(proxy.process.pid), time.process_time()
        backend_cpu0 = common.cpu_seconds(backend.process.pid)
        backend_up = True

        async def sample():
            nonlocal crashed, polled
            while not stop.is_set():
                if proxy.process.poll() is not None:
                    crashed = "cfosproxy exited with {} at {:.0f} s".format(
                        proxy.process.returncode, time.monotonic() - t0)
                    stop.set()
                    return
                t = time.monotonic() - t0
                rss = common.rss_kib(proxy.process.pid)
                try:
                    polled += 1
                    _, queued, _ = await asyncio.to_thread(gateway_summary, proxy.status_port)
                except OSError:
                    queued = None
                samples.append((round(t, 1), rss, queued, backend_up))
                await pause(stop, args.sample)

        async def recovery(outage, up):
            nonlocal polled
            # Every leg open and booted again, every queue delivered (new
            # messages keep coming, so "empty" means caught up); followed
            # past the end of the load if need be. Its own task, so that it
            # does not hold up the next outage.
            peak = 0
            deadline = time.monotonic() + seconds + args.drain_timeout
            while time.monotonic() < deadline:
                if time.monotonic() - t0 < seconds:
                    polled += 1
                ready, queued, _ = await asyncio.to_thread(gateway_summary, proxy.status_port)
                peak = max(peak, queued)
                outage.setdefault("queued_at_restart", queued)
                if ready == args.wallboxes and "all_legs_open_s" not in outage:
                    outage["all_legs_open_s"] = round(time.monotonic() - t0 - up, 1)
                if ready == args.wallboxes and queued == 0:
                    outage["caught_up_s"] = round(time.monotonic() - t0 - up, 1)
                    break
                await asyncio.sleep(5)
            outage["peak_queued_after_restart"] = peak

        recoveries = []

        async def outages_():
            nonlocal backend_cpu, backend_up, backend_cpu0
            for k in (1, 2):
                if await pause(stop, t0 + seconds * k / 3 - time.monotonic()):
                    return
                backend_cpu += common.cpu_seconds(backend.process.pid) - backend_cpu0
                down = time.monotonic() - t0
                await asyncio.to_thread(backend.stop)
                backend_up = False
                await pause(stop, args.down)
                starts.append(count_lines(log))
                await asyncio.to_thread(backend.start)
                backend_cpu0 = common.cpu_seconds(backend.process.pid)
                backend_up = True
                up = time.monotonic() - t0
                outage = {"down_at_s": round(down, 1), "up_at_s": round(up, 1)}
                outages.append(outage)
                recoveries.append(asyncio.get_running_loop().create_task(recovery(outage, up)))

        tasks = [asyncio.get_running_loop().create_task(f()) for f in (sample, outages_)]
        await run_stations(stations, stop, seconds)
        load_s = time.monotonic() - t0
        proxy_cpu = common.cpu_seconds(proxy.process.pid) - cpu0
        if backend.process is not None:
            backend_cpu += common.cpu_seconds(backend.process.pid) - backend_cpu0
        own = time.process_time() - own0
        await asyncio.gather(*tasks)
        await asyncio.gather(*recoveries)
        # Everything the wallboxes sent must come out of the queues.
        drained = time.monotonic()
        while True:
            ready, queued, dead = await asyncio.to_thread(gateway_summary, proxy.status_port)
            if queued == 0 or time.monotonic() - drained > args.drain_timeout:
                break
            await asyncio.sleep(2)
        result["drain"] = {"seconds": round(time.monotonic() - drained, 1), "queued_left": queued,
                           "dead_letters": dead, "legs_ready": ready}
        samples.append((round(time.monotonic() - t0, 1), common.rss_kib(proxy.process.pid), queued, True))
        await close_all(stations)
        result.update({
            "load_seconds": round(load_s, 1),
            "proxy_cpu_s": round(proxy_cpu, 2),
            "proxy_cpu_percent": 100 * proxy_cpu / load_s,
            "status_polls": polled,
            "status_polls_cpu_percent": 100 * polled * result["status_poll_cpu_s"] / load_s,
            "backend_cpu_percent": 100 * backend_cpu / load_s,
            "generator_cpu_percent": 100 * own / load_s,
            "rss_idle_kib": idle_rss,
            "rss_connected_kib": connected_rss,
        })
    finally:
        if proxy.process is not None and proxy.process.poll() is not None and crashed is None:
            crashed = "cfosproxy exited with {}".format(proxy.process.returncode)
        await asyncio.to_thread(proxy.stop)
        await asyncio.to_thread(backend.stop)
        backend_errors.close()
    with open(backend_errors.name) as f:
        result["backend_unsent_answers"] = sum(1 for line in f if line.startswith("connection handler failed"))
    result["crashed"] = crashed
    result["outages"] = outages
    warmup = min(args.warmup, seconds / 4)
    rss_values = [rss for _, rss, _, _ in samples]
    result["rss"] = {
        "first_kib": rss_values[0] if rss_values else None,
        "last_kib": rss_values[-1] if rss_values else None,
        "max_kib": max(rss_values) if rss_values else None,
        "warmup_s": warmup,
        "slope_kib_per_min": slope_per_minute([(t, rss) for t, rss, _, _ in samples if t >= warmup]),
        "max_while_backend_down_kib": max((rss for _, rss, _, up in samples if not up), default=None),
        "samples": samples,
    }
    # Steady stretches: after warm-up and before the first outage, from
    # each catching-up to the next outage or the end of the load.
    edges = [warmup]
    for outage in outages:
        edges += [outage["down_at_s"], outage["up_at_s"] + outage.get("caught_up_s", float("inf"))]
    edges.append(result.get("load_seconds", seconds))
    windows = [(a, b) for a, b in zip(edges[::2], edges[1::2]) if a < b]
    rss_series = [(t, rss) for t, rss, _, _ in samples]
    result["rss"]["steady_windows_s"] = windows
    result["rss"]["steady_slopes_kib_per_min"] = steady_slopes(rss_series, windows)
    for outage in outages:
        before = [rss for t, rss in rss_series if t < outage["down_at_s"]]
        after = [rss for t, rss in rss_series if t > outage["up_at_s"] + outage.get("caught_up_s", float("inf"))]
        if before and after:
            outage["rss_step_kib"] = after[0] - before[-1]
    result["peak_queued"] = max((q for _, _, q, _ in samples if q is not None), default=None)
    result["latency"] = latency(ledger)
    result["sessions"] = ledger.sessions
    result["authorize_refused"] = ledger.authorize_refused
    result["start_refused"] = ledger.start_refused
    result["reconnects"] = ledger.reconnects
    result["wallbox_errors"] = dict(ledger.errors)
    result["profiles_received"] = dict(ledger.server_calls)
    result["backend_starts_at_line"] = starts
    result["accounting"] = account(ledger, log, starts)
    result["twistd_log"] = scan_log(os.path.join(proxy.directory, "twistd.log"))
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wallboxes", type=int, default=500)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--down", type=float, default=25.0, help="seconds the backend stays down, twice")
    parser.add_argument("--scale", type=float, default=1.0, help="divide every interval by this")
    parser.add_argument("--mode", choices=("control", "observe"), default="control")
    parser.add_argument("--baseline-minutes", type=float, help="direct run; default a fifth of --minutes, at most 2; 0: none")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds left out of the RSS slope (at most a quarter of the run)")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", help="write the figures to this file too")
    args = parser.parse_args()
    if args.baseline_minutes is None:
        args.baseline_minutes = min(2.0, args.minutes / 5)

    directory = tempfile.mkdtemp(prefix="cfosproxy-soak-")
    direct = asyncio.run(baseline(args, directory)) if args.baseline_minutes > 0 else None
    soaked = asyncio.run(soak(args, directory))

    a = soaked["accounting"]
    d = direct["accounting"] if direct else None

    def pick(accounting, *path):
        if accounting is None:
            return None
        for part in path:
            accounting = accounting[part]
        return accounting

    rss = soaked["rss"]
    rows = [
        ("wallboxes x minutes", "{} x {:g}".format(args.wallboxes, args.baseline_minutes) if direct else None,
         "{} x {:g}".format(args.wallboxes, args.minutes), None),
        ("charging sessions", direct and direct["sessions"], soaked["sessions"], None),
        ("transaction messages sent", pick(d, "total", "sent"), a["total"]["sent"], None),
        ("  received at the backend", pick(d, "total", "received"), a["total"]["received"], None),
        ("  missing", pick(d, "total", "missing"), a["total"]["missing"], None),
        ("  missing, answered to the wallbox", pick(d, "total", "missing_answered"), a["total"]["missing_answered"], None),
        ("  duplicates", pick(d, "total", "duplicates"), a["total"]["duplicates"], None),
        ("    of these across a backend restart", pick(d, "duplicates", "across_restart"), a["duplicates"]["across_restart"], None),
        ("  unexpected at the backend", pick(d, "unexpected"), a["unexpected"], None),
        ("  altered (apart from transactionId)", pick(d, "total", "altered"), a["total"]["altered"], None),
        ("  out of order per wallbox", pick(d, "out_of_order"), a["out_of_order"], None),
    ]
    for action in TX_ACTIONS:
        k, dk = a["per_kind"][action], pick(d, "per_kind", action)
        rows.append(("{} sent/missing/dup".format(action),
                     "{sent}/{missing}/{duplicates}".format(**dk) if dk else None,
                     "{sent}/{missing}/{duplicates}".format(**k), None))
    t = a["transaction_ids"]
    rows += [
        ("Stop/MeterValues copies checked for tx id", pick(d, "transaction_ids", "checked"), t["checked"], None),
        ("  rewritten local -> backend id", pick(d, "transaction_ids", "rewritten"), t["rewritten"], None),
        ("  id not the backend's for that session", None,
         t["other_session"] + t["not_given_by_backend"] + t["start_missing"], None),
        ("  of these never given out by the backend", pick(d, "transaction_ids", "not_given_by_backend"), t["not_given_by_backend"], None),
        ("Authorize refused (backend down, not cached)", direct and direct.get("authorize_refused", 0), soaked["authorize_refused"], None),
        ("wallbox call errors/timeouts", direct and sum(direct["wallbox_errors"].values()), sum(soaked["wallbox_errors"].values()), None),
        ("call round trip p50 ms", direct and direct["latency"].get("p50_ms"), soaked["latency"].get("p50_ms"), None),
        ("call round trip p99 ms", direct and direct["latency"].get("p99_ms"), soaked["latency"].get("p99_ms"), None),
        ("CPU % of one core, backend", direct and direct["backend_cpu_percent"], soaked["backend_cpu_percent"], None),
        ("CPU % of one core, cfosproxy (ratio: to backend)", None, soaked["proxy_cpu_percent"],
         round(soaked["proxy_cpu_percent"] / soaked["backend_cpu_percent"], 2) if soaked["backend_cpu_percent"] else None),
        ("  of which status API polls (estimate)", None, soaked["status_polls_cpu_percent"], None),
        ("CPU % of one core, load generator", direct and direct["generator_cpu_percent"], soaked["generator_cpu_percent"], None),
        ("RSS KiB max: backend (direct) / cfosproxy", direct and direct["backend_rss_max_kib"], rss["max_kib"], None),
        ("RSS KiB cfosproxy at load start / end", None, "{} / {}".format(rss["first_kib"], rss["last_kib"]), None),
        ("RSS KiB/min after warm-up (slope)", None, rss["slope_kib_per_min"], None),
        ("RSS KiB/min in each steady stretch", None, " / ".join(
            "-" if v is None else "{:.1f}".format(v) for v in rss["steady_slopes_kib_per_min"]), None),
        ("peak queued messages", None, soaked["peak_queued"], None),
    ]
    for n, outage in enumerate(soaked["outages"], 1):
        rows.append(("outage {}: down {}-{} s, caught up after s".format(n, outage["down_at_s"], outage["up_at_s"]),
                     None, outage.get("caught_up_s"), None))
        rows.append(("outage {}: queued at restart / RSS step KiB".format(n), None,
                     "{} / {}".format(outage.get("queued_at_restart"), outage.get("rss_step_kib")), None))
    rows += [
        ("answers the backend could not send as it stopped", None, soaked["backend_unsent_answers"], None),
        ("queues empty after the load, s", None, soaked["drain"]["seconds"], None),
        ("queued left / dead letters", None, "{} / {}".format(soaked["drain"]["queued_left"], soaked["drain"]["dead_letters"]), None),
        ("twistd.log warn/error/critical/traceback", None, "/".join(
            str(soaked["twistd_log"]["levels"].get(level, 0)) for level in ("warn", "error", "critical", "traceback")), None),
        ("cfosproxy crashed", None, soaked["crashed"] or "no", None),
    ]
    figures = {"wallboxes": args.wallboxes, "minutes": args.minutes, "down_s": args.down, "scale": args.scale,
               "mode": args.mode, "cpu_cores": os.cpu_count(), "directory": directory,
               "direct": direct, "through_cfosproxy": soaked}
    if soaked["backend_cpu_percent"]:
        figures["ratio_proxy_cpu_to_backend_cpu"] = soaked["proxy_cpu_percent"] / soaked["backend_cpu_percent"]
    common.report("soak: {} wallboxes, {:g} min, backend restarted twice".format(args.wallboxes, args.minutes),
                  rows, figures, args.json)


if __name__ == "__main__":
    main()
