"""The status API over HTTP (twisted.web).

``GET /api/health`` tells whether each listener is up, ``GET /api/devices``
and ``GET /api/devices/<name>`` show what the registry knows, ``GET /api/site``
how the site's current is shared over its circuits and phases, what the
meters say and the site limit in force. With ``Authorization: Bearer
<token>``: ``POST /api/devices/<name>/enable`` and ``.../disable`` activate
and deactivate a device, ``POST /api/site`` sets the site limit at run time,
and ``POST /api/meters/<name>`` takes a reading of a ``type = api`` meter.
``GET /`` is the status page, which shows the same and refreshes itself.
"""

import hmac
import json
import math
import os
from urllib.parse import unquote_to_bytes

from twisted.logger import Logger, LogLevel
from twisted.web import http, pages, resource, server

from cfosproxy.core.errors import StoreError
from cfosproxy.core.logtext import printable
from cfosproxy.site.meters import NotPushed, UnknownMeter
from cfosproxy.site.phases import PHASES

JSON_TYPE = b"application/json; charset=utf-8"


def _json(request, document, code=200):
    request.setResponseCode(code)
    request.setHeader(b"content-type", JSON_TYPE)
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(document, indent=1).encode("utf-8") + b"\n"


def _not_found(request, what):
    return _json(request, {"error": "not found", "detail": what}, 404)


def _no_content(request):
    request.setResponseCode(http.NO_CONTENT)
    request.setHeader(b"cache-control", b"no-store")
    return b""


def _refused(request, token):
    """None when C{request} carries the bearer C{token}, else the refusal:
    403 while no C{[status] token} is configured, 401 without the right
    one."""
    if not token:
        return _json(
            request,
            {"error": "forbidden", "detail": "POST actions need a [status] token"},
            403,
        )
    header = request.requestHeaders.getRawHeaders(b"authorization", [b""])[0]
    expected = b"Bearer " + token.encode("utf-8")
    if not hmac.compare_digest(header, expected):
        request.setHeader(b"www-authenticate", b'Bearer realm="cfosproxy"')
        return _json(request, {"error": "unauthorized"}, 401)
    return None


# A POST's JSON body is a few dozen bytes (a meter reading, a limit); a
# longer one is refused unread.
MAX_BODY = 4096


class BadBody(Exception):
    """A POST's body is not what the API takes.

    @ivar code: the HTTP status to answer (400, or 413 when too long).
    @ivar detail: what is wrong, for the client.
    """

    def __init__(self, detail, code=http.BAD_REQUEST):
        super().__init__(detail)
        self.code = code
        self.detail = detail


def _bad_body(request, error):
    reason = "payload too large" if error.code == http.REQUEST_ENTITY_TOO_LARGE else "bad request"
    return _json(request, {"error": reason, "detail": error.detail}, error.code)


def _shown(value):
    """A value of a client's JSON, short, for a message."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _no_constant(name):
    raise ValueError("{} is not a number JSON knows".format(name))


def json_object(request, keys, example):
    """The body of C{request}: a JSON object whose keys are all in C{keys}
    (each may be missing).

    @param example: a body the API takes, for the messages.
    @raise BadBody: it is too long, not UTF-8, not JSON, not an object, or
        has other keys.
    """
    length = request.getHeader(b"content-length")
    if length is not None and length.strip().isdigit() and int(length) > MAX_BODY:
        raise BadBody(
            "the body is {} bytes, more than {} bytes".format(int(length), MAX_BODY),
            http.REQUEST_ENTITY_TOO_LARGE,
        )
    request.content.seek(0)
    data = request.content.read(MAX_BODY + 1)
    if len(data) > MAX_BODY:
        raise BadBody(
            "the body is more than {} bytes".format(MAX_BODY), http.REQUEST_ENTITY_TOO_LARGE
        )
    if not data.strip():
        raise BadBody("no body; expected JSON such as {}".format(example))
    try:
        document = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise BadBody("the body is not UTF-8") from None
    except ValueError as e:
        raise BadBody("the body is not JSON ({}); expected such as {}".format(e, example)) from None
    if not isinstance(document, dict):
        raise BadBody(
            "the body must be a JSON object such as {}, not {}".format(example, _shown(document))
        )
    unknown = sorted(set(document) - set(keys))
    if unknown:
        raise BadBody(
            "unknown key{} {} (known: {})".format(
                "s" if len(unknown) > 1 else "",
                ", ".join(_shown(key) for key in unknown),
                ", ".join(sorted(keys)),
            )
        )
    return document


def _number(value, what):
    """C{value} of a client's JSON as a float: not a boolean, not beyond a
    float's range.

    @param what: how the messages name it.
    @raise BadBody: it is no number.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadBody("{} is {}, not a number".format(what, _shown(value)))
    try:
        return float(value)
    except OverflowError:
        raise BadBody("{} is {}, not a number of amperes".format(what, _shown(value))) from None


class HealthResource(resource.Resource):
    """C{GET /api/health}: 200 when every listener listens and the load
    manager can share the site current, else 503.

    @param listeners: a mapping of listener name to an object with a
        C{running} attribute (a Twisted service).
    @param manager: the L{cfosproxy.site.manager.LoadManager}, or None.
    """

    isLeaf = True

    def __init__(self, listeners, manager=None):
        super().__init__()
        self._listeners = listeners
        self._manager = manager

    def render_GET(self, request):
        states = {
            name: "listening" if svc.running else "stopped"
            for name, svc in self._listeners.items()
        }
        healthy = all(state == "listening" for state in states.values())
        document = {"status": None, "listeners": states}
        if self._manager is not None:
            failures = self._manager.sharing_failures
            # Sharing that keeps failing holds every limit where it is.
            document["sharing"] = "failing" if failures else "ok"
            document["sharing_failures"] = failures
            healthy = healthy and not failures
        document["status"] = "ok" if healthy else "degraded"
        return _json(request, document, 200 if healthy else 503)


def _segments(request):
    path = [segment.decode("utf-8", "replace") for segment in request.postpath]
    return [segment for segment in path if segment]


class DevicesResource(resource.Resource):
    """C{GET /api/devices}, C{GET /api/devices/<name>}, and
    C{POST /api/devices/<name>/enable|disable}.

    A device shows as L{cfosproxy.core.devices.Device.as_json} has it; for
    an OCPP wallbox the manager controls, C{limits} is how its limits are
    sent (L{cfosproxy.site.strategy.LimitStrategy.as_json}), C{null} for
    the others.

    @param manager: the L{cfosproxy.site.manager.LoadManager}.
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
        refusal = _refused(request, self._token)
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


SITE_EXAMPLE = '{"max_current": 25}'


class SiteResource(resource.Resource):
    """C{GET /api/site}: the site and every circuit, per phase (see
    L{cfosproxy.site.manager.LoadManager.site_state}), and C{site_limit}:
    the limit in force and where it comes from
    (L{cfosproxy.ops.sitelimit.SiteLimit.as_json}).

    C{POST /api/site} with the token and C{{"max_current": 25}} sets the
    site limit per phase at run time (kept across a restart);
    C{{"max_current": null}} goes back to C{[manager] max_current}. 204
    when done; 500, and the limit unchanged, when the store cannot keep it.

    @param manager: the L{cfosproxy.site.manager.LoadManager}.
    @param site_limit: the L{cfosproxy.ops.sitelimit.SiteLimit}; None: no
        C{site_limit} in the answer, and POST finds nothing to set.
    @param token: the bearer token for POST; empty refuses every POST.
    """

    isLeaf = True
    _log = Logger()

    def __init__(self, manager, site_limit=None, token=""):
        super().__init__()
        self._manager = manager
        self._site_limit = site_limit
        self._token = token

    def render_GET(self, request):
        path = _segments(request)
        if path:
            return _not_found(request, "/".join(path))
        document = self._manager.site_state()
        if self._site_limit is not None:
            document["site_limit"] = self._site_limit.as_json()
        return _json(request, document)

    def render_POST(self, request):
        refusal = _refused(request, self._token)
        if refusal is not None:
            return refusal
        path = _segments(request)
        if path or self._site_limit is None:
            return _not_found(request, "/".join(path) or "no site limit to set here")
        try:
            amps = self._amps(json_object(request, {"max_current"}, SITE_EXAMPLE))
        except BadBody as e:
            return _bad_body(request, e)
        try:
            self._site_limit.set(amps)
        except ValueError as e:
            return _bad_body(request, BadBody(str(e)))
        except StoreError as e:
            self._log.error("the site limit was not changed: {error}", error=e)
            return _json(
                request,
                {"error": "store", "detail": "the site limit was not changed: {}".format(e)},
                500,
            )
        self._log.info(
            "site limit set over the status API by {client}: {what}",
            client=request.getClientAddress().host,
            what="back to [manager] max_current" if amps is None else "{:g} A".format(amps),
        )
        return _no_content(request)

    @staticmethod
    def _amps(document):
        if "max_current" not in document:
            raise BadBody(
                "max_current is missing; expected {} (amperes per phase), or null for "
                "[manager] max_current".format(SITE_EXAMPLE)
            )
        value = document["max_current"]
        if value is None:
            return None
        amps = _number(value, "max_current")
        if not (math.isfinite(amps) and amps >= 0):
            raise BadBody("max_current is {}; it must be 0 A or more".format(_shown(value)))
        return amps


METER_EXAMPLE = '{"currents": [12.5, 3.1, -4.0]}'


class MetersResource(resource.Resource):
    """C{POST /api/meters/<name>} with the token: a reading of a C{type =
    api} meter, C{{"currents": [L1, L2, L3]}} in amperes, signed (negative:
    fed into the grid). 204 when taken; 404 for an unknown meter, 409 for
    a meter cfosproxy polls itself, 400 (413 when too long) for a body that
    is not such a reading, naming what is wrong.

    Readings may come every second: each is logged at debug level, and a
    refusal of one kind once at warning (until a reading is taken again).

    @param meters: the L{cfosproxy.site.meters.MeterBoard}.
    @param token: the bearer token; empty refuses every POST.
    """

    isLeaf = True
    _log = Logger()

    def __init__(self, meters, token):
        super().__init__()
        self._meters = meters
        self._token = token
        # Refusals said at warning: (kind, meter name or None).
        self._said = set()

    def render_POST(self, request):
        path = _segments(request)
        client = request.getClientAddress().host
        name = path[0] if len(path) == 1 else None
        refusal = _refused(request, self._token)
        if refusal is not None:
            self._refusal(("token", None), "a reading for {name} from {client} without the "
                          "right bearer token ([status] token)",
                          name=printable("/".join(path)[:100]) or "no meter", client=client)
            return refusal
        if name is None or name not in self._meters:
            what = "/".join(path) or "no meter named"
            self._refusal(("unknown", None), "a reading from {client} for {what}: no such "
                          "[meter:*] section", what=printable(what[:100]), client=client)
            return _not_found(request, what)
        try:
            currents = self._currents(json_object(request, {"currents"}, METER_EXAMPLE))
            self._meters.push(name, currents)
        except UnknownMeter:
            return _not_found(request, name)
        except NotPushed as e:
            self._refusal(("type", name), "a reading from {client} refused: {problem}",
                          client=client, problem=e)
            return _json(request, {"error": "conflict", "detail": str(e)}, http.CONFLICT)
        except (BadBody, ValueError) as e:
            error = e if isinstance(e, BadBody) else BadBody("currents: {}".format(e))
            self._refusal(("body", name), "a reading for {name} from {client} refused: "
                          "{problem}", name=name, client=client, problem=error.detail)
            return _bad_body(request, error)
        self._said = {said for said in self._said if said[1] not in (name, None)}
        self._log.debug("meter {name}: {currents} A from {client}", name=name,
                        currents=currents, client=client)
        return _no_content(request)

    @staticmethod
    def _currents(document):
        if "currents" not in document:
            raise BadBody("currents is missing; expected {}".format(METER_EXAMPLE))
        currents = document["currents"]
        if not isinstance(currents, list) or len(currents) != 3:
            raise BadBody(
                "currents must be a list of three numbers, [L1, L2, L3] in amperes, "
                "not {}".format(_shown(currents))
            )
        return [_number(amps, "currents " + phase) for phase, amps in zip(PHASES, currents)]

    def _refusal(self, kind, text, **fields):
        """Log a refusal: at warning the first time of its kind, else at
        debug (a client that keeps pushing would fill the log)."""
        level = LogLevel.debug if kind in self._said else LogLevel.warn
        self._said.add(kind)
        self._log.emit(level, "POST /api/meters: " + text, **fields)


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


def status_root(registry, manager, token, listeners, extra=None, site_limit=None):
    """The resource tree of the status listener.

    @param extra: further C{{path segment: resource}} at the top (e.g.
        C{b"metrics"}).
    @param site_limit: the L{cfosproxy.ops.sitelimit.SiteLimit} that
        C{/api/site} shows and sets.
    """
    api = _Directory()
    api.putChild(b"health", HealthResource(listeners, manager))
    api.putChild(b"devices", DevicesResource(registry, manager, token))
    api.putChild(b"site", SiteResource(manager, site_limit, token))
    api.putChild(b"meters", MetersResource(manager.meters, token))
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


# -- the HTTP server ----------------------------------------------------------

# A request (its request line, headers and body) must have arrived whole
# this many seconds after it began. twisted.web's own timeout starts again
# with every byte, so a client that sent a header byte every 20 s kept its
# connection open for ever. A browser or curl sends a request in one go.
REQUEST_DEADLINE = 10

# The request line and headers together may be this long (twisted.web's
# default, stated here): more is answered with 400 and the connection
# closed. Browsers send a few hundred bytes, a few KiB with cookies.
MAX_REQUEST_HEAD = 16384

# Query parameters whose values never reach the access log (as "***"),
# wherever they appear in a URL or a Referer.
SECRET_QUERY_NAMES = frozenset(
    {"token", "access_token", "auth_token", "password", "secret", "key", "api_key", "apikey"}
)

_SECRET_QUERY_NAMES_BYTES = frozenset(name.encode("ascii") for name in SECRET_QUERY_NAMES)
_MASKED = b"***"

# What a L{StatusSite} answers for unless told otherwise ([status]
# allowed_hosts adds the listen address).
DEFAULT_ALLOWED_HOSTS = ("localhost", "127.0.0.1", "::1")


def mask_query_secrets(uri):
    """C{uri} (bytes) with the value of each query parameter named in
    L{SECRET_QUERY_NAMES} (in any case, percent-encoded or not) replaced by
    C{***}."""
    path, question, query = uri.partition(b"?")
    if not question:
        return uri
    query, hash_mark, fragment = query.partition(b"#")
    parts = []
    for part in query.split(b"&"):
        name, equals, _ = part.partition(b"=")
        decoded = unquote_to_bytes(name.replace(b"+", b" ")).lower()
        if equals and decoded in _SECRET_QUERY_NAMES_BYTES:
            part = name + b"=" + _MASKED
        parts.append(part)
    return path + b"?" + b"&".join(parts) + hash_mark + fragment



def access_log_line(timestamp, request):
    """twisted.web's combined log format, with secrets in the URL and the
    Referer masked (see L{mask_query_secrets})."""
    uri, referrer = request.uri, request.getHeader(b"referer")
    try:
        request.uri = mask_query_secrets(uri)
        if referrer is not None:
            request.requestHeaders.setRawHeaders(b"referer", [mask_query_secrets(referrer)])
        return http.combinedLogFormatter(timestamp, request)
    finally:
        request.uri = uri
        if referrer is not None:
            request.requestHeaders.setRawHeaders(b"referer", [referrer])


def _host_of(header):
    """The host name or address in a C{Host} header's value (bytes): lower
    case, without the port, the brackets of an IPv6 address or a final
    dot."""
    host = header.strip().lower()
    if host.startswith(b"["):
        host = host[1:].partition(b"]")[0]
    elif host.count(b":") == 1:
        host = host.partition(b":")[0]
    return host.rstrip(b".").decode("ascii", "replace")


class StatusChannel(http.HTTPChannel):
    """twisted.web's HTTP connection, with a deadline for each request
    (L{REQUEST_DEADLINE}) and a bound on its head (L{MAX_REQUEST_HEAD})."""

    _log = Logger()
    totalHeadersSize = MAX_REQUEST_HEAD
    _deadline = None
    _request_begun = False  # a byte of the request the deadline is for came

    def connectionMade(self):
        super().connectionMade()
        self._start_deadline()

    def dataReceived(self, data):
        self._request_begun = True
        super().dataReceived(data)

    def allContentReceived(self):
        self._cancel_deadline()
        super().allContentReceived()

    def requestDone(self, request):
        # The next request on this connection has its own deadline; it may
        # already be waiting in the buffer, which this call goes on to read.
        if self.persistent:
            self._start_deadline()
        super().requestDone(request)

    def connectionLost(self, reason):
        self._cancel_deadline()
        super().connectionLost(reason)

    def _start_deadline(self):
        self._cancel_deadline()
        self._request_begun = False
        self._deadline = self.callLater(REQUEST_DEADLINE, self._deadline_passed)

    def _cancel_deadline(self):
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None

    def _deadline_passed(self):
        self._deadline = None
        try:
            peer = self.transport.getPeer()
            peer = "{}:{}".format(peer.host, peer.port)
        except Exception:
            peer = "?"
        # A browser keeps an idle connection open for its next request:
        # closing that is worth no line at the usual level.
        self._log.emit(
            LogLevel.info if self._request_begun else LogLevel.debug,
            "Closing the status connection from {peer}: no whole request within "
            "{timeout} s",
            peer=peer,
            timeout=REQUEST_DEADLINE,
        )
        self.transport.abortConnection()


class StatusSite(server.Site):
    """The status listener's site: L{StatusChannel}s, an access log without
    secrets (reads at debug level, the rest at info), and a check of the
    C{Host} header against an allow-list, so that a web page elsewhere
    cannot reach the API through a host name of its own that resolves to
    this machine (DNS rebinding).

    @param allowed_hosts: the host names and addresses a request may name
        in its C{Host} header (without port); C{"*"} among them allows any.
        A request without a C{Host} header (not from a browser) is served.
    """

    protocol = StatusChannel
    _log = Logger()

    def __init__(self, resource, allowed_hosts=DEFAULT_ALLOWED_HOSTS, **kwargs):
        super().__init__(resource, logFormatter=access_log_line, **kwargs)
        hosts = {host.lower().strip("[]").rstrip(".") for host in allowed_hosts}
        self._any_host = "*" in hosts
        self._allowed_hosts = frozenset(hosts - {"*"})

    def getResourceFor(self, request):
        header = request.getHeader(b"host")
        if header is None or self._any_host or _host_of(header) in self._allowed_hosts:
            return super().getResourceFor(request)
        self._log.warn(
            "Refused a status request from {peer} for the host {host!r}: not in "
            "[status] allowed_hosts",
            peer=getattr(request.getClientAddress(), "host", "?"),
            host=printable(header.decode("latin-1")[:200]),
        )
        return _MisdirectedRequest()

    def log(self, request):
        if self._logFile is None:
            return
        # Reads come every few seconds from an open status page, meter
        # readings as often as every second (MetersResource says refusals).
        routine = request.method in (b"GET", b"HEAD") or request.path.startswith(
            b"/api/meters/"
        )
        level = LogLevel.debug if routine else LogLevel.info
        self._log.emit(level, "{line}", line=self._logFormatter(self._logDateTime, request))


class _MisdirectedRequest(resource.Resource):
    """421 (RFC 9110 §15.5.20): not a host this server answers for."""

    isLeaf = True

    def render(self, request):
        return _json(
            request,
            {"error": "misdirected request", "detail": "host not in [status] allowed_hosts"},
            421,
        )
