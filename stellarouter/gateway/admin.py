"""
The gateway's admin listener (issue 21): a JSON API for operators, served
on its own port (C{admin.listen}, loopback-only by default), never on the
public HTTP port.

    GET  /status                     the gateway at a glance
    GET  /health                     the full health report (whatever
                                     C{http.health_detail} says)
    GET  /services                   services, versions, instance counts
    GET  /instances[?service=NAME]   every registered instance
    GET  /routes                     every announced route as enforced
    GET  /config                     the configuration in force, secrets
                                     redacted
    POST /instances/ID/drain         stop routing to an instance, ask it
                                     to drain (ID: instance or connection id)
    GET  /metrics                    Prometheus text (when the gateway has
                                     an L{IMetricsExposition})

Every answer is JSON (errors problem+json).  With C{admin.require_claims}
every request needs a bearer token the gateway's C{auth} settings validate
and whose claims meet them.  Unless C{admin.allow_remote}, requests must
come from the loopback interface and name a loopback C{Host} (a web page
cannot reach the API through DNS rebinding); a request with an C{Origin}
header (a browser's) is always refused.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Iterable, List, Optional, Protocol, Tuple

from klein import Klein
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.iweb import IRequest
from twisted.web.server import Request, Site
from werkzeug.exceptions import MethodNotAllowed as WerkzeugMethodNotAllowed
from werkzeug.exceptions import NotFound as WerkzeugNotFound
from zope.interface import Interface

from ..common.interfaces import IOpenApiSource
from ..common.models import ClaimRequirement, EndpointDescriptor, parse_version
from ..common.problems import PROBLEM_CONTENT_TYPE, problem_body
from ..common.redaction import redact
from ..config.admin import is_loopback
from ..config.diff import flatten
from ..config.gateway import GatewayConfig
from .auth import InvalidToken, TokenVerifier, bearer_token, describe, unmet_requirement
from .interfaces import IMetricsExposition
from .openapi import add_openapi_routes
from .outliers import EjectionState
from .overrides import EndpointOverrides


class HealthReporter(Protocol):
    """
    What the admin app needs of the public health app.
    """

    def report(self) -> Tuple[int, Dict[str, Any]]:
        """
        The full health report and its HTTP status.
        """


class DrainableConnection(Protocol):
    """
    A registered microservice connection, as the admin app sees it
    (L{stellarouter.gateway.connection.GatewayConnection}).
    """

    state: Any
    drain_requested: bool

    def request_drain(self) -> bool:
        """
        Route nothing new to it and ask the microservice to drain.
        """


class AdminRefused(Exception):
    """
    An admin request is refused: answered C{status} with a problem+json
    body.
    """

    def __init__(self, status: int, kind: str, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.kind, self.title, self.detail = status, kind, title, detail


def iso_time(seconds: Optional[float]) -> Optional[str]:
    """
    A clock reading (seconds since the epoch) as ISO 8601 UTC, or C{None}.
    """
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds")


def claims_json(requirements: Iterable[ClaimRequirement]) -> List[Dict[str, Any]]:
    """
    Claim requirements as JSON objects, with their readable form.
    """
    return [{"type": c.type,
             "value": list(c.value) if isinstance(c.value, tuple) else c.value,
             "text": describe(c)} for c in requirements]


def redacted_config(config: GatewayConfig) -> Dict[str, Any]:
    """
    The configuration as C{{key path: value}}, every secret redacted
    (L{stellarouter.common.redaction.redact}); the JWKS document is
    reduced to its size (public keys, but kilobytes of noise).
    """
    out: Dict[str, Any] = {}
    for key, value in flatten(config).items():
        if key == "auth.jwks" and isinstance(value, str):
            value = f"<{len(value)} characters from auth.jwks_file>"
        value = redact(key, value)
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


class AdminApp:
    """
    The admin JSON API, on Klein.

    @ivar config: the configuration in force (swapped on reload).
    @ivar overrides: the endpoint overrides in force.
    @ivar verifier: validates admin bearer tokens (C{None}: no key is
        configured).
    @ivar metrics: serves C{GET /metrics}; C{None}: 404.
    @ivar addresses: what the gateway listens on, once started.
    """

    app = Klein()
    log = Logger()

    def __init__(
        self,
        connections: Callable[[], List[Any]],
        health: HealthReporter,
        clock: IReactorTime,
        config: GatewayConfig,
        metrics: Optional[IMetricsExposition] = None,
    ) -> None:
        """
        @param connections: the registered connections now (each a
            L{DrainableConnection}).
        @param health: the public health app (its L{HealthReporter.report}).
        @param clock: dates the instances' ages.
        """
        self.connections = connections
        self.health = health
        self.clock = clock
        self.metrics = metrics
        #: The OpenAPI documents when C{openapi.expose} is C{admin} (the
        #: gateway sets them; L{None}: C{/openapi.json} and C{/docs} are 404).
        self.openapi: Optional[IOpenApiSource] = None
        #: How to read an instance's outlier state (the gateway sets it).
        self.ejection_state: Optional[Callable[[Any], EjectionState]] = None
        self.config = config
        self.overrides = EndpointOverrides(config.services)
        self.verifier: Optional[TokenVerifier] = None
        self.addresses: Dict[str, Any] = {}
        self.configure(config)

    def configure(self, config: GatewayConfig) -> None:
        """
        Put a (reloaded) configuration in force: claims required, token
        keys, overrides shown in C{/routes}.
        """
        self.config = config
        self.overrides = EndpointOverrides(config.services)
        self.verifier = TokenVerifier(config.auth) if config.auth.enabled else None

    # -- guard --------------------------------------------------------------

    def _authorize(self, request: IRequest) -> None:
        """
        Refuse browsers, remote peers and DNS-rebound names (unless
        C{admin.allow_remote}), and, with C{admin.require_claims}, requests
        without a token that has them.

        @raise AdminRefused: 401 or 403.
        """
        admin = self.config.admin
        if request.getHeader(b"origin") is not None:
            raise AdminRefused(403, "forbidden", "Browser requests refused",
                               "the admin API does not answer requests from web pages "
                               "(an Origin header was sent)")
        if not admin.allow_remote:
            peer = request.getClientAddress()
            host = getattr(peer, "host", None)
            if host is not None and not is_loopback(host):
                raise AdminRefused(403, "forbidden", "Remote admin requests refused",
                                   "the admin API answers loopback peers only "
                                   "(admin.allow_remote is false)")
            named = _host_name(request.getHeader(b"host"))
            if named is not None and not is_loopback(named):
                raise AdminRefused(403, "forbidden", "Remote admin requests refused",
                                   f"Host {named!r} is not a loopback name "
                                   "(admin.allow_remote is false)")
        if not admin.require_claims:
            return
        token = bearer_token(request.getHeader(b"authorization"))
        if token is None:
            raise AdminRefused(401, "unauthorized", "Authentication required",
                               "the admin API needs a bearer token (admin.require_claims)")
        if self.verifier is None:
            raise AdminRefused(401, "unauthorized", "Authentication required",
                               "no key is configured to validate tokens")
        try:
            claims = self.verifier.verify(token)
        except InvalidToken as e:
            self.log.info("admin request refused: invalid token ({reason})", reason=e.reason)
            raise AdminRefused(401, "unauthorized", "Authentication required",
                               "invalid token") from None
        missing = unmet_requirement(claims, admin.require_claims)
        if missing is not None:
            raise AdminRefused(403, "forbidden", "Missing claim",
                               f"the token lacks {describe(missing)}")

    @app.handle_errors(AdminRefused)
    def _refused(self, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        assert isinstance(error, AdminRefused)
        if error.status == 401:
            request.setHeader(b"WWW-Authenticate", b'Bearer realm="stellarouter-admin"')
        return self._problem(request, error.status, error.kind, error.title, error.detail)

    @app.handle_errors(WerkzeugNotFound)
    def _not_found(self, request: IRequest, failure: Failure) -> bytes:
        return self._problem(request, 404, "not-found", "No such admin resource",
                             f"{_path(request)} is not an admin resource (see GET /)")

    @app.handle_errors(WerkzeugMethodNotAllowed)
    def _not_allowed(self, request: IRequest, failure: Failure) -> bytes:
        allowed = sorted(getattr(failure.value, "valid_methods", None) or [])
        if allowed:
            request.setHeader(b"Allow", ", ".join(allowed).encode())
        return self._problem(request, 405, "method-not-allowed", "Method not allowed",
                             f"{_path(request)} does not take {request.method.decode()}")

    @staticmethod
    def _problem(request: IRequest, status: int, kind: str, title: str, detail: str) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", PROBLEM_CONTENT_TYPE.encode())
        request.setHeader(b"Cache-Control", b"no-store")
        return problem_body(status, kind, title, detail)

    @staticmethod
    def _json(request: IRequest, obj: Any, status: int = 200) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-store")
        return json.dumps(obj, indent=2, sort_keys=False, default=str).encode() + b"\n"

    # -- resources --------------------------------------------------------------

    @app.route("/", methods=["GET"])
    def index(self, request: IRequest) -> bytes:
        """
        The list of resources.
        """
        self._authorize(request)
        return self._json(request, {"resources": [
            "GET /status", "GET /health", "GET /services", "GET /instances",
            "GET /routes", "GET /config", "POST /instances/{id}/drain", "GET /metrics"]})

    @app.route("/status", methods=["GET"])
    def status(self, request: IRequest) -> bytes:
        """
        The gateway at a glance: status, node, listeners, counts.
        """
        self._authorize(request)
        _, health = self.health.report()
        connections = self.connections()
        by_health: Dict[str, int] = {}
        for connection in connections:
            name = connection.state.status.value
            by_health[name] = by_health.get(name, 0) + 1
        return self._json(request, {
            "status": health["status"],
            "node_id": self.config.node.node_id,
            "region": self.config.node.region,
            "listening": self.addresses,
            "services": len({c.state.instance.service_name for c in connections}),
            "instances": len(connections),
            "instances_by_health": dict(sorted(by_health.items())),
            "routes": len({key for c in connections for key in c.state.endpoints}),
            "in_flight": sum(c.state.in_flight for c in connections),
            "metrics": self.metrics is not None,
            **({"expected_instances": health["expected_instances"]}
               if "expected_instances" in health else {}),
        })

    @app.route("/health", methods=["GET"])
    def full_health(self, request: IRequest) -> bytes:
        """
        The full health report, whatever C{http.health_detail} says.
        """
        self._authorize(request)
        code, report = self.health.report()
        return self._json(request, report, code)

    @app.route("/services", methods=["GET"])
    def services(self, request: IRequest) -> bytes:
        """
        Each service: versions with instance counts, routable, draining.
        """
        self._authorize(request)
        defaults = self.config.default_versions()
        services: Dict[str, Dict[str, Any]] = {}
        for connection in self.connections():
            state = connection.state
            entry = services.setdefault(state.instance.service_name, {
                "name": state.instance.service_name, "versions": {}, "instances": 0,
                "routable": 0, "draining": 0, "in_flight": 0})
            versions = entry["versions"]
            versions[state.instance.version] = versions.get(state.instance.version, 0) + 1
            entry["instances"] += 1
            entry["routable"] += state.status.value in ("healthy", "degraded")
            entry["draining"] += state.status.value == "draining"
            entry["in_flight"] += state.in_flight
        out = []
        for name, entry in sorted(services.items()):
            entry["versions"] = [{"version": v, "instances": n} for v, n in sorted(
                entry["versions"].items(), key=lambda item: parse_version(item[0]))]
            entry["default_version"] = defaults.get(name)
            out.append(entry)
        return self._json(request, {"services": out})

    @app.route("/instances", methods=["GET"])
    def instances(self, request: IRequest) -> bytes:
        """
        Each registered instance (C{?service=NAME}: of that service).
        """
        self._authorize(request)
        wanted = _query_value(request, b"service")
        rows = [self._instance(c) for c in self.connections()
                if wanted is None or c.state.instance.service_name == wanted]
        rows.sort(key=lambda row: (row["service"], parse_version(row["version"]),
                                   row["instance_id"], row["connection_id"]))
        return self._json(request, {"instances": rows})

    def _instance(self, connection: Any) -> Dict[str, Any]:
        """
        One connection as the API shows it.
        """
        state = connection.state
        instance = state.instance
        now = self.clock.seconds()
        return {
            "instance_id": instance.instance_id,
            "service": instance.service_name,
            "version": instance.version,
            "region": instance.region,
            "connection_id": state.connection_id,
            "transport": state.transport_type.value,
            "peer": state.peer,
            "peer_identity": list(state.peer_identity),
            "health": state.status.value,
            "ping_ewma_ms": (None if state.average_ping_ms is None
                             else round(state.average_ping_ms, 3)),
            "in_flight": state.in_flight,
            "last_heartbeat": iso_time(state.last_heartbeat),
            "last_heartbeat_age_s": round(max(0.0, now - state.last_heartbeat), 3),
            "connected_since": iso_time(state.connected_at),
            "connected_for_s": round(max(0.0, now - state.connected_at), 3),
            "draining": state.status.value == "draining",
            "drained_by_operator": bool(getattr(connection, "drain_requested", False)),
            "endpoints": len(state.endpoints),
            **self._ejection(connection, now),
        }

    def _ejection(self, connection: Any, now: float) -> Dict[str, Any]:
        """
        The instance's outlier state (issue 24), when the gateway gave a way
        to read it.
        """
        if self.ejection_state is None:
            return {}
        ejection = self.ejection_state(connection)
        until = ejection.ejected_until
        ejected = until is not None and until > now
        return {"ejected": ejected, "ejected_until": iso_time(until) if ejected else None,
                "ejections": ejection.ejections,
                "consecutive_failures": ejection.consecutive_failures}

    @app.route("/routes", methods=["GET"])
    def routes(self, request: IRequest) -> bytes:
        """
        Each announced route as the gateway enforces it (overrides applied;
        the descriptor of the highest version announcing it).
        """
        self._authorize(request)
        announced: Dict[Tuple[str, str], Dict[str, Any]] = {}
        for connection in self.connections():
            state = connection.state
            for key, endpoint in state.endpoints.items():
                entry = announced.setdefault(key, {"endpoint": endpoint, "versions": {},
                                                   "instances": 0})
                entry["versions"][endpoint.version] = None
                entry["instances"] += 1
                if parse_version(endpoint.version) > parse_version(entry["endpoint"].version):
                    entry["endpoint"] = endpoint
        limit = self.config.payload_limits.max_request_bytes_per_call
        rows = []
        for (method, template), entry in sorted(announced.items(),
                                                key=lambda item: (item[0][1], item[0][0])):
            endpoint, timeout = self.overrides.apply(entry["endpoint"])
            rows.append(self._route(method, template, endpoint, timeout,
                                    sorted(entry["versions"], key=parse_version),
                                    entry["instances"], limit))
        return self._json(request, {"routes": rows})

    @staticmethod
    def _route(method: str, template: str, endpoint: EndpointDescriptor, timeout: float,
               versions: List[str], instances: int, per_call_limit: int) -> Dict[str, Any]:
        own_limit = endpoint.max_request_bytes
        return {
            "method": method,
            "template": template,
            "service": endpoint.service_name,
            "versions": versions,
            "instances": instances,
            "claims": claims_json(endpoint.requiring_claims),
            "timeout_s": timeout,
            "streaming": endpoint.supports_streaming,
            "idempotent": endpoint.idempotent,
            "limits": {"max_request_bytes": (per_call_limit if own_limit is None
                                             else min(own_limit, per_call_limit))},
        }

    @app.route("/config", methods=["GET"])
    def effective_config(self, request: IRequest) -> bytes:
        """
        The configuration in force, secrets redacted.
        """
        self._authorize(request)
        return self._json(request, {"config": redacted_config(self.config)})

    @app.route("/instances/<path:name>/drain", methods=["POST"])
    def drain(self, request: IRequest, name: str) -> bytes:
        """
        Drain every connection whose instance id or connection id is
        C{name}: 202 with them, 404 if none.
        """
        self._authorize(request)
        chosen = [c for c in self.connections()
                  if name in (c.state.instance.instance_id, c.state.connection_id)]
        if not chosen:
            raise AdminRefused(404, "not-found", "No such instance",
                               f"no registered instance or connection is called {name!r}")
        drained = [self._instance(c) for c in chosen if c.request_drain()]
        self.log.info("admin: drained {count} connection(s) of {name}",
                      count=len(drained), name=name)
        return self._json(request, {"drained": drained}, 202)

    @app.route("/metrics", methods=["GET"])
    def metrics_text(self, request: IRequest) -> bytes:
        """
        The metrics exposition, or 404 without an L{IMetricsExposition}.
        """
        self._authorize(request)
        if self.metrics is None:
            raise AdminRefused(404, "not-found", "No metrics",
                               "this gateway has no metrics collector")
        body, content_type = self.metrics.exposition()
        request.setHeader(b"Content-Type", content_type.encode("latin-1"))
        request.setHeader(b"Cache-Control", b"no-store")
        return body


#: The largest request body the admin listener takes (its API takes none):
#: a connection sending more is dropped before it is buffered.
MAX_ADMIN_BODY_BYTES = 64 * 1024


class AdminRequest(Request):
    """
    An admin request: its body is bounded (L{MAX_ADMIN_BODY_BYTES}),
    through twisted.web's public C{gotLength} / C{handleContentChunk}
    request hooks.
    """

    _received = 0
    _dropped = False
    log = Logger()

    def gotLength(self, length: Optional[int]) -> None:
        if length is not None and length > MAX_ADMIN_BODY_BYTES:
            super().gotLength(None)  # (a body holder that stays empty)
            self._drop()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._dropped:
            return
        self._received += len(data)
        if self._received > MAX_ADMIN_BODY_BYTES:
            self._drop()
            return
        super().handleContentChunk(data)

    def process(self) -> None:
        if not self._dropped:  # a refused request is never served
            super().process()

    def _drop(self) -> None:
        """
        Answer 413 (problem+json) and close: nothing more of this
        connection is read or served.
        """
        if self._dropped:
            return
        self._dropped = True
        self.log.info("admin request body over {limit} bytes: answered 413, connection closed",
                      limit=MAX_ADMIN_BODY_BYTES)
        transport = self.channel.transport if self.channel is not None else None
        if transport is None:
            return
        body = problem_body(413, "payload-too-large", "Payload too large",
                            f"the admin API takes bodies of at most {MAX_ADMIN_BODY_BYTES} "
                            "bytes")
        transport.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: "
                        + PROBLEM_CONTENT_TYPE.encode() + b"\r\nContent-Length: "
                        + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
        transport.loseConnection()


class AdminSite(Site):
    """
    The admin listener's site (named in the logs: C{AdminSite starting on
    9901}); requests are L{AdminRequest}s.
    """

    requestFactory = AdminRequest

    def log(self, request: http.Request) -> None:
        """
        No access line: an admin URL may carry a token in its query, and no
        secret is ever logged (the gateway's own access log covers proxied
        requests only).
        """


def _path(request: IRequest) -> str:
    return request.path.decode("latin-1", "replace")[:200]


def _host_name(header: Optional[bytes]) -> Optional[str]:
    """
    The host name of a C{Host} header (without its port; IPv6 without
    brackets), or C{None} if there is none.
    """
    if not header:
        return None
    text = header.decode("latin-1").strip()
    if text.startswith("["):
        return text[1:].partition("]")[0]
    return text.rpartition(":")[0] if text.count(":") == 1 else text


def _query_value(request: IRequest, name: bytes) -> Optional[str]:
    values = (request.args or {}).get(name)
    return values[0].decode("utf-8", "replace") if values else None


def _openapi_guard(admin: AdminApp, request: IRequest) -> None:
    """
    The OpenAPI routes are admin resources: the same authorization, and 404
    when the documents are exposed elsewhere (C{openapi.expose}).
    """
    admin._authorize(request)
    if admin.openapi is None:
        raise AdminRefused(404, "not-found", "No OpenAPI documents here",
                           "the gateway does not expose its OpenAPI documents on the admin "
                           "listener (openapi.expose)")


def _openapi_of(admin: AdminApp) -> IOpenApiSource:
    assert admin.openapi is not None, "the guard checked"
    return admin.openapi


# Issue 23: /openapi.json and /docs on the admin listener (openapi.expose:
# admin, the default), at their default paths.
add_openapi_routes(AdminApp.app, _openapi_of, guard=_openapi_guard)


__all__ = ["AdminApp", "AdminRefused", "AdminSite", "IMetricsExposition", "claims_json", "iso_time",
           "redacted_config"]
