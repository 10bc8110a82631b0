"""
The default routing plugin (spec section 6.3): pure policy, no I/O.

 1. Eligible: the connection announced the endpoint, its transport can carry
    the request, and it is HEALTHY or DEGRADED.
 2. Version: the requested one (exact equality), else the service's
    configured default version, else the highest version among eligible
    connections.
 3. Health: HEALTHY ones; DEGRADED ones only when no HEALTHY one exists.
 4. Region tiers: the gateway's own region, then each of its
    C{neighbor_regions} in order, then any region.  The first non-empty tier
    is used.
 5. Within the tier: the lowest cost, where cost = requests in flight +
    whole multiples of C{ping_bucket_ms} in the average ping (unknown ping
    counts as 0).  Equal costs rotate round-robin.

C{docs/router/routing.md} walks through an example.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from zope.interface import implementer

from ..common.enums import InstanceHealthStatus, TransportType
from ..common.interfaces import IRoutingPlugin
from ..common.models import RoutableConnection, RoutingContext, RoutingDecision, parse_version

_HEALTHY = InstanceHealthStatus.HEALTHY
# (can_carry runs on every request: a global, not TransportType.UDP, as
# _HEALTHY and gateway/planner.py's _UDP.)
_UDP = TransportType.UDP
_version_keys: Dict[str, Tuple[int, int, int]] = {}


def _version_key(version: str) -> Tuple[int, int, int]:
    key = _version_keys.get(version)
    if key is None:
        key = _version_keys[version] = parse_version(version)
    return key
_ROUTABLE = (InstanceHealthStatus.HEALTHY, InstanceHealthStatus.DEGRADED)


#: Room kept in a datagram for the REQUEST header (method, path, headers...).
DATAGRAM_HEADER_ALLOWANCE = 4096


def can_carry(connection: RoutableConnection, context: RoutingContext) -> bool:
    """
    Whether the connection's transport can carry a request for the endpoint:
    UDP carries no streaming endpoint and no request whose body (plus room
    for the header) exceeds one datagram.
    """
    state = connection.state
    if state.transport_type is _UDP:
        endpoint = state.endpoints.get(context.endpoint)
        if endpoint is None or endpoint.supports_streaming:
            return False
        return context.body_size + DATAGRAM_HEADER_ALLOWANCE + 21 <= state.max_frame_bytes
    return True


@implementer(IRoutingPlugin)
class RegionAwareRouting:
    """
    Region tiers, health, exact versions, least cost, round-robin ties.
    """

    def __init__(
        self,
        region: str,
        neighbor_regions: Sequence[str] = (),
        default_versions: Optional[Mapping[str, str]] = None,
        ping_bucket_ms: float = 5.0,
    ) -> None:
        """
        @param region: the gateway's own region (from configuration only).
        @param neighbor_regions: regions to try next, in order.
        @param default_versions: service name → version used without
            C{X-Stella-Version}.
        @param ping_bucket_ms: pings within the same bucket cost the same.
        """
        self.region = region
        self.neighbor_regions = tuple(neighbor_regions)
        self.default_versions: Dict[str, str] = dict(default_versions or {})
        self.ping_bucket_ms = ping_bucket_ms
        self._turns: Dict[Tuple[str, str], int] = {}

    def tier_of(self, region: str) -> int:
        """
        0 for the own region, 1.. for neighbours in order, after them any.
        """
        if region == self.region:
            return 0
        try:
            return 1 + self.neighbor_regions.index(region)
        except ValueError:
            return 1 + len(self.neighbor_regions)

    def cost(self, connection: RoutableConnection) -> int:
        """
        Requests in flight plus whole ping buckets.
        """
        state = connection.state
        ping = state.average_ping_ms or 0.0
        return state.in_flight + int(ping // self.ping_bucket_ms)

    def choose(
        self, context: RoutingContext, candidates: Sequence[RoutableConnection], now: float
    ) -> Optional[RoutingDecision]:
        if len(candidates) == 1:
            return self._choose_only(context, candidates[0])
        return self._choose_among(context, candidates)

    def _choose_only(self, context: RoutingContext,
                     only: RoutableConnection) -> Optional[RoutingDecision]:
        """
        L{choose} with one candidate (the common case, kept cheap): it is
        chosen if it is routable, can carry the request and has the version
        asked for (or configured); tiers and costs do not matter.
        """
        state = only.state
        version = context.requested_version or self.default_versions.get(context.service_name)
        if (state.status not in _ROUTABLE or not can_carry(only, context)
                or (version is not None and state.instance.version != version)):
            return None
        endpoint = state.endpoints[context.endpoint]
        return RoutingDecision(endpoint, only, endpoint.default_timeout)

    def _choose_among(
        self, context: RoutingContext, candidates: Sequence[RoutableConnection]
    ) -> Optional[RoutingDecision]:
        """
        L{choose} in general: version, health, region tier, cost, then
        round-robin among ties.
        """
        eligible = [c for c in candidates
                    if c.state.status in _ROUTABLE and can_carry(c, context)]
        version = context.requested_version or self.default_versions.get(context.service_name)
        if version is None:
            if not eligible:
                return None
            versions = {c.state.instance.version for c in eligible}
            version = versions.pop() if len(versions) == 1 else max(versions, key=_version_key)
        at_version = [c for c in eligible if c.state.instance.version == version]
        pool = [c for c in at_version if c.state.status is _HEALTHY] or at_version
        if not pool:
            return None
        best_tier = min(self.tier_of(c.state.instance.region) for c in pool)
        tier = [c for c in pool if self.tier_of(c.state.instance.region) == best_tier]
        if len(tier) == 1:
            chosen = tier[0]
        else:
            costs = [self.cost(c) for c in tier]
            lowest = min(costs)
            tied: List[RoutableConnection] = [c for c, k in zip(tier, costs) if k == lowest]
            key = context.endpoint
            turn = self._turns.get(key, -1) + 1
            self._turns[key] = turn
            chosen = tied[turn % len(tied)]
        endpoint = chosen.state.endpoints[context.endpoint]
        return RoutingDecision(endpoint, chosen, endpoint.default_timeout)
