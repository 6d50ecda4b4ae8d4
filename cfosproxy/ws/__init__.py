"""OCPP-J over WebSocket: the Autobahn server for wallboxes, the client
link to a backend, what the two share (L{peer}), TLS, flow control and the
fast frame path (L{relaypath}, L{wireframes}, L{writethrough}).

Adapters around L{cfosproxy.core}: may import the core, Twisted and
Autobahn; the core never imports this package. Members of Autobahn and
Twisted outside their documented interfaces are used only in L{internals}.
"""
