"""cfosproxy: a local OCPP 1.6J charging manager and gateway for wallboxes."""

__version__ = "0.1.0"
