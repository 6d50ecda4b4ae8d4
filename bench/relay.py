"""Relay benchmark: OCPP round trips through cfosproxy's gateway, against
the same backend reached directly, in one run.

    python bench/relay.py [--wallboxes 200] [--seconds 10] [--rate 500] [--json out.json]

Three processes on loopback: a backend (a minimal OCPP central system that
answers every CALL at once), cfosproxy under ``twistd -n`` with a gateway
per wallbox to that backend, and this load generator (many wallboxes over
real WebSockets). Each scenario runs twice, through cfosproxy and directly
to the backend; the figures are reported as the ratio of the two, since
absolute numbers depend on the machine (and here all three processes share
its cores).

- saturation: every wallbox sends Heartbeats back to back for --seconds;
  round trips per second.
- latency: --rate Heartbeats per second in total, spread over the
  wallboxes; p50 and p99 round-trip time, and what cfosproxy adds.
- memory: cfosproxy's resident set size before and after the wallboxes
  connect (each with its backend leg), per wallbox.
- transaction messages: MeterValues (stored in SQLite before they go on)
  back to back; round trips per second.
"""

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import websockets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BACKEND = r'''
import asyncio, json, sys
from websockets.asyncio.server import serve

async def handler(ws):
    async for text in ws:
        frame = json.loads(text)
        if frame[0] == 2:
            action = frame[2]
            if action == "BootNotification":
                payload = {"status": "Accepted", "currentTime": "2026-01-01T00:00:00Z", "interval": 300}
            elif action == "Heartbeat":
                payload = {"currentTime": "2026-01-01T00:00:00Z"}
            else:
                payload = {}
            await ws.send(json.dumps([3, frame[1], payload]))

async def main(port):
    async with serve(handler, "127.0.0.1", port, subprotocols=["ocpp1.6"], max_size=2**20):
        print("ready", flush=True)
        await asyncio.Future()

asyncio.run(main(int(sys.argv[1])))
'''


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listens on {}".format(port))


def rss_kib(pid):
    with open("/proc/{}/status".format(pid)) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Wallbox:
    """One simulated wallbox: a WebSocket and a counter for message ids."""

    def __init__(self, ws):
        self.ws = ws
        self.n = 0

    async def call(self, action, payload):
        self.n += 1
        unique_id = "m{}".format(self.n)
        await self.ws.send(json.dumps([2, unique_id, action, payload]))
        while True:
            answer = json.loads(await self.ws.recv())
            if answer[0] == 2:
                # The manager's profile: accept it, then wait for our answer.
                await self.ws.send(json.dumps([3, answer[1], {"status": "Accepted"}]))
                continue
            if answer[1] == unique_id:
                return answer


async def connect_all(url_of, count):
    boxes = []
    for i in range(count):
        ws = await websockets.connect(url_of(i), subprotocols=["ocpp1.6"], open_timeout=30, max_size=2**20)
        box = Wallbox(ws)
        await box.call("BootNotification", {"chargePointVendor": "bench", "chargePointModel": "b"})
        boxes.append(box)
    return boxes


async def saturate(boxes, seconds, action, payload):
    deadline = time.monotonic() + seconds
    done = 0

    async def loop(box):
        nonlocal done
        while time.monotonic() < deadline:
            await box.call(action, payload)
            done += 1

    start = time.monotonic()
    await asyncio.gather(*(loop(box) for box in boxes))
    return done / (time.monotonic() - start)


async def latency(boxes, seconds, rate):
    interval = len(boxes) / rate
    samples = []
    deadline = time.monotonic() + seconds

    async def loop(index, box):
        await asyncio.sleep(interval * index / len(boxes))
        while time.monotonic() < deadline:
            started = time.monotonic()
            await box.call("Heartbeat", {})
            samples.append(time.monotonic() - started)
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    await asyncio.gather(*(loop(i, box) for i, box in enumerate(boxes)))
    return samples


METER = {"connectorId": 1, "meterValue": [{"timestamp": "2026-01-01T00:00:00Z", "sampledValue": [{"value": "1"}]}]}


async def scenario(url_of, count, seconds, rate):
    boxes = await connect_all(url_of, count)
    try:
        result = {
            "heartbeats_per_s": await saturate(boxes, seconds, "Heartbeat", {}),
            "meter_values_per_s": await saturate(boxes, seconds, "MeterValues", METER),
        }
        samples = await latency(boxes, seconds, rate)
        result["p50_ms"] = 1000 * percentile(samples, 0.5)
        result["p99_ms"] = 1000 * percentile(samples, 0.99)
        return result
    finally:
        for box in boxes:
            await box.ws.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wallboxes", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--json", help="write the figures to this file too")
    parser.add_argument("--profile", help="run cfosproxy under cProfile, stats to this file")
    args = parser.parse_args()

    directory = tempfile.mkdtemp(prefix="cfosproxy-bench-")
    backend_port, proxy_port, status_port = free_port(), free_port(), free_port()
    backend = subprocess.Popen([sys.executable, "-c", BACKEND, str(backend_port)], stdout=subprocess.PIPE, text=True)
    config = os.path.join(directory, "cfosproxy.ini")
    with open(config, "w") as f:
        f.write(
            "[server]\nlisten = tcp:{}:interface=127.0.0.1\ntls = off\naccept_unknown = no\n"
            "[manager]\nstate_dir = {}\nmode = observe\n"
            "[status]\nlisten = tcp:{}:interface=127.0.0.1\n".format(
                proxy_port, os.path.join(directory, "var"), status_port
            )
        )
        for i in range(args.wallboxes):
            f.write(
                "[wallbox:w{0}]\ntype = ocpp\naddress = CB-{0}\n"
                "gateway_url = ws://127.0.0.1:{1}/ocpp/\n".format(i, backend_port)
            )
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log = open(os.path.join(directory, "twistd.log"), "w")
    proxy = subprocess.Popen(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=",
         *(["--profile=" + os.path.abspath(args.profile), "--profiler=cprofile", "--savestats"] if args.profile else []),
         "cfosproxy", "--config", config],
        cwd=directory, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        backend.stdout.readline()
        started = time.monotonic()
        wait_for_port(proxy_port)
        startup = time.monotonic() - started
        idle_rss = rss_kib(proxy.pid)

        async def run():
            direct = await scenario(
                lambda i: "ws://127.0.0.1:{}/ocpp/CB-{}".format(backend_port, i),
                args.wallboxes, args.seconds, args.rate,
            )
            # Through cfosproxy; memory is read with every wallbox connected.
            boxes = await connect_all(lambda i: "ws://127.0.0.1:{}/CB-{}".format(proxy_port, i), args.wallboxes)
            await asyncio.sleep(2)  # the backend legs open
            loaded_rss = rss_kib(proxy.pid)
            for box in boxes:
                await box.ws.close()
            proxied = await scenario(
                lambda i: "ws://127.0.0.1:{}/CB-{}".format(proxy_port, i),
                args.wallboxes, args.seconds, args.rate,
            )
            return direct, proxied, loaded_rss

        direct, proxied, loaded_rss = asyncio.run(run())
    finally:
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(30)
        backend.kill()
        backend.wait()
        log.close()

    figures = {
        "wallboxes": args.wallboxes,
        "cpu_cores": os.cpu_count(),
        "startup_to_listening_s": round(startup, 3),
        "rss_per_wallbox_kib": round((loaded_rss - idle_rss) / args.wallboxes, 1),
        "direct": {k: round(v, 2) for k, v in direct.items()},
        "through_cfosproxy": {k: round(v, 2) for k, v in proxied.items()},
        "ratio_heartbeats": round(proxied["heartbeats_per_s"] / direct["heartbeats_per_s"], 3),
        "ratio_meter_values": round(proxied["meter_values_per_s"] / direct["meter_values_per_s"], 3),
        "added_p50_ms": round(proxied["p50_ms"] - direct["p50_ms"], 3),
        "added_p99_ms": round(proxied["p99_ms"] - direct["p99_ms"], 3),
    }
    rows = [
        ("heartbeat round trips/s", direct["heartbeats_per_s"], proxied["heartbeats_per_s"], figures["ratio_heartbeats"]),
        ("MeterValues round trips/s (stored)", direct["meter_values_per_s"], proxied["meter_values_per_s"], figures["ratio_meter_values"]),
        ("p50 latency ms at {:.0f}/s".format(args.rate), direct["p50_ms"], proxied["p50_ms"], None),
        ("p99 latency ms at {:.0f}/s".format(args.rate), direct["p99_ms"], proxied["p99_ms"], None),
    ]
    print("{:<40} {:>12} {:>16} {:>8}".format("", "direct", "via cfosproxy", "ratio"))
    for name, a, b, ratio in rows:
        print("{:<40} {:>12.2f} {:>16.2f} {:>8}".format(name, a, b, "" if ratio is None else ratio))
    print("added latency p50 {added_p50_ms} ms, p99 {added_p99_ms} ms".format(**figures))
    print("RSS per wallbox with its backend leg: {} KiB; start-up to listening {} s".format(
        figures["rss_per_wallbox_kib"], figures["startup_to_listening_s"]))
    print(json.dumps(figures))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)


if __name__ == "__main__":
    main()
