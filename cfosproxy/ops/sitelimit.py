"""The site's limit per phase as the operator sets it at run time.

``[manager] max_current`` is the site's limit per phase; ``POST /api/site``
(L{cfosproxy.ops.status}) replaces it at run time, for instance while the
building's other loads need more for a while, or when a smaller fuse went
in. The replacement is kept in the store, so that a restart does not
silently go back to the configured value, and the start says in the log
which limit is in force.
"""

import math
import time
from datetime import datetime, timezone

from twisted.logger import Logger


def _moment(seconds, spec):
    return datetime.fromtimestamp(seconds, timezone.utc).strftime(spec)


class SiteLimit:
    """The site limit in force and where it comes from: the configuration,
    or a value set over the status API and kept in the store.

    @param manager: the L{cfosproxy.site.manager.LoadManager} (its
        C{site_limit} and C{set_site_limit}).
    @param configured: C{[manager] max_current}, the limit without one set
        at run time.
    @param store: C{store()}: the open L{cfosproxy.store.Store} (the daemon
        opens it when it starts, after this is made).
    @param now: C{now()}: seconds since the epoch, for when a limit is set.
    """

    _log = Logger()

    def __init__(self, manager, configured, store, now=time.time):
        self._manager = manager
        self._configured = configured
        self._store = store
        self._now = now
        # When the limit in force was set over the API; None: configured.
        self._set_at = None

    def restore(self):
        """At start, before the manager shares: put the limit kept in the
        store in force, and say so in the log."""
        try:
            kept = self._store().site_limit()
            if kept is not None and kept[0] > self._configured:
                # The config was lowered since (a smaller fuse went in):
                # the config's limit is the fuse's, and it wins.
                raise ValueError(
                    "the site limit {:g} A kept from the status API is above [manager] "
                    "max_current = {:g} A of the config, so it is not used".format(
                        kept[0], self._configured
                    )
                )
            if kept is not None:
                self._manager.set_site_limit(kept[0])
        except ValueError as e:
            self._log.warn(
                "{problem}; [manager] max_current = {configured:g} A of the config is in "
                "force; POST /api/site sets a new one",
                problem=e,
                configured=self._configured,
            )
            return
        if kept is None:
            return
        amps, self._set_at = kept
        self._log.info(
            "site limit {amps:g} A per phase, set over the status API on {when}, replaces "
            "[manager] max_current = {configured:g} A of the config; "
            'POST /api/site {{"max_current": null}} goes back to it',
            amps=amps,
            when=_moment(self._set_at, "%Y-%m-%d %H:%M UTC"),
            configured=self._configured,
        )

    def set(self, amps):
        """Keep C{amps} (amperes per phase) in the store and put it in force;
        C{None} removes the kept limit and puts the configured one in force
        again. Nothing changes unless the store kept it.

        A limit above the configured one is refused: with a meter,
        C{max_current} is the fuse's rating, and no run-time setting may
        take the site above what its fuse was said to carry.

        @raise ValueError: C{amps} is negative, not finite, or above the
            configured limit.
        @raise cfosproxy.core.errors.StoreError: the store could not keep it.
        """
        if amps is not None and not (math.isfinite(amps) and amps >= 0):
            raise ValueError("a site limit must be 0 A or more, got {!r}".format(amps))
        if amps is not None and amps > self._configured:
            raise ValueError(
                "{:g} A is above [manager] max_current = {:g} A of the config; a higher "
                "site limit must be set there".format(amps, self._configured)
            )
        at = self._now()
        self._store().set_site_limit(amps, at)
        self._manager.set_site_limit(self._configured if amps is None else float(amps))
        self._set_at = None if amps is None else at

    def as_json(self):
        """The limit as the status API shows it: C{max_current} in force,
        C{source} (C{"api"} or C{"config"}), C{set_at} (ISO 8601, UTC; null
        for the configured one) and C{configured}."""
        return {
            "max_current": self._manager.site_limit,
            "source": "config" if self._set_at is None else "api",
            "set_at": None if self._set_at is None else _moment(self._set_at, "%Y-%m-%dT%H:%M:%SZ"),
            "configured": self._configured,
        }
