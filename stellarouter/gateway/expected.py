"""
Expected instances (C{static_instances}): which of the instances the
operator listed are connected right now.

Microservices dial in and the routing state is the union of the live
connections (invariant 5), so this list is never used to route: it only
turns "an instance we count on is not there" into something C{/health}
shows and the log says, instead of a silent 404 or 503 later.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Optional, Tuple

from twisted.logger import Logger

from ..common.models import RoutableConnection
from ..config.gateway import StaticInstance

#: The statuses an expected instance can have.
CONNECTED, MISSING, MISMATCHED = "connected", "missing", "mismatched"


def instance_status(expected: StaticInstance,
                    connections: Iterable[RoutableConnection]) -> Tuple[str, Optional[str]]:
    """
    The status of one expected instance among C{connections} (each with a
    registered C{state}).

    @return: C{(status, detail)}; C{detail} says what is wrong with a
        mismatched instance.
    """
    found = []
    for connection in connections:
        instance = connection.state.instance
        if (instance.service_name == expected.service
                and instance.instance_id == expected.instance_id):
            found.append(instance)
    if not found:
        return MISSING, None
    for instance in found:
        if ((expected.version is None or instance.version == expected.version)
                and (expected.region is None or instance.region == expected.region)):
            return CONNECTED, None
    instance = found[0]
    return MISMATCHED, (f"connected as version {instance.version} in region "
                        f"{instance.region}; expected "
                        f"{expected.version or 'any version'} in "
                        f"{expected.region or 'any region'}")


class ExpectedInstances:
    """
    The configured expected instances and the status last logged for each.
    """

    log = Logger()

    def __init__(self, expected: Tuple[StaticInstance, ...],
                 previous: Optional["ExpectedInstances"] = None) -> None:
        """
        @param previous: the set this one replaces on a reload; statuses of
            instances still listed carry over, so a reload alone logs
            nothing new about them.
        """
        self.expected = expected
        self._logged: Dict[StaticInstance, str] = {}
        if previous is not None:
            self._logged = {e: status for e, status in previous._logged.items()
                            if e in expected}

    def report(self, connections: Iterable[RoutableConnection]) -> Dict[str, Dict[str, str]]:
        """
        C{service/instance_id} → C{{"status": ..., "detail"?: ...}} for
        every expected instance.
        """
        connections = list(connections)
        out: Dict[str, Dict[str, str]] = {}
        for expected in self.expected:
            status, detail = instance_status(expected, connections)
            out[expected.name] = {"status": status, **({"detail": detail} if detail else {})}
        return out

    def check(self, connections: Iterable[Any]) -> None:
        """
        Log every expected instance whose status changed since the last
        check (the first check logs those not connected).

        @param connections: the gateway service's connections, every one
            registered (a L{GatewayConnection}'s C{state} is optional in
            type, so they are not typed L{RoutableConnection}s).
        """
        connections = list(connections)
        for expected in self.expected:
            status, detail = instance_status(expected, connections)
            before = self._logged.get(expected)
            if status == before or (before is None and status == CONNECTED):
                self._logged[expected] = status
                continue
            self._logged[expected] = status
            if status == CONNECTED:
                self.log.info("expected instance {name} is connected", name=expected.name)
            elif status == MISSING:
                self.log.warn("expected instance {name} is not connected", name=expected.name)
            else:
                self.log.warn("expected instance {name} is mismatched: {detail}",
                              name=expected.name, detail=detail)
