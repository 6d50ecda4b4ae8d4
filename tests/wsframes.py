"""WebSocket frames written out field by field (RFC 6455 §5.2), well formed
or not, independently of cfosproxy's own frame code."""

import struct


def raw_frame(first, payload, mask=None, length_form=None):
    """One frame.

    @param first: the first byte (FIN, RSV bits, opcode).
    @param mask: a 4-byte key, or None for an unmasked frame.
    @param length_form: C{None} for the shortest length encoding, 126 or
        127 for a 16- or 64-bit length whatever the size.
    """
    size = len(payload)
    form = length_form or (size if size < 126 else 126 if size <= 0xFFFF else 127)
    mask_bit = 0x80 if mask is not None else 0
    if form == 126:
        header = struct.pack("!BBH", first, mask_bit | 126, size)
    elif form == 127:
        header = struct.pack("!BBQ", first, mask_bit | 127, size)
    else:
        header = struct.pack("!BB", first, mask_bit | size)
    if mask is None:
        return header + payload
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
