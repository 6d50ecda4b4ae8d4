"""cfosproxy as the wallbox's central system: the answers it gives itself.

Used when a wallbox has no gateway, and (later) when its backend is down.
Sans-IO: a clock for the time of day, a callable for transaction ids.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.logger import Logger
from zope.interface import implementer

from cfosproxy.core.errors import StoreError
from cfosproxy.core.interfaces import IWallboxHandler
from cfosproxy.ocpp.errors import ErrorCode, OcppError
from cfosproxy.ocpp.schemas import validate_call
from cfosproxy.ocpp.times import ocpp_time

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from cfosproxy.core.interfaces import ICallTarget, Payload
    from cfosproxy.ocpp.frames import Call

# The CALLs a charge point sends to a central system in OCPP 1.6 (§4 of the
# specification). Any other action from a wallbox is one we know of but that
# goes the other way, or one we do not know at all.
CHARGE_POINT_ACTIONS = frozenset(
    {
        "Authorize",
        "BootNotification",
        "DataTransfer",
        "DiagnosticsStatusNotification",
        "FirmwareStatusNotification",
        "Heartbeat",
        "MeterValues",
        "StartTransaction",
        "StatusNotification",
        "StopTransaction",
    }
)


@implementer(IWallboxHandler)
class LocalCentralSystem:
    """Answers a wallbox's CALLs the way a plain central system does.

    Every id tag is accepted (the site has no billing of its own), every
    transaction gets a site-unique id, DataTransfer knows no vendor.

    @param clock: L{IReactorTime}-like; C{seconds()} gives the time of day.
    @param heartbeat_interval: seconds, given to wallboxes at boot.
    @param next_transaction_id: callable returning a fresh transaction id.
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        heartbeat_interval: int,
        next_transaction_id: Callable[[], int],
    ) -> None:
        self._clock = clock
        self._heartbeat_interval = heartbeat_interval
        self._next_transaction_id = next_transaction_id

    def answer(self, call: Call) -> Payload:
        """The payload of the CALLRESULT for C{call}.

        @raise OcppError: C{NotImplemented} for an unknown action,
            C{NotSupported} for a central-system action sent by a wallbox,
            a payload error code when the payload breaks the OCPP schema.
        """
        validate_call(call)
        if call.action not in CHARGE_POINT_ACTIONS:
            raise OcppError(
                ErrorCode.NotSupported,
                "{} is not a charge point to central system message".format(
                    call.action
                ),
            )
        # getattr() gives no type: the _answer_ methods' one is said here.
        answer_action: Callable[[Payload], Payload] = getattr(self, "_answer_" + call.action)
        return answer_action(call.payload)

    def session_opened(self, session: ICallTarget) -> None:
        """A wallbox without gateway connected: nothing to set up, every
        answer is given from the CALL alone."""

    def session_closed(self, session: ICallTarget) -> None:
        """A wallbox without gateway is gone: nothing to tear down."""

    def _now(self) -> str:
        return ocpp_time(self._clock.seconds())

    def _answer_BootNotification(self, payload: Payload) -> Payload:
        return {
            "status": "Accepted",
            "currentTime": self._now(),
            "interval": self._heartbeat_interval,
        }

    def _answer_Heartbeat(self, payload: Payload) -> Payload:
        return {"currentTime": self._now()}

    def _answer_Authorize(self, payload: Payload) -> Payload:
        return {"idTagInfo": {"status": "Accepted"}}

    def _answer_StartTransaction(self, payload: Payload) -> Payload:
        try:
            transaction_id = self._next_transaction_id()
        except StoreError as e:
            # No id can be promised unique if it is not on disk: the wallbox
            # gets an error and sends its StartTransaction again later.
            self._log.error("no transaction id for a StartTransaction: {error}", error=e)
            raise OcppError(
                ErrorCode.InternalError, "cfosproxy cannot store the transaction now"
            ) from e
        return {"transactionId": transaction_id, "idTagInfo": {"status": "Accepted"}}

    def _answer_StopTransaction(self, payload: Payload) -> Payload:
        if "idTag" in payload:
            return {"idTagInfo": {"status": "Accepted"}}
        return {}

    def _answer_DataTransfer(self, payload: Payload) -> Payload:
        return {"status": "UnknownVendorId"}

    def _empty(self, payload: Payload) -> Payload:
        return {}

    _answer_StatusNotification = _empty
    _answer_MeterValues = _empty
    _answer_DiagnosticsStatusNotification = _empty
    _answer_FirmwareStatusNotification = _empty
