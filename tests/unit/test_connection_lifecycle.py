"""
Tests for L{GatewayConnection}'s lifecycle (issue 20): its phases
(L{ConnectionPhase}) and what happens to a call or frame in a phase that
does not expect it: ignored and logged once, never an C{AttributeError} or
C{AssertionError}.
"""

from typing import Any, List, Tuple

from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from stellarouter.common.enums import FrameType, InstanceHealthStatus
from stellarouter.common.ids import new_correlation_id
from stellarouter.common.models import Frame
from stellarouter.common.payloads import Heartbeat, RequestMessage, encode_heartbeat
from stellarouter.gateway.connection import ConnectionPhase, GatewayConnection
from stellarouter.gateway.errors import UpstreamLost
from stellarouter.gateway.registration import Registrar
from stellarouter.gateway.state import RoutingState
from stellarouter.testing.fakes import FakeFrameSender

from .test_gateway_connection import hello


class _Sink:
    """
    An L{IResponseSink} that records nothing (the tests here never answer).
    """

    def responseStarted(self, response: Any) -> None:
        pass

    def bodyChunk(self, data: bytes) -> None:
        pass

    def responseFinished(self) -> None:
        pass

    def failed(self, error: Any) -> None:
        pass


class ConnectionLifecycleTests(SynchronousTestCase):
    """
    Phases: new → awaiting HELLO → registered → closed.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.routing = RoutingState()
        self.connection = GatewayConnection(Registrar(self.routing, "gw-1", "eu1"), self.clock)
        self.logged: List[Any] = []
        self.connection.log = Logger(observer=self.logged.append)  # type: ignore[misc]

    def open(self) -> FakeFrameSender:
        sender = FakeFrameSender()
        self.connection.connectionOpened(sender)
        return sender

    def registered(self) -> FakeFrameSender:
        sender = self.open()
        self.connection.frameReceived(hello())
        self.assertIs(self.connection.phase, ConnectionPhase.REGISTERED)
        return sender

    def ignored(self) -> List[Tuple[str, str]]:
        return [(e["event"], e["phase"]) for e in self.logged if "phase" in e]

    def test_phases(self) -> None:
        """
        A connection goes new → awaiting HELLO → registered → closed.
        """
        self.assertIs(self.connection.phase, ConnectionPhase.NEW)
        self.open()
        self.assertIs(self.connection.phase, ConnectionPhase.AWAITING_HELLO)
        self.connection.frameReceived(hello())
        self.assertIs(self.connection.phase, ConnectionPhase.REGISTERED)
        self.connection.connectionClosed("bye")
        self.assertIs(self.connection.phase, ConnectionPhase.CLOSED)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_opened_twice(self) -> None:
        """
        A second C{connectionOpened} is ignored and logged: the first
        sender stays, and only one HELLO timer runs.
        """
        first = self.open()
        self.open()
        self.assertIs(self.connection.sender, first)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertEqual(self.ignored(), [("a second connectionOpened", "awaiting HELLO")])

    def test_closed_twice(self) -> None:
        """
        A second C{connectionClosed} is ignored and logged; the first one
        unregistered the connection once.
        """
        self.registered()
        self.connection.connectionClosed("bye")
        self.connection.connectionClosed("bye again")
        self.assertEqual(self.ignored(), [("a second connectionClosed", "closed")])

    def test_frames_after_close(self) -> None:
        """
        Frames delivered after the close are ignored; one log line for all
        of them.
        """
        sender = self.registered()
        self.connection.connectionClosed("bye")
        sent = len(sender.frames)
        for _ in range(3):
            self.connection.frameReceived(Frame(
                FrameType.HEARTBEAT, new_correlation_id(),
                encode_heartbeat(Heartbeat(status=InstanceHealthStatus.DRAINING))))
        self.assertEqual(len(sender.frames), sent)  # no DRAINING echo
        self.assertEqual(self.ignored(), [("a HEARTBEAT frame", "closed")])
        self.assertEqual(self.connection.ignored_events, 3)

    def test_send_request_before_hello(self) -> None:
        """
        Sending a REQUEST on a connection that is not registered is
        L{UpstreamLost} (a 502), not an assertion error.
        """
        self.open()
        self.assertRaises(UpstreamLost, self.connection.send_request,
                          RequestMessage("GET", "/ping", "/ping"), None, _Sink())
        self.assertEqual(self.ignored(), [("a REQUEST to send", "awaiting HELLO")])

    def test_send_request_after_close(self) -> None:
        """
        Sending a REQUEST after the close is L{UpstreamLost}; nothing is
        sent.
        """
        sender = self.registered()
        self.connection.connectionClosed("bye")
        sent = len(sender.frames)
        self.assertRaises(UpstreamLost, self.connection.send_request,
                          RequestMessage("GET", "/ping", "/ping"), None, _Sink())
        self.assertEqual(len(sender.frames), sent)

    def test_ping_and_status_after_close(self) -> None:
        """
        A ping or a status sweep after the close sends and changes nothing.
        """
        sender = self.registered()
        self.connection.connectionClosed("bye")
        sent = len(sender.frames)
        self.connection.ping(self.clock.seconds())
        self.connection.refresh_status(self.clock.seconds() + 3600)
        self.assertEqual(len(sender.frames), sent)

    def test_hello_timer_after_registration(self) -> None:
        """
        The HELLO deadline passing after registration closes nothing.
        """
        sender = self.registered()
        self.clock.advance(60)
        self.assertIsNone(sender.closed)
