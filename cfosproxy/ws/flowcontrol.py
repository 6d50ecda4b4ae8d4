"""How much may wait for one peer: reading from a peer pauses while too much
waits to be sent to it, and a peer that takes nothing is closed.

A WebSocket peer (a wallbox, or a backend) that keeps sending CALLs and
never reads its socket would otherwise make cfosproxy keep every answer in
memory: Twisted's C{transport.write()} buffers whatever the socket does not
take, without a limit, and data frames count as signs of life for the ping
timeout. So, for each connection:

- L{WriteBufferGuard} is registered as a streaming producer with the TCP
  connection (under TLS too: with the socket, below the TLS layer), the
  standard way Twisted tells a writer that its buffer is full. While more
  than Twisted's buffer size (64 KiB) waits, reading from the peer stops;
  once everything is sent, it starts again.
- Reading stopped, the peer can only add what one read already brought in.
  Above L{write_buffer_limit} bytes waiting, or when the peer takes nothing
  of what waits for L{WRITE_STALL_TIMEOUT} seconds, the connection is
  closed with a log line saying why.
- L{ReadPauses} keeps the reasons for which reading is paused: this one,
  and the session's own back-pressure (too many of the peer's CALLs
  unanswered, L{cfosproxy.core.session.MAX_UNANSWERED}). The peer is read again
  only when every reason is gone. Pausing is logged once, then summed up at
  most once a minute: a peer that pauses and resumes thousands of times must
  not flood the log.

L{FlowControlMixin} puts both on an Autobahn protocol.
"""

import collections

from twisted.internet import abstract, tcp
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOProtocol
from zope.interface import implementer

from cfosproxy.ws import internals

# Reading from a peer pauses while more than this waits to be sent to it.
# It is Twisted's own buffer size (abstract.FileDescriptor.bufferSize): above
# it Twisted tells the producer registered with the connection to pause. A
# wallbox that reads its socket never has this much waiting: OCPP-J has one
# CALL in flight each way, and answers are a few hundred bytes.
WRITE_PAUSE_SIZE = tcp.Connection.bufferSize

# A connection with more than WRITE_PAUSE_SIZE plus this many of the largest
# allowed messages (max_message_size) waiting is closed at once. Reading from
# it has stopped at WRITE_PAUSE_SIZE, so only the answers to what the last
# read brought in (64 KiB at most), an answer the other leg relays, a ping
# and a close frame can still be added. A peer that reads never gets near
# it; one that sends Heartbeats and never reads stays below it until the
# stall timeout closes it; one whose last read held thousands of tiny
# frames, each answered with a larger CALLERROR, gets here.
WRITE_LIMIT_MESSAGES = 4

# A peer that has taken none of what waits for it for this long is not
# reading: its connection is closed. A wallbox on a slow mobile link takes
# 64 KiB in seconds; one that is busy (a firmware update, say) still reads
# its socket within the ping interval.
WRITE_STALL_TIMEOUT = 60.0

# Pausing is logged once; pauses within this many seconds after it are
# counted and summed up in one line at its end.
PAUSE_LOG_WINDOW = 60.0

# Why reading from a peer is paused (the text follows "reading paused:").
UNANSWERED_CALLS = "too many of its CALLs wait for their answers"
WRITE_BUFFER_FULL = "more than {:,} bytes wait to be sent to it".format(WRITE_PAUSE_SIZE)


def write_buffer_limit(max_message_size):
    """The most bytes that may wait to be sent to one peer before its
    connection is closed.

    @param max_message_size: the largest message allowed (C{[server]
        max_message_size}); 0 or less: Autobahn's "no limit", counted as
        64 KiB.
    """
    if max_message_size <= 0:
        max_message_size = 65536
    return WRITE_PAUSE_SIZE + WRITE_LIMIT_MESSAGES * max_message_size


def socket_transport(transport):
    """The transport that owns the socket under C{transport}: the TCP
    connection under Twisted's TLS layer, else C{transport} itself."""
    if isinstance(transport, TLSMemoryBIOProtocol):
        return transport.transport
    return transport


def buffered_bytes(transport):
    """How many bytes written to C{transport} wait to be sent: in Twisted's
    buffer of the socket's connection, and, under TLS, plain text the TLS
    layer holds back until its handshake is done. 0 for a transport that
    has no send buffer (a test's)."""
    connection = socket_transport(transport)
    waiting = 0
    if isinstance(connection, abstract.FileDescriptor):
        waiting = internals.tcp_bytes_waiting(connection)
    if connection is not transport:
        waiting += internals.tls_bytes_waiting(transport)
    return waiting


class ReadPauses:
    """The reasons for which reading from one peer is paused.

    Reading stops at the first reason and starts again once the last one is
    gone. The first pause is logged, and the end of a logged pause; further
    pauses within L{PAUSE_LOG_WINDOW} seconds are counted and summed up in
    one line when the window ends, which then starts another window while
    pauses go on.

    @param transport: what to pause: its C{pauseProducing} and
        C{resumeProducing} (the protocol's transport).
    @param clock: L{IReactorTime}, for the log window.
    @param name: a callable returning the peer's name for the log.
    """

    _log = Logger()

    def __init__(self, transport, clock, name):
        self._transport = transport
        self._clock = clock
        self._name = name
        self._reasons = set()
        self._window = None  # the DelayedCall that ends the log window
        self._unlogged = collections.Counter()  # reason -> pauses not logged
        self._logged = False  # whether the current pause was logged
        self._stopped = False

    @property
    def paused(self):
        """Whether reading is paused now, for any reason."""
        return bool(self._reasons)

    def pause(self, reason):
        """Stop reading for C{reason} (one of this module's reason texts);
        nothing changes if reading is paused for it already."""
        if reason in self._reasons or self._stopped:
            return
        self._reasons.add(reason)
        if len(self._reasons) == 1:
            self._transport.pauseProducing()
            self._log_pause(reason)

    def resume(self, reason):
        """C{reason} is gone; read again unless another reason remains."""
        if reason not in self._reasons:
            return
        self._reasons.discard(reason)
        if self._reasons or self._stopped:
            return
        self._transport.resumeProducing()
        if self._logged:
            self._logged = False
            self._log.info("{peer}: reading again", peer=self._name())

    def stop(self):
        """The connection is gone: end the log window (summing it up), and
        leave the transport alone from now on."""
        self._stopped = True
        if self._window is not None:
            self._window.cancel()
            self._window = None
        self._sum_up()

    def _log_pause(self, reason):
        if self._window is not None:
            self._unlogged[reason] += 1
            self._logged = False
            return
        self._logged = True
        self._log.info("{peer}: reading paused: {reason}", peer=self._name(), reason=reason)
        self._window = self._clock.callLater(PAUSE_LOG_WINDOW, self._window_over)

    def _window_over(self):
        self._window = None
        if self._sum_up():
            # Pausing goes on: the next summary no sooner than a window on.
            self._window = self._clock.callLater(PAUSE_LOG_WINDOW, self._window_over)

    def _sum_up(self):
        """Log the pauses not logged one by one, if any; whether there were."""
        if not self._unlogged:
            return False
        reasons = "; ".join(
            "{} ({:,} times)".format(reason, count)
            for reason, count in self._unlogged.most_common()
        )
        self._log.info(
            "{peer}: reading paused {count:,} more times in the last {window:.0f} s: "
            "{reasons}; {now}",
            peer=self._name(),
            count=sum(self._unlogged.values()),
            window=PAUSE_LOG_WINDOW,
            reasons=reasons,
            now="paused now" if self._reasons else "reading now",
        )
        self._unlogged.clear()
        return True


@implementer(IPushProducer)
class WriteBufferGuard:
    """Watches what waits to be sent to one peer (see the module's
    docstring): registered as a streaming producer with the connection
    that owns the socket, it is told when Twisted's buffer is full
    (C{pauseProducing}, on every write while it is) and when everything has
    been sent (C{resumeProducing}).

    @param transport: the protocol's transport (TLS or TCP).
    @param pauses: the peer's L{ReadPauses}.
    @param clock: L{IReactorTime}, for the stall timeout and the close.
    @param limit: the most bytes that may wait (L{write_buffer_limit}).
    @param give_up: called with a reason (text) when the connection must
        close; called once, out of the write that found it.
    """

    def __init__(self, transport, pauses, clock, limit, give_up):
        self._transport = transport
        self._connection = socket_transport(transport)
        self._pauses = pauses
        self._clock = clock
        self._limit = limit
        self._give_up = give_up
        self._full = False
        self._stall_timer = None
        self._waiting_at_check = 0
        self._closing = None
        self._registered = False

    def attach(self):
        """Register with the connection that owns the socket."""
        if getattr(self._connection, "producer", None) is None:
            self._connection.registerProducer(self, True)
            self._registered = True

    def detach(self):
        """Unregister (the connection is being closed): Twisted closes a
        connection only once no producer is registered. A plain
        connection's own transport is unregistered by Autobahn itself."""
        self._cancel_stall_timer()
        if self._connection is not self._transport:
            self._unregister()

    # -- IPushProducer, called by Twisted ---------------------------------

    def pauseProducing(self):
        """More than Twisted's buffer size waits to be sent."""
        if self._closing is not None:
            return
        waiting = buffered_bytes(self._transport)
        if waiting > self._limit:
            self._close(
                "{:,} bytes wait to be sent to it, more than the limit of {:,}; "
                "it does not read what it is sent".format(waiting, self._limit)
            )
            return
        if not self._full:
            self._full = True
            self._waiting_at_check = waiting
            self._stall_timer = self._clock.callLater(WRITE_STALL_TIMEOUT, self._check_stall)
            self._pauses.pause(WRITE_BUFFER_FULL)

    def resumeProducing(self):
        """Everything written has been sent."""
        if getattr(self._connection, "disconnecting", False):
            # Closing: a paused producer would keep Twisted from finishing
            # the close once the buffer is empty.
            self._unregister()
        self._cancel_stall_timer()
        if self._full:
            self._full = False
            self._pauses.resume(WRITE_BUFFER_FULL)

    def stopProducing(self):
        """The connection is gone."""
        self._registered = False
        self._cancel_stall_timer()
        if self._closing is not None and self._closing.active():
            self._closing.cancel()

    # -- internals -----------------------------------------------------------

    def _check_stall(self):
        self._stall_timer = None
        waiting = buffered_bytes(self._transport)
        if waiting < self._waiting_at_check:
            # It reads, slowly: give it another while.
            self._waiting_at_check = waiting
            self._stall_timer = self._clock.callLater(WRITE_STALL_TIMEOUT, self._check_stall)
            return
        self._close(
            "it has taken none of the {:,} bytes waiting to be sent to it in "
            "{:.0f} s".format(waiting, WRITE_STALL_TIMEOUT)
        )

    def _close(self, reason):
        self._cancel_stall_timer()
        # Out of the write that found it: the protocol is in the middle of
        # sending, and Autobahn closes with more writes of its own.
        self._closing = self._clock.callLater(0, self._give_up, reason)

    def _cancel_stall_timer(self):
        if self._stall_timer is not None:
            if self._stall_timer.active():
                self._stall_timer.cancel()
            self._stall_timer = None

    def _unregister(self):
        if self._registered and getattr(self._connection, "producer", None) is self:
            self._registered = False
            self._connection.unregisterProducer()


class FlowControlMixin:
    """For Autobahn's Twisted protocols (list it before the Autobahn base
    class; L{cfosproxy.ws.peer.PeerProtocol} does): a bounded buffer
    toward the peer (L{WriteBufferGuard}) and the session's back-pressure
    (L{pause_reading}, L{resume_reading}) on one L{ReadPauses}."""

    _flow_log = Logger()
    _read_pauses = None
    _write_guard = None

    def connectionMade(self):
        super().connectionMade()
        clock = self.factory.reactor
        self._read_pauses = ReadPauses(self.transport, clock, self.flow_name)
        self._write_guard = WriteBufferGuard(
            self.transport,
            self._read_pauses,
            clock,
            write_buffer_limit(self.maxMessagePayloadSize),
            self._write_buffer_overflow,
        )
        self._write_guard.attach()

    def flow_name(self):
        """The peer's name in log lines about its flow; Autobahn's peer
        address unless a subclass knows better."""
        return self.peer

    def pause_reading(self):
        """Stop reading from the peer: too many of its CALLs wait for their
        answers (the session's back-pressure)."""
        if self._read_pauses is not None:
            self._read_pauses.pause(UNANSWERED_CALLS)

    def resume_reading(self):
        """The peer's CALLs are answered: read again, unless what waits to
        be sent to it still holds reading back."""
        if self._read_pauses is not None:
            self._read_pauses.resume(UNANSWERED_CALLS)

    def unregisterProducer(self):
        # Autobahn's dropConnection() calls this before it closes.
        if self._write_guard is not None:
            self._write_guard.detach()
        super().unregisterProducer()

    def connectionLost(self, reason):
        if self._read_pauses is not None:
            self._read_pauses.stop()
        if self._write_guard is not None:
            self._write_guard.stopProducing()
        super().connectionLost(reason)

    def _write_buffer_overflow(self, reason):
        self._flow_log.warn(
            "{peer}: closing the connection: {reason}", peer=self.flow_name(), reason=reason
        )
        internals.drop_connection(self, reason)
