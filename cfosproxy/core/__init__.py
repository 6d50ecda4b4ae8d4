"""The OCPP core, free of I/O: sessions, the hub, devices, the local central
system and the gateway, with the contracts they need in L{interfaces}.

May import L{cfosproxy.ocpp}, Twisted's Deferreds and logger, and
zope.interface; never a reactor, Autobahn, pymodbus or twisted.web.
"""
