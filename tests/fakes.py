"""Test doubles for the sans-IO core: a connection that records frames."""

import json

from zope.interface import implementer

from cfosproxy.session import IWallboxConnection


@implementer(IWallboxConnection)
class RecordingConnection:
    """An L{IWallboxConnection} that keeps what was sent, as parsed JSON."""

    peer = "192.0.2.10:50000"

    def __init__(self):
        self.sent = []
        self.closed_with = None
        self.reading = True

    def send_text(self, text):
        self.sent.append(text)

    def close(self, code, reason):
        self.closed_with = (code, reason)

    def pause_reading(self):
        self.reading = False

    def resume_reading(self):
        self.reading = True

    @property
    def frames(self):
        return [json.loads(text) for text in self.sent]

    def last(self):
        return json.loads(self.sent[-1])
