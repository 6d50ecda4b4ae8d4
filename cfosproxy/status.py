"""The status API over HTTP (twisted.web).

``GET /api/health`` tells whether each listener is up, ``GET /api/devices``
and ``GET /api/devices/<name>`` show what the registry knows.
"""

import json

from twisted.web import resource

JSON_TYPE = b"application/json; charset=utf-8"


def _json(request, document, code=200):
    request.setResponseCode(code)
    request.setHeader(b"content-type", JSON_TYPE)
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(document, indent=1).encode("utf-8") + b"\n"


def _not_found(request, what):
    return _json(request, {"error": "not found", "detail": what}, 404)


class HealthResource(resource.Resource):
    """C{GET /api/health}: 200 when every listener listens, else 503.

    @param listeners: a mapping of listener name to an object with a
        C{running} attribute (a Twisted service).
    """

    isLeaf = True

    def __init__(self, listeners):
        super().__init__()
        self._listeners = listeners

    def render_GET(self, request):
        states = {
            name: "listening" if svc.running else "stopped"
            for name, svc in self._listeners.items()
        }
        healthy = all(state == "listening" for state in states.values())
        return _json(
            request,
            {"status": "ok" if healthy else "degraded", "listeners": states},
            200 if healthy else 503,
        )


class DevicesResource(resource.Resource):
    """C{GET /api/devices} and C{GET /api/devices/<name>}."""

    isLeaf = True

    def __init__(self, registry):
        super().__init__()
        self._registry = registry

    def render_GET(self, request):
        path = [segment.decode("utf-8", "replace") for segment in request.postpath]
        path = [segment for segment in path if segment]
        if not path:
            return _json(
                request, {"devices": [d.as_json() for d in self._registry]}
            )
        if len(path) == 1:
            device = self._registry.get(path[0])
            if device is not None:
                return _json(request, device.as_json())
        return _not_found(request, "/".join(path))


def status_root(registry, listeners):
    """The resource tree of the status listener."""
    api = resource.Resource()
    api.putChild(b"health", HealthResource(listeners))
    api.putChild(b"devices", DevicesResource(registry))
    root = resource.Resource()
    root.putChild(b"api", api)
    return root
