"""Text from the network is escaped before it reaches a log line."""

import asyncio
import json
from urllib.parse import quote

from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from cfosproxy.core.logtext import printable
from tests.harness import RunningDaemon, asyncio_test
from tests.wallboxes import connect, refused_status
from tests.wallboxserver import WallboxServer


def test_control_characters_escaped():
    """ESC, CR, LF, DEL, C1 controls and the Unicode line separator come out
    as escapes; nothing unprintable is left."""
    text = printable("CB\x1b[2J\r\nfake line\x7f\x85\u2028end")
    assert text == "CB\\x1b[2J\\r\\nfake line\\x7f\\x85\\u2028end"
    assert text.isprintable()


def test_ordinary_text_unchanged():
    """Letters of any script, spaces and punctuation stay as they are."""
    for text in ("CB-0001", "Tiefgarage Köln", "充电桩 1", "a b:c/d"):
        assert printable(text) is text


def test_backslash_doubled():
    """A backslash that was sent is doubled, so the four characters
    "\\x1b" that a wallbox typed never look like an escaped ESC."""
    assert printable("\\x1b") == "\\\\x1b"
    assert printable("\x1b") == "\\x1b"


def test_other_values_shown_as_repr():
    """A non-string (a list of subprotocols, bytes) is shown as its repr."""
    assert printable(["ocpp1.6", "x\ry"]) == "['ocpp1.6', 'x\\\\ry']"
    assert printable(b"\x1b") == "b'\\\\x1b'"


class LoggedEscapedTests(unittest.TestCase):
    """What a wallbox sends over a real connection is logged escaped."""

    def setUp(self):
        self.server = WallboxServer(self)
        self.lines = []

        def observer(event):
            self.lines.append(formatEvent(event) or "")

        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def assert_no_raw_controls(self):
        for line in self.lines:
            self.assertNotIn("\x1b", line)
            self.assertNotIn("\r", line)

    @asyncio_test
    async def test_chargebox_id_with_escape_and_carriage_return(self):
        """With accept_unknown = yes, a ChargeBox-ID with ESC and CR in the
        URL is refused with 400, and the refusal's log line shows it
        escaped; no log line holds a raw ESC or CR."""
        daemon = RunningDaemon(self, server="accept_unknown = yes\n")
        evil = "CB\x1b[31m\rforged"
        code, _ = await refused_status(daemon.url(chargebox_id=quote(evil, safe="")))
        self.assertEqual(code, 400)
        self.assertTrue(
            any("CB\\x1b[31m\\rforged" in line and "refused" in line for line in self.lines),
            self.lines,
        )
        self.assert_no_raw_controls()

    @asyncio_test
    async def test_action_with_escape_and_carriage_return(self):
        """A CALL whose action holds ESC and CR is answered NotImplemented,
        and the log line about that answer shows the action escaped."""
        async with await connect(self.server.url()) as ws:
            await ws.send(json.dumps([2, "1", "Evil\x1b[2J\rAction", {}]))
            answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
        self.assertEqual(answer[:3], [4, "1", "NotImplemented"])
        self.assertTrue(any("Evil\\x1b[2J\\rAction" in line for line in self.lines), self.lines)
        self.assert_no_raw_controls()
