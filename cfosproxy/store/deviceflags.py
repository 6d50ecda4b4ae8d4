"""The devices' enabled flags set at run time, which outlast a restart."""

from cfosproxy.store.groupcommit import GroupedConnection


class DeviceFlags:
    """The table C{device_flags}: per device name, whether it is enabled.

    A part of L{cfosproxy.store.facade.Store}: it reads and writes through
    C{self._connection}, the store's L{GroupedConnection}.
    """

    _connection: GroupedConnection

    def device_flags(self):
        """The enabled flags set at run time: C{{device name: bool}}."""
        rows = self._connection.db.execute("SELECT name, enabled FROM device_flags")
        return {name: bool(enabled) for name, enabled in rows}

    def set_device_enabled(self, name, enabled):
        """Keep a device's enabled flag."""
        with self._connection.transaction():
            self._connection.db.execute(
                "INSERT INTO device_flags (name, enabled) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET enabled = excluded.enabled",
                (name, int(enabled)),
            )
