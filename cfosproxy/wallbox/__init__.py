"""cfoswallbox: a virtual cFos Power Brain wallbox.

A simulated device (L{cfosproxy.wallbox.model}) behind a Modbus TCP server
with the Power Brain's register map (L{cfosproxy.wallbox.modbusserver}) and
an OCPP 1.6J charge point. It charges at the least of the Modbus limit, the
OCPP limit and what the car takes, and only when both Modbus and OCPP allow.
"""
