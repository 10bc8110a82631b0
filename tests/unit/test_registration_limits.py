"""
Issue 18, items 4 and 10: caps on what a registration may announce, UNHEALTHY
connections closed after a configured time and kept out of the routing
candidates, bounded memory of versions, and a warning for a duplicate live
instance id.
"""

from typing import Any, List, Tuple

from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from stellarouter.common.enums import FrameType, InstanceHealthStatus
from stellarouter.common.ids import new_correlation_id
from stellarouter.common.models import (
    EndpointDescriptor,
    Frame,
    InstanceDescriptor,
    RegistrationLimits,
)
from stellarouter.common.payloads import (
    Heartbeat,
    Hello,
    decode_hello_ack,
    encode_endpoints_update,
    encode_heartbeat,
    encode_hello,
)
from stellarouter.config import ConfigError
from stellarouter.config.gateway import HealthConfig, parse_gateway_config
from stellarouter.gateway.connection import GatewayConnection
from stellarouter.gateway.health import HealthMonitor
from stellarouter.gateway.registration import Registrar
from stellarouter.gateway.tracked import RefusalLog, peer_address
from stellarouter.gateway.state import RoutingState
from stellarouter.testing.fakes import FakeFrameSender

HEALTH = HealthConfig(degraded_after=15.0, unhealthy_after=30.0, sweep_interval=5.0,
                      ping_interval=5.0, close_unhealthy_after=60.0)


def hello(paths: Any, instance_id: str = "b-1", version: str = "1.0.0") -> Frame:
    instance = InstanceDescriptor(instance_id, "billing", version, "eu1")
    endpoints = tuple(EndpointDescriptor("billing", version, m, p) for m, p in paths)
    return Frame(FrameType.HELLO, new_correlation_id(), encode_hello(Hello(instance, endpoints)))


class Fixture(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.state = RoutingState()

    def connect(self, frame: Frame, limits: RegistrationLimits = RegistrationLimits()
                ) -> Tuple[GatewayConnection, FakeFrameSender]:
        connection = GatewayConnection(Registrar(self.state, "gw-1", "eu1", limits), self.clock,
                                       health=HEALTH)
        sender = FakeFrameSender()
        connection.connectionOpened(sender)
        connection.frameReceived(frame)
        return connection, sender


class RegistrationCapTests(Fixture):
    def assertRefused(self, frame: Frame, limits: RegistrationLimits, reason: str) -> None:
        connection, sender = self.connect(frame, limits)
        ack = decode_hello_ack(sender.frames[-1].payload)
        self.assertFalse(ack.accepted)
        self.assertIn(reason, ack.reason)
        self.assertTrue(sender.closed)
        self.assertEqual(self.state.connections(), [])

    def test_too_many_endpoints(self) -> None:
        """
        A HELLO announcing more endpoints than C{max_endpoints} is refused
        saying so; one at the cap is accepted.
        """
        limits = RegistrationLimits(max_endpoints=100)
        paths = [("GET", f"/e{i}") for i in range(101)]
        self.assertRefused(hello(paths), limits, "announces 101 endpoints; at most 100")
        connection, sender = self.connect(hello(paths[:100]), limits)
        self.assertTrue(decode_hello_ack(sender.frames[-1].payload).accepted)

    def test_default_caps_refuse_the_reproduced_hello(self) -> None:
        """
        With the default caps the issue's HELLO of ~28k endpoints and one of
        a 1 MiB path are refused.
        """
        self.assertRefused(hello([("GET", f"/e{i}") for i in range(28000)]),
                           RegistrationLimits(), "at most 1000 are accepted")
        self.assertRefused(hello([("GET", "/" + "a" * (1 << 20))]), RegistrationLimits(),
                           "a path of 1048577 characters; at most 1024")

    def test_path_length_and_segments(self) -> None:
        """
        A path over C{max_path_length} characters or C{max_path_segments}
        segments is refused.
        """
        limits = RegistrationLimits(max_path_length=20, max_path_segments=3)
        self.assertRefused(hello([("GET", "/" + "x" * 20)]), limits,
                           "a path of 21 characters; at most 20")
        self.assertRefused(hello([("GET", "/a/b/c/d")]), limits,
                           "a path of 4 segments; at most 3")
        connection, sender = self.connect(hello([("GET", "/a/{b}/c")]), limits)
        self.assertTrue(decode_hello_ack(sender.frames[-1].payload).accepted)

    def test_endpoints_update_capped(self) -> None:
        """
        An ENDPOINTS_UPDATE over the caps is refused like a HELLO and the
        connection closed.
        """
        limits = RegistrationLimits(max_endpoints=2)
        connection, sender = self.connect(hello([("GET", "/a")]), limits)
        assert connection.state is not None
        endpoints = tuple(EndpointDescriptor("billing", "1.0.0", "GET", f"/u{i}")
                          for i in range(3))
        connection.frameReceived(Frame(FrameType.ENDPOINTS_UPDATE, new_correlation_id(),
                                       encode_endpoints_update(endpoints)))
        self.assertIn("announces 3 endpoints", sender.closed or "")

    def test_configuration(self) -> None:
        """
        The caps are read from C{registration} and C{health}; a
        non-positive value names its key.
        """
        config = parse_gateway_config({
            "node": {"region": "eu1"}, "transports": [{"type": "tcp", "listen": "tcp:0"}],
            "registration": {"max_endpoints": 5, "max_path_length": 64,
                             "max_path_segments": 4, "max_connections_per_peer_address": 7},
            "health": {"close_unhealthy_after": 12}})
        self.assertEqual(config.registration, RegistrationLimits(5, 64, 4, 7))
        self.assertEqual(config.health.close_unhealthy_after, 12.0)
        error = self.assertRaises(ConfigError, parse_gateway_config, {
            "node": {"region": "eu1"}, "transports": [{"type": "tcp", "listen": "tcp:0"}],
            "registration": {"max_endpoints": 0}})
        self.assertIn("registration.max_endpoints", str(error))

    def test_peer_address(self) -> None:
        """
        The peer address counted is the host part of C{host:port}.
        """
        self.assertEqual(peer_address("127.0.0.1:4242"), "127.0.0.1")
        self.assertEqual(peer_address("::1:4242"), "::1")
        self.assertEqual(peer_address("[::1]:4242"), "::1")
        self.assertEqual(peer_address("billing-queue"), "billing-queue")


class UnhealthyTests(Fixture):
    def test_unhealthy_closed_after_configured_time(self) -> None:
        """
        A silent connection becomes UNHEALTHY at 30 s and is closed once it
        has been UNHEALTHY for C{close_unhealthy_after} (60 s), not before.
        """
        connection, sender = self.connect(hello([("GET", "/ping")]))
        monitor = HealthMonitor(self.clock, HEALTH, lambda: [connection])
        monitor.start()
        self.addCleanup(monitor.stop)
        self.clock.pump([5.0] * 6)
        assert connection.state is not None
        self.assertIs(connection.state.status, InstanceHealthStatus.UNHEALTHY)
        self.clock.pump([5.0] * 11)
        self.assertIsNone(sender.closed)
        self.clock.advance(5.0)
        self.assertIn("UNHEALTHY for 60.0s", sender.closed or "")

    def test_recovery_resets_the_clock(self) -> None:
        """
        A connection that heartbeats again before the time is over is not
        closed, and its UNHEALTHY time starts again from zero.
        """
        connection, sender = self.connect(hello([("GET", "/ping")]))
        self.clock.advance(30.0)
        connection.refresh_status(self.clock.seconds())
        self.clock.advance(55.0)
        connection.refresh_status(self.clock.seconds())
        connection.frameReceived(Frame(FrameType.HEARTBEAT, new_correlation_id(),
                                       encode_heartbeat(Heartbeat("b-1"))))
        self.clock.advance(30.0)
        connection.refresh_status(self.clock.seconds())
        self.clock.advance(59.0)
        connection.refresh_status(self.clock.seconds())
        self.assertIsNone(sender.closed)

    def test_unhealthy_kept_out_of_candidates(self) -> None:
        """
        1,000 UNHEALTHY connections are not in the candidate list routing
        sees; one that recovers comes back, one that goes is forgotten, and
        the endpoint still resolves while only UNHEALTHY ones serve it.
        """
        silent = [self.connect(hello([("GET", "/ping")], f"s-{i}"))[0] for i in range(1000)]
        self.clock.advance(25.0)
        live, _ = self.connect(hello([("GET", "/ping")], "live"))
        self.clock.advance(5.0)
        for connection in silent + [live]:
            connection.refresh_status(self.clock.seconds())
        self.assertEqual(self.state.connectionsFor("billing", "GET", "/ping"), [live])
        self.assertEqual(len(self.state.parked("GET", "/ping")), 1000)
        silent[0].frameReceived(Frame(FrameType.HEARTBEAT, new_correlation_id(),
                                      encode_heartbeat(Heartbeat("s-0"))))
        self.assertEqual(self.state.connectionsFor("billing", "GET", "/ping"), [live, silent[0]])
        live.connectionClosed("gone")
        silent[0].connectionClosed("gone")
        self.assertEqual(self.state.connectionsFor("billing", "GET", "/ping"), [])
        self.assertEqual(self.state.resolve("GET", "/ping").template, "/ping")
        for connection in silent[1:]:
            connection.connectionClosed("gone")
        self.assertEqual(self.state.parked("GET", "/ping"), [])


class BookkeepingTests(Fixture):
    def test_versions_seen_bounded(self) -> None:
        """
        Versions whose connections are gone are remembered up to
        C{max_versions_gone}; live versions always are.
        """
        self.state.max_versions_gone = 100
        live, _ = self.connect(hello([("GET", "/ping")], "live", "0.0.1"))
        for i in range(1000):
            connection, _ = self.connect(hello([("GET", "/ping")], f"b-{i}", f"1.0.{i}"))
            connection.connectionClosed("gone")
        seen = set(self.state.versions_seen("billing"))
        self.assertEqual(len(seen), 101)
        self.assertIn("0.0.1", seen)
        self.assertIn("1.0.999", seen)
        self.assertNotIn("1.0.0", seen)

    def test_duplicate_instance_id_warned(self) -> None:
        """
        A second live connection with an instance id already registered is
        accepted (a reconnect may overtake the old connection's close) with
        one warning naming both connections.
        """
        events: List[dict] = []
        self.state.log = Logger(observer=events.append)
        first, _ = self.connect(hello([("GET", "/ping")], "twin"))
        second, sender = self.connect(hello([("GET", "/ping")], "twin"))
        self.assertTrue(decode_hello_ack(sender.frames[-1].payload).accepted)
        [event] = [e for e in events if e.get("instance_id") == "twin"]
        assert first.state is not None and second.state is not None
        self.assertEqual((event["other"], event["connection"]),
                         (first.state.connection_id, second.state.connection_id))
        first.connectionClosed("gone")
        third, _ = self.connect(hello([("GET", "/ping")], "twin"))
        self.assertEqual(len([e for e in events if e.get("instance_id") == "twin"]), 2)
        second.connectionClosed("gone")
        third.connectionClosed("gone")
        fourth, _ = self.connect(hello([("GET", "/ping")], "twin"))
        self.assertEqual(len([e for e in events if e.get("instance_id") == "twin"]), 2)


class PeerRefusalLogTests(SynchronousTestCase):
    """
    Connections refused for their peer address are logged once per ten
    seconds per address; the count of the others is in the next line, and
    a first line claims none (it said "0 more refused since the last line").
    """

    def test_counts(self) -> None:
        clock = Clock()
        events: List[dict] = []
        self.patch(RefusalLog, "log", Logger(observer=events.append))
        log = RefusalLog(clock)
        for _ in range(4):
            log.refused("10.0.0.9", 3)
        clock.advance(10)
        log.refused("10.0.0.9", 3)
        head = ("refused a connection from 10.0.0.9: 3 connections from it are open already "
                "(registration.max_connections_per_peer_address)")
        self.assertEqual([formatEvent(e) for e in events],
                         [head, head + "; 3 more refused since the last line"])
