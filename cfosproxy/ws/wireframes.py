"""WebSocket frames on the wire (RFC 6455 §5), as the fast path reads and
writes them: whole text messages in one frame, and the masking every
client frame carries.

Bytes in, bytes out: no Autobahn, no Twisted, so that the frame format can
be tested on its own (C{tests/test_wireframes.py}) and
L{cfosproxy.ws.relaypath} only decides when to use it.
"""

import random

# The first byte of a whole text message in one frame: FIN, no RSV bits
# (nothing negotiated that uses them), opcode 1.
WHOLE_TEXT_FRAME = 0x81

# The largest payload with a 16-bit length (RFC 6455 §5.2); longer frames,
# rare in OCPP, are left to Autobahn.
LARGEST_SHORT_PAYLOAD = 0xFFFF

# The second byte's top bit: the payload is masked (RFC 6455 §5.3).
_MASKED = 0x80
# Length codes in the second byte that announce a 16- or 64-bit length.
_LENGTH_16 = 126
_LENGTH_64 = 127


def xor_mask(data, key):
    """C{data} XORed with the 4-byte C{key} repeated (RFC 6455 §5.3), with
    one of Python's big integers: for frames of a few hundred bytes far
    cheaper than a loop or a cffi call.

    @param data: the payload, or a piece of it that starts where C{key}
        starts.
    @param key: the 4-byte masking key.
    """
    size = len(data)
    return (
        int.from_bytes(data, "little")
        ^ int.from_bytes((key * (size // 4 + 1))[:size], "little")
    ).to_bytes(size, "little")


def new_mask_key():
    """A fresh 4-byte masking key for a frame a client sends."""
    return random.getrandbits(32).to_bytes(4, "big")


def read_whole_text_frame(data, start, masked, largest):
    """The whole text frame at C{data[start:]}, if there is one that the
    fast path may take.

    @param masked: whether the frame must be masked: a client masks every
        frame, a server none (RFC 6455 §5.1). A frame the other way round is
        not taken.
    @param largest: the largest payload to take (at most
        L{LARGEST_SHORT_PAYLOAD}).
    @return: C{(payload, end)}: the unmasked payload and where the next
        frame starts; or C{None} when the bytes at C{start} are not one
        whole text frame within C{largest}: cut off, fragmented, binary, a
        control frame, with RSV bits, the wrong masking, a 64-bit length, a
        16-bit length that is not the shortest form (a violation), or
        above C{largest}.
    """
    size = len(data)
    if size - start < 2 or data[start] != WHOLE_TEXT_FRAME:
        return None
    second = data[start + 1]
    if (second >= _MASKED) != masked:
        return None
    length = second & 0x7F
    header = 2
    if length == _LENGTH_16:
        if size - start < 4:
            return None
        length = (data[start + 2] << 8) | data[start + 3]
        if length < _LENGTH_16:
            return None
        header = 4
    elif length == _LENGTH_64:
        return None
    if length > largest:
        return None
    body = start + header + (4 if masked else 0)
    end = body + length
    if end > size:
        return None
    payload = data[body:end]
    if masked:
        payload = xor_mask(payload, data[body - 4:body])
    return payload, end


def whole_text_frame(payload, mask_key=None):
    """One frame carrying the whole text message C{payload}, with the
    shortest length that fits (RFC 6455 §5.2).

    @param payload: at most L{LARGEST_SHORT_PAYLOAD} bytes.
    @param mask_key: the 4-byte masking key for a frame a client sends;
        C{None} for a server's frame, which is not masked.
    """
    size = len(payload)
    mask_bit = 0
    if mask_key is not None:
        payload = mask_key + xor_mask(payload, mask_key)
        mask_bit = _MASKED
    if size < _LENGTH_16:
        header = bytes((WHOLE_TEXT_FRAME, mask_bit | size))
    else:
        header = bytes((WHOLE_TEXT_FRAME, mask_bit | _LENGTH_16, size >> 8, size & 0xFF))
    return header + payload


class IntegerMasker:
    """Masks and unmasks a frame's payload (RFC 6455 §5.3) with
    L{xor_mask}, with the interface of Autobahn's maskers: the payload may
    come in pieces, and C{pointer()} is how much of it was processed.

    @param mask: the frame's 4-byte masking key.
    @param length: the payload's length (Autobahn passes it; not needed).
    """

    __slots__ = ("_mask", "_offset")

    def __init__(self, mask, length=None):
        self._mask = bytes(mask)
        self._offset = 0

    def pointer(self):
        """How many bytes of the payload were processed so far."""
        return self._offset

    def reset(self):
        """Start again at the payload's first byte."""
        self._offset = 0

    def process(self, data):
        """The next piece of the payload, masked or unmasked."""
        start = self._offset & 3
        self._offset += len(data)
        # The key turned to where this piece starts.
        return xor_mask(data, self._mask[start:] + self._mask[:start])
