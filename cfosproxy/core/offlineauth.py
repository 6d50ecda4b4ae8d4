"""Authorization while a wallbox's backend is away.

C{[manager] offline_authorize} decides: C{accept} every id tag, C{reject}
every one, or (C{cache}) accept the tags the backend accepted before and
whose answer has not expired. The backend's answers to Authorize and
StartTransaction are remembered while it is reachable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from cfosproxy.ocpp.frames import CallResult

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from cfosproxy.core.interfaces import IIdTagCache, Payload
    from cfosproxy.ocpp.frames import Call, CallError

ACCEPT = "accept"
REJECT = "reject"
CACHE = "cache"


class OfflineAuthorization:
    """The offline authorization of one backend link.

    @param store: a callable returning the L{IIdTagCache}.
    @param link_id: the link's name in the store.
    @param clock: L{IReactorTime}, for expiry dates.
    @param policy: C{"cache"}, C{"accept"} or C{"reject"}.
    """

    def __init__(
        self, store: Callable[[], IIdTagCache], link_id: str, clock: IReactorTime, policy: str
    ) -> None:
        self._store = store
        self._link_id = link_id
        self._clock = clock
        self._policy = policy

    def id_tag_info(self, id_tag: str | None) -> Payload:
        """The C{idTagInfo} cfosproxy answers for C{id_tag} itself."""
        if self._policy == ACCEPT:
            return {"status": "Accepted"}
        if self._policy == CACHE and id_tag:
            cached = self._store().cached_id_tag(self._link_id, id_tag, self._clock.seconds())
            if cached is not None:
                return cached
        return {"status": "Invalid"}

    def remember(self, call: Call, answer: CallResult | CallError) -> None:
        """Keep the backend's C{idTagInfo} from its C{answer} to C{call}
        (an Authorize or a StartTransaction) for the next outage.

        @raise StoreError: it cannot be written.
        """
        if not isinstance(answer, CallResult):
            return
        info = answer.payload.get("idTagInfo")
        id_tag = call.payload.get("idTag")
        if isinstance(info, dict) and id_tag:
            self._store().remember_id_tag(self._link_id, id_tag, info, self._clock.seconds())
