"""
Routes the gateway knows although no live instance serves them now: those
an instance served recently, and those the configuration names
(C{services[].endpoints}).  A request for one is answered 503 with
C{Retry-After} (the service is away, not unknown); 404 is kept for paths no
service and no configuration knows (issue 17, item 4).

Pure policy: every time-dependent call takes C{now}.  The memory of
departed routes is bounded twice, by age (C{window}) and by count
(C{capacity}, the oldest departure forgotten first), so clients or
microservices coming and going cannot grow it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Iterable, Optional, Tuple

from ..config.gateway import ServiceConfig
from .errors import MethodNotAllowed, NotFound
from .resolver import EndpointResolver, Route

_Key = Tuple[str, str]


class RouteMemory:
    """
    Departed and configured routes, resolvable like live ones.

    @ivar window: seconds a departed route is remembered (0: not at all).
    @ivar capacity: the most departed routes remembered.
    """

    def __init__(self, window: float = 600.0, capacity: int = 1024) -> None:
        self.window = window
        self.capacity = capacity
        #: (method, template) -> (route, departure time), oldest first.
        self._departed: "OrderedDict[_Key, Tuple[Route, float]]" = OrderedDict()
        self._configured: Dict[_Key, Route] = {}
        self._resolver: Optional[EndpointResolver] = None  # rebuilt when stale

    def __len__(self) -> int:
        """
        How many departed routes are remembered (configured ones aside).
        """
        return len(self._departed)

    def configure(self, routes: Iterable[Route]) -> None:
        """
        Replace the routes the configuration names.
        """
        self._configured = {(r.method, r.template): r for r in routes}
        self._resolver = None

    def limit(self, window: float, capacity: int) -> None:
        """
        Change the bounds (a reload); the oldest departures beyond the new
        capacity are forgotten at once.
        """
        self.window, self.capacity = window, capacity
        self._trim()

    def departed(self, route: Route, now: float) -> None:
        """
        The last instance serving C{route} left at C{now}.
        """
        if self.window <= 0:
            return
        key = (route.method, route.template)
        self._departed.pop(key, None)
        self._departed[key] = (route, now)
        self._trim()
        self._resolver = None

    def arrived(self, route: Route) -> None:
        """
        An instance serves C{route} again: it is live, no longer remembered.
        """
        if self._departed.pop((route.method, route.template), None) is not None:
            self._resolver = None

    def find(self, method: str, path: str, now: float) -> Optional[Route]:
        """
        The remembered or configured route a request would have matched, or
        L{None}.

        @param path: the raw request path, without query.
        @raise stellarouter.gateway.errors.BadRequest: the path has a
            segment no handler may get (as for live routes).
        """
        self._expire(now)
        if not self._departed and not self._configured:
            return None
        resolver = self._resolver
        if resolver is None:
            resolver = self._resolver = self._build()
        try:
            return resolver.resolve(method, path).route
        except (NotFound, MethodNotAllowed):
            return None

    def _expire(self, now: float) -> None:
        departed = self._departed
        while departed:
            key, (_, at) = next(iter(departed.items()))
            if now - at < self.window:
                return
            del departed[key]
            self._resolver = None

    def _trim(self) -> None:
        while len(self._departed) > self.capacity:
            self._departed.popitem(last=False)
            self._resolver = None

    def _build(self) -> EndpointResolver:
        """
        A resolver of the configured routes, then the departed ones (newest
        last): where two have the same shape, the later one replaces the
        earlier.
        """
        resolver = EndpointResolver()
        routes = list(self._configured.values()) + [r for r, _ in self._departed.values()]
        for route in routes:
            try:
                resolver.add(route)
            except ValueError:
                # Same (method, shape) as an earlier entry: the later wins.
                resolver.remove(route.method, _occupant(resolver, route))
                resolver.add(route)
        return resolver


def _occupant(resolver: EndpointResolver, route: Route) -> str:
    """
    The template of the route in C{resolver} with C{route}'s method and
    shape.
    """
    existing = resolver.lookup(route.method, route.template)
    assert existing is not None
    return existing.template


def configured_routes(services: Iterable[ServiceConfig]) -> Iterable[Route]:
    """
    The routes C{services[].endpoints} name (method and template).
    """
    for service in services:
        for override in service.endpoints:
            names = tuple(segment[1:-1] for segment in override.path.split("/")
                          if segment.startswith("{"))
            yield Route(service.name, override.method, override.path, names)
