"""
The gateway's own HTTP endpoints (C{/health}, C{/health/live},
C{/health/ready}, C{/health/startup}): a small Klein app that
L{stellarouter.gateway._web.GatewaySite} serves for GET and HEAD on
L{HEALTH_PATHS}; every other path goes to the proxy.  (The liveness of
microservice connections is L{stellarouter.gateway.health}.)
"""

from __future__ import annotations

import json
from typing import Any, Dict, Tuple

from klein import Klein
from twisted.web.iweb import IRequest

from ..common.ids import new_correlation_id
from ..common.models import parse_version
from .expected import CONNECTED, ExpectedInstances
from .problems import CORRELATION_HEADER
from .state import RoutingState

#: The gateway's own paths, served by the Klein app for GET and HEAD.
HEALTH_PATHS = frozenset({b"/health", b"/health/live", b"/health/ready", b"/health/startup"})


class HealthApp:
    """
    The gateway's own endpoints, on Klein.

    @ivar started: start-up is complete (all listeners bound).
    """

    app = Klein()

    def __init__(self, routing_state: RoutingState, node_id: str, region: str) -> None:
        self.routing_state = routing_state
        self.node_id = node_id
        self.region = region
        self.started = False
        self.stopping = False
        self.expected = ExpectedInstances(())
        #: C{http.health_detail}: C{status} or C{full} (see L{health}).
        self.detail = "status"

    @staticmethod
    def _json(request: IRequest, status: int, obj: object) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(CORRELATION_HEADER, str(new_correlation_id()).encode())
        return json.dumps(obj, separators=(",", ":")).encode()

    @app.route("/health", methods=["GET", "HEAD"])
    def health(self, request: IRequest) -> bytes:
        """
        The status; with C{detail} C{full}, the whole L{report} (the admin
        listener always shows it).
        """
        code, report = self.report()
        return self._json(request, code, report if self.detail == "full"
                          else {"status": report["status"]})

    def report(self) -> Tuple[int, Dict[str, Any]]:
        """
        The full health report and its HTTP status: the gateway's status,
        node, region, services with their versions and instance counts, and
        the expected instances.
        """
        services: Dict[str, Dict[str, Any]] = {}
        for connection in self.routing_state.connections():
            state = connection.state
            entry = services.setdefault(state.instance.service_name,
                                        {"instances": 0, "versions": set()})
            entry["instances"] += 1
            entry["versions"].add(state.instance.version)
        expected = self.expected.report(self.routing_state.connections())
        status = "ok" if self.started and not self.stopping else "unavailable"
        code = 200 if status == "ok" else 503
        if status == "ok" and any(e["status"] != CONNECTED for e in expected.values()):
            # The gateway itself is fine (still 200); an instance it counts on
            # is not there.
            status = "degraded"
        return code, {
            "status": status,
            "node_id": self.node_id,
            "region": self.region,
            "connections": sum(e["instances"] for e in services.values()),
            "services": {
                name: {"instances": e["instances"],
                       "versions": sorted(e["versions"], key=parse_version)}
                for name, e in sorted(services.items())
            },
            **({"expected_instances": expected} if expected else {}),
        }

    @app.route("/health/live", methods=["GET", "HEAD"])
    def live(self, request: IRequest) -> bytes:
        return self._json(request, 200, {"status": "live"})

    @app.route("/health/ready", methods=["GET", "HEAD"])
    def ready(self, request: IRequest) -> bytes:
        if self.started and not self.stopping:
            return self._json(request, 200, {"status": "ready"})
        return self._json(request, 503, {"status": "stopping" if self.stopping else "starting"})

    @app.route("/health/startup", methods=["GET", "HEAD"])
    def startup(self, request: IRequest) -> bytes:
        if self.started:
            return self._json(request, 200, {"status": "started"})
        return self._json(request, 503, {"status": "starting"})
