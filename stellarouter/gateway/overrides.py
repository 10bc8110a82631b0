"""
The gateway's per-endpoint overrides from C{services[].endpoints}: a
timeout that replaces the endpoint's own, claim requirements added to its
own, and C{supports_streaming: false} to buffer the bodies of an endpoint
announced as streaming (the gateway only tightens), and
C{forward_authorization: false} to keep the client's C{Authorization}
header from the microservice (it gets the verified claims).

An override names an endpoint by method and path template, matched by
shape: C{GET /echo/{id}} overrides C{GET /echo/{x}} (parameter names do not
matter; the routing state never holds two templates of the same shape).  An
override that matches no announced endpoint is logged; one that adds claim
requirements fails closed: its service's requests are refused (503) until
an instance announces an endpoint it matches, because a typo in it would
otherwise leave the endpoint it meant anonymous.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Iterable, List, Optional, Protocol, Set, Tuple

from twisted.logger import Logger

from ..common import models
from ..common.models import EndpointDescriptor
from ..config.gateway import EndpointOverride, ServiceConfig
from .errors import NoRoute

#: How many template shapes are remembered (templates come from HELLOs).
MAX_CACHED_SHAPES = 4096


class AnnouncedRoutes(Protocol):
    """
    What the overrides need of the routing state.
    """

    def announced(self, method: str, template: str) -> Optional[object]:
        """
        The route announced for C{method} and C{template}'s shape, if any
        (an object with C{service_name}).
        """


def template_shape(template: str) -> str:
    """
    A path template with its parameter names removed: C{/echo/{}},
    C{/files/{*}} (L{stellarouter.common.models.template_shape}).
    """
    return models.template_shape(template)


class EndpointOverrides:
    """
    Looks up the override of an endpoint by (service, method, path shape),
    and reports the overrides that match no announced endpoint.

    @ivar unmatched: the overrides last found matching no announced
        endpoint, as C{(service, method, path)}.
    """

    log = Logger()

    def __init__(self, services: Iterable[ServiceConfig] = ()) -> None:
        services = tuple(services)
        self._by_key: Dict[Tuple[str, str, str], EndpointOverride] = {
            (service.name, o.method, template_shape(o.path)): o
            for service in services for o in service.endpoints
        }
        self._all: Tuple[Tuple[str, EndpointOverride], ...] = tuple(
            (service.name, o) for service in services for o in service.endpoints)
        self._claiming: Dict[str, Tuple[EndpointOverride, ...]] = {
            service.name: tuple(o for o in service.endpoints if o.requiring_claims)
            for service in services if any(o.requiring_claims for o in service.endpoints)
        }
        self._shapes: Dict[str, str] = {}
        self.unmatched: Set[Tuple[str, str, str]] = set()
        #: Some override says C{forward_authorization: false} (checked
        #: before L{forwards_authorization}, off the common path).
        self.strips_authorization = any(not o.forward_authorization for _, o in self._all)

    def __bool__(self) -> bool:
        return bool(self._by_key)

    def _shape(self, template: str) -> str:
        shape = self._shapes.get(template)
        if shape is None:
            shape = template_shape(template)
            if len(self._shapes) < MAX_CACHED_SHAPES:
                self._shapes[template] = shape
        return shape

    def buffered(self, service_name: str, method: str, path: str) -> bool:
        """
        Whether the configuration turns streaming off for this endpoint.
        """
        override = self._by_key.get((service_name, method, self._shape(path)))
        return override is not None and override.buffered

    def forwards_authorization(self, endpoint: EndpointDescriptor) -> bool:
        """
        Whether the client's C{Authorization} header goes to the
        microservice (C{forward_authorization}, default true).
        """
        override = self._by_key.get(
            (endpoint.service_name, endpoint.method, self._shape(endpoint.path)))
        return override is None or override.forward_authorization

    def idempotent(self, endpoint: EndpointDescriptor) -> Optional[bool]:
        """
        The override's C{idempotent} for the endpoint (retries, issue 24),
        or C{None} if it sets none.
        """
        override = self._by_key.get(
            (endpoint.service_name, endpoint.method, self._shape(endpoint.path)))
        return None if override is None else override.idempotent

    def apply(self, endpoint: EndpointDescriptor,
              routes: Optional[AnnouncedRoutes] = None) -> Tuple[EndpointDescriptor, float]:
        """
        The endpoint as the gateway enforces it, and its effective timeout.

        @param routes: the routing state; with it, a claim-carrying override
            of the endpoint's service that matches no announced endpoint
            refuses the request.
        @raise NoRoute: such an override exists (503, naming it).
        """
        service = endpoint.service_name
        if routes is not None and service in self._claiming:
            for claiming in self._claiming[service]:
                if not self._matches(service, claiming, routes):
                    raise NoRoute(
                        f"the gateway's override {claiming.method} {claiming.path} of service "
                        f"{service} (with requiring_claims) matches no endpoint its instances "
                        "announce; its requests are refused until it does (fix the path in "
                        "services[].endpoints)")
        override = self._by_key.get((service, endpoint.method, self._shape(endpoint.path)))
        if override is None:
            return endpoint, endpoint.default_timeout
        if override.buffered and endpoint.supports_streaming:
            endpoint = dataclasses.replace(endpoint, supports_streaming=False)
        if override.requiring_claims:
            extra = tuple(c for c in override.requiring_claims
                          if c not in endpoint.requiring_claims)
            endpoint = dataclasses.replace(
                endpoint, requiring_claims=endpoint.requiring_claims + extra)
        timeout = override.timeout if override.timeout is not None else endpoint.default_timeout
        return endpoint, timeout

    def _matches(self, service: str, override: EndpointOverride, routes: AnnouncedRoutes) -> bool:
        """
        Whether an instance of C{service} announces the endpoint C{override}
        names (by shape); logs when that changes.
        """
        route = routes.announced(override.method, override.path)
        matched = route is not None and getattr(route, "service_name", None) == service
        key = (service, override.method, override.path)
        if matched and key in self.unmatched:
            self.unmatched.discard(key)
            self.log.info("gateway override {method} {path} of service {service} now matches "
                          "an announced endpoint", method=override.method, path=override.path,
                          service=service)
        elif not matched and key not in self.unmatched:
            self.unmatched.add(key)
            consequence = ("its service's requests are refused until it does (fail closed: it "
                           "has requiring_claims)" if override.requiring_claims
                           else "it has no effect")
            self.log.warn("gateway override {method} {path} of service {service} matches no "
                          "announced endpoint; {consequence}", method=override.method,
                          path=override.path, service=service, consequence=consequence)
        return matched

    def report(self, routes: AnnouncedRoutes) -> List[Tuple[str, str, str]]:
        """
        Check every override against the announced endpoints, logging those
        that stopped or started matching (run on reload and on each health
        sweep).  A service with no instance connected is not reported.

        @return: the unmatched overrides, as C{(service, method, path)}.
        """
        for service, override in self._all:
            if routes_have_service(routes, service):
                self._matches(service, override, routes)
        return sorted(self.unmatched)


def routes_have_service(routes: AnnouncedRoutes, service: str) -> bool:
    """
    Whether any instance of C{service} is registered (when the routing
    state can say; otherwise assume so).
    """
    versions = getattr(routes, "versions_seen", None)
    return bool(versions(service)) if versions is not None else True
