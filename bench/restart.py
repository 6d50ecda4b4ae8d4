"""A restart of cfosproxy while a car charges: does the car notice?

    python bench/restart.py [--runs 5] [--after 15] [--interval 0.05] [--json out.json]

Both programs run as a user runs them, each a real process in a temporary
directory: ``twistd -n --pidfile cfosproxy.pid cfosproxy --config
cfosproxy.ini`` and ``twistd -n --pidfile cfoswallbox.pid cfoswallbox
--config cfoswallbox.ini`` (the virtualenv's ``twistd``, with this tree
on PYTHONPATH, which is how twistd finds the plugins of a checkout). The
site has 32 A, the wallbox is a 6-16 A OCPP device, and its car could draw
32 A, so the 16 A it draws are the manager's limit, not the car's own.

Each run: the car is plugged in through the wallbox's Modbus test register
(8200) once cfosproxy has put its 0 A default profile in, and charges at
its grant of 16 A. Then, as ``supervisorctl restart`` does, cfosproxy gets
SIGTERM, is waited for, and is started again on the same state directory.
The car's current is read over Modbus every --interval s (registers 8064,
8066, 8068: L1, L2, L3 in 0.1 A, two registers each, high word first),
from 1 s before the SIGTERM until --after s after the new process started.

Reported per run and as median (min to max): the seconds during which the
car drew less than its grant on any phase, the lowest current seen, the
seconds from SIGTERM until the old process had exited, until the new one's
status API answered (``GET /api/health``), and until the API showed the
wallbox connected again; whether the API then shows the same transaction
with power above 0 and an energy reading; and cfosproxy's log lines at
warning level or above. A run whose car drew
less than its grant, or whose transaction was lost, fails the script (exit
status 1).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

from pymodbus.client import ModbusTcpClient

import common

ROOT = common.ROOT
sys.path.insert(0, ROOT)

from cfosproxy.modbus.powerbrain import CURRENTS, decode_u32  # noqa: E402
from cfosproxy.wallbox.model import TEST_CAR  # noqa: E402

GRANT = 16.0
CHARGEBOX_ID = "CB-0001"

PROXY_INI = """\
[server]
listen = tcp:{port}:interface=127.0.0.1
tls = off

[manager]
state_dir = var
max_current = 32

[status]
listen = tcp:{status}:interface=127.0.0.1

[wallbox:garage]
type = ocpp
address = {cbid}
min_current = 6
max_current = 16
"""

WALLBOX_INI = """\
[ocpp]
url = ws://127.0.0.1:{port}/
client_id = {cbid}

[modbus]
listen = tcp:{modbus}:interface=127.0.0.1

[car]
plugged = no
max_current = 32
"""


def twistd_command(plugin, name):
    """The command line of C{twistd -n} running C{plugin} on C{name}.ini,
    with its pid file C{name}.pid (in the working directory)."""
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.path.exists(twistd):
        head = [twistd]
    else:
        head = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
    return head + ["-n", "--pidfile", name + ".pid", plugin, "--config", name + ".ini"]


class Program:
    """One of the two programs under twistd, its log in C{NAME.log}."""

    def __init__(self, directory, plugin, name):
        self.directory = directory
        self._command = twistd_command(plugin, name)
        self._log_path = os.path.join(directory, name + ".log")
        self.process = None

    def start(self):
        with open(self._log_path, "a") as log:
            self.process = subprocess.Popen(
                self._command, cwd=self.directory, env=common.source_tree_env(),
                stdout=log, stderr=subprocess.STDOUT,
            )

    def stop(self, timeout=30):
        """SIGTERM, as a process supervisor stops it; wait for the exit."""
        if self.process is not None:
            common.terminate(self.process, timeout)
            self.process = None


def get_json(url, timeout=2):
    """The JSON at C{url}, or None while nothing answers there."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.loads(response.read())
    except (OSError, urllib.error.URLError, ValueError):
        return None


def wait_until(check, timeout, what, interval=0.02):
    """Poll C{check()} until it returns something true; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    raise RuntimeError("not within {} s: {}".format(timeout, what))


def read_currents(client):
    """L1, L2, L3 of the car in A, or None when the Modbus read failed."""
    first = CURRENTS[0]
    result = client.read_holding_registers(first, count=6, device_id=1)
    if result.isError():
        return None
    regs = result.registers
    return tuple(decode_u32(regs[r - first:r - first + 2]) / 10 for r in CURRENTS)


class Sampler(threading.Thread):
    """Reads the car's currents over Modbus every C{interval} s, on its own
    connection: C{samples} is a list of C{(monotonic time, (L1, L2, L3) or
    None)}."""

    def __init__(self, port, interval):
        super().__init__(daemon=True)
        self.samples = []
        self._port = port
        self._interval = interval
        self._finished = threading.Event()

    def run(self):
        client = ModbusTcpClient("127.0.0.1", port=self._port, timeout=1)
        client.connect()
        try:
            next_at = time.monotonic()
            while not self._finished.is_set():
                self.samples.append((time.monotonic(), read_currents(client)))
                next_at += self._interval
                self._finished.wait(max(0.0, next_at - time.monotonic()))
        finally:
            client.close()

    def finish(self):
        self._finished.set()
        self.join()


def below_grant(samples, grant):
    """Seconds during which the car drew less than C{grant} on a phase (a
    failed read counts as below: nothing is known of that moment), and
    the lowest current seen."""
    below = 0.0
    lowest = None
    for (at, currents), (following, _) in zip(samples, samples[1:]):
        least = min(currents) if currents is not None else None
        if least is not None:
            lowest = least if lowest is None else min(lowest, least)
        if least is None or least < grant - 0.05:
            below += following - at
    return below, lowest


def log_problems(path):
    """cfosproxy's log lines at warning level or above, and tracebacks."""
    with open(path, errors="replace") as f:
        return [line.rstrip("\n") for line in f
                if any(tag in line for tag in ("#warn]", "#error]", "#critical]", "Traceback"))]


def one_run(after, interval):
    """One restart with the car charging; its figures as a dict."""
    directory = tempfile.mkdtemp(prefix="cfosproxy-restart-")
    port, status, modbus = common.free_port(), common.free_port(), common.free_port()
    with open(os.path.join(directory, "cfosproxy.ini"), "w") as f:
        f.write(PROXY_INI.format(port=port, status=status, cbid=CHARGEBOX_ID))
    with open(os.path.join(directory, "cfoswallbox.ini"), "w") as f:
        f.write(WALLBOX_INI.format(port=port, modbus=modbus, cbid=CHARGEBOX_ID))
    proxy = Program(directory, "cfosproxy", "cfosproxy")
    wallbox = Program(directory, "cfoswallbox", "cfoswallbox")
    device_url = "http://127.0.0.1:{}/api/devices/garage".format(status)
    health_url = "http://127.0.0.1:{}/api/health".format(status)

    def device():
        return get_json(device_url)

    try:
        proxy.start()
        common.wait_for_port(status)
        wallbox.start()
        common.wait_for_port(modbus)
        wait_until(lambda: (device() or {}).get("accepted_limit") == 0.0, 60, "the 0 A default")
        plug = ModbusTcpClient("127.0.0.1", port=modbus, timeout=1)
        plug.connect()
        written = plug.write_register(TEST_CAR, 1, device_id=1)
        plug.close()
        if written.isError():
            raise RuntimeError("plugging the car in failed: {}".format(written))

        def charging():
            shown = device() or {}
            return shown.get("accepted_limit") == GRANT and shown.get("power_w") and shown

        before = wait_until(charging, 60, "the car charging at {} A".format(GRANT))

        sampler = Sampler(modbus, interval)
        sampler.start()
        time.sleep(1)
        stopped_at = time.monotonic()
        proxy.stop()
        exited = time.monotonic() - stopped_at
        proxy.start()
        started_at = time.monotonic()
        wait_until(lambda: get_json(health_url, timeout=0.5), 60, "the status API")
        api_back = time.monotonic() - stopped_at
        wait_until(lambda: (device() or {}).get("connected"), 60, "the wallbox connected again")
        connected = time.monotonic() - stopped_at
        time.sleep(max(0.0, started_at + after - time.monotonic()))
        sampler.finish()

        after_restart = wait_until(charging, 30, "the car shown charging again")
        below, lowest = below_grant(sampler.samples, GRANT)
        problems = log_problems(os.path.join(directory, "cfosproxy.log"))
        return {
            "below_grant_s": round(below, 3),
            "lowest_a": lowest,
            "exited_s": round(exited, 3),
            "status_api_s": round(api_back, 3),
            "reconnected_s": round(connected, 3),
            "samples": len(sampler.samples),
            "transaction_kept": after_restart["transaction_id"] == before["transaction_id"],
            "power_w": after_restart["power_w"],
            "energy_wh": after_restart["energy_wh"],
            "log_problems": problems,
        }
    finally:
        wallbox.stop()
        proxy.stop()
        shutil.rmtree(directory, ignore_errors=True)


FIGURES = (
    ("below_grant_s", "s below the grant of 16 A"),
    ("lowest_a", "lowest current seen, A"),
    ("exited_s", "s from SIGTERM until the old process exited"),
    ("status_api_s", "s from SIGTERM until the status API answered"),
    ("reconnected_s", "s from SIGTERM until the wallbox was connected again"),
)


def spread(values):
    return "{:g} ({:g} to {:g})".format(statistics.median(values), min(values), max(values))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--after", type=float, default=15, help="s sampled after the restart")
    parser.add_argument("--interval", type=float, default=0.05, help="s between Modbus reads")
    parser.add_argument("--json")
    args = parser.parse_args(argv)

    runs = []
    for number in range(1, args.runs + 1):
        run = one_run(args.after, args.interval)
        runs.append(run)
        print("run {}: {:.3f} s below the grant, lowest {} A, status API after {:.2f} s, "
              "wallbox back after {:.2f} s, transaction kept: {}, power {} W, energy {} Wh "
              "({} samples)".format(
                  number, run["below_grant_s"], run["lowest_a"], run["status_api_s"],
                  run["reconnected_s"], "yes" if run["transaction_kept"] else "NO",
                  run["power_w"], run["energy_wh"], run["samples"]), flush=True)
        for line in run["log_problems"]:
            print("  cfosproxy.log: " + line)
    print()
    print("{} runs, median (min to max):".format(len(runs)))
    for key, label in FIGURES:
        print("  {}: {}".format(label, spread([run[key] for run in runs])))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": runs, "interval_s": args.interval, "after_s": args.after}, f, indent=1)
    failed = [run for run in runs if run["below_grant_s"] > 0 or not run["transaction_kept"]
              or run["energy_wh"] is None]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
