"""The status API over HTTP (twisted.web).

``GET /api/health`` tells whether each listener is up, ``GET /api/devices``
and ``GET /api/devices/<name>`` show what the registry knows, and
``POST /api/devices/<name>/enable`` and ``.../disable`` (with
``Authorization: Bearer <token>``) activate and deactivate a device;
``GET /`` is the status page, which shows the same and refreshes itself.
"""

import hmac
import json
import os

from twisted.logger import Logger
from twisted.web import pages, resource, server

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


STATIC = os.path.join(os.path.dirname(__file__), "static")


# The status page's files: nothing else is served from the directory.
_FILES = {
    "index.html": b"text/html; charset=utf-8",
    "status.js": b"text/javascript; charset=utf-8",
    "status.css": b"text/css; charset=utf-8",
}


class FileResource(resource.Resource):
    """One of the status page's files, read when asked (they are small)."""

    isLeaf = True

    def __init__(self, name):
        super().__init__()
        self._path = os.path.join(STATIC, name)
        self._type = _FILES[name]

    def render_GET(self, request):
        request.setHeader(b"content-type", self._type)
        request.setHeader(b"cache-control", b"no-cache")
        with open(self._path, "rb") as f:
            return f.read()


class _Directory(resource.Resource):
    """A resource with children whose unknown paths get a plain 404 (not
    Twisted's deprecated default, which does not escape the path)."""

    def getChild(self, path, request):
        return pages.notFound("Not found", "No such page.")


def status_root(registry, manager, token, listeners, extra=None):
    """The resource tree of the status listener.

    @param extra: further C{{path segment: resource}} at the top (e.g.
        C{b"metrics"}).
    """
    api = _Directory()
    api.putChild(b"health", HealthResource(listeners))
    api.putChild(b"devices", DevicesResource(registry, manager, token))
    root = _Directory()
    assets = _Directory()
    for name in _FILES:
        assets.putChild(name.encode("ascii"), FileResource(name))
    root.putChild(b"", FileResource("index.html"))
    root.putChild(b"api", api)
    root.putChild(b"static", assets)
    for name, child in (extra or {}).items():
        root.putChild(name, child)
    return root
