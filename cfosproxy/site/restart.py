"""What a restart of cfosproxy needs to know of each device.

A wallbox keeps the limit it was last given while cfosproxy restarts, and a
car that charged goes on charging. So that the manager neither counts such
a wallbox at 0 A nor sends it 0 A before it knows better, it keeps on disk
per device (L{KeptState}, a JSON object in the store):

- C{limit}: the limit the wallbox last accepted (amperes per phase), or
  None when it holds none of the manager's; C{unit} and C{phases}: how it
  was sent (L{cfosproxy.site.watts.SentAs});
- C{pending}: a limit that was in flight, kept I{before} it went out, so
  that a restart counts the higher of the two (the answer may have been
  lost); C{uncertain}: whether C{limit} is the worst case rather than an
  answer;
- the transaction: C{transaction_id}, C{id_tag}, C{meter_start},
  C{status}, C{energy_wh}.

Only the limit is restored for a Modbus wallbox: its state comes with its
first poll. Sans-IO: the manager decides when to keep (L{kept_state} differs from what
was kept), the store keeps.
"""

from __future__ import annotations

import math
from collections.abc import Set
from typing import TYPE_CHECKING, Any

from cfosproxy.site.watts import IN_AMPERES, SentAs

if TYPE_CHECKING:
    from cfosproxy.core.devices import Device

# A device's kept state: JSON-able values by name.
KeptState = dict[str, Any]


def kept_state(
    device: Device, held_as: SentAs | None, uncertain: Set[str], held_for: int | None = None
) -> KeptState:
    """What is to be kept of C{device} now (C{held_for}: the transaction
    its limit is for, when it is a TxProfile)."""
    sent = held_as or IN_AMPERES
    return {
        "limit": device.accepted_limit,
        "unit": sent.unit,
        "phases": sent.phases,
        "pending": device.pending_limit,
        "uncertain": device.name in uncertain,
        "limit_transaction": held_for,
        "transaction_id": device.transaction_id,
        "id_tag": device.id_tag,
        "meter_start": device.meter_start,
        "status": device.status,
        "energy_wh": device.energy_wh,
    }


def restore_device(
    device: Device, state: KeptState
) -> tuple[SentAs, float | None, int | None]:
    """Put what was kept into C{device}; values that do not read are left
    out (a store written by hand, or by another version).

    @return: how its limit was sent, the limit that was in flight (or
        None), which the manager counts as possibly taken, and the
        transaction its limit is for when it is a TxProfile (or None)."""
    limit = _quantity(state.get("limit"))
    device.accepted_limit = limit
    unit = state.get("unit")
    phases = state.get("phases")
    sent = IN_AMPERES
    if unit == "W" and type(phases) is int and 1 <= phases <= 3:
        sent = SentAs("W", phases)
    pending = _quantity(state.get("pending"))
    if device.type != "ocpp":
        # A Modbus wallbox's state comes with its first poll, and its
        # transaction is its charge point's own.
        return sent, pending, None
    transaction = state.get("transaction_id")
    if type(transaction) is int:
        device.transaction_id = transaction
        id_tag = state.get("id_tag")
        device.id_tag = id_tag if isinstance(id_tag, str) else None
    status = state.get("status")
    if isinstance(status, str):
        device.status = status
    for key in ("meter_start", "energy_wh"):
        value = _quantity(state.get(key))
        if value is not None:
            setattr(device, key, value)
    held_for = state.get("limit_transaction")
    return sent, pending, held_for if type(held_for) is int else None


def _quantity(value: object) -> float | None:
    """A finite number of 0 or more (amperes, watt-hours), or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return float(value)
