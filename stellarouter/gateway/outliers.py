"""
Outlier ejection (issue 24): an instance whose last requests all failed on
the gateway's side is kept out of routing for a while.  Pure policy, no I/O:
time is passed in as C{now}; the caller (L{stellarouter.gateway.attempts})
arms the timer that ends an ejection and tells the routing state.

 - A gateway-side failure is an attempt that got no answer from the
   instance: the connection lost (502), an unusable RESPONSE (502), the
   deadline passed (504).  Any RESPONSE, whatever its status, is a success
   (a 500 of the handler is the service's answer, not a sick instance).
 - C{consecutive_failures} in a row eject the instance for
   C{base_ejection_time} times the number of times it has been ejected
   (one less for each C{base_ejection_time} it then stayed in routing
   without being ejected), at most C{max_ejection_time}.
 - At most C{max_ejected_share} of a service's instances that can take
   traffic (HEALTHY or DEGRADED, ejected ones included; not DRAINING or
   UNHEALTHY ones) are ejected at once (rounded down: with the default one
   half, one of two, never the last one).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class OutlierPolicy:
    """
    The ejection settings (gateway YAML C{outlier_detection}).
    """

    consecutive_failures: int = 5
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejected_share: float = 0.5
    #: A gateway timeout (504) ejects at once: a frozen instance must not
    #: get new requests while the ones it holds time out one by one.
    eject_on_timeout: bool = True

    def __post_init__(self) -> None:
        if self.consecutive_failures < 1:
            raise ValueError("consecutive_failures must be at least 1")
        if not 0 < self.base_ejection_time <= self.max_ejection_time:
            raise ValueError("need 0 < base_ejection_time <= max_ejection_time")
        if not 0 <= self.max_ejected_share <= 1:
            raise ValueError("max_ejected_share must be in [0, 1]")


@dataclass(frozen=True)
class EjectionState:
    """
    What the gateway knows of one instance's failures (for the admin API's
    instance view and metrics).

    @ivar ejected_until: when its ejection ends (gateway clock), or C{None}
        if it is routed to.
    @ivar ejections: how many times it has been ejected (the multiplier of
        the next ejection's length, before it decays).
    @ivar consecutive_failures: gateway-side failures since its last
        success.
    """

    ejected_until: Optional[float] = None
    ejections: int = 0
    consecutive_failures: int = 0

    @property
    def ejected(self) -> bool:
        return self.ejected_until is not None


_CLEAN = EjectionState()


class _Record:
    __slots__ = ("failures", "ejections", "ejected_until", "restored_at")

    def __init__(self) -> None:
        self.failures = 0
        self.ejections = 0
        self.ejected_until: Optional[float] = None
        self.restored_at = 0.0


def ejection_allowed(instances: int, ejected: int, share: float) -> bool:
    """
    Whether one more of a service's C{instances} may be ejected while
    C{ejected} of them are.
    """
    return ejected + 1 <= math.floor(share * instances + 1e-9)


class OutlierDetector:
    """
    Consecutive failures and ejections per instance (keyed by connection
    id).  Only instances with a failure or an ejection behind them are
    kept, at most L{max_tracked} (the oldest forgotten first).

    @ivar ejections_total: ejections since start (metrics).
    @ivar ejections_prevented: ejections the share cap stopped.
    """

    max_tracked = 4096

    def __init__(self, policy: OutlierPolicy = OutlierPolicy()) -> None:
        self.policy = policy
        self._records: "OrderedDict[str, _Record]" = OrderedDict()
        self.ejections_total = 0
        self.ejections_prevented = 0

    def success(self, key: str) -> None:
        """
        The instance answered a request.
        """
        record = self._records.get(key)
        if record is None:
            return
        record.failures = 0
        if record.ejections == 0 and record.ejected_until is None:
            del self._records[key]

    def failure(self, key: str, now: float, instances: int, ejected: int,
                timeout: bool = False) -> Optional[float]:
        """
        A gateway-side failure of the instance.

        @param timeout: it is a gateway timeout (504), which ejects at once
            with L{OutlierPolicy.eject_on_timeout}.

        @param instances: instances of its service that could take traffic
            but for an ejection (L{RoutingState.service_instances
            <stellarouter.gateway.state.RoutingState.service_instances>}).
        @param ejected: how many of them are ejected now.
        @return: when the ejection ends, if this failure ejects it now.
        """
        record = self._records.get(key)
        if record is None:
            record = self._records[key] = _Record()
            while len(self._records) > self.max_tracked:
                self._records.popitem(last=False)
        record.failures += 1
        policy = self.policy
        enough = record.failures >= policy.consecutive_failures or (
            timeout and policy.eject_on_timeout)
        if record.ejected_until is not None or not enough:
            return None
        if not ejection_allowed(instances, ejected, policy.max_ejected_share):
            self.ejections_prevented += 1
            return None
        base = policy.base_ejection_time
        if record.ejections:
            # Time spent in routing since the last ejection forgives.
            forgiven = int((now - record.restored_at) // base)
            record.ejections = max(0, record.ejections - forgiven)
        record.ejections += 1
        record.failures = 0
        record.ejected_until = now + min(base * record.ejections, policy.max_ejection_time)
        self.ejections_total += 1
        return record.ejected_until

    def restore(self, key: str, now: float) -> None:
        """
        The ejection of C{key} ended: it is routed to again.
        """
        record = self._records.get(key)
        if record is not None:
            record.ejected_until = None
            record.failures = 0
            record.restored_at = now

    def forget(self, key: str) -> None:
        """
        The instance is gone.
        """
        self._records.pop(key, None)

    def state(self, key: str) -> EjectionState:
        """
        The instance's failures and ejections.
        """
        record = self._records.get(key)
        if record is None:
            return _CLEAN
        return EjectionState(record.ejected_until, record.ejections, record.failures)
