"""Message ids for the CALLs that cfosproxy originates."""

import uuid


def new_unique_id() -> str:
    """A fresh 36-character uuid4 string to use as the unique id of a CALL.

    In a gateway, calls from cfosproxy and calls from the backend share one
    connection to the wallbox, so their ids must never collide. Backends use
    counters, short random strings or their own uuids; 122 random bits make a
    collision with any of those (or between two of ours) practically
    impossible, so no bookkeeping of the backend's ids is needed.
    """
    return str(uuid.uuid4())
