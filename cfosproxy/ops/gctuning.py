"""Python's garbage collector, set for a daemon that relays small messages.

Each relayed message makes a few dozen short-lived containers (frames,
Deferreds, dicts). With Python's default threshold a young-generation
collection ran every few messages, and every collection of the older
generations walked everything made at start-up (the configuration, the
devices, every imported module) again. Together that was about a tenth of
the daemon's CPU on the relay path (bench/relay.py).
"""

import gc

# Container allocations between two young-generation collections (Python's
# default is 700). Reference counting frees nearly all of a message's
# objects at once; the collector only finds cycles, which wait a little
# longer this way (some hundred kilobytes at most).
YOUNG_THRESHOLD = 20_000

# Seconds after the reactor starts: by then the services have started.
FREEZE_AFTER = 1.0


def tune_garbage_collection(reactor):
    """Raise the young-generation threshold now, and once start-up is over
    move what it made into the permanent generation (C{gc.freeze()}), which
    collections no longer walk.

    @param reactor: L{IReactorCore} and L{IReactorTime}.
    """
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
    reactor.callWhenRunning(reactor.callLater, FREEZE_AFTER, _freeze_start_up)


def _freeze_start_up():
    # Cycles left over from start-up are freed first: frozen, they would
    # stay for good.
    gc.collect()
    gc.freeze()
