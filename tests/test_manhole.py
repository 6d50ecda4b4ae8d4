"""The SSH admin shell: real logins on loopback, the host key, the namespace."""

import os
import shutil
import stat
import tempfile

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch.ssh import channel, connection, keys, session, transport, userauth
from twisted.internet import defer, protocol, reactor
from twisted.trial import unittest

from cfosproxy.config import ConfigError
from cfosproxy.ops.manhole import (
    HOST_KEY_FILE,
    ManholeConfigError,
    admin_namespace,
    ensure_host_key,
    manhole_service,
)
from tests.harness import free_port

pytestmark = pytest.mark.usefixtures("logged_errors", "no_reactor_timers")


def make_key():
    """A fresh client key pair as a conch L{keys.Key}."""
    return keys.Key(ed25519.Ed25519PrivateKey.generate())


def temp_dir(testcase):
    """A new directory, removed after the test (trial's C{mktemp} would
    leave its files in the working directory under pytest)."""
    directory = tempfile.mkdtemp(prefix="cfosproxy-manhole-")
    testcase.addCleanup(shutil.rmtree, directory, ignore_errors=True)
    return directory


class FakeDevice:
    def __init__(self, name):
        self.name = name

    def as_json(self):
        return {"name": self.name, "enabled": True}


class FakeManager:
    def __init__(self):
        self.calls = []

    def set_enabled(self, name, enabled):
        self.calls.append((name, enabled))
        return defer.succeed(name)


class FakeSession:
    def __init__(self):
        self.calls = []

    def call(self, action, payload):
        self.calls.append((action, payload))
        return defer.succeed({"status": "Accepted"})


class FakeHub:
    def __init__(self, sessions):
        self.sessions = sessions


class _Shell(channel.SSHChannel):
    """Asks for a terminal and a shell, types one line, collects the output."""

    name = b"session"

    def channelOpen(self, data):
        client = self.conn.transport.factory
        pty = session.packRequest_pty_req(b"xterm", (24, 200, 0, 0), b"")
        self.conn.sendRequest(self, b"pty-req", pty, wantReply=True)
        self.conn.sendRequest(self, b"shell", b"", wantReply=True)
        self.write(client.line + b"\r")

    def dataReceived(self, data):
        client = self.conn.transport.factory
        client.output += data
        if client.expect in client.output:
            self.conn.transport.loseConnection()


class _Connection(connection.SSHConnection):
    def serviceStarted(self):
        super().serviceStarted()
        self.transport.factory.logged_in = True
        self.openChannel(_Shell(conn=self))


class _KeyAuth(userauth.SSHUserAuthClient):
    """Offers exactly one key, then gives up."""

    def __init__(self, user, instance, key):
        super().__init__(user, instance)
        self._key = key

    def getPublicKey(self):
        key, self._key = self._key, None
        self._offered = key
        return key.public() if key else None

    def getPrivateKey(self):
        return defer.succeed(self._offered)


class _ClientTransport(transport.SSHClientTransport):
    def verifyHostKey(self, hostKey, fingerprint):
        self.factory.host_key = hostKey
        return defer.succeed(True)

    def connectionSecure(self):
        f = self.factory
        self.requestService(_KeyAuth(f.user, _Connection(), f.key))

    def connectionLost(self, reason):
        super().connectionLost(reason)
        self.factory.done.callback(None)


class SSHClient(protocol.ClientFactory):
    """A conch SSH client that logs in with C{key} and types C{line}."""

    protocol = _ClientTransport

    def __init__(self, key, line, expect, user=b"admin"):
        self.key = key
        self.line = line
        self.expect = expect
        self.user = user
        self.output = b""
        self.logged_in = False
        self.host_key = None
        self.done = defer.Deferred()


class LoginTests(unittest.TestCase):
    """Real SSH logins against the manhole on loopback."""

    def setUp(self):
        self.directory = temp_dir(self)
        self.key = make_key()
        self.authorized_keys = os.path.join(self.directory, "authorized_keys")
        with open(self.authorized_keys, "wb") as f:
            f.write(b"# admins\n" + self.key.public().toString("openssh") + b" admin@example\n")
        self.port = free_port()
        namespace = admin_namespace(
            registry=[FakeDevice("garage-1")], manager=FakeManager(), hub=FakeHub({})
        )
        service = manhole_service(
            listen=f"tcp:{self.port}:interface=127.0.0.1",
            authorized_keys=self.authorized_keys,
            state_dir=os.path.join(self.directory, "var"),
            namespace=namespace,
        )
        service.startService()
        self.addCleanup(service.stopService)

    def connect(self, client):
        connector = reactor.connectTCP("127.0.0.1", self.port, client)
        self.addCleanup(connector.disconnect)
        return client.done

    @defer.inlineCallbacks
    def test_login_and_run_python(self):
        """A key from authorized_keys logs in (under any user name), sees the
        host key kept in state_dir, and devices() prints the devices."""
        client = SSHClient(self.key, b"devices()", b"'garage-1'", user=b"anyone")
        yield self.connect(client)
        self.assertTrue(client.logged_in)
        self.assertIn(b"'garage-1'", client.output)
        host_key = ensure_host_key(os.path.join(self.directory, "var"))
        self.assertEqual(client.host_key, host_key.public().blob())

    @defer.inlineCallbacks
    def test_unknown_key_refused(self):
        """A key that is not in authorized_keys does not get a shell."""
        client = SSHClient(make_key(), b"devices()", b"'garage-1'")
        yield self.connect(client)
        self.assertFalse(client.logged_in)
        self.assertNotIn(b"garage-1", client.output)


# The host key is made once, private, and kept.
def test_generated_once_and_reused(tmp_path):
    """The first build writes state_dir/manhole-host-key with mode 0600;
    a second build (a restart) uses the same key."""
    directory = str(tmp_path)
    authorized_keys = os.path.join(directory, "authorized_keys")
    with open(authorized_keys, "wb") as f:
        f.write(make_key().public().toString("openssh") + b"\n")
    state_dir = os.path.join(directory, "var")

    def build():
        manhole_service(
            listen="tcp:0:interface=127.0.0.1",
            authorized_keys=authorized_keys,
            state_dir=state_dir,
            namespace={},
        )
        return ensure_host_key(state_dir).fingerprint()

    first = build()
    path = os.path.join(state_dir, HOST_KEY_FILE)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert build() == first


# A key file that cannot be read stops the start with a clear error.
def assert_unreadable(path, state_dir):
    """Building the manhole with C{path} as authorized_keys fails with a
    config error that names the key and C{path}."""
    with pytest.raises(ManholeConfigError) as caught:
        manhole_service(
            listen="tcp:0:interface=127.0.0.1",
            authorized_keys=path,
            state_dir=state_dir,
            namespace={},
        )
    assert isinstance(caught.value, ConfigError)
    assert "[manhole] authorized_keys" in str(caught.value)
    assert path in str(caught.value)


def test_missing_file(tmp_path):
    """A missing authorized_keys file names the key and the file."""
    assert_unreadable(str(tmp_path / "authorized_keys"), str(tmp_path / "var"))


def test_directory(tmp_path):
    """A path that cannot be read as a file (a directory here; chmod 000
    would not stop root) names the key and the file."""
    directory = tmp_path / "keys"
    directory.mkdir()
    assert_unreadable(str(directory), str(tmp_path / "var"))


# The helpers an admin calls in the shell.
def test_enable_disable():
    """disable() and enable() switch the device through the manager and
    return its Deferred."""
    manager = FakeManager()
    ns = admin_namespace(registry=[], manager=manager, hub=FakeHub({}))
    assert ns["disable"]("garage-1").result == "garage-1"
    assert ns["enable"]("garage-1").result == "garage-1"
    assert manager.calls == [("garage-1", False), ("garage-1", True)]
    assert ns["manager"] is manager


def test_devices():
    """devices() lists every device as the status API shows it."""
    ns = admin_namespace(registry=[FakeDevice("a"), FakeDevice("b")], manager=None, hub=None)
    assert [d["name"] for d in ns["devices"]()] == ["a", "b"]


def test_send():
    """send() sends a CALL to a connected wallbox; to one that is not
    connected it raises a KeyError that says so."""
    wallbox = FakeSession()
    ns = admin_namespace(registry=[], manager=None, hub=FakeHub({"CB-0001": wallbox}))
    assert ns["send"]("CB-0001", "Reset", {"type": "Soft"}).result == {"status": "Accepted"}
    assert wallbox.calls == [("Reset", {"type": "Soft"})]
    with pytest.raises(KeyError) as caught:
        ns["send"]("CB-0009", "Reset", {"type": "Soft"})
    assert "no wallbox 'CB-0009' is connected" in str(caught.value)
