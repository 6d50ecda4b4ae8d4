"""Text from the network, made safe to write into a log line.

A wallbox chooses its ChargeBox-ID, its close reasons and its error
descriptions. Written raw, an ESC starts a terminal escape sequence in
whoever reads the log with ``tail``, and a CR or LF lets the sender forge
log lines of its own.
"""


def printable(value: object) -> str:
    """C{value} with every character that does not print as itself escaped.

    Control characters (C{\\x1b}, C{\\r}, C{\\n}, C{\\x7f}, the C1 range),
    line and paragraph separators and other invisible characters become
    Python-style escapes (C{\\x1b}, C{\\u2028}); a backslash is doubled, so
    that an escape in the log always stands for one character that was
    sent. Letters of every script stay as they are (C{Köln}).

    @param value: a C{str}; anything else is shown as its C{repr}.
    @return: a C{str} without control characters.
    """
    if not isinstance(value, str):
        value = repr(value)
    if value.isprintable() and "\\" not in value:
        return value
    return "".join(_escape(character) for character in value)


_SHORT_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(character: str) -> str:
    if character in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[character]
    if character.isprintable():
        return character
    code = ord(character)
    if code <= 0xFF:
        return "\\x{:02x}".format(code)
    if code <= 0xFFFF:
        return "\\u{:04x}".format(code)
    return "\\U{:08x}".format(code)
