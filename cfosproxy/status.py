"""The status API over HTTP (twisted.web).

``GET /api/health`` tells whether each listener is up, ``GET /api/devices``
and ``GET /api/devices/<name>`` show what the registry knows, and
``POST /api/devices/<name>/enable`` and ``.../disable`` (with
``Authorization: Bearer <token>``) activate and deactivate a device.
"""

import hmac
import json

from twisted.logger import Logger
from twisted.web import resource, server

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


def _segments(request):
    path = [segment.decode("utf-8", "replace") for segment in request.postpath]
    return [segment for segment in path if segment]


class DevicesResource(resource.Resource):
    """C{GET /api/devices}, C{GET /api/devices/<name>}, and
    C{POST /api/devices/<name>/enable|disable}.

    @param manager: the L{cfosproxy.manager.LoadManager}.
    @param token: the bearer token for POST; empty refuses every POST.
    """

    isLeaf = True
    _log = Logger()

    def __init__(self, registry, manager, token):
        super().__init__()
        self._registry = registry
        self._manager = manager
        self._token = token

    def render_GET(self, request):
        path = _segments(request)
        if not path:
            return _json(
                request, {"devices": [d.as_json() for d in self._registry]}
            )
        if len(path) == 1:
            device = self._registry.get(path[0])
            if device is not None:
                return _json(request, device.as_json())
        return _not_found(request, "/".join(path))

    def render_POST(self, request):
        refusal = self._refuse(request)
        if refusal is not None:
            return refusal
        path = _segments(request)
        if len(path) != 2 or path[1] not in ("enable", "disable"):
            return _not_found(request, "/".join(path))
        name, action = path
        try:
            d = self._manager.set_enabled(name, action == "enable")
        except KeyError:
            return _not_found(request, name)
        self._log.info(
            "{action} {name} by {client}",
            action=action,
            name=name,
            client=request.getClientAddress().host,
        )
        finished = []
        request.notifyFinish().addBoth(finished.append)

        def respond(device):
            if not finished:
                request.write(_json(request, device.as_json()))
                request.finish()

        d.addCallback(respond)
        d.addErrback(lambda f: self._log.failure("{action} {name}", f, action=action, name=name))
        return server.NOT_DONE_YET

    def _refuse(self, request):
        """None when the request carries the token, else the refusal."""
        if not self._token:
            return _json(
                request,
                {"error": "forbidden", "detail": "POST actions need a [status] token"},
                403,
            )
        header = request.requestHeaders.getRawHeaders(b"authorization", [b""])[0]
        expected = b"Bearer " + self._token.encode("utf-8")
        if not hmac.compare_digest(header, expected):
            request.setHeader(b"www-authenticate", b'Bearer realm="cfosproxy"')
            return _json(request, {"error": "unauthorized"}, 401)
        return None


def status_root(registry, manager, token, listeners):
    """The resource tree of the status listener."""
    api = resource.Resource()
    api.putChild(b"health", HealthResource(listeners))
    api.putChild(b"devices", DevicesResource(registry, manager, token))
    root = resource.Resource()
    root.putChild(b"api", api)
    return root
