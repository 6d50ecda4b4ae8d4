"""Test doubles for the sans-IO core: a connection that records frames."""

import base64
import hashlib
import json

from zope.interface import implementer

from cfosproxy.core.interfaces import IPeerConnection, IWallboxHandler


@implementer(IPeerConnection)
class RecordingConnection:
    """An L{IPeerConnection} that keeps what was sent, as parsed JSON."""

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


@implementer(IWallboxHandler)
class AnsweringHandler:
    """An L{IWallboxHandler} that only answers (subclasses give C{answer}):
    sessions opening and closing are nothing to it."""

    def answer(self, call):
        raise NotImplementedError

    def session_opened(self, session):
        pass

    def session_closed(self, session):
        pass


def switching_protocols(request, subprotocol=None):
    """The server's answer to a WebSocket client's upgrade C{request} (its
    text), with the right Sec-WebSocket-Accept (RFC 6455 §4.2.2)."""
    key = next(
        line.split(":", 1)[1].strip()
        for line in request.split("\r\n")
        if line.lower().startswith("sec-websocket-key:")
    )
    accept = base64.b64encode(
        hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
    )
    protocol = b"Sec-WebSocket-Protocol: " + subprotocol.encode() + b"\r\n" if subprotocol else b""
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\n" + protocol + b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
