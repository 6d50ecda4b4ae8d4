"""What every benchmark needs: ports, processes, a backend, cfosproxy under
``twistd``, the load generator's wallboxes, resource readings and the report.

Each benchmark runs its load through cfosproxy and, in the same run,
directly against the backend, and reports the ratio of the two: absolute
numbers depend on the machine.
"""

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
BACKEND_SCRIPT = os.path.join(ROOT, "bench", "backend.py")


def free_port():
    """A TCP port on loopback that nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, timeout=60):
    """Block until something accepts connections on C{port}."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("nothing listens on {}".format(port))


def rss_kib(pid):
    """The resident set size of process C{pid}, in KiB."""
    with open("/proc/{}/status".format(pid)) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    """User plus system CPU time process C{pid} has used so far."""
    with open("/proc/{}/stat".format(pid)) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Backend:
    """The backend peer in its own process (C{bench/backend.py}).

    @param log: a file to which the backend appends one JSON line per CALL
        it receives (C{[client id, action, payload]}), or None.
    @param tls: (certificate file, key file) to serve wss, or None.
    """

    def __init__(self, port=None, log=None, tls=None):
        self.port = port or free_port()
        self._args = [sys.executable, BACKEND_SCRIPT, "--port", str(self.port)]
        if log:
            self._args += ["--log", log]
        if tls:
            self._args += ["--cert", tls[0], "--key", tls[1]]
        self.process = None

    def start(self):
        self.process = subprocess.Popen(self._args, stdout=subprocess.PIPE, text=True)
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError("the backend did not start")
        return self

    def stop(self):
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    @property
    def url(self):
        return "ws://127.0.0.1:{}/ocpp/".format(self.port)


class Proxy:
    """cfosproxy under ``twistd -n`` in its own process, on a config this
    object writes.

    @param wallboxes: C{[(name, chargebox_id, gateway_url or None)]}.
    @param server: extra lines for the C{[server]} section.
    @param mode: the manager's mode (C{observe} measures only the relay).
    @param profile: a file for cProfile statistics, or None.
    """

    def __init__(self, wallboxes, server="", mode="observe", manager="", profile=None):
        self.directory = tempfile.mkdtemp(prefix="cfosproxy-bench-")
        self.port, self.status_port = free_port(), free_port()
        self.config = os.path.join(self.directory, "cfosproxy.ini")
        with open(self.config, "w") as f:
            f.write(
                "[server]\nlisten = tcp:{}:interface=127.0.0.1\n{}\n"
                "[manager]\nstate_dir = {}\nmode = {}\n{}\n"
                "[status]\nlisten = tcp:{}:interface=127.0.0.1\n".format(
                    self.port, server or "tls = off\n", os.path.join(self.directory, "var"),
                    mode, manager, self.status_port,
                )
            )
            for name, chargebox_id, gateway_url in wallboxes:
                f.write("[wallbox:{}]\ntype = ocpp\naddress = {}\n".format(name, chargebox_id))
                if gateway_url:
                    f.write("gateway_url = {}\n".format(gateway_url))
        self._profile = profile
        self.process = None
        self.startup_s = None

    def start(self):
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self._log = open(os.path.join(self.directory, "twistd.log"), "a")
        profile = []
        if self._profile:
            profile = ["--profile=" + os.path.abspath(self._profile), "--profiler=cprofile", "--savestats"]
        started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=",
             *profile, "cfosproxy", "--config", self.config],
            cwd=self.directory, env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port)
        self.startup_s = time.monotonic() - started
        return self

    def stop(self):
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
            self._log.close()

    def url(self, chargebox_id, scheme="ws"):
        return "{}://127.0.0.1:{}/{}".format(scheme, self.port, chargebox_id)


class Wallbox:
    """One simulated wallbox of the load generator: a WebSocket and a counter
    for message ids. CALLs from the server (the manager's profiles, the
    backend's) are answered Accepted."""

    def __init__(self, ws):
        self.ws = ws
        self.n = 0

    @classmethod
    async def connect(cls, url, boot=True, **kwargs):
        ws = await websockets.connect(
            url, subprotocols=["ocpp1.6"], open_timeout=60, max_size=2**20,
            ping_interval=None, **kwargs
        )
        box = cls(ws)
        if boot:
            await box.call("BootNotification", {"chargePointVendor": "bench", "chargePointModel": "b"})
        return box

    async def call(self, action, payload):
        """Send a CALL and wait for its answer frame."""
        self.n += 1
        unique_id = "m{}".format(self.n)
        await self.ws.send(json.dumps([2, unique_id, action, payload]))
        while True:
            answer = json.loads(await self.ws.recv())
            if answer[0] == 2:
                await self.ws.send(json.dumps([3, answer[1], {"status": "Accepted"}]))
                continue
            if answer[1] == unique_id:
                return answer

    async def close(self):
        await self.ws.close()


async def connect_many(urls, concurrency=100, **kwargs):
    """Connect (and boot) a wallbox per URL, C{concurrency} at a time."""
    limit = asyncio.Semaphore(concurrency)

    async def one(url):
        async with limit:
            return await Wallbox.connect(url, **kwargs)

    return await asyncio.gather(*(one(url) for url in urls))


def report(title, rows, figures, json_path=None):
    """Print a table and one JSON line; write the JSON to C{json_path} too.

    @param rows: C{[(measure, direct, via cfosproxy, ratio or None)]}; a
        value may be None where it does not apply.
    @param figures: everything, for the JSON.
    """
    def cell(value):
        if value is None:
            return ""
        return "{:.2f}".format(value) if isinstance(value, float) else str(value)

    print(title)
    print("{:<44} {:>12} {:>16} {:>8}".format("", "direct", "via cfosproxy", "ratio"))
    for name, direct, proxied, ratio in rows:
        print("{:<44} {:>12} {:>16} {:>8}".format(name, cell(direct), cell(proxied), cell(ratio)))
    print(json.dumps(figures))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(figures, f, indent=1)
