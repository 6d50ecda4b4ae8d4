"""The fence around Autobahn's and Twisted's internals: the start-up check
finds them on the releases installed, turns the fast path off (saying so
once) when one is missing, and no module but L{cfosproxy.ws.internals}
names them."""

import pathlib
import re

import autobahn.websocket.protocol
import pytest
from autobahn.twisted.websocket import WebSocketServerProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet import abstract
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

import cfosproxy
from cfosproxy.config import ServerConfig
from cfosproxy.ws import internals
from cfosproxy.ws.backend import _BackendFactory, _PlainBackendProtocol
from cfosproxy.ws.relaypath import fast_path_usable, use_integer_masking
from cfosproxy.ws.server import PlainWallboxServerProtocol, WallboxServerFactory

pytestmark = pytest.mark.usefixtures("no_reactor_timers")


@pytest.fixture
def fresh_check():
    """The start-up check run again by the test, and forgotten after it."""
    fast_path_usable.cache_clear()
    yield
    fast_path_usable.cache_clear()


@pytest.fixture
def warnings():
    """The text of every warning logged while the test runs."""
    lines = []

    def observer(event):
        if event.get("log_level") == LogLevel.warn:
            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    yield lines
    globalLogPublisher.removeObserver(observer)


def test_the_releases_installed_have_everything(fresh_check, warnings):
    """On the Autobahn and Twisted this project pins, nothing the fast path
    relies on is missing: it is on, and nothing is logged."""
    assert internals.missing_fast_path_internals() == []
    assert fast_path_usable()
    assert warnings == []


def renamed_temp_data_len(monkeypatch):
    """Twisted as if a release had renamed the TCP connection's list of
    unflushed writes."""
    original = abstract.FileDescriptor.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self._tempDataSize = vars(self).pop("_tempDataLen")

    monkeypatch.setattr(abstract.FileDescriptor, "__init__", init)
    return "twisted's tcp.Connection._tempDataLen"


def removed_ping_hook(monkeypatch):
    """Autobahn as if a release had dropped the hook that cancels a ping's
    timeout."""
    monkeypatch.delattr(WebSocketProtocol, "_cancelAutoPingTimeoutCall")
    return "autobahn's WebSocketServerProtocol._cancelAutoPingTimeoutCall"


def removed_masker_hook(monkeypatch):
    """Autobahn as if its protocol module no longer looked its masker up by
    name."""
    monkeypatch.delattr(autobahn.websocket.protocol, "create_xor_masker")
    return "autobahn.websocket.protocol.create_xor_masker"


def renamed_parser_state(monkeypatch):
    """Autobahn as if a release kept a connection's frame under another
    name (the check looks for the name on an opened connection)."""
    monkeypatch.setattr(
        internals,
        "FAST_PATH_AUTOBAHN_STATE",
        internals.FAST_PATH_AUTOBAHN_STATE + ("frame_in_progress",),
    )
    return "autobahn's WebSocketServerProtocol.frame_in_progress"


def broken_handshake(monkeypatch):
    """Autobahn as if its opening handshake had changed so that the check's
    connection in memory cannot open."""

    def refuse(self):
        raise RuntimeError("a changed handshake")

    monkeypatch.setattr(WebSocketServerProtocol, "processHandshake", refuse)
    return "a WebSocket in memory (RuntimeError: a changed handshake)"


@pytest.mark.parametrize(
    "release",
    [renamed_temp_data_len, removed_ping_hook, removed_masker_hook, renamed_parser_state,
     broken_handshake],
)
def test_a_missing_internal_turns_the_fast_path_off(release, monkeypatch, fresh_check, warnings):
    """When an internal is missing, the check names it, the factories build
    protocols without the fast path (Autobahn's UTF-8 check on), the masker
    is not swapped, and one warning says so and why, however many
    factories are made."""
    missing = release(monkeypatch)
    masker = getattr(autobahn.websocket.protocol, "create_xor_masker", None)
    assert missing in internals.missing_fast_path_internals()
    server = WallboxServerFactory(None, ServerConfig())
    backends = [_BackendFactory("ws://localhost/CB-{}".format(n)) for n in range(3)]
    assert server.protocol is PlainWallboxServerProtocol and not server.fast_path
    assert server.utf8validateIncoming
    assert all(factory.protocol is _PlainBackendProtocol for factory in backends)
    use_integer_masking()
    assert getattr(autobahn.websocket.protocol, "create_xor_masker", None) is masker
    assert len(warnings) == 1
    assert "WebSocket fast path is off" in warnings[0]
    assert missing in warnings[0]
    assert "Autobahn carries every frame" in warnings[0]


def test_the_check_is_not_run_for_a_fast_path_switched_off(monkeypatch, fresh_check, warnings):
    """With C{fast_path = no} the check does not run: nothing is logged
    even when an internal is missing."""
    removed_ping_hook(monkeypatch)
    assert WallboxServerFactory(None, ServerConfig(), fast_path=False).protocol is (
        PlainWallboxServerProtocol
    )
    assert warnings == []


# -- the fence ---------------------------------------------------------------

SOURCE = pathlib.Path(cfosproxy.__file__).parent

# Names the fence does not look for on their own: every class of
# cfosproxy's has a logger of its own called _log (ClientService's is
# replaced only by the subclass in internals, checked below); the backend
# link reads how a connection ended from Autobahn's close status, which
# drop_connection() writes (writes are checked below); and "data" and
# "offset" are words any module may use for its own attributes.
OWN_OR_READ_ELSEWHERE = {"_log", "wasClean", "wasNotCleanReason", "data", "offset"}


def internal_names():
    """Every name internals lists."""
    names = set(
        internals.FAST_PATH_AUTOBAHN_METHODS
        + internals.FAST_PATH_AUTOBAHN_STATE
        + internals.FAST_PATH_TWISTED_CONNECTION
        + (internals.AUTOBAHN_MASKER,)
    )
    for relied_on in internals.ALWAYS_RELIED_ON.values():
        names.update(relied_on)
    return names


def other_modules():
    """The source of every module of cfosproxy but internals."""
    for path in sorted(SOURCE.rglob("*.py")):
        if path != pathlib.Path(internals.__file__):
            yield path.relative_to(SOURCE), path.read_text(encoding="utf-8")


def test_only_internals_names_the_internals():
    """No other module of cfosproxy uses a name internals lists, writes
    Autobahn's close status, replaces ClientService's logger or a live
    connection's write()."""
    names = internal_names() - OWN_OR_READ_ELSEWHERE
    assert {"_tempDataLen", "current_frame", "sendCloseFrame"} <= names
    uses = re.compile(r"\.({})\b".format("|".join(sorted(names))))
    writes = re.compile(r"\.(wasClean|wasNotCleanReason)\s*=[^=]")
    found = []
    for path, text in other_modules():
        for pattern in (uses, writes, re.compile(r"\(ClientService\)"), re.compile(r"vars\(")):
            found += ["{}: {}".format(path, m.group(0)) for m in pattern.finditer(text)]
    assert found == []


def test_the_fence_finds_a_use():
    """The fence's pattern does see a private member used elsewhere."""
    names = internal_names() - OWN_OR_READ_ELSEWHERE
    uses = re.compile(r"\.({})\b".format("|".join(sorted(names))))
    assert uses.search("waiting = connection._tempDataLen")
    assert uses.search("if self.current_frame is None:")
    assert not uses.search("self.current_frames = []")

