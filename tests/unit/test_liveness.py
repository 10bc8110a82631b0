"""
Tests for L{stellarouter.gateway.liveness.InstanceLiveness} on its own: the
status change it sets and logs, an operator's drain and the HEARTBEAT that
asks for it, and the ping frame (issue 20: the glue that left
L{stellarouter.gateway.connection}).
"""

from typing import Any, List

from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from stellarouter.common.enums import FrameType, InstanceHealthStatus, TransportType
from stellarouter.common.models import ConnectionState, InstanceDescriptor
from stellarouter.common.payloads import decode_heartbeat
from stellarouter.config.gateway import HealthConfig
from stellarouter.gateway.liveness import InstanceLiveness

HEALTH = HealthConfig(degraded_after=15.0, unhealthy_after=30.0, sweep_interval=5.0,
                      ping_interval=5.0, close_unhealthy_after=60.0)


class InstanceLivenessTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.state = ConnectionState("c-1", InstanceDescriptor("b-1", "billing", "1.0.0", "eu1"),
                                     TransportType.INMEMORY, {}, connected_at=0.0)
        self.liveness = InstanceLiveness(HEALTH)
        self.logged: List[Any] = []
        self.liveness.log = Logger(observer=self.logged.append)  # type: ignore[misc]

    def formats(self) -> List[object]:
        return [e["log_format"] for e in self.logged]

    def test_refresh_sets_and_logs_a_change(self) -> None:
        """
        L{InstanceLiveness.refresh} sets a changed status on the state,
        logs it once and says so; an unchanged status is neither set nor
        logged.
        """
        self.assertFalse(self.liveness.refresh(self.state, 15.0 - 1e-6))
        self.assertEqual(self.logged, [])
        self.assertTrue(self.liveness.refresh(self.state, 15.0))
        self.assertIs(self.state.status, InstanceHealthStatus.DEGRADED)
        [event] = self.logged
        self.assertEqual((event["old"], event["new"], event["silence"]),
                         ("healthy", "degraded", 15.0))
        self.assertFalse(self.liveness.refresh(self.state, 16.0))
        self.assertEqual(len(self.logged), 1)

    def test_drain(self) -> None:
        """
        An operator's drain returns the HEARTBEAT that asks the instance to
        drain, logs the first request only, and the next refresh makes the
        status DRAINING whatever the instance reports.
        """
        frame = self.liveness.drain(self.state)
        self.assertIs(frame.type, FrameType.HEARTBEAT)
        beat = decode_heartbeat(frame.payload)
        self.assertEqual((beat.instance_id, beat.status),
                         ("b-1", InstanceHealthStatus.DRAINING))
        self.assertIs(self.state.status, InstanceHealthStatus.HEALTHY)
        again = self.liveness.drain(self.state)
        self.assertNotEqual(again.correlation_id, frame.correlation_id)
        self.assertEqual(len([f for f in self.formats() if "drained by the operator" in str(f)]),
                         1)
        self.assertTrue(self.liveness.drain_requested)
        self.assertTrue(self.liveness.refresh(self.state, 1.0))
        self.assertIs(self.state.status, InstanceHealthStatus.DRAINING)

    def test_ping(self) -> None:
        """
        A ping is a HEARTBEAT carrying the time it was sent, under a
        correlation id the liveness remembers for its echo.
        """
        frame = self.liveness.ping(12.5)
        self.assertIs(frame.type, FrameType.HEARTBEAT)
        self.assertEqual(decode_heartbeat(frame.payload).ping, 12.5)
        self.assertEqual(self.liveness.pings, {frame.correlation_id: 12.5})
