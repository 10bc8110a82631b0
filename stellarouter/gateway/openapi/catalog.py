"""
The OpenAPI documents of what is connected to the gateway, one per version
(L{OpenApiCatalog}, the gateway's L{IOpenApiSource}):

 - C{document(None)} describes every service at the version a request
   without C{X-Stella-Version} reaches (the configured default, else the
   highest connected); C{document(V)} describes every service that has an
   instance at C{V}, as requests with C{X-Stella-Version: V} reach them.
 - A document is built when first asked for after the set of HELLOs
   changed (L{RoutingState.generation}), never on the proxy's path, and
   kept serialized with its C{ETag}.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import msgspec
from zope.interface import implementer

from ...common.interfaces import IOpenApiSource
from ...common.models import RenderedDocument, parse_version
from ...common.schemas import ServiceSchemas
from ..state import RoutingState
from .document import ServiceAtVersion, build_document

#: What the kept documents were built from: the HELLOs' generation, the
#: default versions and the C{servers} URL.
_CatalogKey = Tuple[int, Tuple[Tuple[str, str], ...], Optional[str]]


@implementer(IOpenApiSource)
class OpenApiCatalog:
    """
    The OpenAPI documents of what is connected now, built on demand and
    kept until the set of HELLOs changes.
    """

    def __init__(
        self,
        routing_state: RoutingState,
        title: str = "stellarouter gateway",
        default_versions: Callable[[], Mapping[str, str]] = dict,
    ) -> None:
        """
        @param default_versions: service name to the version a request
            without C{X-Stella-Version} is routed to (C{services[].default_version}).
        """
        self.routing_state = routing_state
        self.title = title
        self.default_versions = default_versions
        #: The document's C{servers} URL (C{None}: none, the page's origin).
        self.server_url: Optional[str] = None
        self._key: Optional[_CatalogKey] = None
        self._documents: Dict[Optional[str], RenderedDocument] = {}
        self._services: Dict[Tuple[str, str], ServiceAtVersion] = {}
        #: Documents built so far (for the tests and the benchmark).
        self.builds = 0

    def _current(self) -> None:
        """
        Forget the documents built if the HELLOs (or the default versions)
        changed since.
        """
        key = (self.routing_state.generation, tuple(sorted(self.default_versions().items())),
               self.server_url)
        if key != self._key:
            self._key = key
            self._documents.clear()
            self._services = _collect(self.routing_state)

    def versions(self) -> List[str]:
        """
        Every version some connected service has, lowest first.
        """
        self._current()
        return sorted({v for (_, v) in self._services}, key=parse_version)

    def document(self, version: Optional[str] = None) -> Optional[RenderedDocument]:
        """
        The document for requests with C{X-Stella-Version: version}, or
        without one (C{None}); C{None} if no service has C{version}.
        """
        self._current()
        rendered = self._documents.get(version)
        if rendered is not None:
            return rendered
        if version is None:
            chosen = _default_choice(self._services, self.default_versions())
        else:
            chosen = sorted(k for k in self._services if k[1] == version)
            if not chosen:
                return None
        document = build_document([self._services[k] for k in chosen], self.title, version)
        if self.server_url is not None:
            document["servers"] = [{"url": self.server_url,
                                    "description": "the gateway's HTTP port"}]
        body = msgspec.json.encode(document)  # a quarter of json.dumps's time
        rendered = RenderedDocument(body, b'"' + hashlib.sha256(body).hexdigest()[:32].encode()
                                    + b'"')
        self._documents[version] = rendered
        self.builds += 1
        return rendered


def _collect(routing_state: RoutingState) -> Dict[Tuple[str, str], ServiceAtVersion]:
    """
    The live connections grouped by service and version, in a stable order
    (so that the same HELLOs give the same document and C{ETag}).
    """
    services: Dict[Tuple[str, str], ServiceAtVersion] = {}
    states = sorted((c.state for c in routing_state.connections()),
                    key=lambda s: (s.instance.instance_id, s.connection_id))
    for state in states:
        key = (state.instance.service_name, state.instance.version)
        entry = services.get(key)
        if entry is None:
            entry = services[key] = ServiceAtVersion(key[0], key[1], {}, {}, {})
        schemas: Optional[ServiceSchemas] = state.schemas
        for endpoint_key, endpoint in sorted(state.endpoints.items()):
            entry.endpoints.setdefault(endpoint_key, endpoint)
            if schemas is not None and endpoint_key not in entry.descriptions:
                description = schemas.endpoints.get(endpoint_key)
                if description is not None:
                    entry.descriptions[endpoint_key] = description
        if schemas is not None:
            for name, schema in schemas.components.items():
                entry.components.setdefault(name, schema)
    return services


def _default_choice(services: Mapping[Tuple[str, str], ServiceAtVersion],
                    defaults: Mapping[str, str]) -> List[Tuple[str, str]]:
    """
    Per service, the version a request without C{X-Stella-Version} reaches:
    the configured default when connected, else the highest.
    """
    by_service: Dict[str, List[str]] = {}
    for service, version in services:
        by_service.setdefault(service, []).append(version)
    chosen = []
    for service, versions in sorted(by_service.items()):
        default = defaults.get(service)
        chosen.append((service, default if default in versions
                       else max(versions, key=parse_version)))
    return chosen


__all__ = ["OpenApiCatalog"]
