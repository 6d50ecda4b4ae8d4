"""twistd plugin: ``twistd -n cfoswallbox --config etc/cfoswallbox.ini``."""

from twisted.application.service import ServiceMaker

cfoswallbox = ServiceMaker(
    "cfoswallbox",
    "cfosproxy.wallbox.tap",
    "A virtual cFos Power Brain wallbox (OCPP 1.6J client and Modbus TCP server)",
    "cfoswallbox",
)
