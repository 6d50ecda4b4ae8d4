"""A gateway with the link to its backend, as both plugins make them."""

import functools

from cfosproxy.core.gateway import BOOT_WAIT, Gateway
from cfosproxy.ws.backend import BackendLink, backend_url


class GatewayMaker:
    """Makes the gateways of one process, each with its L{BackendLink}:
    what they share is given here once, what is one wallbox's own with
    each call.

    @param store: C{store()}: the open store (its service opens it when
        the process starts).
    @param local: the L{cfosproxy.core.localcs.LocalCentralSystem} that
        answers while a backend is away.
    @param reactor: the reactor, the gateways' clock and the links'.
    @param call_timeout: seconds a CALL to a backend may stay unanswered.
    @param offline_authorize: C{"cache"}, C{"accept"} or C{"reject"}.
    @param profiles: the L{cfosproxy.core.backendprofiles.BackendProfiles}
        that handle the backends' charging profiles, or None to pass them
        to the wallboxes.
    @param count: C{count(action, direction, outcome)} for the metrics, or
        None.
    @param boot_wait: seconds a BootNotification waits for a link that is
        still connecting.
    @param link_settings: further keyword arguments of every
        L{BackendLink} (C{ping_interval}, C{max_message_size},
        C{outages}); those not given keep the link's defaults.
    """

    def __init__(
        self, store, local, reactor, call_timeout, offline_authorize, *,
        profiles=None, count=None, boot_wait=BOOT_WAIT, **link_settings,
    ):
        self._store = store
        self._local = local
        self._reactor = reactor
        self._call_timeout = call_timeout
        self._offline_authorize = offline_authorize
        self._profiles = profiles
        self._count = count
        self._boot_wait = boot_wait
        self._link_settings = link_settings

    def __call__(self, chargebox_id, backend, connector_ids=(1,)):
        """The gateway of one wallbox to C{backend}, linked to it.

        @param chargebox_id: the wallbox's ChargeBox-ID (a Modbus device:
            its name).
        @param backend: the L{cfosproxy.wiring.backends.Backend}.
        @param connector_ids: the wallbox's configured connectors.
        """
        return Gateway(
            chargebox_id,
            backend.client_id,
            self._store,
            self._local,
            self._reactor,
            self._call_timeout,
            self._offline_authorize,
            link=functools.partial(self._link, backend),
            profiles=self._profiles,
            count=self._count,
            connector_ids=connector_ids,
            boot_wait=self._boot_wait,
        )

    def _link(self, backend, handler):
        return BackendLink(
            url=backend_url(backend.url, backend.client_id),
            client_id=backend.client_id,
            password=backend.password,
            ca=backend.ca,
            certificate=backend.certificate,
            private_key=backend.private_key,
            handler=handler,
            reactor=self._reactor,
            call_timeout=self._call_timeout,
            tls_options=backend.tls_options,
            **self._link_settings,
        )
