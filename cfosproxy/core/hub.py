"""Who may connect, and the one live session per ChargeBox-ID.

Sans-IO: the Autobahn adapter asks L{ChargePointHub.admit} during the HTTP
upgrade and hands over the connection with L{ChargePointHub.open}; everything
the site knows about its wallboxes flows from here into sessions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from twisted.internet import defer
from twisted.logger import Logger

from cfosproxy.core.auth import (
    certificate_identity_problem,
    parse_basic_authorization,
    password_matches,
)
from cfosproxy.core.logtext import printable
from cfosproxy.core.passwordbackoff import PasswordBackoff
from cfosproxy.core.session import CLOSE_NORMAL, OcppSession

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from cfosproxy.core.auth import ClientCertificate
    from cfosproxy.core.devices import DeviceRegistry
    from cfosproxy.core.interfaces import IHubObserver, IPeerConnection, IWallboxHandler


@dataclass(frozen=True)
class Refusal:
    """Why a wallbox may not connect.

    @ivar code: the HTTP status.
    @ivar reason: the reason phrase sent with it.
    @ivar detail: more for the operator's log only (never sent, never a
        secret), or empty.
    @ivar retry_after: for 429, the seconds the client should wait.
    """

    code: int
    reason: str
    detail: str = ""
    retry_after: int | None = None


class HubSettings(Protocol):
    """What the hub reads of the C{[server]} section
    (L{cfosproxy.config.ServerConfig})."""

    @property
    def password(self) -> str: ...

    @property
    def password_failures(self) -> int: ...

    @property
    def password_backoff_max(self) -> float: ...

    @property
    def client_certificate_identity(self) -> str: ...

    @property
    def require_client_certificate(self) -> bool: ...

    @property
    def call_timeout(self) -> float: ...


class ChargePointHub:
    """Admits wallboxes and owns their sessions.

    @param server_config: the L{cfosproxy.config.ServerConfig}.
    @param registry: the L{cfosproxy.core.devices.DeviceRegistry}.
    @param handler_for: C{handler_for(chargebox_id)} gives the wallbox's
        L{IWallboxHandler} (its gateway, or the local central system): it
        answers the session's CALLs and is told when the session opens and
        closes.
    @param clock: L{IReactorTime} for call timeouts.
    @param observers: further L{IHubObserver}s, told of connections and of
        every exchange; the registry is always told first.
    """

    _log = Logger()

    def __init__(
        self,
        server_config: HubSettings,
        registry: DeviceRegistry,
        handler_for: Callable[[str], IWallboxHandler],
        clock: IReactorTime,
        observers: Iterable[IHubObserver] = (),
    ) -> None:
        self._config = server_config
        self._registry = registry
        self._observers: tuple[IHubObserver, ...] = (registry, *observers)
        self._handler_for = handler_for
        self._clock = clock
        self.sessions: dict[str, OcppSession] = {}
        self._when_empty: list[defer.Deferred[None]] = []
        self._password_backoff: PasswordBackoff | None = None
        if server_config.password and server_config.password_failures > 0:
            self._password_backoff = PasswordBackoff(
                clock, server_config.password_failures, server_config.password_backoff_max
            )

    def admit(
        self,
        chargebox_id: str,
        authorization: str | None,
        tls: bool,
        certificate: ClientCertificate | None,
        address: str = "",
    ) -> Refusal | None:
        """Decide whether a wallbox may open its WebSocket.

        @param chargebox_id: from the URL, percent-decoded.
        @param authorization: the C{Authorization} header value or None.
        @param tls: whether the connection is TLS.
        @param certificate: the client certificate as a
            L{cfosproxy.core.auth.ClientCertificate}, or None.
        @param address: the client's IP address, for the back-off after
            wrong passwords.
        @return: None to admit, or a L{Refusal}.
        """
        if not chargebox_id:
            return Refusal(400, "No ChargeBox-ID in URL")
        if not chargebox_id.isprintable():
            # No wallbox has a control character in its id; refused here,
            # such an id can reach no log line and no status page.
            return Refusal(400, "Invalid ChargeBox-ID")
        if self._config.password:
            refusal = self._check_password(chargebox_id, authorization, address)
            if refusal is not None:
                return refusal
        if certificate is not None:
            problem = certificate_identity_problem(
                certificate, self._config.client_certificate_identity, chargebox_id
            )
            if problem is not None:
                return Refusal(
                    403,
                    "Client certificate is not for this ChargeBox-ID",
                    detail="{} ([server] client_certificate_identity = {})".format(
                        problem, self._config.client_certificate_identity
                    ),
                )
        elif self._config.require_client_certificate:
            # Only a plain connection in tls = detect gets this far without
            # one: TLS itself already refused a TLS client without it.
            return Refusal(403, "Client certificate required")
        if not self._registry.may_connect(chargebox_id):
            return Refusal(404, "Unknown ChargeBox-ID")
        return None

    def _check_password(
        self, chargebox_id: str, authorization: str | None, address: str
    ) -> Refusal | None:
        backoff = self._password_backoff
        if backoff is not None:
            wait = backoff.retry_after(address)
            if wait is not None:
                # The password is not even looked at: guessing on gets
                # no answer faster than the back-off allows.
                return Refusal(
                    429,
                    "Too Many Requests",
                    detail="back-off after wrong passwords, {} s left".format(wait),
                    retry_after=wait,
                )
        credentials = parse_basic_authorization(authorization)
        if credentials is None:
            # No guess made: a client that sends its password only after
            # a 401 challenge is not held against it.
            return Refusal(401, "Unauthorized")
        user, password = credentials
        if user != chargebox_id or not password_matches(password, self._config.password):
            if backoff is not None:
                backoff.failed(address)
            return Refusal(401, "Unauthorized")
        if backoff is not None:
            backoff.succeeded(address)
        return None

    def open(
        self,
        chargebox_id: str,
        connection: IPeerConnection,
        certificate_subject: str | None = None,
    ) -> OcppSession:
        """A wallbox's WebSocket is open: start its session.

        An earlier connection of the same wallbox is closed; the newest one
        is the one that counts (a wallbox that lost its network reconnects
        before the server has noticed).
        """
        old = self.sessions.get(chargebox_id)
        if old is not None:
            self._log.info(
                "{cbid} connected again from {peer}; closing the old connection",
                cbid=chargebox_id,
                peer=connection.peer,
            )
            old.close(CLOSE_NORMAL, "replaced by a new connection")
        handler = self._handler_for(chargebox_id)
        session = OcppSession(
            chargebox_id,
            connection,
            handler.answer,
            self._observers,
            self._clock,
            self._config.call_timeout,
        )
        self.sessions[chargebox_id] = session
        if certificate_subject:
            self._log.info(
                "{cbid} connected from {peer} with certificate {subject}",
                cbid=chargebox_id,
                peer=connection.peer,
                subject=printable(certificate_subject),
            )
        else:
            self._log.info(
                "{cbid} connected from {peer}", cbid=chargebox_id, peer=connection.peer
            )
        for observer in self._observers:
            observer.connected(chargebox_id, connection.peer, certificate_subject)
        handler.session_opened(session)
        return session

    def closed(self, session: OcppSession, code: int | None, reason: str | None) -> None:
        """A wallbox's connection is gone."""
        self._log.info(
            "{cbid} disconnected ({code} {reason})",
            cbid=session.chargebox_id,
            code=code,
            # The wallbox's own close reason, or Autobahn's text about it.
            reason=printable(reason or ""),
        )
        if self.sessions.get(session.chargebox_id) is session:
            del self.sessions[session.chargebox_id]
            for observer in self._observers:
                observer.disconnected(session.chargebox_id)
            # The handler of a ChargeBox-ID does not change while the
            # daemon runs: the one that was told of the opening.
            self._handler_for(session.chargebox_id).session_closed(session)
        # Fail what waited for this connection only now, so that whoever
        # hears of it already knows the wallbox is gone.
        session.connection_lost()
        if not self.sessions:
            waiters, self._when_empty = self._when_empty, []
            for d in waiters:
                d.callback(None)

    def close_all(self, code: int, reason: str) -> defer.Deferred[None]:
        """Close every wallbox connection (at shutdown).

        @return: a Deferred that fires once every connection is gone.
        """
        for session in list(self.sessions.values()):
            session.close(code, reason)
        if not self.sessions:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._when_empty.append(d)
        return d
