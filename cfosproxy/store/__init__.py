"""The durable store: one SQLite file holding the outbound queue, the
transaction-id maps and what offline answers need, and its damage checks.

May import L{cfosproxy.core}'s errors and contracts; the core reaches the
store only through them.
"""
