"""RFC 6455 frames as the fast path reads and writes them, on their own:
the whole text frames it takes, every frame it must leave to Autobahn, the
frames it builds, and masking equal to Autobahn's."""

import ast
import struct

import pytest
from autobahn.websocket.xormasker import create_xor_masker as autobahn_masker
from hypothesis import given, settings
from hypothesis import strategies as st

from cfosproxy.ws import wireframes
from cfosproxy.ws.wireframes import (
    LARGEST_SHORT_PAYLOAD,
    IntegerMasker,
    read_whole_text_frame,
    whole_text_frame,
    xor_mask,
)
from tests.wsframes import raw_frame as frame

keys = st.binary(min_size=4, max_size=4)


@settings(max_examples=300, deadline=None)
@given(
    payload=st.binary(max_size=LARGEST_SHORT_PAYLOAD),
    key=st.one_of(st.none(), keys),
    before=st.binary(max_size=20),
    after=st.binary(max_size=20),
)
def test_a_whole_text_frame_is_read_wherever_it_starts(payload, key, before, after):
    """A whole text frame, masked or not, is read to its payload and the
    offset where the next frame starts, whatever comes before and after
    it."""
    data = before + frame(0x81, payload, key) + after
    assert read_whole_text_frame(data, len(before), key is not None, LARGEST_SHORT_PAYLOAD) == (
        payload,
        len(data) - len(after),
    )


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=70000), key=st.one_of(st.none(), keys))
def test_built_frames_are_what_rfc_6455_writes(payload, key):
    """The frame built for a text message is FIN, opcode 1, the shortest
    length and, for a client, the payload masked with the key."""
    if len(payload) > LARGEST_SHORT_PAYLOAD:
        payload = payload[:LARGEST_SHORT_PAYLOAD]
    assert whole_text_frame(payload, key) == frame(0x81, payload, key)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 300, LARGEST_SHORT_PAYLOAD])
@pytest.mark.parametrize("masked", [True, False])
def test_built_frames_read_back(size, masked):
    """Each length form reads back to the message it was built from."""
    payload = bytes(range(256)) * (size // 256 + 1)
    payload = payload[:size]
    key = wireframes.new_mask_key() if masked else None
    built = whole_text_frame(payload, key)
    assert read_whole_text_frame(built, 0, masked, LARGEST_SHORT_PAYLOAD) == (payload, len(built))


NOT_TAKEN = {
    "cut off": frame(0x81, b"hello", b"abcd")[:-1],
    "header cut off": frame(0x81, b"x" * 200, b"abcd")[:3],
    "one byte": b"\x81",
    "fragment": frame(0x01, b"hello", b"abcd"),
    "continuation": frame(0x80, b"hello", b"abcd"),
    "binary": frame(0x82, b"hello", b"abcd"),
    "ping": frame(0x89, b"hello", b"abcd"),
    "close": frame(0x88, struct.pack("!H", 1000), b"abcd"),
    "rsv bit": frame(0xC1, b"hello", b"abcd"),
    "unmasked from a client": frame(0x81, b"hello"),
    "16-bit length for a short payload": frame(0x81, b"hello", b"abcd", length_form=126),
    "64-bit length": frame(0x81, b"x" * 200, b"abcd", length_form=127),
    "above the limit": frame(0x81, b"x" * 301, b"abcd"),
}


@pytest.mark.parametrize("case", sorted(NOT_TAKEN))
def test_what_is_left_to_autobahn(case):
    """Anything but one whole, masked text frame within the limit (here a
    server's view, limit 300) is not taken."""
    assert read_whole_text_frame(NOT_TAKEN[case], 0, True, 300) is None


def test_a_masked_frame_is_not_taken_from_a_server():
    """A server masks none of its frames: a masked one is left to
    Autobahn's parser, to refuse."""
    assert read_whole_text_frame(frame(0x81, b"hello", b"abcd"), 0, False, 300) is None
    assert read_whole_text_frame(frame(0x81, b"hello"), 0, False, 300) == (b"hello", 7)


def test_the_limit_is_inclusive():
    """A payload of exactly the limit is taken."""
    data = frame(0x81, b"x" * 300, b"abcd")
    assert read_whole_text_frame(data, 0, True, 300) == (b"x" * 300, len(data))


@settings(max_examples=300, deadline=None)
@given(key=keys, payload=st.binary(max_size=5000))
def test_masking_twice_is_the_identity(key, payload):
    """XOR masking undoes itself, and equals the byte-wise definition."""
    masked = xor_mask(payload, key)
    assert masked == bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    assert xor_mask(masked, key) == payload


@settings(max_examples=300, deadline=None)
@given(
    mask=keys,
    payload=st.binary(max_size=5000),
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=5),
)
def test_integer_masking_equals_autobahns(mask, payload, cuts):
    """L{IntegerMasker} gives the same bytes as Autobahn's own masker, for
    any key and payload, also when the payload comes in pieces."""
    reference = autobahn_masker(mask, len(payload))
    ours = IntegerMasker(mask, len(payload))
    pieces, last = [], 0
    for cut in sorted(min(c, len(payload)) for c in cuts) + [len(payload)]:
        pieces.append(payload[last:cut])
        last = cut
    assert b"".join(ours.process(p) for p in pieces) == reference.process(payload)
    assert ours.pointer() == len(payload)
    ours.reset()
    assert ours.pointer() == 0


def test_the_module_needs_neither_autobahn_nor_twisted():
    """The frame format is pure: the module imports neither library."""
    with open(wireframes.__file__, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported and not imported & {"autobahn", "twisted", "txaio", "cfosproxy"}
