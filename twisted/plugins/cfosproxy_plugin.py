"""twistd plugin: ``twistd -n cfosproxy --config etc/cfosproxy.ini``."""

from twisted.application.service import ServiceMaker

cfosproxy = ServiceMaker(
    "cfosproxy",
    "cfosproxy.tap",
    "Local OCPP 1.6J charging manager and gateway for wallboxes",
    "cfosproxy",
)
