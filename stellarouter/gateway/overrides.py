"""
The gateway's per-endpoint overrides from C{services[].endpoints}: a
timeout that replaces the endpoint's own, claim requirements added to its
own, and C{supports_streaming: false} to buffer the bodies of an endpoint
announced as streaming (the gateway only tightens), and
C{forward_authorization: false} to keep the client's C{Authorization}
header from the microservice (it gets the verified claims).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Iterable, Tuple

from ..common.models import EndpointDescriptor
from ..config.gateway import EndpointOverride, ServiceConfig


class EndpointOverrides:
    """
    Looks up the override of an endpoint by (service, method, path).
    """

    def __init__(self, services: Iterable[ServiceConfig] = ()) -> None:
        self._by_key: Dict[Tuple[str, str, str], EndpointOverride] = {
            (service.name, o.method, o.path): o
            for service in services for o in service.endpoints
        }

    def __bool__(self) -> bool:
        return bool(self._by_key)

    def buffered(self, service_name: str, method: str, path: str) -> bool:
        """
        Whether the configuration turns streaming off for this endpoint.
        """
        override = self._by_key.get((service_name, method, path))
        return override is not None and override.buffered

    def forwards_authorization(self, endpoint: EndpointDescriptor) -> bool:
        """
        Whether the client's C{Authorization} header goes to the
        microservice (C{forward_authorization}, default true).
        """
        override = self._by_key.get((endpoint.service_name, endpoint.method, endpoint.path))
        return override is None or override.forward_authorization

    def apply(self, endpoint: EndpointDescriptor) -> Tuple[EndpointDescriptor, float]:
        """
        The endpoint as the gateway enforces it, and its effective timeout.
        """
        override = self._by_key.get((endpoint.service_name, endpoint.method, endpoint.path))
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
