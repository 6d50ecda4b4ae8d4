"""A wallbox that sends Heartbeats fast and never reads its socket: how much
memory cfosproxy takes for it over time.

    python bench/flood.py [--rate 5000] [--seconds 150] [--json out.json]

cfosproxy runs under ``twistd -n`` (``tls = off``, the wallbox configured,
no backend: cfosproxy answers each Heartbeat itself). The wallbox opens its
WebSocket from a socket with a 4 KiB receive buffer, then sends --rate
Heartbeats per second (in batches every 10 ms) and never reads again. The
next batch waits until the socket has taken the last one: when cfosproxy
stops reading, TCP holds the wallbox back. When cfosproxy closes the
connection, the wallbox
connects again at once (without --no-reconnect), as a misbehaving wallbox
would.

Reported: cfosproxy's RSS at the start, its largest and last value and the
growth, RSS once a second (in the JSON), the Heartbeats the socket took,
how many connections cfosproxy closed and when the first one was closed,
and cfosproxy's warning lines. Run it against older code by running the
script from a checkout of that code: it starts the cfosproxy of the tree
it sits in.
"""

import argparse
import base64
import os
import socket
import sys
import time

import common

UPGRADE = (
    "GET /{cbid} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    "Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
    "Sec-WebSocket-Protocol: ocpp1.6\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
MASK = b"\x11\x22\x33\x44"


def heartbeat(n):
    """Heartbeat CALL number C{n} as a masked text frame."""
    payload = '[2,"hb{}","Heartbeat",{{}}]'.format(n).encode()
    body = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return bytes((0x81, 0x80 | len(payload))) + MASK + body


def connect(port, cbid):
    """A WebSocket that reads its 101 answer and then never again."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(UPGRADE.format(cbid=cbid, key=key).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("closed during the handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(head.split(b"\r\n", 1)[0].decode())
    sock.settimeout(0.01)
    return sock


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=5000, help="Heartbeats per second")
    parser.add_argument("--seconds", type=float, default=150)
    parser.add_argument("--no-reconnect", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args(argv)

    proxy = common.Proxy([("a", "CB-1", None)]).start()
    pid = proxy.process.pid
    per_batch = max(1, args.rate // 100)
    samples = []
    closed_at = []
    taken = 0
    try:
        time.sleep(1)
        start_rss = common.rss_kib(pid)
        sock = connect(proxy.port, "CB-1")
        started = time.monotonic()
        next_sample = started
        n = 0
        pending = b""
        while time.monotonic() - started < args.seconds:
            now = time.monotonic()
            if now >= next_sample:
                samples.append((round(now - started, 1), common.rss_kib(pid)))
                next_sample += 1.0
            if sock is None:
                time.sleep(0.01)
                continue
            if not pending:
                # A new batch only once the last one is on its way: the
                # wallbox is held back by TCP, never sends half a frame.
                pending = b"".join(heartbeat(n + i) for i in range(per_batch))
                n += per_batch
            try:
                sent = sock.send(pending)
                pending = pending[sent:]
                taken += sent
            except socket.timeout:
                pass
            except OSError:
                closed_at.append(round(time.monotonic() - started, 1))
                sock.close()
                pending = b""
                sock = None if args.no_reconnect else connect(proxy.port, "CB-1")
            time.sleep(max(0.0, 0.01 - (time.monotonic() - now)))
        if sock is not None:
            sock.close()
        time.sleep(1)
        end_rss = common.rss_kib(pid)
        problems, first = proxy.log_problems(limit=5)
    finally:
        proxy.stop()

    rss = [value for _, value in samples]
    figures = {
        "rate": args.rate,
        "seconds": args.seconds,
        "rss_start_kib": start_rss,
        "rss_max_kib": max(rss),
        "rss_end_kib": end_rss,
        "growth_kib": max(rss) - start_rss,
        "heartbeats_taken": taken // len(heartbeat(0)),
        "connections_closed_by_cfosproxy": len(closed_at),
        "first_closed_after_s": closed_at[0] if closed_at else None,
        "rss_per_second_kib": samples,
        "log_problems": problems,
        "first_log_problems": first,
        "directory": proxy.directory,
    }
    rows = [
        ("RSS at start, KiB", None, start_rss, None),
        ("RSS largest / last, KiB", None, "{} / {}".format(max(rss), end_rss), None),
        ("RSS growth, KiB", None, max(rss) - start_rss, None),
        ("Heartbeats the socket took (about)", None, taken // len(heartbeat(0)), None),
        ("connections closed by cfosproxy", None, len(closed_at), None),
        ("first closed after, s", None, closed_at[0] if closed_at else None, None),
    ]
    common.report(
        "A wallbox sending {} Heartbeats/s and never reading, {:.0f} s".format(args.rate, args.seconds),
        rows, figures, args.json)


if __name__ == "__main__":
    sys.exit(main())
