"""The HTTP control of the virtual grid meter (``[meter] control``).

  - C{GET /}: the meter as JSON: C{other_load}, C{car} and C{currents} in
    A per phase L1, L2, L3, C{powers} in W.
  - C{POST /other_load} with C{{"currents": [L1, L2, L3]}} (or one number
    for every phase), amperes, signed: the other load from now on. 204;
    400 naming what is wrong with the body (413 when it is too long).

It has no password: L{cfosproxy.wallbox.config} puts it on loopback unless
the configuration names an interface.
"""

import json

from twisted.web import http, resource, server

from cfosproxy.ops.status import BadBody, json_object

EXAMPLE = '{"currents": [20, 20, 20]}'


def _json(request, document, code=http.OK):
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(document).encode("utf-8") + b"\n"


class MeterResource(resource.Resource):
    """C{GET /}: what the meter shows (L{cfosproxy.wallbox.meter.BuildingMeter.snapshot})."""

    def __init__(self, meter):
        super().__init__()
        self._meter = meter

    def render_GET(self, request):
        return _json(request, self._meter.snapshot())


class OtherLoadResource(resource.Resource):
    """C{POST /other_load}: change the meter's other load."""

    isLeaf = True

    def __init__(self, meter):
        super().__init__()
        self._meter = meter

    def render_POST(self, request):
        try:
            document = json_object(request, {"currents"}, EXAMPLE)
            if "currents" not in document:
                raise BadBody("currents is missing; expected such as {}".format(EXAMPLE))
            self._meter.set_other_load(
                document["currents"],
                source="POST /other_load from {}".format(request.getClientAddress().host),
            )
        except ValueError as e:
            return _json(request, {"error": "bad request", "detail": str(e)}, http.BAD_REQUEST)
        except BadBody as e:
            return _json(request, {"error": "bad request", "detail": e.detail}, e.code)
        request.setResponseCode(http.NO_CONTENT)
        return b""


class MeterControlSite(server.Site):
    """The control's site: its name is what the log shows for its port."""

    # One line per request in the wallbox's log would drown its own; the
    # changes are logged by the meter.
    noisy = False

    def log(self, request):
        pass


def control_site(meter):
    """The control's C{twisted.web} site for C{meter} (a
    L{cfosproxy.wallbox.meter.BuildingMeter})."""
    root = MeterResource(meter)
    root.putChild(b"", root)
    root.putChild(b"other_load", OtherLoadResource(meter))
    return MeterControlSite(root)
