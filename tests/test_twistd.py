"""The daemon as an operator runs it: a real ``twistd`` process."""

import os
import signal
import subprocess
import sys
import tempfile

import pytest

from tests.harness import ROOT, TWISTD, daemon_env, free_port, twistd, wait_for_port

def write_config(directory, body):
    path = os.path.join(directory, "cfosproxy.ini")
    with open(path, "w", encoding="utf-8") as f:
        f.write(body)
    return path


def test_installed_plugin_is_found():
    """After ``pip install .`` twistd finds the cfosproxy plugin through
    ``getPlugins(IServiceMaker)``, outside the checkout, with no
    PYTHONPATH: the plugin file was installed into twisted/plugins."""
    code = (
        "from twisted.plugin import getPlugins\n"
        "from twisted.application.service import IServiceMaker\n"
        "names = [p.tapname for p in getPlugins(IServiceMaker)]\n"
        "assert 'cfosproxy' in names and 'cfoswallbox' in names, names\n"
        "import cfosproxy, os\n"
        "print(os.path.dirname(cfosproxy.__file__))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with tempfile.TemporaryDirectory() as cwd:
        result = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert not result.stdout.strip().startswith(ROOT + os.sep + "cfosproxy"), "found the checkout, not an install"


def test_example_config_starts_and_stops_on_sigterm(tmp_path):
    """``twistd -n cfosproxy --config etc/cfosproxy.ini`` (ports moved to
    free ones) listens, answers /api/health, and exits 0 on SIGTERM."""
    with open(os.path.join(ROOT, "etc", "cfosproxy.ini"), encoding="utf-8") as f:
        example = f.read()
    port, status = free_port(), free_port()
    example = example.replace("listen = tcp:19520", "listen = tcp:{}:interface=127.0.0.1".format(port))
    example = example.replace("tcp:19580:", "tcp:{}:".format(status))
    config = write_config(str(tmp_path), example)
    process = twistd("cfosproxy", "--config", config, cwd=str(tmp_path))
    try:
        assert wait_for_port(port, process), process.communicate(timeout=10)[0]
        assert wait_for_port(status, process)
        import json
        import urllib.request

        with urllib.request.urlopen("http://127.0.0.1:{}/api/health".format(status), timeout=10) as r:
            assert json.loads(r.read())["status"] == "ok"
        assert (tmp_path / "var" / "server-key.pem").exists(), "tls = detect made no certificate"
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0]
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "store closed" in output


@pytest.mark.parametrize(
    "body,expected",
    [
        ("[server]\ntls = maybe\n", "[server] tls"),
        ("[server]\nlisten = tcp:19520\ncolour = blue\n", "[server] colour"),
        ("[wallbox:a]\ntype = ocpp\naddress = CB-1\nmax_current = lots\n", "[wallbox:a] max_current"),
        (
            "[wallbox:a]\ntype = ocpp\naddress = CB-1\ngateway_url = wss://backend.example/\n"
            "gateway_ca = /nonexistent/ca.pem\n",
            "[wallbox:a] gateway_ca: cannot read /nonexistent/ca.pem",
        ),
        (
            "[manhole]\nlisten = tcp:0:interface=127.0.0.1\nauthorized_keys = /nonexistent/keys\n",
            "[manhole] authorized_keys: cannot read /nonexistent/keys",
        ),
    ],
)
def test_bad_config_fails_start(tmp_path, body, expected):
    """A broken config file stops twistd with exit status 1 and a message
    naming the file, section and key."""
    config = write_config(str(tmp_path), body)
    result = subprocess.run(
        [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "cfosproxy", "--config", config],
        cwd=str(tmp_path), env=daemon_env(), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert config in result.stderr + result.stdout
    assert expected in result.stderr + result.stdout


def test_state_dir_that_cannot_be_used_names_the_key(tmp_path):
    """A state_dir under a plain file fails the start with the file,
    section and key named, and the reason."""
    (tmp_path / "afile").write_text("")
    config = write_config(str(tmp_path), "[manager]\nstate_dir = afile/var\n")
    result = subprocess.run(
        [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "cfosproxy", "--config", config],
        cwd=str(tmp_path), env=daemon_env(), capture_output=True, text=True, timeout=60,
    )
    output = result.stderr + result.stdout
    assert result.returncode == 1
    assert "{}: [manager] state_dir: ".format(config) in output, output
    assert "Not a directory" in output


def test_missing_config_fails_start(tmp_path):
    """A config path that does not exist fails the start, naming the file."""
    missing = str(tmp_path / "nope.ini")
    result = subprocess.run(
        [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "cfosproxy", "--config", missing],
        cwd=str(tmp_path), env=daemon_env(), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert missing in result.stderr + result.stdout


@pytest.mark.parametrize(
    "plugin,key,template",
    [
        (
            "cfosproxy",
            "server",
            "[server]\nlisten = tcp:{port}:interface=127.0.0.1\ntls = off\n"
            "[status]\nlisten = tcp:{free}:interface=127.0.0.1\n",
        ),
        (
            "cfosproxy",
            "status",
            "[server]\nlisten = tcp:{free}:interface=127.0.0.1\ntls = off\n"
            "[status]\nlisten = tcp:{port}:interface=127.0.0.1\n",
        ),
        (
            "cfoswallbox",
            "modbus",
            "[ocpp]\nurl = ws://127.0.0.1:{free}/\n"
            "[modbus]\nlisten = tcp:{port}:interface=127.0.0.1\n",
        ),
    ],
)
def test_port_in_use_fails_start(tmp_path, plugin, key, template):
    """When its port is taken (the OCPP port of cfosproxy, the Modbus port
    of cfoswallbox), twistd does not run on without listening: it exits
    non-zero and says why."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(str(tmp_path), template.format(port=port, free=free_port()))
        result = subprocess.run(
            [sys.executable, "-c", TWISTD, "-n", "--pidfile=", plugin, "--config", config],
            cwd=str(tmp_path), env=daemon_env(), capture_output=True, text=True, timeout=60,
        )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "in use" in output.lower()
    # One line that names the setting, not forty lines of traceback.
    assert "Traceback" not in output, output
    assert "{}: [{}] listen".format(config, key) in output, output


def test_other_reactor_is_refused(tmp_path):
    """``--reactor=select`` fails with a message that says to use asyncio;
    ``--reactor=asyncio`` is accepted."""
    config = write_config(str(tmp_path), "[server]\nlisten = tcp:{}:interface=127.0.0.1\ntls = off\n".format(free_port()))
    result = subprocess.run(
        [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "--reactor=select", "cfosproxy", "--config", config],
        cwd=str(tmp_path), env=daemon_env(), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert "asyncio" in result.stdout + result.stderr

    port = free_port()
    config = write_config(
        str(tmp_path),
        "[server]\nlisten = tcp:{}:interface=127.0.0.1\ntls = off\n"
        "[status]\nlisten = tcp:{}:interface=127.0.0.1\n".format(port, free_port()),
    )
    process = twistd("--reactor=asyncio", "cfosproxy", "--config", config, cwd=str(tmp_path))
    try:
        assert wait_for_port(port, process), process.communicate(timeout=10)[0]
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert process.returncode in (0, -signal.SIGTERM)


def test_cfoswallbox_plugin_starts_and_stops(tmp_path):
    """``twistd -n cfoswallbox`` on the example configuration (ports moved
    to free ones) serves Modbus, logs its state, and exits on SIGTERM."""
    import socket

    with open(os.path.join(ROOT, "etc", "cfoswallbox.ini"), encoding="utf-8") as f:
        example = f.read()
    modbus = free_port()
    example = example.replace("tcp:4701:", "tcp:{}:".format(modbus))
    example = example.replace("ws://127.0.0.1:19520/", "ws://127.0.0.1:{}/".format(free_port()))
    config = write_config(str(tmp_path), example)
    process = twistd("cfoswallbox", "--config", config, cwd=str(tmp_path))
    try:
        assert wait_for_port(modbus, process), process.communicate(timeout=10)[0]
        socket.create_connection(("127.0.0.1", modbus), timeout=5).close()
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0]
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "state A" in output



def test_sigterm_closes_wallboxes_with_1001(tmp_path):
    """SIGTERM to a running twistd: a connected wallbox sees close code
    1001 (going away) and the process exits cleanly (0, or twistd's
    re-raised SIGTERM) within a few seconds, its store closed."""
    import asyncio

    import websockets

    port = free_port()
    config = write_config(
        str(tmp_path),
        "[server]\nlisten = tcp:{}:interface=127.0.0.1\ntls = off\n"
        "[status]\nlisten = tcp:{}:interface=127.0.0.1\n"
        "[wallbox:w]\ntype = ocpp\naddress = CB-0001\n".format(port, free_port()),
    )
    process = twistd("cfosproxy", "--config", config, cwd=str(tmp_path))

    async def session():
        async with websockets.connect(
            "ws://127.0.0.1:{}/CB-0001".format(port), subprotocols=["ocpp1.6"], open_timeout=10
        ) as ws:
            await ws.send('[2,"h","Heartbeat",{}]')
            await ws.recv()
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(ws.recv(), 10)
            except websockets.exceptions.ConnectionClosed:
                pass
            return ws.close_code

    try:
        assert wait_for_port(port, process), process.communicate(timeout=10)[0]
        # A loop of its own, not asyncio.run(): that would clear the current
        # event loop, which the asyncio reactor of the other tests runs on.
        loop = asyncio.new_event_loop()
        try:
            code = loop.run_until_complete(session())
        finally:
            loop.close()
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0]
    assert code == 1001, output
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "store closed" in output


def test_start_warns_when_no_device_can_charge(tmp_path):
    """A site max_current below every device's min_current is not an error,
    but building the daemon logs a warning that names file, section and
    key, so that the operator sees it in the first lines of the log."""
    from twisted.logger import formatEvent, globalLogPublisher

    from cfosproxy.tap import Options
    from cfosproxy.wiring.daemon import build_daemon

    config = write_config(
        str(tmp_path),
        "[server]\nlisten = tcp:0:interface=127.0.0.1\ntls = off\n"
        "[manager]\nmax_current = 4\nstate_dir = {}\n"
        "[status]\nlisten = tcp:0:interface=127.0.0.1\n"
        "[wallbox:garage-1]\ntype = ocpp\naddress = CB-0001\n".format(tmp_path / "var"),
    )
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        options = Options()
        options.parseOptions(["--config", config])
        build_daemon(options)
    finally:
        globalLogPublisher.removeObserver(events.append)
    warnings = [formatEvent(e) for e in events if e.get("log_level").name == "warn"]
    assert warnings == [
        "{}: [manager] max_current: 4 A is below the min_current of every device; "
        "no wallbox will ever be given current".format(config)
    ]
