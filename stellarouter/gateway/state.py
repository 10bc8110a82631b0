"""
The gateway's routing state: the union of the live connections' HELLOs.
Nothing here is persisted; a restart rebuilds it from the HELLOs of the
microservices that dial in again.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Iterable, List, Optional, Set, Tuple

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from ..common.enums import InstanceHealthStatus
from ..common.errors import InvalidDescriptor
from ..common.interfaces import IGlobalRoutingState
from ..common.models import (
    ConnectionState, RoutableConnection, template_param_names, template_shape,
)
from .errors import MethodNotAllowed, NoRoute, NotFound
from .memory import RouteMemory
from .outliers import EjectionState, OutlierDetector
from .resolver import EndpointResolver, Resolution, Route

#: Path prefixes served by the gateway itself; no service may announce them.
RESERVED_PREFIXES = ("/health",)
#: The statuses routing may choose.
_ROUTABLE = (InstanceHealthStatus.HEALTHY, InstanceHealthStatus.DEGRADED)
#: The empty candidate list (shared, never modified).
_NONE: List[RoutableConnection] = []


def _reserved(template: str, prefixes: Tuple[str, ...] = RESERVED_PREFIXES) -> bool:
    return any(template == p or template.startswith(p + "/") for p in prefixes)


@implementer(IGlobalRoutingState)
class RoutingState:
    """
    Live connections indexed by endpoint, plus the resolver trie built from
    them.  A connection is anything with a C{state} attribute holding its
    L{ConnectionState}.
    """

    log = Logger()

    #: Versions remembered without a live connection (the oldest gone
    #: first): C{X-Stella-Version} of such a version is 503, of a version
    #: never seen (or forgotten) 404.
    max_versions_gone = 1000

    def __init__(self, clock: Optional[IReactorTime] = None) -> None:
        """
        @param clock: dates the departures of routes (L{memory}); without
            one, only the configured routes are remembered.
        """
        self._connections: Dict[str, RoutableConnection] = {}
        # Per endpoint, the connections routing may choose (HEALTHY or
        # DEGRADED) and, apart, the others (UNHEALTHY, DRAINING): routing
        # cost does not grow with connections it cannot use.
        self._by_endpoint: Dict[Tuple[str, str], List[RoutableConnection]] = {}
        self._parked: Dict[Tuple[str, str], List[RoutableConnection]] = {}
        self._routable: Dict[str, bool] = {}
        self._resolver = EndpointResolver()
        self._versions_seen: Dict[str, Dict[str, None]] = {}
        self._live_versions: Dict[Tuple[str, str], int] = {}
        self._versions_gone: "OrderedDict[Tuple[str, str], None]" = OrderedDict()
        self._by_instance_id: Dict[str, List[RoutableConnection]] = {}
        self.clock = clock
        #: Routes known without a live instance: 503, not 404.
        self.memory = RouteMemory()
        #: Counts registrations and departures: the set of HELLOs changed
        #: when it did (the OpenAPI document is rebuilt only then).
        self.generation = 0
        #: Paths served by the gateway itself (more when the OpenAPI routes
        #: are on the public port).
        self.reserved_prefixes: Tuple[str, ...] = RESERVED_PREFIXES
        #: Consecutive failures and ejections per connection (issue 24).
        self.outliers = OutlierDetector()
        #: Connection ids ejected as outliers: kept out of the candidate
        #: lists, like an UNHEALTHY connection, until restored.
        self._ejected: Set[str] = set()

    def register(self, connection: RoutableConnection) -> None:
        state: ConnectionState = connection.state
        service = state.instance.service_name
        if state.connection_id in self._connections:
            raise InvalidDescriptor(f"connection {state.connection_id} is already registered")
        new_routes = []
        shapes: Dict[Tuple[str, str], str] = {}
        for (method, template), endpoint in state.endpoints.items():
            shape = (method, _shape(template))
            if shape in shapes:
                raise InvalidDescriptor(
                    f"{method} {template} clashes with {method} {shapes[shape]} "
                    "(same shape, different parameter names)"
                )
            shapes[shape] = template
            if _reserved(template, self.reserved_prefixes):
                raise InvalidDescriptor(
                    f"{method} {template} is reserved for the gateway's own endpoints"
                )
            existing = self._resolver.lookup(method, template)
            if existing is None:
                new_routes.append(Route(service, method, template, _param_names(template)))
            elif existing.service_name != service:
                raise InvalidDescriptor(
                    f"{method} {template} is owned by service {existing.service_name!r}"
                )
            elif existing.template != template:
                raise InvalidDescriptor(
                    f"{method} {template} clashes with {existing.template} "
                    "(same shape, different parameter names)"
                )
        added: List[Route] = []
        try:
            for route in new_routes:
                self._resolver.add(route)
                added.append(route)
                self.memory.arrived(route)
        except ValueError as e:
            for route in added:
                self._resolver.remove(route.method, route.template)
            raise InvalidDescriptor(str(e)) from None
        self._connections[state.connection_id] = connection
        routable = self._may_route(state)
        self._routable[state.connection_id] = routable
        lists = self._by_endpoint if routable else self._parked
        for key in state.endpoints:
            lists.setdefault(key, []).append(connection)
        version = (service, state.instance.version)
        self._live_versions[version] = self._live_versions.get(version, 0) + 1
        self._versions_gone.pop(version, None)
        self._versions_seen.setdefault(service, {})[state.instance.version] = None
        self._note_instance(connection)
        self.generation += 1

    def _note_instance(self, connection: RoutableConnection) -> None:
        """
        Index the connection by instance id and warn when another live
        connection already uses the id (docs/router/routing.md: both are
        kept, the ids should differ).
        """
        state: ConnectionState = connection.state
        others = self._by_instance_id.setdefault(state.instance.instance_id, [])
        if others and connection not in others:
            first = others[0].state
            self.log.warn(
                "instance id {instance_id} is already registered by connection {other} "
                "({service} {version} from {other_peer}); connection {connection} from {peer} "
                "({new_service} {new_version}) is registered too: give each instance its "
                "own id", instance_id=state.instance.instance_id, other=first.connection_id,
                service=first.instance.service_name, version=first.instance.version,
                other_peer=first.peer, connection=state.connection_id, peer=state.peer,
                new_service=state.instance.service_name, new_version=state.instance.version)
        if connection not in others:
            others.append(connection)

    def unregister(self, connection: RoutableConnection) -> None:
        state: ConnectionState = connection.state
        if self._connections.pop(state.connection_id, None) is None:
            return
        self.generation += 1
        routable = self._routable.pop(state.connection_id, True)
        lists, other = ((self._by_endpoint, self._parked) if routable
                        else (self._parked, self._by_endpoint))
        for key in state.endpoints:
            holders = lists.get(key)
            if holders is None:
                continue
            if connection in holders:
                holders.remove(connection)
            if not holders:
                del lists[key]
                if key not in other:
                    route = self._resolver.lookup(*key)
                    self._resolver.remove(*key)
                    if route is not None and self.clock is not None:
                        self.memory.departed(route, self.clock.seconds())
        self._forget_version(state.instance.service_name, state.instance.version)
        others = self._by_instance_id.get(state.instance.instance_id)
        if others is not None and connection in others:
            others.remove(connection)
            if not others:
                del self._by_instance_id[state.instance.instance_id]

    def _forget_version(self, service: str, version: str) -> None:
        """
        One live connection of C{service} at C{version} fewer; a version
        without any goes to the bounded memory of versions gone.
        """
        key = (service, version)
        left = self._live_versions.get(key, 1) - 1
        if left > 0:
            self._live_versions[key] = left
            return
        self._live_versions.pop(key, None)
        self._versions_gone[key] = None
        while len(self._versions_gone) > self.max_versions_gone:
            (old_service, old_version), _ = self._versions_gone.popitem(last=False)
            versions = self._versions_seen.get(old_service)
            if versions is not None:
                versions.pop(old_version, None)
                if not versions:
                    del self._versions_seen[old_service]

    def status_changed(self, connection: RoutableConnection) -> None:
        """
        The connection's C{state.status} changed: move it in or out of the
        lists routing chooses from.
        """
        state: ConnectionState = connection.state
        was = self._routable.get(state.connection_id)
        routable = self._may_route(state)
        if was is None or was == routable:
            return
        self._routable[state.connection_id] = routable
        source, target = ((self._parked, self._by_endpoint) if routable
                          else (self._by_endpoint, self._parked))
        for key in state.endpoints:
            holders = source.get(key)
            if holders is not None and connection in holders:
                holders.remove(connection)
                if not holders:
                    del source[key]
            target.setdefault(key, []).append(connection)

    def _may_route(self, state: ConnectionState) -> bool:
        return state.status in _ROUTABLE and state.connection_id not in self._ejected

    # -- outlier ejection (issue 24; policy in outliers.py, timers in attempts.py)

    def eject(self, connection: RoutableConnection) -> None:
        """
        Keep C{connection} out of routing until L{restore}.
        """
        self._ejected.add(connection.state.connection_id)
        self.status_changed(connection)

    def restore(self, connection: RoutableConnection) -> None:
        """
        Route to an ejected C{connection} again (if its status allows).
        """
        self._ejected.discard(connection.state.connection_id)
        self.status_changed(connection)

    def is_registered(self, connection: RoutableConnection) -> bool:
        return self._connections.get(connection.state.connection_id) is connection

    def is_ejected(self, connection: RoutableConnection) -> bool:
        return connection.state.connection_id in self._ejected

    def service_instances(self, service_name: str) -> Tuple[int, int]:
        """
        How many live connections of C{service_name} could take traffic but
        for an ejection (HEALTHY or DEGRADED; not DRAINING, not UNHEALTHY),
        and how many of them are ejected: what the ejection share cap
        counts, so that it never ejects the last connection routing may
        choose (an operator-drained instance is not one).
        """
        total = ejected = 0
        for connection in self._connections.values():
            state = connection.state
            if state.instance.service_name == service_name and state.status in _ROUTABLE:
                total += 1
                ejected += state.connection_id in self._ejected
        return total, ejected

    def ejection_state(self, connection: RoutableConnection) -> EjectionState:
        """
        The instance's consecutive gateway-side failures and ejections (for
        the admin API's instance view and metrics).
        """
        return self.outliers.state(connection.state.connection_id)

    def resolve(self, method: str, path: str) -> Resolution:
        """
        See L{IGlobalRoutingState.resolve}; a route no live instance serves
        but that L{memory} knows raises L{NoRoute} (503) instead of
        L{NotFound} or L{MethodNotAllowed}.
        """
        try:
            return self._resolver.resolve(method, path)
        except (NotFound, MethodNotAllowed):
            known = self.memory.find(method, path, self._now())
            if known is None:
                raise
        raise NoRoute(f"no instance of {known.service_name} serves {known.method} "
                      f"{known.template} right now")

    def _now(self) -> float:
        return self.clock.seconds() if self.clock is not None else 0.0

    def announced(self, method: str, template: str) -> Optional[Route]:
        """
        The route announced for C{method} and C{template}'s shape (parameter
        names do not matter), if any instance announces one.
        """
        return self._resolver.lookup(method, template)

    def connectionsFor(self, service_name: str, method: str, template: str) -> List[RoutableConnection]:
        """
        The connections routing may choose for the endpoint: HEALTHY or
        DEGRADED ones only (an UNHEALTHY or DRAINING one is kept apart, so
        a thousand silent registrations cost routing nothing).
        """
        return self._by_endpoint.get((method, template), _NONE)

    def parked(self, method: str, template: str) -> List[RoutableConnection]:
        """
        The connections serving the endpoint that routing may not choose now
        (UNHEALTHY or DRAINING).
        """
        return self._parked.get((method, template), _NONE)

    def connections(self) -> List[RoutableConnection]:
        return list(self._connections.values())

    def versions_seen(self, service_name: str) -> Iterable[str]:
        """
        The versions of C{service_name} with a live connection, and the last
        L{max_versions_gone} versions (of all services) whose connections
        are gone.
        """
        return self._versions_seen.get(service_name, ())


def _shape(template: str) -> str:
    return template_shape(template)


def _param_names(template: str) -> Tuple[str, ...]:
    return template_param_names(template)
