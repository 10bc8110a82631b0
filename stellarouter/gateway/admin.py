"""
The gateway's admin listener (issue 21): a JSON API for operators, served
on its own port (C{admin.listen}, loopback-only by default), never on the
public HTTP port.  This module is its HTTP face, L{AdminApp} on Klein: the
routes, their answers (JSON, errors problem+json) and the drain action.
Who may use it is L{stellarouter.gateway.admin_guard}; what each view
shows, L{stellarouter.gateway.admin_views}; the listener's connections,
L{stellarouter.gateway.admin_listener}.

    GET  /                           the list of resources
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
    GET  /openapi.json, /docs        the OpenAPI documents (with
                                     C{openapi.expose: admin}, the default)
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple

from klein import Klein
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import MethodNotAllowed as WerkzeugMethodNotAllowed
from werkzeug.exceptions import NotFound as WerkzeugNotFound

from ..common.interfaces import IOpenApiSource
from ..common.problems import PROBLEM_CONTENT_TYPE, problem_body
from ..common.untrusted import quoted
from ..config.gateway import GatewayConfig
from .admin_guard import AdminGuard, AdminRefused
from .admin_listener import AdminSite
from .auth import TokenVerifier
from .admin_views import (
    AdminConnection,
    EjectionReader,
    claims_json,
    instance_view,
    instances_view,
    iso_time,
    redacted_config,
    registered,
    routes_view,
    services_view,
    status_view,
)
from .interfaces import IMetricsExposition
from .openapi import add_openapi_routes
from .overrides import EndpointOverrides


class HealthReporter(Protocol):
    """
    What the admin app needs of the public health app.
    """

    def report(self) -> Tuple[int, Dict[str, Any]]:
        """
        The full health report and its HTTP status.
        """


#: What C{GET /} lists.
RESOURCES = ("GET /status", "GET /health", "GET /services", "GET /instances", "GET /routes",
             "GET /config", "POST /instances/{id}/drain", "GET /metrics")
#: And, while the OpenAPI documents are served here (C{openapi.expose:
#: admin}, the default), these.
OPENAPI_RESOURCES = ("GET /openapi.json", "GET /docs")


class AdminApp:
    """
    The admin JSON API, on Klein.

    @ivar config: the configuration in force (swapped on reload).
    @ivar overrides: the endpoint overrides in force.
    @ivar guard: who may use the API.
    @ivar metrics: serves C{GET /metrics}; C{None}: 404.
    @ivar addresses: what the gateway listens on, once started.
    """

    app = Klein()
    log = Logger()

    def __init__(
        self,
        connections: Callable[[], Sequence[AdminConnection]],
        health: HealthReporter,
        clock: IReactorTime,
        config: GatewayConfig,
        metrics: Optional[IMetricsExposition] = None,
    ) -> None:
        """
        @param connections: the registered connections now.
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
        self.ejection_state: Optional[EjectionReader] = None
        self.config = config
        self.overrides = EndpointOverrides(config.services)
        self.guard = AdminGuard(config)
        self.addresses: Mapping[str, object] = {}
        self.configure(config)

    def configure(self, config: GatewayConfig) -> None:
        """
        Put a (reloaded) configuration in force: claims required, token
        keys, overrides shown in C{/routes}.
        """
        self.put_in_force(config, EndpointOverrides(config.services),
                          TokenVerifier(config.auth) if config.auth.enabled else None)

    def put_in_force(self, config: GatewayConfig, overrides: EndpointOverrides,
                     verifier: Optional[TokenVerifier]) -> None:
        """
        L{configure} with what it builds already built (the gateway's, which
        its proxy uses too): only assigns.
        """
        self.config = config
        self.overrides = overrides
        self.guard.put_in_force(config, verifier)

    def _authorize(self, request: IRequest) -> None:
        """
        Serve C{request} or refuse it (L{AdminGuard.authorize}).

        @raise AdminRefused: 400, 401 or 403.
        """
        self.guard.authorize(request)

    # -- answers ----------------------------------------------------------------

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
    def _json(request: IRequest, obj: Mapping[str, object], status: int = 200) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-store")
        return json.dumps(obj, indent=2, sort_keys=False, default=str).encode() + b"\n"

    # -- resources --------------------------------------------------------------

    @app.route("/", methods=["GET"])
    def index(self, request: IRequest) -> bytes:
        """
        The list of resources (the OpenAPI ones while they are served
        here).
        """
        self._authorize(request)
        resources = list(RESOURCES)
        if self.openapi is not None:
            resources += OPENAPI_RESOURCES
        return self._json(request, {"resources": resources})

    @property
    def serves_metrics(self) -> bool:
        """
        Whether C{GET /metrics} answers: there is a collector and the
        configuration in force has metrics on.
        """
        return self.metrics is not None and self.config.metrics.enabled

    @app.route("/status", methods=["GET"])
    def status(self, request: IRequest) -> bytes:
        """
        The gateway at a glance: status, node, listeners, counts.
        """
        self._authorize(request)
        _, health = self.health.report()
        return self._json(request, status_view(self.connections(), health, self.config,
                                               self.addresses, self.serves_metrics))

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
        return self._json(request, {"services": services_view(
            self.connections(), self.config.default_versions())})

    @app.route("/instances", methods=["GET"])
    def instances(self, request: IRequest) -> bytes:
        """
        Each registered instance (C{?service=NAME}: of that service, in any
        case: service names are lower case).
        """
        self._authorize(request)
        service = _query_value(request, b"service")
        return self._json(request, {"instances": instances_view(
            self.connections(), self.clock.seconds(), self.ejection_state,
            service.lower() if service is not None else None)})

    @app.route("/routes", methods=["GET"])
    def routes(self, request: IRequest) -> bytes:
        """
        Each announced route as the gateway enforces it (overrides applied;
        the descriptor of the highest version announcing it).
        """
        self._authorize(request)
        return self._json(request, {"routes": routes_view(
            self.connections(), self.overrides,
            self.config.payload_limits.max_request_bytes_per_call)})

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
        chosen = [(c, state) for c, state in registered(self.connections())
                  if name in (state.instance.instance_id, state.connection_id)]
        if not chosen:
            raise AdminRefused(404, "not-found", "No such instance",
                               f"no registered instance or connection is called {quoted(name)}")
        now = self.clock.seconds()
        reader = self.ejection_state
        drained = [instance_view(c, state, now, None if reader is None else reader(c))
                   for c, state in chosen if c.request_drain()]
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
        if not self.config.metrics.enabled:
            raise AdminRefused(404, "not-found", "No metrics",
                               "metrics are off (metrics.enabled: false)")
        body, content_type = self.metrics.exposition()
        request.setHeader(b"Content-Type", content_type.encode("latin-1"))
        request.setHeader(b"Cache-Control", b"no-store")
        return body


def _path(request: IRequest) -> str:
    return request.path.decode("latin-1", "replace")[:200]


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


__all__ = ["AdminApp", "AdminRefused", "AdminSite", "HealthReporter", "IMetricsExposition",
           "OPENAPI_RESOURCES", "RESOURCES", "claims_json", "iso_time", "redacted_config"]
