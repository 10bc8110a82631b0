"""
How alive a registered microservice instance is, seen from its connection
(L{InstanceLiveness}): the status its HEARTBEATs report, the round trips
of the gateway's pings, an operator's drain, and the status the routing
table sees, evaluated from the last report and the silence since
(L{evaluate_status}) and logged when it changes.  It decides and builds the
HEARTBEAT frames the gateway sends (pings, the request to drain);
L{stellarouter.gateway.connection.GatewayConnection} sends them, tells the
routing state of a status change and closes a connection UNHEALTHY for too
long.
"""

from __future__ import annotations

from typing import Dict, Optional

from twisted.logger import Logger

from ..common.enums import FrameType, InstanceHealthStatus
from ..common.ids import CorrelationId, new_correlation_id
from ..common.models import ConnectionState, Frame
from ..common.payloads import Heartbeat, encode_heartbeat
from ..config.gateway import HealthConfig
from .health import evaluate_status, update_ping_average

_SILENT = (InstanceHealthStatus.DEGRADED, InstanceHealthStatus.UNHEALTHY)
#: Unanswered pings remembered at most (a silent peer's oldest are forgotten).
MAX_PINGS = 8


class InstanceLiveness:
    """
    The liveness of one registered instance.

    @ivar reported_status: the status of its last HEARTBEAT report.
    @ivar unhealthy_since: when the status last became UNHEALTHY (L{None}:
        it is not).
    """

    log = Logger()

    def __init__(self, health: HealthConfig) -> None:
        """
        @param health: the default thresholds.
        """
        self.health = health
        self.reported_status = InstanceHealthStatus.HEALTHY
        self.unhealthy_since: Optional[float] = None
        self.pings: Dict[CorrelationId, float] = {}
        self._warned_status = False
        #: An operator asked the gateway to drain this connection (admin
        #: API): it stays DRAINING whatever the microservice reports.
        self.drain_requested = False

    def heartbeat(self, state: ConnectionState, beat: Heartbeat, cid: CorrelationId,
                  now: float, peer: str) -> bool:
        """
        A HEARTBEAT arrived: a ping's echo (updates the average round trip)
        or a status report.

        @return: whether the frame must be echoed (a DRAINING report is
            acknowledged by its echo; protocol.md, HEARTBEAT).
        """
        if beat.unknown_status is not None and not self._warned_status:
            self._warned_status = True
            self.log.warn("HEARTBEAT from {peer} has an unknown status {status} (taken as "
                          "alive, status unknown; said once per connection)",
                          peer=peer, status=beat.unknown_status)
        state.last_heartbeat = now
        if beat.ping is not None:
            sent = self.pings.pop(cid, None)
            if sent is not None:
                state.average_ping_ms = update_ping_average(
                    state.average_ping_ms, (now - sent) * 1000.0)
            return False
        status = beat.status
        if status is InstanceHealthStatus.UNKNOWN:
            status = InstanceHealthStatus.HEALTHY
        draining = status is InstanceHealthStatus.DRAINING
        if draining and self.reported_status is not InstanceHealthStatus.DRAINING:
            self.log.info("instance {instance_id} is draining: no new requests",
                          instance_id=state.instance.instance_id)
        # An operator's drain (admin API) stands whatever the instance reports.
        self.reported_status = InstanceHealthStatus.DRAINING if self.drain_requested else status
        return draining

    def evaluate(self, state: ConnectionState, now: float,
                 thresholds: Optional[HealthConfig] = None) -> Optional[InstanceHealthStatus]:
        """
        Re-evaluate the status from the last report and the silence since
        the last HEARTBEAT.

        @return: the new status if it changed (it is not yet set on
            C{state}), else L{None}.
        @raise UnhealthyTooLong: it has been UNHEALTHY for longer than
            C{close_unhealthy_after}: the connection must close.
        """
        thresholds = thresholds or self.health
        status = evaluate_status(self.reported_status, state.last_heartbeat, now, thresholds)
        if status is not InstanceHealthStatus.UNHEALTHY:
            self.unhealthy_since = None
        elif self.unhealthy_since is None:
            self.unhealthy_since = now
        elif now - self.unhealthy_since >= thresholds.close_unhealthy_after:
            raise UnhealthyTooLong(
                f"UNHEALTHY for {now - self.unhealthy_since:.1f}s "
                f"(close_unhealthy_after {thresholds.close_unhealthy_after:g}s)")
        if status is state.status:
            return None
        if status is InstanceHealthStatus.HEALTHY and state.status in _SILENT:
            # Round trips measured across the silence say nothing about
            # the network: start the average afresh.
            state.average_ping_ms = None
            self.pings.clear()
        return status

    def refresh(self, state: ConnectionState, now: float,
                thresholds: Optional[HealthConfig] = None) -> bool:
        """
        Re-evaluate the status (L{evaluate}); set and log a change.

        @return: whether it changed (the routing state must be told).
        @raise UnhealthyTooLong: as L{evaluate}.
        """
        status = self.evaluate(state, now, thresholds)
        if status is None:
            return False
        self.log.info(
            "instance {instance_id} ({service} {version}) {old} -> {new} "
            "({silence:.1f}s since its last heartbeat)",
            instance_id=state.instance.instance_id, service=state.instance.service_name,
            version=state.instance.version, old=state.status.value, new=status.value,
            silence=now - state.last_heartbeat,
        )
        state.status = status
        return True

    def drain(self, state: ConnectionState) -> Frame:
        """
        An operator asked to drain the instance (admin API): from now on it
        reports DRAINING whatever its HEARTBEATs say (the status changes at
        the next L{refresh}).

        @return: the HEARTBEAT whose status C{draining} asks the
            microservice to drain (protocol.md, HEARTBEAT).
        """
        i = state.instance
        if not self.drain_requested:
            self.drain_requested = True
            self.log.info("instance {instance_id} ({service} {version}) drained by the "
                          "operator: no new requests", instance_id=i.instance_id,
                          service=i.service_name, version=i.version)
        self.reported_status = InstanceHealthStatus.DRAINING
        return Frame(FrameType.HEARTBEAT, new_correlation_id(), encode_heartbeat(
            Heartbeat(i.instance_id, InstanceHealthStatus.DRAINING)))

    def ping(self, now: float) -> Frame:
        """
        A HEARTBEAT ping sent now (L{new_ping}); its echo updates
        C{average_ping_ms}.
        """
        return Frame(FrameType.HEARTBEAT, self.new_ping(now),
                     encode_heartbeat(Heartbeat(ping=now)))

    def new_ping(self, now: float) -> CorrelationId:
        """
        A ping sent now: its correlation id (the oldest unanswered one is
        forgotten past L{MAX_PINGS}).
        """
        if len(self.pings) >= MAX_PINGS:
            del self.pings[next(iter(self.pings))]
        cid = new_correlation_id()
        self.pings[cid] = now
        return cid


class UnhealthyTooLong(Exception):
    """
    An instance has been UNHEALTHY for longer than C{close_unhealthy_after}.
    """
