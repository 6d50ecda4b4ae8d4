"""What a restart needs of each device: the limit it may hold and its
transaction (L{cfosproxy.site.restart.KeptState}), kept as JSON."""

import json

from twisted.logger import Logger

from cfosproxy.store.groupcommit import GroupedConnection


class DeviceStates:
    """The table C{device_state}: per device name, a JSON object.

    A part of L{cfosproxy.store.facade.Store}: it reads and writes through
    C{self._connection}, the store's L{GroupedConnection}.
    """

    _connection: GroupedConnection
    _state_log = Logger()

    def device_states(self):
        """Every device's kept state: C{{name: dict}}. A row that does not
        read as a JSON object is left out, with a warning (the device then
        starts as if nothing was kept)."""
        states = {}
        for name, text in self._connection.db.execute("SELECT name, state FROM device_state"):
            try:
                state = json.loads(text)
            except ValueError:
                state = None
            if not isinstance(state, dict):
                self._state_log.warn(
                    "{path}: the kept state of {name} does not read; it starts afresh",
                    path=self._connection.path,
                    name=name,
                )
                continue
            states[name] = state
        return states

    def save_device_state(self, name, state):
        """Keep C{state} (a JSON-able dict) for the device C{name}, on disk
        when this returns.

        @raise StoreError: it could not be written.
        """
        with self._connection.transaction():
            self._connection.db.execute(
                "INSERT INTO device_state (name, state) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET state = excluded.state",
                (name, json.dumps(state, separators=(",", ":"))),
            )
