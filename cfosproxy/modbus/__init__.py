"""Wallboxes over Modbus TCP: the Power Brain register map, the polling
client, its limit actuator and the OCPP charge point it is made to look like;
and meters over Modbus TCP (SDM630, SunSpec): their register maps, the
polling client and a meter server.

Adapters around L{cfosproxy.core} and L{cfosproxy.site}: may import them,
Twisted and pymodbus.
"""
