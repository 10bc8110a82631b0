"""
The admin API's JSON views (issue 21): what C{/status}, C{/services},
C{/instances}, C{/routes} and C{/config} show, built from the registered
connections and the configuration in force.  Pure functions of their
arguments (the time is one of them), each returning a L{TypedDict} that
names every field the API documents (docs/router/operations.md); no HTTP
here (that is L{stellarouter.gateway.admin}), no I/O.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    NotRequired,
    Optional,
    Protocol,
    Tuple,
    TypedDict,
    Union,
)

from ..common.models import ClaimRequirement, ConnectionState, EndpointDescriptor, parse_version
from ..common.redaction import redact
from ..config.diff import flatten
from ..config.gateway import GatewayConfig
from .auth import describe
from .outliers import EjectionState
from .overrides import EndpointOverrides


class AdminConnection(Protocol):
    """
    A microservice connection as the admin API sees it
    (L{stellarouter.gateway.connection.GatewayConnection}).
    """

    @property
    def state(self) -> Optional[ConnectionState]:
        """
        Its state, once its HELLO was accepted (the admin API is given
        registered connections only: never C{None} there).
        """

    @property
    def drain_requested(self) -> bool:
        """
        An operator asked for its drain (L{request_drain}).
        """

    def request_drain(self) -> bool:
        """
        Route nothing new to it and ask the microservice to drain.

        @return: whether it was not draining already.
        """


#: How the admin API reads an instance's outlier state: the gateway's
#: L{stellarouter.gateway.state.RoutingState.ejection_state}.  (Any: it
#: takes a C{RoutableConnection}, whose state is never C{None}; a
#: registered L{AdminConnection} is one, which its type cannot say.)
EjectionReader = Callable[[Any], EjectionState]


class ClaimView(TypedDict):
    """
    One claim requirement: its claim, its value (a list: any of them;
    C{None}: present) and its readable form (C{scope=billing:write}).
    """

    type: str
    value: Union[str, List[str], None]
    text: str


class InstanceView(TypedDict):
    """
    One registered connection (C{GET /instances}, and each drained one).
    The outlier fields are there when the gateway gave a way to read them.
    """

    instance_id: str
    service: str
    version: str
    region: str
    connection_id: str
    transport: str
    peer: str
    peer_identity: List[str]
    health: str
    ping_ewma_ms: Optional[float]
    in_flight: int
    last_heartbeat: Optional[str]
    last_heartbeat_age_s: float
    connected_since: Optional[str]
    connected_for_s: float
    draining: bool
    drained_by_operator: bool
    endpoints: int
    ejected: NotRequired[bool]
    ejected_until: NotRequired[Optional[str]]
    ejections: NotRequired[int]
    consecutive_failures: NotRequired[int]


class VersionCount(TypedDict):
    """
    How many instances of a service run one version.
    """

    version: str
    instances: int


class ServiceView(TypedDict):
    """
    One service (C{GET /services}).
    """

    name: str
    versions: List[VersionCount]
    instances: int
    routable: int
    draining: int
    in_flight: int
    default_version: Optional[str]


class RouteLimits(TypedDict):
    """
    A route's payload limit in force (its own, capped by the gateway's).
    """

    max_request_bytes: int


class RouteView(TypedDict):
    """
    One announced route as the gateway enforces it (C{GET /routes}).
    """

    method: str
    template: str
    service: str
    versions: List[str]
    instances: int
    claims: List[ClaimView]
    timeout_s: float
    streaming: bool
    idempotent: Optional[bool]
    limits: RouteLimits


class StatusView(TypedDict):
    """
    The gateway at a glance (C{GET /status}).
    """

    status: str
    node_id: str
    region: str
    listening: Mapping[str, object]
    services: int
    instances: int
    instances_by_health: Dict[str, int]
    routes: int
    in_flight: int
    metrics: bool
    expected_instances: NotRequired[object]


#: A configuration key path's value as C{GET /config} shows it (a JSON
#: scalar or list, secrets as C{***}).
ConfigValue = object


def iso_time(seconds: Optional[float]) -> Optional[str]:
    """
    A clock reading (seconds since the epoch) as ISO 8601 UTC, or C{None}.
    """
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds")


def claims_json(requirements: Iterable[ClaimRequirement]) -> List[ClaimView]:
    """
    Claim requirements as JSON objects, with their readable form.
    """
    return [{"type": c.type,
             "value": list(c.value) if isinstance(c.value, tuple) else c.value,
             "text": describe(c)} for c in requirements]


def redacted_config(config: GatewayConfig) -> Dict[str, ConfigValue]:
    """
    The configuration as C{{key path: value}}, every secret redacted
    (L{stellarouter.common.redaction.redact}); the JWKS document is
    reduced to its size (public keys, but kilobytes of noise).
    """
    out: Dict[str, ConfigValue] = {}
    for key, value in flatten(config).items():
        if key == "auth.jwks" and isinstance(value, str):
            value = f"<{len(value)} characters from auth.jwks_file>"
        value = redact(key, value)
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


def registered(connections: Iterable[AdminConnection]
               ) -> List[Tuple[AdminConnection, ConnectionState]]:
    """
    The connections that have a state (all the gateway hands the admin
    API), each with it.
    """
    return [(c, c.state) for c in connections if c.state is not None]


def status_view(connections: Iterable[AdminConnection], health: Mapping[str, object],
                config: GatewayConfig, listening: Mapping[str, object],
                metrics: bool) -> StatusView:
    """
    The gateway at a glance: status, node, listeners, counts.

    @param health: the full health report (its C{status} and
        C{expected_instances}).
    @param listening: what the gateway listens on.
    @param metrics: whether it serves metrics.
    """
    states = [state for _, state in registered(connections)]
    by_health: Dict[str, int] = {}
    for state in states:
        by_health[state.status.value] = by_health.get(state.status.value, 0) + 1
    view: StatusView = {
        "status": str(health["status"]),
        "node_id": config.node.node_id,
        "region": config.node.region,
        "listening": listening,
        "services": len({s.instance.service_name for s in states}),
        "instances": len(states),
        "instances_by_health": dict(sorted(by_health.items())),
        "routes": len({key for s in states for key in s.endpoints}),
        "in_flight": sum(s.in_flight for s in states),
        "metrics": metrics,
    }
    if "expected_instances" in health:
        view["expected_instances"] = health["expected_instances"]
    return view


def services_view(connections: Iterable[AdminConnection],
                  default_versions: Mapping[str, str]) -> List[ServiceView]:
    """
    Each service, by name: versions (oldest first) with instance counts,
    routable, draining, in flight, its configured default version.
    """
    services: Dict[str, ServiceView] = {}
    versions: Dict[str, Dict[str, int]] = {}
    for _, state in registered(connections):
        name = state.instance.service_name
        entry = services.setdefault(name, {
            "name": name, "versions": [], "instances": 0, "routable": 0, "draining": 0,
            "in_flight": 0, "default_version": default_versions.get(name)})
        counts = versions.setdefault(name, {})
        counts[state.instance.version] = counts.get(state.instance.version, 0) + 1
        entry["instances"] += 1
        entry["routable"] += state.status.value in ("healthy", "degraded")
        entry["draining"] += state.status.value == "draining"
        entry["in_flight"] += state.in_flight
    for name, entry in services.items():
        entry["versions"] = [{"version": v, "instances": n} for v, n in sorted(
            versions[name].items(), key=lambda item: parse_version(item[0]))]
    return [services[name] for name in sorted(services)]


def instance_view(connection: AdminConnection, state: ConnectionState, now: float,
                  ejection: Optional[EjectionState] = None) -> InstanceView:
    """
    One connection as the API shows it.

    @param now: the gateway clock's time (ages are counted from it).
    @param ejection: its outlier state, if known.
    """
    instance = state.instance
    view: InstanceView = {
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
        "drained_by_operator": bool(connection.drain_requested),
        "endpoints": len(state.endpoints),
    }
    if ejection is not None:
        until = ejection.ejected_until
        ejected = until is not None and until > now
        view["ejected"] = ejected
        view["ejected_until"] = iso_time(until) if ejected else None
        view["ejections"] = ejection.ejections
        view["consecutive_failures"] = ejection.consecutive_failures
    return view


def instances_view(connections: Iterable[AdminConnection], now: float,
                   ejection_state: Optional[EjectionReader] = None,
                   service: Optional[str] = None) -> List[InstanceView]:
    """
    Each registered connection (of C{service} if given), by service,
    version, instance id and connection id.
    """
    rows = [instance_view(c, state, now,
                          None if ejection_state is None else ejection_state(c))
            for c, state in registered(connections)
            if service is None or state.instance.service_name == service]
    rows.sort(key=lambda row: (row["service"], parse_version(row["version"]),
                               row["instance_id"], row["connection_id"]))
    return rows


def routes_view(connections: Iterable[AdminConnection], overrides: EndpointOverrides,
                per_call_limit: int) -> List[RouteView]:
    """
    Each announced route as the gateway enforces it (overrides applied; the
    descriptor of the highest version announcing it), by template then
    method.

    @param per_call_limit: C{payload_limits.max_request_bytes_per_call}.
    """
    highest: Dict[Tuple[str, str], EndpointDescriptor] = {}
    versions: Dict[Tuple[str, str], Dict[str, None]] = {}
    instances: Dict[Tuple[str, str], int] = {}
    for _, state in registered(connections):
        for key, endpoint in state.endpoints.items():
            versions.setdefault(key, {})[endpoint.version] = None
            instances[key] = instances.get(key, 0) + 1
            known = highest.get(key)
            if known is None or parse_version(endpoint.version) > parse_version(known.version):
                highest[key] = endpoint
    rows = []
    for method, template in sorted(highest, key=lambda key: (key[1], key[0])):
        key = (method, template)
        endpoint, timeout = overrides.apply(highest[key])
        own_limit = endpoint.max_request_bytes
        rows.append(RouteView(
            method=method,
            template=template,
            service=endpoint.service_name,
            versions=sorted(versions[key], key=parse_version),
            instances=instances[key],
            claims=claims_json(endpoint.requiring_claims),
            timeout_s=timeout,
            streaming=endpoint.supports_streaming,
            idempotent=endpoint.idempotent,
            limits={"max_request_bytes": (per_call_limit if own_limit is None
                                          else min(own_limit, per_call_limit))},
        ))
    return rows


__all__ = ["AdminConnection", "ClaimView", "EjectionReader", "InstanceView", "RouteView",
           "ServiceView", "StatusView", "VersionCount", "claims_json", "instance_view",
           "instances_view", "iso_time", "redacted_config", "registered", "routes_view",
           "services_view", "status_view"]
