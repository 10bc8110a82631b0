"""
The default routing plugin (the minimal one; the full region/latency
algorithm is spec section 6.3).
"""

from __future__ import annotations

from typing import Optional, Sequence

from zope.interface import implementer

from ..common.enums import InstanceHealthStatus
from ..common.interfaces import IRoutingPlugin
from ..common.models import (
    RoutableConnection,
    RoutingContext,
    RoutingDecision,
    parse_version,
)

_HEALTHY = InstanceHealthStatus.HEALTHY
_ROUTABLE = (InstanceHealthStatus.HEALTHY, InstanceHealthStatus.DEGRADED)


@implementer(IRoutingPlugin)
class LeastInFlightRouting:
    """
    Picks, among the candidates at the selected version, a HEALTHY one (a
    DEGRADED one only when none is HEALTHY) with the fewest requests in
    flight; ties rotate round-robin.

    The version is the requested one (exact equality), or else the highest
    version among routable candidates.
    """

    def __init__(self) -> None:
        self._turn = 0

    def choose(
        self, context: RoutingContext, candidates: Sequence[RoutableConnection], now: float
    ) -> Optional[RoutingDecision]:
        routable = [c for c in candidates if c.state.status in _ROUTABLE]
        version = context.requested_version
        if version is None:
            if not routable:
                return None
            version = max((c.state.instance.version for c in routable), key=parse_version)
        at_version = [c for c in routable if c.state.instance.version == version]
        pool = [c for c in at_version if c.state.status is _HEALTHY] or at_version
        if not pool:
            return None
        if len(pool) == 1:
            chosen = pool[0]
        else:
            fewest = min(c.state.in_flight for c in pool)
            tied = [c for c in pool if c.state.in_flight == fewest]
            self._turn += 1
            chosen = tied[self._turn % len(tied)]
        endpoint = chosen.state.endpoints[context.endpoint]
        return RoutingDecision(endpoint, chosen, endpoint.default_timeout)
