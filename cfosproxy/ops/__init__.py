"""What an operator uses: the status page and API, Prometheus metrics, the
SSH admin shell, memory and garbage-collector housekeeping, the
certificate tool.

May import every other package; nothing but the daemon's wiring imports it.
"""
