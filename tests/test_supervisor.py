"""cfosproxy under supervisor, with the program section of
etc/supervisord.conf."""

import configparser
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.harness import ROOT, daemon_env, free_port, wait_for_port


def supervisor_config(tmp_path, config_path, port):
    """etc/supervisord.conf with its paths moved into C{tmp_path} and the
    program's command run by this Python, as this checkout's twistd."""
    parser = configparser.RawConfigParser()
    parser.read(os.path.join(ROOT, "etc", "supervisord.conf"), encoding="utf-8")
    program = parser["program:cfosproxy"]
    # What the test changes; everything else (signals, restarts, logs) is
    # the example's.
    assert program["command"].startswith("twistd -n --pidfile= cfosproxy --config ")
    assert program["stopsignal"] == "TERM"
    program["command"] = "{} -c 'from twisted.scripts.twistd import run; run()' -n --pidfile= cfosproxy --config {}".format(
        sys.executable, config_path
    )
    program["directory"] = str(tmp_path)
    program["stdout_logfile"] = str(tmp_path / "cfosproxy.log")
    program["environment"] = 'PYTHONPATH="{}"'.format(daemon_env()["PYTHONPATH"].rstrip(os.pathsep))
    del program["user"]
    parser["supervisord"]["logfile"] = str(tmp_path / "supervisord.log")
    parser["supervisord"]["pidfile"] = str(tmp_path / "supervisord.pid")
    parser["supervisord"]["childlogdir"] = str(tmp_path)
    sock = str(tmp_path / "supervisor.sock")
    parser["unix_http_server"]["file"] = sock
    parser["supervisorctl"]["serverurl"] = "unix://" + sock
    path = tmp_path / "supervisord.conf"
    with open(path, "w") as f:
        parser.write(f)
    return path


def test_supervisord_runs_and_stops_cfosproxy(tmp_path):
    """supervisord with the example program section starts cfosproxy (it
    listens), and stopping supervisord stops cfosproxy cleanly with SIGTERM
    (its store closes)."""
    supervisord = os.path.join(os.path.dirname(sys.executable), "supervisord")
    if not os.path.exists(supervisord):
        pytest.fail("supervisord is missing: install the test dependencies (pip install '.[test]')")
    port, status = free_port(), free_port()
    config = tmp_path / "cfosproxy.ini"
    config.write_text(
        "[server]\nlisten = tcp:{}:interface=127.0.0.1\ntls = off\n"
        "[status]\nlisten = tcp:{}:interface=127.0.0.1\n".format(port, status)
    )
    conf = supervisor_config(tmp_path, config, port)
    process = subprocess.Popen([supervisord, "-n", "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert wait_for_port(port, process), process.communicate(timeout=10)[0]
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=60)[0]
    assert process.returncode == 0, output
    deadline = time.monotonic() + 10
    log = ""
    while time.monotonic() < deadline and "store closed" not in log:
        log = (tmp_path / "cfosproxy.log").read_text()
        time.sleep(0.05)
    assert "store closed" in log, log
    # twistd ends a clean stop by re-raising SIGTERM (DESIGN §2 allows it).
    events = (tmp_path / "supervisord.log").read_text()
    assert "stopped: cfosproxy (exit status 0)" in events or "stopped: cfosproxy (terminated by SIGTERM)" in events, events
    assert "exited: cfosproxy" not in events, "cfosproxy ended before it was stopped"
