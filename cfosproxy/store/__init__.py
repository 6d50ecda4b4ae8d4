"""The durable store: one SQLite file holding the outbound queue, the
transaction-id maps and what offline answers need, and its damage checks.

May import L{cfosproxy.core}'s errors and contracts; the core reaches the
store only through them.
"""

from cfosproxy.core.errors import StoreError
from cfosproxy.store.facade import STORE_FILE, Store
from cfosproxy.store.outbound import DeadLetter, QueuedMessage
from cfosproxy.store.service import StoreService

__all__ = ["STORE_FILE", "DeadLetter", "QueuedMessage", "Store", "StoreError", "StoreService"]
