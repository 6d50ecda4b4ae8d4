"""Local transaction ids and the backend's ids for them, per backend link.

A StartTransaction that cfosproxy answers while the backend is away gets a
local transaction id. Once the queued StartTransaction reaches the backend,
the backend's id replaces the local one in every later message of that
transaction (queued or live), and a RemoteStopTransaction from the backend
gets the local id back, the one the wallbox knows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from twisted.logger import Logger

from cfosproxy.ocpp.frames import Call, CallResult

if TYPE_CHECKING:
    from cfosproxy.core.interfaces import (
        IOutboundQueue,
        ITransactionIds,
        Payload,
        StoredMessage,
    )
    from cfosproxy.ocpp.frames import CallError

# Transaction ids handed out while the backend is away start here, far above
# the ids a backend counts up from 1: a local id must never equal the
# backend's id of a transaction still running on the same wallbox (another
# connector's), or that one's messages would be rewritten once the local id
# is mapped. Still within a signed 32-bit integer, as backends and wallboxes
# often keep them.
LOCAL_TRANSACTION_IDS = 1_000_000_000


class TransactionIds:
    """The transaction-id map of one backend link.

    @param store: a callable returning the L{ITransactionIds} and
        L{IOutboundQueue} (the daemon's store opens when it starts).
    @param link_id: the link's name in the store.
    @param chargebox_id: for log lines.
    """

    _log = Logger()

    def __init__(
        self, store: Callable[[], ITransactionIds], link_id: str, chargebox_id: str
    ) -> None:
        self._store = store
        self._link_id = link_id
        self._chargebox_id = chargebox_id

    def start_locally(self, payload: Payload, message: StoredMessage | None = None) -> int:
        """Turn the local central system's StartTransaction answer into one
        with a local id, and note it (and, for a queued C{message}, which
        id it was answered with).

        @raise StoreError: the id cannot be kept (a full disk).
        """
        store = self._store()
        local_id: int
        local_id = payload["transactionId"] = LOCAL_TRANSACTION_IDS + payload["transactionId"]
        store.mark_local_transaction(self._link_id, local_id)
        if message is not None:
            # The store is the link's queue too (see the class): no type
            # says that an object provides two interfaces.
            cast("IOutboundQueue", store).set_local_transaction(message.id, local_id)
        return local_id

    def to_backend(self, call: Call) -> Call:
        """C{call} with a mapped local transaction id replaced by the
        backend's; C{call} itself (byte for byte) when nothing maps."""
        local_id = call.payload.get("transactionId")
        if not isinstance(local_id, int) or isinstance(local_id, bool):
            return call
        backend_id = self._store().backend_transaction_id(self._link_id, local_id)
        if backend_id is None or backend_id == local_id:
            return call
        return Call(call.unique_id, call.action, dict(call.payload, transactionId=backend_id))

    def to_local(self, call: Call) -> Call:
        """A backend's CALL with the backend's transaction id replaced by
        the local one the wallbox knows (RemoteStopTransaction's
        C{transactionId}, a SetChargingProfile's TxProfile
        C{csChargingProfiles.transactionId}); C{call} itself when nothing
        maps."""
        if call.action == "SetChargingProfile":
            profile = call.payload.get("csChargingProfiles")
            if not isinstance(profile, dict):
                return call
            local_id = self._local_id(profile.get("transactionId"))
            if local_id is None:
                return call
            payload = dict(call.payload, csChargingProfiles=dict(profile, transactionId=local_id))
            return Call(call.unique_id, call.action, payload)
        local_id = self._local_id(call.payload.get("transactionId"))
        if local_id is None:
            return call
        return Call(call.unique_id, call.action, dict(call.payload, transactionId=local_id))

    def _local_id(self, backend_id: object) -> int | None:
        if not isinstance(backend_id, int):
            return None
        local_id: int | None = self._store().local_transaction_id(self._link_id, backend_id)
        return local_id

    def learn(self, message: StoredMessage, answer: CallResult | CallError) -> None:
        """Keep the backend's id from its C{answer} to a queued
        StartTransaction C{message} that was answered with a local id.

        @raise StoreError: the map cannot be written.
        """
        local_id = message.local_transaction_id
        backend_id = (
            answer.payload.get("transactionId")
            if isinstance(answer, CallResult) and message.action == "StartTransaction"
            else None
        )
        if local_id is not None and isinstance(backend_id, int):
            self._store().map_transaction(self._link_id, local_id, backend_id)
            self._log.info(
                "{cbid}: local transaction {local_id} is {backend_id} at the backend",
                cbid=self._chargebox_id,
                local_id=local_id,
                backend_id=backend_id,
            )
