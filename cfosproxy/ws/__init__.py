"""OCPP-J over WebSocket: the Autobahn server for wallboxes, the client
link to a backend, TLS, flow control and the fast frame path.

Adapters around L{cfosproxy.core}: may import the core, Twisted and
Autobahn; the core never imports this package.
"""
