"""Whole text frames read and written by L{RelayPathMixin} itself behave
exactly as through Autobahn's parser and writer: the same messages, the
same answers on the wire (pongs, close frames with 1002 or 1009), whatever
the frames and however the bytes are split into reads. With the fast path
off (C{[server] fast_path = no}) the factories' hookup leaves nothing
behind that would make a difference either."""

import contextlib
import struct

import autobahn.websocket.protocol
import pytest
from autobahn.exception import Disconnected, PayloadExceededError
from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor, task
from twisted.internet.testing import StringTransport

from cfosproxy.ws.peer import PeerFactoryMixin
from cfosproxy.ws.relaypath import FACTORY_OPTIONS, RelayPathMixin, use_integer_masking
from tests.fakes import switching_protocols
from tests.wsframes import raw_frame

LIMIT = 300  # max_message_size for these tests: frames above it close with 1009
OPTIONS = dict(
    FACTORY_OPTIONS,
    maxMessagePayloadSize=LIMIT,
    maxFramePayloadSize=LIMIT,
    # As both of cfosproxy's factories: a close frame with the reason.
    failByDrop=False,
    # No timers on the global reactor from protocols that never see one.
    openHandshakeTimeout=0,
    closeHandshakeTimeout=0,
)
HANDSHAKE = (
    b"GET /CB-1 HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


@pytest.fixture(autouse=True)
def no_timers_left():
    """The protocols here run without a reactor: none of them may leave a
    timer on the global one, where the trial tests that follow would find
    it."""
    before = set(reactor.getDelayedCalls())
    yield
    assert set(reactor.getDelayedCalls()) <= before


class Wire(StringTransport):
    """A StringTransport that, like a TCP connection, lets Autobahn
    unregister a producer it never registered when it drops the line."""

    def unregisterProducer(self):
        self.producer = None


class _Recording:
    """Keeps the messages it receives. Closes on the message C{bye}, and
    fails the connection with 1007 on C{bad} (as cfosproxy does for text
    that is not UTF-8), to see what becomes of frames behind them in the
    same read."""

    def onOpen(self):
        self.messages = []

    def onMessage(self, payload, isBinary):
        self.messages.append((payload, isBinary))
        if payload == b"bye":
            self.sendClose(1000)
        elif payload == b"bad":
            self._invalid_payload("bad")


class DirectServer(_Recording, RelayPathMixin, WebSocketServerProtocol):
    """A server side with cfosproxy's direct path."""


class AutobahnServer(_Recording, WebSocketServerProtocol):
    """The same server side on Autobahn's own path."""


class DirectClient(_Recording, RelayPathMixin, WebSocketClientProtocol):
    """A client side (as the backend leg) with cfosproxy's direct path."""


class AutobahnClient(_Recording, WebSocketClientProtocol):
    """The same client side on Autobahn's own path."""


class RecordingServerFactory(PeerFactoryMixin, WebSocketServerFactory):
    """Chooses between the recording server protocols as cfosproxy's
    server factory chooses between its own."""

    protocol = DirectServer
    plain_protocol = AutobahnServer


class RecordingClientFactory(PeerFactoryMixin, WebSocketClientFactory):
    """Chooses between the recording client protocols as cfosproxy's
    backend factory chooses between its own."""

    protocol = DirectClient
    plain_protocol = AutobahnClient


def server_factory(protocol_class, options=OPTIONS):
    """A server factory for C{protocol_class}."""
    factory = WebSocketServerFactory()
    factory.setProtocolOptions(**options)
    factory.protocol = protocol_class
    return factory


def client_factory(protocol_class, options=OPTIONS):
    """A client factory for C{protocol_class}."""
    factory = WebSocketClientFactory("ws://localhost/CB-1")
    factory.setProtocolOptions(**options)
    factory.protocol = protocol_class
    return factory


def open_server(protocol_class, factory=None):
    """A server protocol after a completed handshake, and its transport
    (emptied of the handshake's answer).

    @param factory: the factory to build it; by default one with
        L{OPTIONS} for C{protocol_class}.
    """
    factory = factory or server_factory(protocol_class)
    protocol = factory.buildProtocol(None)
    transport = Wire()
    protocol.makeConnection(transport)
    protocol.dataReceived(HANDSHAKE)
    assert b"101 Switching Protocols" in transport.value()
    transport.clear()
    return protocol, transport


def open_client(protocol_class, factory=None):
    """A client protocol after a completed handshake, and its transport.

    @param factory: the factory to build it; by default one with
        L{OPTIONS} for C{protocol_class}.
    """
    factory = factory or client_factory(protocol_class)
    factory.setProtocolOptions(serverConnectionDropTimeout=0)
    protocol = factory.buildProtocol(None)
    transport = Wire()
    protocol.makeConnection(transport)
    request = transport.value().decode("ascii")
    transport.clear()
    protocol.dataReceived(switching_protocols(request))
    assert protocol.state == protocol.STATE_OPEN
    return protocol, transport


def frame(opcode, payload, fin=True, mask=None, rsv=0, length_form=None):
    """One WebSocket frame, well formed or not.

    @param mask: a 4-byte key, or None for an unmasked frame.
    @param length_form: C{None} for the shortest length encoding, 126 or
        127 for a 16- or 64-bit length whatever the size.
    """
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    return raw_frame(first, payload, mask, length_form)


def parse_frames(data):
    """The frames in C{data} as C{(fin, opcode, masked, payload)}, unmasked."""
    frames = []
    while data:
        first, second = data[0], data[1]
        size, at = second & 0x7F, 2
        if size == 126:
            size, at = struct.unpack("!H", data[2:4])[0], 4
        elif size == 127:
            size, at = struct.unpack("!Q", data[2:10])[0], 10
        masked = bool(second & 0x80)
        key = data[at:at + 4] if masked else b"\0\0\0\0"
        at += 4 if masked else 0
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(data[at:at + size]))
        frames.append((bool(first & 0x80), first & 0x0F, masked, payload))
        data = data[at + size:]
    return frames


payloads = st.one_of(
    st.binary(max_size=140),
    st.sampled_from([b"bye", b"bad", b'[2,"1","Heartbeat",{}]']),
    # Around the 7-bit length's end and the limit.
    st.sampled_from([125, 126, 127, LIMIT - 1, LIMIT, LIMIT + 1]).map(lambda n: b"x" * n),
)


@st.composite
def frames(draw, masked):
    """A frame as one side may receive it: mostly whole text frames, and
    every other kind the direct path must leave to Autobahn."""
    mask = draw(st.binary(min_size=4, max_size=4)) if masked else None
    payload = draw(payloads)
    kind = draw(st.sampled_from(
        ["text"] * 6 + ["binary", "fragmented", "ping", "wrong mask", "long length",
                        "rsv", "close"]
    ))
    if kind == "text":
        return frame(1, payload, mask=mask)
    if kind == "binary":
        return frame(2, payload, mask=mask)
    if kind == "fragmented":
        cut = draw(st.integers(min_value=0, max_value=len(payload)))
        return frame(1, payload[:cut], fin=False, mask=mask) + frame(0, payload[cut:], mask=mask)
    if kind == "ping":
        return frame(9, payload[:125], mask=mask)
    if kind == "wrong mask":
        return frame(1, payload, mask=None if masked else b"\1\2\3\4")
    if kind == "long length":
        return frame(1, payload, mask=mask, length_form=draw(st.sampled_from([126, 127])))
    if kind == "rsv":
        return frame(1, payload, mask=mask, rsv=draw(st.sampled_from([1, 2, 4])))
    return frame(8, struct.pack("!H", 1000), mask=mask)


def feed(protocol, stream, cuts):
    """C{stream} in reads split at C{cuts}."""
    last = 0
    for cut in sorted(set(min(c, len(stream)) for c in cuts)) + [len(stream)]:
        if cut > last:
            protocol.dataReceived(stream[last:cut])
            last = cut


def outcome(protocol, transport):
    """What a peer and the application can tell apart."""
    return (
        protocol.messages,
        parse_frames(transport.value()),
        protocol.state,
        protocol.failedByMe,
        protocol.wasMaxMessagePayloadSizeExceeded,
        transport.disconnecting,
    )


SIDES = {
    # The wallbox leg: a client's frames, masked.
    "server": (open_server, RecordingServerFactory, server_factory, AutobahnServer, True),
    # The backend leg: a server's frames, unmasked.
    "client": (open_client, RecordingClientFactory, client_factory, AutobahnClient, False),
}


@contextlib.contextmanager
def masking_as_in_the_daemon(fast_path):
    """Autobahn's masker as the daemon sets it (integer masking with the
    fast path on), and back to what it was after."""
    masker = autobahn.websocket.protocol.create_xor_masker
    if fast_path:
        use_integer_masking()
    try:
        yield
    finally:
        autobahn.websocket.protocol.create_xor_masker = masker


def pair(side, fast_path):
    """The protocol under test, as cfosproxy's factories hook up the fast
    path (on or off), and Autobahn alone with the same options; each opened,
    with its transport."""
    opened, hookup, reference, autobahn_class, _ = SIDES[side]
    factory = hookup()
    factory.setProtocolOptions(**OPTIONS)
    factory.use_fast_path(fast_path)
    assert factory.fast_path == fast_path
    # Autobahn's UTF-8 check is the one option the hookup changes: on for
    # both, or off for both (the protocol's own check is tested elsewhere).
    same = dict(OPTIONS, utf8validateIncoming=factory.utf8validateIncoming)
    plain = reference(autobahn_class, same)
    return opened(None, factory), opened(None, plain)


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast path on", "fast path off"])
@pytest.mark.parametrize("side", sorted(SIDES))
@settings(max_examples=350, deadline=None)
@given(
    data=st.data(),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=6),
)
def test_the_direct_path_matches_autobahn(side, fast_path, data, cuts):
    """The peer's frames, any mix and split into any reads, on either
    leg, with the fast path on and off: cfosproxy's protocol delivers and
    answers exactly what Autobahn alone does."""
    masked = SIDES[side][-1]
    stream = b"".join(data.draw(st.lists(frames(masked=masked), min_size=1, max_size=8)))
    results = []
    with masking_as_in_the_daemon(fast_path):
        for protocol, transport in pair(side, fast_path):
            feed(protocol, stream, cuts)
            results.append(outcome(protocol, transport))
    assert results[0] == results[1]


def test_the_hookup_chooses_the_path():
    """The hookup the differential test goes through builds the direct
    protocol with the fast path on and Autobahn's alone with it off."""
    for fast_path, expected in ((True, DirectServer), (False, AutobahnServer)):
        (protocol, _), _ = pair("server", fast_path)
        assert type(protocol) is expected


def test_whole_text_frames_skip_autobahns_parser(monkeypatch):
    """Whole text frames in one read reach onMessage without Autobahn's
    frame parser; a frame cut in two goes through it."""
    protocol, _ = open_server(DirectServer)
    parsed = []
    original = WebSocketServerProtocol.processData

    def counting(self):
        parsed.append(len(self.data))
        return original(self)

    monkeypatch.setattr(WebSocketServerProtocol, "processData", counting)
    mask = b"\x0a\x0b\x0c\x0d"
    protocol.dataReceived(frame(1, b"one", mask=mask) + frame(1, b"t" * 200, mask=mask))
    assert parsed == []
    cut = frame(1, b"three", mask=mask)
    protocol.dataReceived(cut[:4])
    protocol.dataReceived(cut[4:])
    assert parsed != []
    assert protocol.messages == [(b"one", False), (b"t" * 200, False), (b"three", False)]


def test_a_message_counts_as_the_answer_to_a_ping():
    """As through Autobahn: a text frame that arrives while a ping waits for
    its pong cancels the ping's timeout (the peer is evidently there)."""
    for protocol_class in (DirectServer, AutobahnServer):
        protocol, _ = open_server(protocol_class)
        timeout = task.Clock().callLater(10, lambda: None)
        protocol.autoPingTimeoutCall = timeout
        protocol.dataReceived(frame(1, b"hello", mask=b"abcd"))
        assert protocol.messages == [(b"hello", False)]
        assert protocol.autoPingTimeoutCall is None and not timeout.active()


@pytest.mark.parametrize("side", ["server", "client"])
@pytest.mark.parametrize("size", [0, 1, 125, 126, 300, LIMIT])
def test_sent_frames_match_autobahn(side, size):
    """A text message sent on the direct path is the frame Autobahn would
    write: FIN, opcode 1, the shortest length, masked by a client only."""
    opened = open_server if side == "server" else open_client
    direct, direct_wire = opened(DirectServer if side == "server" else DirectClient)
    plain, plain_wire = opened(AutobahnServer if side == "server" else AutobahnClient)
    payload = bytes(range(256)) * 2
    payload = payload[:size]
    direct.sendMessage(payload)
    plain.sendMessage(payload)
    assert direct_wire.value()[:2] == plain_wire.value()[:2]
    assert parse_frames(direct_wire.value()) == parse_frames(plain_wire.value()) == [
        (True, 1, side == "client", payload)
    ]


def test_sending_what_autobahn_refuses_still_fails():
    """A message above the limit, or one sent after the close, fails as it
    does through Autobahn; binary messages keep Autobahn's path."""
    protocol, transport = open_server(DirectServer)
    with pytest.raises(PayloadExceededError):
        protocol.sendMessage(b"x" * (LIMIT + 1))
    protocol.sendMessage(b"\x00\x01", isBinary=True)
    assert parse_frames(transport.value()) == [(True, 2, False, b"\x00\x01")]
    protocol.sendClose(1000)
    with pytest.raises(Disconnected):
        protocol.sendMessage(b"late")
