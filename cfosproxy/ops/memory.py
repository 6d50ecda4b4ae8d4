"""Giving back the memory that closed connections leave behind.

A closed wallbox connection is not freed by reference counting alone: its
objects sit in reference cycles (Autobahn's protocol and the Deferred it
resolves with itself when closed, Twisted's TLS layer and its OpenSSL
connection, the tracebacks of the failures it was closed with). Python's
cycle collector frees them at its next full collection, which with the
daemon's settings (L{cfosproxy.ops.gctuning}) may come long after a burst of
connections closed; and glibc's C{malloc} keeps what is freed in its heap
instead of giving it back to the system. After 3,000 silent TLS
connections had been closed, cfosproxy's RSS stayed 100 MB above what it
was before, and grew with every further burst (C{bench/tlsidle.py}).

L{MemoryRelease} runs a full collection, and then glibc's C{malloc_trim},
once at least L{CLOSED_BEFORE_RELEASE} connections have closed since the
last time; L{memory_release_service} asks it once every
L{RELEASE_CHECK_INTERVAL} seconds. A site whose wallboxes stay connected
never pays for it.
"""

import ctypes
import gc
import os

from twisted.application.internet import TimerService
from twisted.logger import Logger

# A full collection walks every object the daemon holds (a few hundred
# milliseconds with thousands of wallboxes connected): worth it after a
# burst of closed connections (a reconnect storm, a scan of the port), not
# for the odd wallbox that reconnects.
CLOSED_BEFORE_RELEASE = 200

# Seconds between two looks at the count (a comparison of two numbers): the
# collection runs at most this often, and what a burst left is given back
# within this long after it.
RELEASE_CHECK_INTERVAL = 10


def _find_malloc_trim():
    """glibc's C{malloc_trim}, or None where the C library has none (musl,
    macOS)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def resident_kib():
    """The process's resident set size in KiB, or None where C{/proc} has
    no C{statm} (not Linux)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


class MemoryRelease:
    """Frees what closed connections left behind, once enough have closed.

    @param closed_connections: a callable returning how many connections
        have closed so far (a count that only grows).
    @param collect: the full collection (C{gc.collect}; a test's fake).
    @param trim: gives free heap memory back to the system; None: none
        (L{_find_malloc_trim}'s default, found when not given).
    """

    _log = Logger()
    _default = object()

    def __init__(self, closed_connections, collect=gc.collect, trim=_default):
        self._closed_connections = closed_connections
        self._collect = collect
        self._trim = _find_malloc_trim() if trim is self._default else trim
        self._released_at = closed_connections()

    def check(self):
        """Release if at least L{CLOSED_BEFORE_RELEASE} connections have
        closed since the last release (or since the start)."""
        try:
            closed = self._closed_connections()
            count = closed - self._released_at
            if count < CLOSED_BEFORE_RELEASE:
                return
            self._released_at = closed
            self.release(count)
        except Exception:
            # A TimerService's call that raises stops the service.
            self._log.failure("releasing the memory of closed connections")

    def release(self, count):
        """Free the cycles that closed connections left, and give free heap
        memory back to the system.

        @param count: how many connections have closed, for the log.
        """
        before = resident_kib()
        self._collect()
        if self._trim is not None:
            self._trim(0)
        after = resident_kib()
        if before is None or after is None:
            self._log.info("Freed the memory of {count:,} closed connections", count=count)
            return
        self._log.info(
            "Freed the memory of {count:,} closed connections: resident size "
            "{before:,} KiB before, {after:,} KiB after",
            count=count,
            before=before,
            after=after,
        )


def memory_release_service(closed_connections):
    """A service that looks at the count every L{RELEASE_CHECK_INTERVAL}
    seconds (see L{MemoryRelease})."""
    return TimerService(RELEASE_CHECK_INTERVAL, MemoryRelease(closed_connections).check)
