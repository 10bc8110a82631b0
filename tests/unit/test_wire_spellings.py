"""
Issue 18, item 11: the spec's spellings of statuses and cancel reasons are
accepted on input in any case, one spelling is sent, a value in no known
spelling is logged once per connection; the gateway's ping is the
documented vector.
"""

from typing import Any, List

from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from stellarouter.common.enums import CancelReason, FrameType, InstanceHealthStatus
from stellarouter.common.errors import MalformedPayload
from stellarouter.common.ids import CorrelationId, new_correlation_id
from stellarouter.common.models import Frame
from stellarouter.common.payloads import (
    decode_cancel,
    decode_heartbeat,
    encode_cancel,
    encode_heartbeat,
    Heartbeat,
    parse_cancel_reason,
    parse_status,
)
from stellarouter.gateway.connection import GatewayConnection
from stellarouter.gateway.registration import Registrar
from stellarouter.gateway.state import RoutingState
from stellarouter.testing.fakes import FakeFrameSender
from stellarouter.testing.harness import InMemoryDeployment

from .test_registration_limits import HEALTH, hello
from .test_protocol_vectors import doc_vectors


class SpellingTests(SynchronousTestCase):
    def test_statuses_in_any_spelling(self) -> None:
        """
        C{HEALTHY}, C{healthy}, C{Draining}, C{UN_HEALTHY} decode to their
        status; what is sent is the lower-case value.
        """
        for raw, status in (("HEALTHY", InstanceHealthStatus.HEALTHY),
                            ("healthy", InstanceHealthStatus.HEALTHY),
                            ("Draining", InstanceHealthStatus.DRAINING),
                            ("UN_HEALTHY", InstanceHealthStatus.UNHEALTHY),
                            ("DEGRADED", InstanceHealthStatus.DEGRADED)):
            self.assertIs(parse_status(raw), status, raw)
            beat = decode_heartbeat(f'{{"status": "{raw}"}}'.encode())
            self.assertEqual((beat.status, beat.unknown_status), (status, None))
        self.assertIsNone(parse_status(3))
        self.assertIn(b'"status":"draining"',
                      encode_heartbeat(Heartbeat("i", InstanceHealthStatus.DRAINING)))

    def test_cancel_reasons_in_any_spelling(self) -> None:
        """
        C{CLIENT_DISCONNECTED}, C{clientdisconnected}, C{TIMEOUT} decode to
        their reason; the sent spelling is the CamelCase one; an unknown
        reason is still an error.
        """
        for raw, reason in (("CLIENT_DISCONNECTED", CancelReason.CLIENT_DISCONNECTED),
                            ("clientdisconnected", CancelReason.CLIENT_DISCONNECTED),
                            ("TIMEOUT", CancelReason.TIMEOUT),
                            ("payload_limit_exceeded", CancelReason.PAYLOAD_LIMIT_EXCEEDED),
                            ("Shutdown", CancelReason.SHUTDOWN)):
            self.assertIs(parse_cancel_reason(raw), reason, raw)
            self.assertIs(decode_cancel(f'{{"reason": "{raw}"}}'.encode()), reason)
        self.assertEqual(encode_cancel(CancelReason.CLIENT_DISCONNECTED),
                         b'{"reason":"ClientDisconnected"}')
        self.assertRaises(MalformedPayload, decode_cancel, b'{"reason": "Bored"}')


class GatewaySideTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.state = RoutingState()
        self.connection = GatewayConnection(Registrar(self.state, "gw-1", "eu1"), self.clock,
                                            health=HEALTH)
        self.events: List[Any] = []
        self.connection.log = Logger(observer=self.events.append)
        self.connection.liveness.log = self.connection.log  # type: ignore[misc]
        self.sender = FakeFrameSender()
        self.connection.connectionOpened(self.sender)
        self.connection.frameReceived(hello([("GET", "/ping")]))

    def beat(self, status: str) -> None:
        self.connection.frameReceived(Frame(FrameType.HEARTBEAT, new_correlation_id(),
                                            f'{{"status": "{status}"}}'.encode()))

    def test_spec_spelling_keeps_instance_healthy(self) -> None:
        """
        Heartbeats saying C{HEALTHY} keep the instance HEALTHY past the
        DEGRADED threshold; C{DRAINING} is taken as draining.
        """
        for _ in range(4):
            self.clock.advance(10.0)
            self.beat("HEALTHY")
        self.connection.refresh_status(self.clock.seconds())
        assert self.connection.state is not None
        self.assertIs(self.connection.state.status, InstanceHealthStatus.HEALTHY)
        self.beat("DRAINING")
        self.assertIs(self.connection.state.status, InstanceHealthStatus.DRAINING)

    def test_unknown_status_logged_once_and_counts_as_alive(self) -> None:
        """
        A status in no known spelling is logged once per connection, and
        its HEARTBEATs still keep the instance from degrading.
        """
        for _ in range(4):
            self.clock.advance(10.0)
            self.beat("sleepy")
        self.connection.refresh_status(self.clock.seconds())
        assert self.connection.state is not None
        self.assertIs(self.connection.state.status, InstanceHealthStatus.HEALTHY)
        warnings = [e for e in self.events if "unknown status" in e.get("log_format", "")]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["status"], "'sleepy'")

    def test_ping_is_the_documented_vector(self) -> None:
        """
        The gateway's ping sent at 1700000000.25 has the payload of the
        C{ping} vector in protocol.md.
        """
        self.sender.take()
        self.connection.ping(1700000000.25)
        [frame] = self.sender.take()
        vector = doc_vectors()["ping"]
        self.assertEqual(frame.type, FrameType.HEARTBEAT)
        self.assertEqual(frame.payload, vector[21:])


class MicroserviceSideTests(SynchronousTestCase):
    def test_spec_spelled_cancel_stops_the_handler(self) -> None:
        """
        A CANCEL whose reason is spelled C{CLIENT_DISCONNECTED} cancels the
        running handler (it was ignored before).
        """
        from twisted.internet.defer import Deferred
        from stellarouter.microservice import Microservice

        deployment = InMemoryDeployment()
        self.addCleanup(deployment.stop)
        app = Microservice("slow", "1.0.0")
        cancelled: List[Any] = []

        running: List[CorrelationId] = []

        @app.endpoint("GET", "/slow", timeout=30.0)
        def slow(ctx: Any) -> Deferred:
            running.append(CorrelationId.parse(str(ctx.correlation_id)))
            return Deferred(lambda d: cancelled.append(True))

        deployment.add(app)
        client = deployment.http()
        client.send("GET", "/slow")
        deployment.pump()
        [connection] = deployment.gateway.connections
        [cid] = running
        connection.sender.sendFrame(Frame(FrameType.CANCEL, cid,
                                          b'{"reason":"CLIENT_DISCONNECTED"}'))
        deployment.pump()
        self.assertEqual(cancelled, [True])
