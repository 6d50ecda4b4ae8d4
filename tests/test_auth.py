"""Basic authentication of wallboxes."""

import base64

import pytest

from cfosproxy.core.auth import parse_basic_authorization, password_matches


def basic(user, password):
    raw = user.encode() + b":" + (password if isinstance(password, bytes) else password.encode())
    return "Basic " + base64.b64encode(raw).decode()


def test_parse_basic():
    """A Basic header yields the user as text and the password as bytes."""
    assert parse_basic_authorization(basic("CB-1", "sécret:x")) == ("CB-1", "sécret:x".encode())


@pytest.mark.parametrize("header", [None, "", "Bearer abc", "Basic !!!", "Basic " + base64.b64encode(b"nocolon").decode(), "Basic " + base64.b64encode(b"\xff:x").decode()])
def test_parse_rejects_garbage(header):
    """Missing, non-Basic, undecodable or colon-less headers give None."""
    assert parse_basic_authorization(header) is None


def test_plain_password():
    """A plain password matches itself only."""
    assert password_matches(b"geheim", "geheim")
    assert not password_matches(b"geheim2", "geheim")
    assert not password_matches(b"", "geheim")


def test_hex_password_matches_text_and_bytes():
    """A 40-hex-digit password matches both its text and the 20 bytes it
    encodes (wallboxes differ in which they send)."""
    key = "00112233445566778899aabbccddeeff00112233"
    assert password_matches(key.encode(), key)
    assert password_matches(bytes.fromhex(key), key)
    assert not password_matches(bytes.fromhex(key)[:-1], key)


def test_non_hex_40_chars_only_as_text():
    """A 40-character password that is not hex is compared as text only."""
    key = "z" * 40
    assert password_matches(key.encode(), key)
