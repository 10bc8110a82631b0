"""
Tests for liveness: the status policy, the monitor's sweeps and pings on a
Clock, and the DRAINING acknowledgement.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from stellarouter.common.enums import FrameType, InstanceHealthStatus
from stellarouter.common.ids import new_correlation_id
from stellarouter.common.models import Frame
from stellarouter.common.payloads import Heartbeat, decode_heartbeat, encode_heartbeat
from stellarouter.config.gateway import HealthConfig
from stellarouter.gateway.connection import GatewayConnection
from stellarouter.gateway.health import HealthMonitor, evaluate_status, update_ping_average
from stellarouter.gateway.registration import Registrar
from stellarouter.gateway.state import RoutingState
from stellarouter.testing.fakes import FakeFrameSender

from .test_gateway_connection import hello

H = InstanceHealthStatus.HEALTHY
D = InstanceHealthStatus.DEGRADED
U = InstanceHealthStatus.UNHEALTHY
DR = InstanceHealthStatus.DRAINING
EPSILON = 1e-6
THRESHOLDS = HealthConfig()


class PolicyTests(SynchronousTestCase):
    def test_silence_boundaries(self) -> None:
        """
        HEALTHY below 15 s of silence, DEGRADED from 15 s, UNHEALTHY from 30 s.
        """
        for silence, expected in [(0, H), (15 - EPSILON, H), (15, D), (30 - EPSILON, D),
                                  (30, U), (1e6, U)]:
            self.assertEqual(evaluate_status(H, 100.0, 100.0 + silence, THRESHOLDS), expected,
                             silence)

    def test_reported(self) -> None:
        """
        DRAINING stands whatever the silence; otherwise the worse of report
        and silence wins.
        """
        self.assertEqual(evaluate_status(DR, 0, 1000, THRESHOLDS), DR)
        self.assertEqual(evaluate_status(D, 0, 1, THRESHOLDS), D)
        self.assertEqual(evaluate_status(D, 0, 30, THRESHOLDS), U)

    def test_configurable(self) -> None:
        """
        The thresholds come from configuration.
        """
        fast = HealthConfig(degraded_after=1, unhealthy_after=2)
        self.assertEqual(evaluate_status(H, 0, 1, fast), D)
        self.assertEqual(evaluate_status(H, 0, 2, fast), U)

    def test_ewma(self) -> None:
        """
        The first sample sets the average; later ones move it by 30 %.
        """
        self.assertEqual(update_ping_average(None, 10.0), 10.0)
        self.assertAlmostEqual(update_ping_average(10.0, 20.0), 13.0)


class MonitorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.state = RoutingState()
        self.connection = GatewayConnection(Registrar(self.state, "gw", "eu1"), self.clock)
        self.sender = FakeFrameSender()
        self.connection.connectionOpened(self.sender)
        self.connection.frameReceived(hello())
        self.sender.take()
        self.monitor = HealthMonitor(self.clock, THRESHOLDS, lambda: [self.connection])
        self.monitor.start()
        self.addCleanup(self.monitor.stop)

    def status(self) -> InstanceHealthStatus:
        return self.connection.state.status

    def beat(self, status: InstanceHealthStatus = H) -> Frame:
        frame = Frame(FrameType.HEARTBEAT, new_correlation_id(),
                      encode_heartbeat(Heartbeat("b-1", status)))
        self.connection.frameReceived(frame)
        return frame

    def test_sweeps_at_the_boundaries(self) -> None:
        """
        A silent connection becomes DEGRADED at the sweep at 15 s and
        UNHEALTHY at the sweep at 30 s, not before; a heartbeat makes it
        HEALTHY again at once.
        """
        self.clock.advance(15 - EPSILON)
        self.assertEqual(self.status(), H)
        self.clock.advance(EPSILON)
        self.assertEqual(self.status(), D)
        self.clock.advance(15 - EPSILON)
        self.assertEqual(self.status(), D)
        self.clock.advance(EPSILON)
        self.assertEqual(self.status(), U)
        self.beat()
        self.assertEqual(self.status(), H)

    def test_reloaded_thresholds_judge_heartbeats(self) -> None:
        """
        Thresholds set on a connection (what a reload does) are the ones a
        HEARTBEAT's re-evaluation uses: an instance reporting UNHEALTHY is
        closed after the new C{close_unhealthy_after}, not the old one.
        (They stayed with the ones the connection was built with.)
        """
        self.connection.health = HealthConfig(close_unhealthy_after=5.0)
        self.beat(U)
        self.clock.advance(5)
        self.beat(U)
        self.assertIsNotNone(self.sender.closed)

    def test_heartbeats_keep_it_healthy(self) -> None:
        """
        Heartbeats every 5 s keep a connection HEALTHY through many sweeps.
        """
        for _ in range(20):
            self.clock.advance(5)
            self.beat()
        self.assertEqual(self.status(), H)

    def test_pings_feed_the_average(self) -> None:
        """
        Every ping interval the gateway pings; the echo's round trip updates
        average_ping_ms as an EWMA; an unknown echo changes nothing.
        """
        self.clock.advance(5)
        pings = [f for f in self.sender.take() if f.type is FrameType.HEARTBEAT]
        self.assertEqual(len(pings), 1)
        self.assertEqual(decode_heartbeat(pings[0].payload).ping, 5.0)
        self.clock.advance(0.004)
        self.connection.frameReceived(pings[0])
        self.assertAlmostEqual(self.connection.state.average_ping_ms, 4.0)
        self.clock.advance(5 - 0.004)
        second = self.sender.take()[0]
        self.clock.advance(0.014)
        self.connection.frameReceived(second)
        self.assertAlmostEqual(self.connection.state.average_ping_ms, 7.0)
        self.connection.frameReceived(second)
        self.assertAlmostEqual(self.connection.state.average_ping_ms, 7.0)

    def test_recovery_resets_the_ping_average(self) -> None:
        """
        Coming back from silence forgets the ping average and the pings sent
        meanwhile: their round trips measured the silence, not the network.
        """
        self.connection.state.average_ping_ms = 3.0
        self.clock.advance(30)
        late_ping = self.sender.take()[-1]
        self.assertEqual(self.status(), U)
        self.beat()
        self.assertEqual(self.status(), H)
        self.assertIsNone(self.connection.state.average_ping_ms)
        self.connection.frameReceived(late_ping)
        self.assertIsNone(self.connection.state.average_ping_ms)

    def test_unanswered_pings_are_bounded(self) -> None:
        """
        A silent peer does not make the gateway remember pings forever.
        """
        self.clock.advance(5 * 100)
        self.assertLessEqual(len(self.connection.liveness.pings), 8)

    def test_draining_is_acknowledged(self) -> None:
        """
        A DRAINING report is echoed back as the acknowledgement and makes the
        connection DRAINING whatever its silence.
        """
        frame = self.beat(DR)
        self.assertEqual(self.sender.take(), [frame])
        self.assertEqual(self.status(), DR)
        self.clock.advance(60)
        self.assertEqual(self.status(), DR)
        self.sender.take()
        self.beat(H)
        self.assertEqual(self.status(), H)
        self.assertEqual(self.sender.take(), [])
