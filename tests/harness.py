"""End-to-end helpers: the real daemon on real loopback sockets.

The daemon is built exactly as ``twistd cfosproxy`` builds it (``Options`` +
``build_daemon``, without the process-wide tuning of ``makeService``) and
started in this process; the wallboxes are the ``ocpp``
package's ChargePoint over ``websockets``, on the same asyncio loop.
"""

import asyncio
import functools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import textwrap

from twisted.internet import defer

from cfosproxy.tap import Options
from cfosproxy.wiring.daemon import build_daemon


def free_port():
    """A TCP port that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def asyncio_test(method):
    """Run an C{async def} trial test method as an asyncio task, so that it
    can await C{websockets} and the C{ocpp} package directly."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        return defer.Deferred.fromFuture(
            asyncio.ensure_future(method(self, *args, **kwargs))
        )

    return wrapper


async def wait_deferred(d):
    """Await a Twisted Deferred (or None) from asyncio code."""
    if d is not None:
        return await d.asFuture(asyncio.get_running_loop())


DEFAULT_WALLBOXES = """
[wallbox:garage-1]
type = ocpp
address = CB-0001
id = 1
"""


class RunningDaemon:
    """One cfosproxy service on free loopback ports, in a test's temp dir.

    @ivar port: the OCPP port; C{status_port}: the status API port.
    """

    def __init__(self, testcase, server="", manager="", status="", wallboxes=DEFAULT_WALLBOXES):
        directory = tempfile.mkdtemp(prefix="cfosproxy-test-")
        testcase.addCleanup(shutil.rmtree, directory, ignore_errors=True)
        self.directory = directory
        self.port = free_port()
        self.status_port = free_port()
        self.state_dir = os.path.join(directory, "var")
        text = (
            "[server]\nlisten = tcp:{port}:interface=127.0.0.1\n{server}\n"
            "[manager]\nstate_dir = {state}\n{manager}\n"
            "[status]\nlisten = tcp:{status}:interface=127.0.0.1\n{status_extra}\n"
            "{wallboxes}"
        ).format(
            port=self.port,
            server=textwrap.dedent(server),
            state=self.state_dir,
            manager=textwrap.dedent(manager),
            status=self.status_port,
            status_extra=textwrap.dedent(status),
            wallboxes=textwrap.dedent(wallboxes),
        )
        self.config_path = os.path.join(directory, "cfosproxy.ini")
        with open(self.config_path, "w", encoding="utf-8") as f:
            f.write(text)
        self._start()
        testcase.addCleanup(self.stop)

    def _start(self):
        options = Options()
        options.parseOptions(["--config", self.config_path])
        self.service = build_daemon(options)
        self.service.startService()

    @defer.inlineCallbacks
    def restart(self):
        """Stop the service and start a new one on the same config and
        state directory, as a restart of the daemon does."""
        yield self.stop()
        self._start()

    def stop(self):
        """Stop the service (idempotent)."""
        if self.service.running:
            return self.service.stopService()

    def url(self, chargebox_id="CB-0001", scheme="ws", path="/"):
        return "{}://127.0.0.1:{}{}{}".format(scheme, self.port, path, chargebox_id)

    def status_url(self, path):
        return "http://127.0.0.1:{}{}".format(self.status_port, path)


async def eventually(check, timeout=30.0, interval=0.05):
    """Poll an async C{check()} until it returns something true; return it.

    For state another process or connection settles a moment later (an
    answer still on its way back); bounded, never a fixed sleep."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("not reached within {}s".format(timeout))
        await asyncio.sleep(interval)


# -- the daemon as a real process ---------------------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TWISTD = "from twisted.scripts.twistd import run; run()"


def daemon_env():
    """The environment for a twistd child: this checkout first on the path,
    so that the code under test is what runs."""
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def twistd(*args, cwd, output=subprocess.PIPE):
    """Start C{twistd -n ARGS} in C{cwd}; its log goes to C{output} (a pipe,
    or an open file for a process that runs long enough to fill one)."""
    return subprocess.Popen(
        [sys.executable, "-c", TWISTD, "-n", "--pidfile=", *args],
        cwd=cwd,
        env=daemon_env(),
        stdout=output,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_port(port, process, timeout=30.0):
    """Poll until something listens on the port, or the process ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False




class RunningWallbox:
    """One virtual Power Brain (cfoswallbox), built as ``twistd cfoswallbox``
    builds it, on a free Modbus port.

    @ivar model: the simulated device; C{modbus_port}: its Modbus port.
    """

    def __init__(self, testcase, ocpp, car="plugged = yes\n"):
        from cfosproxy.wallbox.tap import Options as WallboxOptions
        from cfosproxy.wallbox.tap import makeService as make_wallbox

        directory = tempfile.mkdtemp(prefix="cfoswallbox-test-")
        testcase.addCleanup(shutil.rmtree, directory, ignore_errors=True)
        self.modbus_port = free_port()
        path = os.path.join(directory, "cfoswallbox.ini")
        with open(path, "w", encoding="utf-8") as f:
            f.write(
                "[ocpp]\n{}\n[modbus]\nlisten = tcp:{}:interface=127.0.0.1\n[car]\n{}".format(
                    textwrap.dedent(ocpp), self.modbus_port, textwrap.dedent(car)
                )
            )
        options = WallboxOptions()
        options.parseOptions(["--config", path])
        self.service = make_wallbox(options)
        self.service.startService()
        self.virtual = [s for s in self.service if hasattr(s, "_virtual")][0]._virtual
        self.model = self.virtual.model
        testcase.addCleanup(self.stop)

    def stop(self):
        if self.service.running:
            return self.service.stopService()
