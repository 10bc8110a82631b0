"""
The gateway's routing state: the union of the live connections' HELLOs.
Nothing here is persisted; a restart rebuilds it from the HELLOs of the
microservices that dial in again.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Set, Tuple

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from ..common.errors import InvalidDescriptor
from ..common.interfaces import IGlobalRoutingState
from ..common.models import ConnectionState, RoutableConnection
from .errors import MethodNotAllowed, NoRoute, NotFound
from .memory import RouteMemory
from .resolver import EndpointResolver, Resolution, Route

#: Path prefixes served by the gateway itself; no service may announce them.
RESERVED_PREFIXES = ("/health",)


def _reserved(template: str) -> bool:
    return any(template == p or template.startswith(p + "/") for p in RESERVED_PREFIXES)


@implementer(IGlobalRoutingState)
class RoutingState:
    """
    Live connections indexed by endpoint, plus the resolver trie built from
    them.  A connection is anything with a C{state} attribute holding its
    L{ConnectionState}.
    """

    log = Logger()

    def __init__(self, clock: Optional[IReactorTime] = None) -> None:
        """
        @param clock: dates the departures of routes (L{memory}); without
            one, only the configured routes are remembered.
        """
        self._connections: Dict[str, RoutableConnection] = {}
        self._by_endpoint: Dict[Tuple[str, str], List[RoutableConnection]] = {}
        self._resolver = EndpointResolver()
        self._versions_seen: Dict[str, Set[str]] = {}
        self.clock = clock
        #: Routes known without a live instance: 503, not 404.
        self.memory = RouteMemory()

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
            if _reserved(template):
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
        for key in state.endpoints:
            self._by_endpoint.setdefault(key, []).append(connection)
        self._versions_seen.setdefault(service, set()).add(state.instance.version)

    def unregister(self, connection: RoutableConnection) -> None:
        state: ConnectionState = connection.state
        if self._connections.pop(state.connection_id, None) is None:
            return
        for key in state.endpoints:
            holders = self._by_endpoint.get(key)
            if holders is None:
                continue
            if connection in holders:
                holders.remove(connection)
            if not holders:
                del self._by_endpoint[key]
                route = self._resolver.lookup(*key)
                self._resolver.remove(*key)
                if route is not None and self.clock is not None:
                    self.memory.departed(route, self.clock.seconds())

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
        return self._by_endpoint.get((method, template), [])

    def connections(self) -> List[RoutableConnection]:
        return list(self._connections.values())

    def versions_seen(self, service_name: str) -> Iterable[str]:
        """
        Every version of C{service_name} announced since the gateway started.
        """
        return self._versions_seen.get(service_name, ())


def _shape(template: str) -> str:
    return "/".join("{}" if s.startswith("{") else s for s in template.split("/"))


def _param_names(template: str) -> Tuple[str, ...]:
    return tuple(
        segment[1:-1] for segment in template.split("/") if segment.startswith("{")
    )
