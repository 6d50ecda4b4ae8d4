"""The backend's latest answers for id tags, for authorizing while it is
away."""

import json
from datetime import datetime, timezone

from cfosproxy.store.groupcommit import GroupedConnection


class IdTagCache:
    """The table C{id_tags}: per link, the backend's latest C{idTagInfo}
    for each id tag.

    A part of L{cfosproxy.store.facade.Store}: it reads and writes through
    C{self._connection}, the store's L{GroupedConnection}.
    """

    _connection: GroupedConnection

    def remember_id_tag(self, link, id_tag, id_tag_info, now):
        """Keep the backend's latest C{idTagInfo} for C{id_tag}, whatever
        its status: a tag the backend now blocks must stop counting."""
        with self._connection.grouped():
            self._connection.db.execute(
                "INSERT INTO id_tags (link, id_tag, id_tag_info, remembered_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (link, id_tag) DO UPDATE SET "
                "id_tag_info = excluded.id_tag_info, "
                "remembered_at = excluded.remembered_at",
                (link, id_tag, json.dumps(id_tag_info), now),
            )

    def cached_id_tag(self, link, id_tag, now):
        """The backend's C{idTagInfo} for C{id_tag} if it was C{Accepted}
        and its C{expiryDate}, if any, is later than C{now}; else C{None}.

        An C{expiryDate} that cannot be read counts as expired: it is safer
        to fall back on the offline policy than to guess.
        """
        row = self._connection.db.execute(
            "SELECT id_tag_info FROM id_tags WHERE link = ? AND id_tag = ?",
            (link, id_tag),
        ).fetchone()
        if row is None:
            return None
        info = json.loads(row[0])
        if not isinstance(info, dict) or info.get("status") != "Accepted":
            return None
        expiry = info.get("expiryDate")
        if expiry is not None:
            expires_at = _posix_time(expiry)
            if expires_at is None or expires_at <= now:
                return None
        return info


def _posix_time(text):
    """An RFC 3339 date-time as POSIX seconds, or C{None} if unreadable.

    OCPP times are UTC; one without an offset is read as UTC.
    """
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()
