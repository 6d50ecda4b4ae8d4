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
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

import websockets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKEND_SCRIPT = os.path.join(ROOT, "bench", "backend.py")
BARE_RELAY_SCRIPT = os.path.join(ROOT, "bench", "barerelay.py")


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


def open_fds(pid):
    """How many file descriptors process C{pid} holds (sockets included)."""
    return len(os.listdir("/proc/{}/fd".format(pid)))


def cpu_seconds(pid):
    """User plus system CPU time process C{pid} has used so far."""
    with open("/proc/{}/stat".format(pid)) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def make_certificates(directory):
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it,
    made with cfosproxy's own certificate tool (ECDSA P-256).

    @return: C{(ca.pem, server.pem, server-key.pem)} paths.
    """
    sys.path.insert(0, ROOT)
    from cfosproxy.ops import certtool  # cfosproxy from this tree

    for argv in (
        ["ca", "--out", directory, "--cn", "Bench CA"],
        ["server", "--ca", os.path.join(directory, "ca.pem"),
         "--ca-key", os.path.join(directory, "ca-key.pem"), "--out", directory, "--ip", "127.0.0.1"],
    ):
        with open(os.devnull, "w") as quiet:
            stdout, sys.stdout = sys.stdout, quiet
            try:
                status = certtool.main(argv)
            finally:
                sys.stdout = stdout
        if status != 0:
            raise RuntimeError("cfosproxy-certs {} failed ({})".format(argv[0], status))
    return tuple(os.path.join(directory, name) for name in ("ca.pem", "server.pem", "server-key.pem"))


def source_tree_env():
    """The environment for a child that imports cfosproxy from this tree."""
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def terminate(process, timeout):
    """SIGTERM C{process} and wait for it; kill it after C{timeout} s."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class _PeerProcess:
    """A benchmark peer in its own process that prints ``ready`` once it
    listens, and stops on SIGTERM.

    @param stderr: a file for the process's error output; None: inherited.
    """

    def __init__(self, args, stderr=None):
        self._args = args
        self._stderr = stderr
        self.process = None

    def start(self):
        env = source_tree_env()
        self.process = subprocess.Popen(
            self._args, stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=env)
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError("{} did not start".format(os.path.basename(self._args[1])))
        return self

    def stop(self):
        if self.process is not None:
            terminate(self.process, 10)
            self.process = None


class Backend(_PeerProcess):
    """The backend peer in its own process (C{bench/backend.py}).

    @param log: a file to which the backend appends one JSON line per CALL
        it receives (C{[client id, action, payload]}), or None.
    @param tls: (certificate file, key file) to serve wss, or None.
    @param stderr: a file for the backend's error output (the websockets
        library logs a traceback per connection reset); None: inherited.
    """

    def __init__(self, port=None, log=None, tls=None, stderr=None):
        self.port = port or free_port()
        args = [sys.executable, BACKEND_SCRIPT, "--port", str(self.port)]
        if log:
            args += ["--log", log]
        if tls:
            args += ["--cert", tls[0], "--key", tls[1]]
        super().__init__(args, stderr)
        self._scheme = "wss" if tls else "ws"

    @property
    def url(self):
        return "{}://127.0.0.1:{}/ocpp/".format(self._scheme, self.port)


class BareRelay(_PeerProcess):
    """The stack's floor (C{bench/barerelay.py}): a Twisted and Autobahn
    relay that only passes frames on, to C{backend_url} (plain ws://)."""

    def __init__(self, backend_url):
        self.port = free_port()
        super().__init__([sys.executable, BARE_RELAY_SCRIPT, "--port", str(self.port),
                          "--backend", backend_url])

    def url(self, chargebox_id):
        return "ws://127.0.0.1:{}/{}".format(self.port, chargebox_id)


class Proxy:
    """cfosproxy under ``twistd -n`` in its own process, on a config this
    object writes.

    @param wallboxes: C{[(name, chargebox_id, gateway_url or None)]}.
    @param server: extra lines for the C{[server]} section.
    @param mode: the manager's mode (C{observe} measures only the relay).
    @param profile: a file for cProfile statistics, or None.
    @param wallbox_extra: extra lines for every C{[wallbox:...]} section
        (e.g. C{gateway_ca = ...} for a wss:// backend).
    @param backlog: the OCPP listener's backlog; None: cfosproxy's default (1024).
    """

    def __init__(self, wallboxes, server="", mode="observe", manager="", profile=None,
                 wallbox_extra="", backlog=None):
        self.directory = tempfile.mkdtemp(prefix="cfosproxy-bench-")
        self.port, self.status_port = free_port(), free_port()
        self.config = os.path.join(self.directory, "cfosproxy.ini")
        with open(self.config, "w") as f:
            f.write(
                "[server]\nlisten = tcp:{}:interface=127.0.0.1{}\n{}\n"
                "[manager]\nstate_dir = {}\nmode = {}\n{}\n"
                "[status]\nlisten = tcp:{}:interface=127.0.0.1\n".format(
                    self.port, ":backlog={}".format(backlog) if backlog else "",
                    server or "tls = off\n", os.path.join(self.directory, "var"),
                    mode, manager, self.status_port,
                )
            )
            for name, chargebox_id, gateway_url in wallboxes:
                f.write("[wallbox:{}]\ntype = ocpp\naddress = {}\n".format(name, chargebox_id))
                if gateway_url:
                    f.write("gateway_url = {}\n".format(gateway_url))
                if wallbox_extra:
                    f.write(wallbox_extra.rstrip("\n") + "\n")
        self._profile = profile
        self.process = None
        self.startup_s = None

    def start(self):
        env = source_tree_env()
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
            terminate(self.process, 60)
            self.process = None
            self._log.close()

    def url(self, chargebox_id, scheme="ws"):
        return "{}://127.0.0.1:{}/{}".format(scheme, self.port, chargebox_id)

    def log_problems(self, limit=10):
        """What cfosproxy logged at warning level or above (and tracebacks).

        @return: C{(number of such lines, the first C{limit} of them)}
        """
        lines = []
        with open(os.path.join(self.directory, "twistd.log"), errors="replace") as f:
            for line in f:
                if any(tag in line for tag in ("#warn]", "#error]", "#critical]", "Traceback")):
                    lines.append(line.rstrip("\n"))
        return len(lines), lines[:limit]


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


# -- the load generator in processes of its own ------------------------------

BOOT = {"chargePointVendor": "bench", "chargePointModel": "b"}


def client_ssl(ca=None):
    """A client TLS context for wss://: verifying the server against the PEM
    file C{ca} when given, else not verifying at all."""
    if ca:
        return ssl.create_default_context(cafile=ca)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def wait_for_links(status_port, count, timeout=300, interval=1.0):
    """Poll cfosproxy's C{GET /api/devices} until C{count} devices have their
    gateway link connected, or C{timeout} seconds have passed.

    @return: C{(connected links, seconds waited)}; fewer than C{count} links
        means the wait timed out.
    """
    started = time.monotonic()
    url = "http://127.0.0.1:{}/api/devices".format(status_port)
    connected = 0
    pause = 0.05
    while True:
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                devices = json.load(response)["devices"]
            connected = sum(
                1 for d in devices if (d.get("gateway") or {}).get("link") == "connected"
            )
        except OSError:
            pass  # busy with the connections; asked again below
        waited = time.monotonic() - started
        if connected >= count or waited > timeout:
            return connected, waited
        # Each answer costs cfosproxy a few queries per device: soon at
        # first, then not more often than every `interval` seconds.
        time.sleep(pause)
        pause = min(interval, pause * 2)


class LoadGenerator:
    """The load generator's wallboxes in worker processes of their own
    (C{python bench/common.py worker}): one Python process cannot open
    thousands of WebSockets as fast as the servers under test accept them,
    and the measured processes must hold only their own sockets.

    Each method sends one command to every worker at once and waits for all
    replies. Counts are summed over the workers, lists joined, and
    C{seconds} is the time from sending to the last reply.
    """

    def __init__(self, workers=2):
        self.workers = max(1, workers)
        self.processes = []

    def start(self):
        """Start the worker processes."""
        for _ in range(self.workers):
            self.processes.append(subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "worker"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            ))
        return self

    def connect(self, urls, concurrency=200, boot=True, ca=None, timeout=120):
        """Open a WebSocket per URL and, with C{boot}, send a
        BootNotification; a wallbox counts as opened once the answer is
        Accepted. URLs are split among the workers in contiguous blocks;
        C{concurrency} handshakes at a time over all workers.

        @param ca: PEM file to verify a wss:// server with; None: no check.
        @return: C{{"opened", "failed", "errors": {error: count}, "seconds"}}
        """
        per_worker = -(-len(urls) // self.workers)
        return self._all([
            {"command": "connect", "urls": urls[i * per_worker:(i + 1) * per_worker],
             "concurrency": max(1, concurrency // self.workers), "boot": boot, "ca": ca,
             "timeout": timeout}
            for i in range(self.workers)
        ])

    def heartbeat(self, concurrency=500, timeout=60):
        """A Heartbeat on every wallbox opened so far.

        @return: C{{"answered", "failed", "errors", "seconds"}}
        """
        return self._each({"command": "heartbeat", "concurrency": concurrency // self.workers,
                           "timeout": timeout})

    def storm(self, drop="reset", retry_for=120, retry_delay=1.0, timeout=120):
        """Drop every wallbox at once and reconnect them all at the same
        moment, each retrying after C{retry_delay} until C{retry_for} seconds
        have passed.

        @param drop: C{reset}: the TCP connections end with a reset, no
            WebSocket close; C{silent}: the old connections stay open but
            are never read from again (a wallbox whose network went away).
        @return: C{{"opened", "failed", "attempts", "errors", "admitted_s":
            [seconds from the storm's start to each re-admission], "seconds"}}
        """
        return self._each({"command": "storm", "drop": drop, "retry_for": retry_for,
                           "retry_delay": retry_delay, "timeout": timeout})

    def close(self, timeout=30):
        """Close every WebSocket cleanly (abort what does not close in time)."""
        return self._each({"command": "close", "timeout": timeout})

    def stop(self):
        """End the workers; their remaining connections are dropped."""
        for process in self.processes:
            try:
                process.stdin.write(json.dumps({"command": "exit"}) + "\n")
                process.stdin.close()
            except OSError:
                pass
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes = []

    @property
    def pids(self):
        """The workers' process ids."""
        return [process.pid for process in self.processes]

    def _each(self, command):
        return self._all([command] * len(self.processes))

    def _all(self, commands):
        started = time.monotonic()
        for process, command in zip(self.processes, commands):
            process.stdin.write(json.dumps(command) + "\n")
            process.stdin.flush()
        replies = []
        for process in self.processes:
            line = process.stdout.readline()
            if not line:
                raise RuntimeError("a load generator worker ended (exit status {})".format(process.wait()))
            replies.append(json.loads(line))
        merged = {}
        for reply in replies:
            for key, value in reply.items():
                if isinstance(value, dict):
                    into = merged.setdefault(key, {})
                    for k, v in value.items():
                        into[k] = into.get(k, 0) + v
                elif isinstance(value, list):
                    merged.setdefault(key, []).extend(value)
                else:
                    merged[key] = merged.get(key, 0) + value
        merged["seconds"] = time.monotonic() - started
        return merged


class _Worker:
    """One load generator process: reads commands (JSON lines) on stdin,
    answers each with one JSON line on stdout."""

    def __init__(self):
        self.urls = []
        self.boxes = []  # a Wallbox per URL, None where it failed
        self.silent = []  # dropped with --drop silent, kept open unread
        self.kwargs = {}  # for websockets.connect
        self.boot = True

    async def run(self):
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            command = json.loads(line)
            name = command.pop("command")
            if name == "exit":
                break
            reply = await getattr(self, "do_" + name)(**command)
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
        for box in self.boxes + self.silent:
            if box is not None:
                box.ws.transport.abort()

    async def _open(self, url, boot, timeout):
        """A wallbox on C{url}, booted and accepted, or an exception."""
        box = await asyncio.wait_for(Wallbox.connect(url, boot=False, **self.kwargs), timeout)
        if boot:
            try:
                answer = await asyncio.wait_for(box.call("BootNotification", BOOT), timeout)
            except BaseException:
                box.ws.transport.abort()
                raise
            if answer[0] != 3 or answer[2].get("status") != "Accepted":
                box.ws.transport.abort()
                raise RuntimeError("boot not accepted: {}".format(json.dumps(answer)[:80]))
        return box

    async def do_connect(self, urls, concurrency, boot, ca, timeout):
        self.urls, self.boot = urls, boot
        # Without compression, as cfosproxy and wallboxes talk: the
        # websockets client would otherwise negotiate permessage-deflate with
        # a websockets server, and the direct run would not be comparable.
        self.kwargs = {"compression": None, "proxy": None}
        if any(url.startswith("wss:") for url in urls):
            self.kwargs["ssl"] = client_ssl(ca)
        limit = asyncio.Semaphore(concurrency)
        errors = {}

        async def one(url):
            async with limit:
                try:
                    return await self._open(url, boot, timeout)
                except Exception as e:
                    _count(errors, e)
                    return None

        self.boxes = await asyncio.gather(*(one(url) for url in urls))
        opened = sum(1 for box in self.boxes if box is not None)
        return {"opened": opened, "failed": len(urls) - opened, "errors": errors}

    async def do_heartbeat(self, concurrency, timeout):
        limit = asyncio.Semaphore(max(1, concurrency))
        errors = {}

        async def one(box):
            async with limit:
                try:
                    answer = await asyncio.wait_for(box.call("Heartbeat", {}), timeout)
                    return answer[0] == 3
                except Exception as e:
                    _count(errors, e)
                    return False

        answers = await asyncio.gather(*(one(box) for box in self.boxes if box is not None))
        answered = sum(answers)
        return {"answered": answered, "failed": len(self.urls) - answered, "errors": errors}

    async def do_storm(self, drop, retry_for, retry_delay, timeout):
        started = time.monotonic()
        for box in self.boxes:
            if box is None:
                continue
            if drop == "reset":
                # SO_LINGER 0: close() sends a reset, as when a wallbox's
                # TCP stack restarts; no WebSocket close, no FIN.
                sock = box.ws.transport.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                box.ws.transport.abort()
            else:
                # The peer hears nothing: it learns of the new connection
                # with the same ChargeBox-ID, or gives up on the old one.
                box.ws.transport.pause_reading()
                self.silent.append(box)
        deadline = started + retry_for
        errors = {}
        attempts = 0

        async def one(url):
            nonlocal attempts
            while True:
                attempts += 1
                try:
                    box = await self._open(url, self.boot, timeout)
                    return box, time.monotonic() - started
                except Exception as e:
                    _count(errors, e)
                    if time.monotonic() + retry_delay > deadline:
                        return None, None
                    await asyncio.sleep(retry_delay)

        results = await asyncio.gather(*(one(url) for url in self.urls))
        self.boxes = [box for box, _ in results]
        admitted = [round(t, 4) for _, t in results if t is not None]
        return {"opened": len(admitted), "failed": len(self.urls) - len(admitted),
                "attempts": attempts, "errors": errors, "admitted_s": admitted}

    async def do_close(self, timeout):
        async def one(box):
            try:
                await asyncio.wait_for(box.ws.close(), timeout)
                return 1
            except Exception:
                box.ws.transport.abort()
                return 0

        closed = await asyncio.gather(*(one(box) for box in self.boxes if box is not None))
        for box in self.silent:
            box.ws.transport.abort()
        self.boxes, self.silent = [], []
        return {"closed": sum(closed)}


def _count(errors, exception):
    """Count C{exception} in C{errors} under a short description."""
    text = "{}: {}".format(type(exception).__name__, exception)[:100]
    errors[text] = errors.get(text, 0) + 1


if __name__ == "__main__" and sys.argv[1:] == ["worker"]:
    asyncio.run(_Worker().run())
