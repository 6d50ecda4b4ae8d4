"""Limits for OCPP wallboxes: the manager's charging profiles.

Implements L{cfosproxy.core.interfaces.ILimitActuator} by sending
GetConfiguration, TriggerMessage, SetChargingProfile and ClearChargingProfile
through the wallbox's one call queue, each wallbox the way it takes them
(L{cfosproxy.site.strategy}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn, cast

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from cfosproxy.core.errors import LimitRefused, PeerGone, UnitChanged
from cfosproxy.core.interfaces import NO_LIMIT_HELD, ILimitActuator
from cfosproxy.ocpp.errors import OcppError
from cfosproxy.ocpp.profiles import (
    PURPOSE_ID_BASES,
    clear_manager_profile,
    fit_periods,
    in_watts,
    manager_profile,
)
from cfosproxy.ocpp.schedules import Period, minimum, to_charging_schedule
from cfosproxy.site.strategy import PROBED_KEYS, Way, WallboxFacts, probes, strategy_of

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from cfosproxy.core.backendprofiles import BackendProfiles
    from cfosproxy.core.devices import Device
    from cfosproxy.core.hub import ChargePointHub
    from cfosproxy.core.session import OcppSession

# A payload of OCPP JSON, as sent and as answered.
Payload = dict[str, Any]

# How long a wallbox has to answer what it is asked after it connected: a
# wallbox that never answers must not hold its first limit back for the
# whole call timeout.
PROBE_TIMEOUT = 10.0


@implementer(ILimitActuator)
class ChargingProfileActuator:
    """Limits a device on its connector with the manager's charging profile.

    @param hub: the L{cfosproxy.core.hub.ChargePointHub} holding the sessions.
    @param clock: L{IReactorTime}, for the schedule's start time.
    @param backend_profiles: the L{BackendProfiles} of gateway wallboxes, or
        None: a backend's schedule is combined with the local limit.
    """

    _log = Logger()

    def __init__(
        self,
        hub: ChargePointHub,
        clock: IReactorTime,
        backend_profiles: BackendProfiles | None = None,
    ) -> None:
        self._hub = hub
        self._clock = clock
        self._backend_profiles = backend_profiles
        # Per ChargeBox-ID, the session asked for its configuration and the
        # answer (shared by the devices of its connectors).
        self._asked: dict[str, tuple[OcppSession, defer.Deferred[Any]]] = {}

    def _session(self, device: Device) -> OcppSession | None:
        return self._hub.sessions.get(device.address)

    def _call(
        self, device: Device, action: str, payload: Payload, timeout: float | None = None
    ) -> defer.Deferred[Payload]:
        session = self._session(device)
        if session is None:
            return defer.fail(PeerGone(device.address))
        d: defer.Deferred[Payload] = session.call(action, payload, timeout)
        d.addErrback(_refused_by_callerror, action)
        return d

    # -- learning ------------------------------------------------------------

    def prepare(self, device: Device) -> defer.Deferred[bool]:
        """Ask the wallbox how it takes profiles (GetConfiguration, once per
        connection, unless the configuration says it all) and for the
        connector's state (TriggerMessage StatusNotification; MeterValues
        too while a transaction is known to run).

        @return: a Deferred firing with whether the wallbox accepted to
            send its StatusNotification."""
        session = self._session(device)
        if session is None:
            return defer.fail(PeerGone(device.address))
        strategy = strategy_of(device)
        steps: list[defer.Deferred[Any]] = []
        if probes(strategy.settings):
            strategy.probing()
            steps.append(self._facts(device, session).addCallback(self._learnt, device))
        status_coming = self._trigger(device, "StatusNotification")
        steps.append(status_coming)
        if device.transaction_id is not None:
            steps.append(self._trigger(device, "MeterValues"))
        done = defer.gatherResults(steps, consumeErrors=True)
        done.addErrback(_first_error)
        return done.addCallback(lambda results: results[steps.index(status_coming)] is True)

    def _facts(self, device: Device, session: OcppSession) -> defer.Deferred[WallboxFacts | None]:
        asked = self._asked.get(device.address)
        if asked is None or asked[0] is not session:
            answer = self._call(
                device, "GetConfiguration", {"key": list(PROBED_KEYS)}, PROBE_TIMEOUT
            )
            read: defer.Deferred[Any] = answer.addCallbacks(
                WallboxFacts.from_configuration, self._no_facts, errbackArgs=(device,)
            )
            asked = self._asked[device.address] = (session, read)
        # Each connector's device gets the one answer.
        facts: defer.Deferred[WallboxFacts | None] = defer.Deferred()
        asked[1].addCallback(_pass_on, facts, device.address)
        return facts

    def _no_facts(self, failure: Failure, device: Device) -> object:
        if failure.check(PeerGone):
            return _GONE
        self._log.info(
            "{cbid}: GetConfiguration not answered ({error}): limits go the default way "
            "until one is refused",
            cbid=device.address,
            error=failure.getErrorMessage(),
        )
        return None

    def _learnt(self, facts: WallboxFacts | None, device: Device) -> None:
        strategy = strategy_of(device)
        strategy.learn(facts)
        self._log.info(
            "{name}: limits go as {way}{told}",
            name=device.name,
            way=strategy.way,
            told="" if facts is None else " (the wallbox: {})".format(_told(facts)),
        )

    def _trigger(self, device: Device, message: str) -> defer.Deferred[bool]:
        d = self._call(
            device,
            "TriggerMessage",
            {"requestedMessage": message, "connectorId": device.connector_id},
            PROBE_TIMEOUT,
        )

        def answered(result: Payload) -> bool:
            if result.get("status") == "Accepted":
                return True
            self._log.info(
                "{name}: TriggerMessage {message} answered {status}",
                name=device.name,
                message=message,
                status=result.get("status"),
            )
            return False

        def failed(failure: Failure) -> bool:
            if failure.check(PeerGone):
                failure.raiseException()
            self._log.info(
                "{name}: TriggerMessage {message}: {error}",
                name=device.name,
                message=message,
                error=failure.getErrorMessage(),
            )
            return False

        return d.addCallbacks(answered, failed)

    # -- limits --------------------------------------------------------------

    def set_limit(self, device: Device, amps: float) -> defer.Deferred[Any]:
        """Send C{amps} the way the wallbox takes it; after a refusal, the
        next way (see L{LimitStrategy}).

        @return: a Deferred firing once a way was accepted, with
            L{NO_LIMIT_HELD} when no limit can be held now (no transaction
            runs and the wallbox takes no default), or failing with
            L{LimitRefused} once every way was refused."""
        strategy = strategy_of(device)
        now = self._clock.seconds()
        transaction_id = device.transaction_id
        # Watts per ampere, fixed for every way tried: the manager counts
        # the device with the phases it is counted on now.
        watts_per_ampere = strategy.voltage * max(1, len(device.phases))

        def attempt(way: Way | None) -> defer.Deferred[Any]:
            if way is None:
                return defer.succeed(NO_LIMIT_HELD)
            payload = manager_profile(
                device.connector_id,
                amps,
                now,
                self._schedule(device, amps, now, way, watts_per_ampere),
                purpose=way.purpose,
                stack_level=way.stack_level,
                transaction_id=transaction_id if way.needs_transaction else None,
            )
            d = self._call(device, "SetChargingProfile", payload)
            d.addCallback(_require_accepted, "SetChargingProfile")
            d.addCallbacks(lambda _: strategy.accepted(way), refused, errbackArgs=(way,))
            return d

        def refused(failure: Failure, way: Way) -> defer.Deferred[Any]:
            failure.trap(LimitRefused)
            reason = failure.getErrorMessage()
            following = strategy.refused(way, reason, self._clock.seconds())
            if following is None and strategy.state == "refused":
                self._log.warn(
                    "{name}: every way of sending a limit was refused (the last: {way}: "
                    "{reason}); the device counts at its max_current",
                    name=device.name,
                    way=way,
                    reason=reason,
                )
                raise LimitRefused("every way refused; the last, {}: {}".format(way, reason))
            if following is not None and following.rate_unit != way.rate_unit:
                self._log.info(
                    "{name}: {way} refused ({reason}); now trying {next}",
                    name=device.name, way=way, reason=reason, next=following,
                )
                raise UnitChanged("{} refused ({}); next: {}".format(way, reason, following))
            self._log.info(
                "{name}: {way} refused ({reason}); {next}",
                name=device.name,
                way=way,
                reason=reason,
                next="now trying {}".format(following)
                if following is not None
                else "no default limit while no transaction runs",
            )
            return attempt(strategy.way_for(transaction_id is not None) if following else None)

        return attempt(strategy.way_for(transaction_id is not None))

    def _schedule(
        self, device: Device, amps: float, now: float, way: Way, watts_per_ampere: float
    ) -> Payload | None:
        """The chargingSchedule to send: per period the lower of the
        backend's limit and C{amps}, in the way's unit, in no more periods
        than the wallbox takes; None for the one period of C{amps} in A."""
        backend: list[Period] | None = None
        if self._backend_profiles is not None:
            backend = self._backend_profiles.periods(device, now)
        if backend is None and way.rate_unit == "A":
            return None
        local = [Period(now, None, amps)]
        periods = local if backend is None else minimum(backend, local)
        schedule = to_charging_schedule(periods, now, unlimited=amps)
        facts = strategy_of(device).facts
        if facts is not None and facts.max_periods is not None:
            schedule = fit_periods(schedule, facts.max_periods)
        if way.rate_unit == "W":
            schedule = in_watts(schedule, watts_per_ampere)
        return schedule

    def lift(self, device: Device) -> defer.Deferred[Payload]:
        """Clear the manager's profiles of both purposes from the connector.
        "Unknown" means there was nothing to clear: also done."""
        default, transaction = (
            clear_manager_profile(device.connector_id, purpose) for purpose in PURPOSE_ID_BASES
        )

        def clear_transaction_profile(_: object) -> defer.Deferred[Payload]:
            return self._call(device, "ClearChargingProfile", transaction)

        d = self._call(device, "ClearChargingProfile", default)
        return d.addCallback(clear_transaction_profile)


def _told(facts: WallboxFacts) -> str:
    said = []
    if facts.max_stack_level is not None:
        said.append(f"ChargeProfileMaxStackLevel {facts.max_stack_level}")
    if facts.rate_units is not None:
        said.append("units " + ",".join(sorted(facts.rate_units)))
    if facts.max_periods is not None:
        said.append(f"{facts.max_periods} periods")
    if facts.max_profiles is not None:
        said.append(f"{facts.max_profiles} profiles")
    return ", ".join(said) or "nothing that reads"


# What the shared GetConfiguration answer holds when the wallbox went away.
_GONE = object()


def _pass_on(result: object, to: defer.Deferred[Any], chargebox_id: str) -> object:
    if result is _GONE:
        to.errback(PeerGone(chargebox_id))
    else:
        to.callback(result)
    return result


def _first_error(failure: Failure) -> Failure:
    """The failure of the first step that failed, for what gathered them."""
    failure.trap(defer.FirstError)
    first: Failure = cast(defer.FirstError, failure.value).subFailure
    return first


def _require_accepted(result: Payload, action: str) -> Payload:
    status = result.get("status")
    if status != "Accepted":
        raise LimitRefused("{} answered {}".format(action, status))
    return result


def _refused_by_callerror(failure: Failure, action: str) -> NoReturn:
    # A CALLERROR is an answer: the wallbox did not take the profile (many
    # say NotSupported when smart charging is switched off).
    failure.trap(OcppError)
    raise LimitRefused("{} answered {}".format(action, failure.value))
