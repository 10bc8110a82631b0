#!/usr/bin/env python3
"""
Resolution + routing cost per request with 10 vs 10,000 registered
endpoints (the trie and the routing plugin, no I/O), measured in one run.

    .venv/bin/python benchmarks/resolution.py [--lookups 200000]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from typing import List, Tuple

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from stellarouter.common.enums import TransportType  # noqa: E402
from stellarouter.common.models import (  # noqa: E402
    ConnectionState,
    EndpointDescriptor,
    InstanceDescriptor,
    RoutingContext,
)
from stellarouter.gateway.routing import RegionAwareRouting  # noqa: E402
from stellarouter.gateway.state import RoutingState  # noqa: E402


class Connection:
    def __init__(self, n: int, service: str, endpoints: List[Tuple[str, str]]) -> None:
        self.state = ConnectionState(
            connection_id=f"c{n}", instance=InstanceDescriptor(f"i{n}", service, "1.0.0", "eu1"),
            transport_type=TransportType.TCP,
            endpoints={(m, p): EndpointDescriptor(service, "1.0.0", m, p) for m, p in endpoints},
            connected_at=0.0)


def build(endpoints: int, services: int = 10, instances: int = 3) -> Tuple[RoutingState, list]:
    state = RoutingState()
    per_service = max(endpoints // services, 1)
    paths = []
    n = 0
    for s in range(services):
        service = f"svc{s}"
        mine = []
        for e in range(per_service):
            # Half the templates have a parameter, half not, at every size
            # (counted across services: with 10 endpoints each service has
            # one), so both sizes resolve the same mix of paths.
            template = (f"/{service}/things{e}/{{id}}/parts" if len(paths) % 2
                        else f"/{service}/items{e}")
            mine.append(("GET", template))
            paths.append(template.replace("{id}", "42"))
        for _ in range(instances):
            n += 1
            state.register(Connection(n, service, mine))
    return state, paths


def cost(endpoints: int, lookups: int) -> float:
    state, paths = build(endpoints)
    plugin = RegionAwareRouting("eu1")
    rng = random.Random(7)
    sample = [rng.choice(paths) for _ in range(lookups)]
    start = time.perf_counter()
    for path in sample:
        resolution = state.resolve("GET", path)
        route = resolution.route
        context = RoutingContext("GET", path, {}, (route.method, route.template),
                                 route.service_name, resolution.path_params, None, "eu1")
        plugin.choose(context, state.connectionsFor(route.service_name, route.method,
                                                    route.template), 0.0)
    return (time.perf_counter() - start) / lookups * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--lookups", type=int, default=200_000)
    args = parser.parse_args()
    results = {}
    for endpoints in (10, 10_000, 10, 10_000):   # interleaved, best of two
        us = cost(endpoints, args.lookups)
        results[endpoints] = min(us, results.get(endpoints, us))
    small, large = results[10], results[10_000]
    print(f"resolve + route per request: 10 endpoints {small:.2f} us, 10,000 endpoints "
          f"{large:.2f} us, ratio {large / small:.2f} (target <= 1.5)")


if __name__ == "__main__":
    main()
