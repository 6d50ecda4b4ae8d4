"""The twistd plugins' parts put together: each part is made with what it
needs, in an order that lets it be, and the services that run them.

L{cfosproxy.wiring.daemon} builds ``twistd cfosproxy``; what both plugins
make for a backend is in L{cfosproxy.wiring.backends} (where it is and how
to reach it) and L{cfosproxy.wiring.gateways} (a gateway with its link),
which the virtual wallbox (L{cfosproxy.wallbox.build}) uses too.

The top of the layers: may import every other package of cfosproxy; none
imports it but the plugins and their builders.
"""
