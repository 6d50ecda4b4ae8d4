"""The site's load management: how current is shared and sent as limits.

Free of I/O like L{cfosproxy.core}, whose contracts it uses; may import
L{cfosproxy.ocpp} and L{cfosproxy.core}; never a reactor, Autobahn, pymodbus
or twisted.web.
"""
