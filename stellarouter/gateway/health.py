"""
Liveness of microservice connections (spec section 5.3): the pure status
policy, and the monitor that sweeps connections and pings them on the
injected clock.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterable, List, Optional, Protocol, TypeVar

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ..common.enums import InstanceHealthStatus
from ..config.gateway import HealthConfig

_HEALTHY = InstanceHealthStatus.HEALTHY
_DEGRADED = InstanceHealthStatus.DEGRADED
_UNHEALTHY = InstanceHealthStatus.UNHEALTHY
_DRAINING = InstanceHealthStatus.DRAINING
_SEVERITY = {
    InstanceHealthStatus.HEALTHY: 0,
    InstanceHealthStatus.UNKNOWN: 1,
    InstanceHealthStatus.DEGRADED: 2,
    InstanceHealthStatus.UNHEALTHY: 3,
}

#: Weight of the newest round trip in the ping average.
PING_EWMA_ALPHA = 0.3


def evaluate_status(
    reported: InstanceHealthStatus,
    last_heartbeat: float,
    now: float,
    thresholds: HealthConfig,
) -> InstanceHealthStatus:
    """
    The status the gateway gives a connection.

    DRAINING, which only the microservice can report, stands.  Otherwise the
    worse of what the microservice reported and what its silence says:
    silent for C{degraded_after} seconds or more → DEGRADED, for
    C{unhealthy_after} or more → UNHEALTHY.

    @param reported: the status in the last HEARTBEAT.
    @param last_heartbeat: when the last HEARTBEAT (or ping echo) arrived.
    @param now: the current time.
    """
    if reported is _DRAINING:
        return _DRAINING
    silence = now - last_heartbeat
    if silence >= thresholds.unhealthy_after:
        by_silence = _UNHEALTHY
    elif silence >= thresholds.degraded_after:
        by_silence = _DEGRADED
    else:
        by_silence = _HEALTHY
    return max(by_silence, reported, key=lambda s: _SEVERITY.get(s, 1))


def update_ping_average(average: Optional[float], sample_ms: float) -> float:
    """
    The exponentially weighted moving average of ping round trips.
    """
    if average is None:
        return sample_ms
    return average + PING_EWMA_ALPHA * (sample_ms - average)


class MonitoredConnection(Protocol):
    """
    What L{HealthMonitor} needs of a connection.
    """

    def refresh_status(self, now: float, thresholds: Optional[HealthConfig] = None) -> None:
        """
        Re-evaluate the connection's status at C{now}.
        """

    def ping(self, now: float) -> None:
        """
        Send a HEARTBEAT ping (nothing for a connection not registered yet
        or closed).
        """


#: The kind of connection a L{HealthMonitor} watches.
Monitored = TypeVar("Monitored", bound=MonitoredConnection)


class HealthMonitor(Generic[Monitored]):
    """
    Every C{sweep_interval}: re-evaluates every connection's status and
    logs the transitions.  Every C{ping_interval}: pings every connection.

    @ivar connections: returns the connections to watch
        (L{MonitoredConnection}s).
    @ivar after_sweep: called with those connections after each sweep.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        thresholds: HealthConfig,
        connections: Callable[[], Iterable[Monitored]],
        after_sweep: Optional[Callable[[List[Monitored]], None]] = None,
    ) -> None:
        self.clock = clock
        self.thresholds = thresholds
        self.connections = connections
        self.after_sweep = after_sweep
        self._sweeper = LoopingCall(self.sweep)
        self._sweeper.clock = clock
        self._pinger = LoopingCall(self.ping)
        self._pinger.clock = clock

    def start(self) -> None:
        """
        Start sweeping and pinging (first sweep and ping after one interval).
        """
        self._sweeper.start(self.thresholds.sweep_interval, now=False)
        self._pinger.start(self.thresholds.ping_interval, now=False)

    @property
    def running(self) -> bool:
        """
        Whether the timers run.
        """
        return self._sweeper.running

    def stop(self) -> None:
        """
        Stop both timers.
        """
        for loop in (self._sweeper, self._pinger):
            if loop.running:
                loop.stop()

    def sweep(self) -> None:
        """
        Re-evaluate every registered connection now.
        """
        now = self.clock.seconds()
        connections = list(self.connections())
        for connection in connections:
            connection.refresh_status(now, self.thresholds)
        if self.after_sweep is not None:
            self.after_sweep(connections)

    def ping(self) -> None:
        """
        Ping every registered connection now.
        """
        now = self.clock.seconds()
        for connection in list(self.connections()):
            connection.ping(now)
