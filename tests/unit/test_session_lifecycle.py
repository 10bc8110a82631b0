"""
Tests for the explicit lifecycle of L{RouterSession}: connecting, HELLO
sent, registered, draining, closed; an event in a state where it means
nothing is a logged no-op.
"""

from typing import Any, Dict, List

from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from stellarouter.common.enums import FrameType, InstanceHealthStatus
from stellarouter.common.ids import new_correlation_id
from stellarouter.common.models import Frame, InstanceDescriptor
from stellarouter.common.payloads import (
    HelloAck,
    RequestMessage,
    decode_heartbeat,
    encode_hello_ack,
    encode_request,
)
from stellarouter.microservice import Microservice, RawResponse
from stellarouter.microservice.session import RouterSession, SessionState
from stellarouter.testing.fakes import FakeFrameSender


def ping_request() -> Frame:
    return Frame(FrameType.REQUEST, new_correlation_id(),
                 encode_request(RequestMessage("GET", "/ping", "/ping")))


def accepted() -> Frame:
    return Frame(FrameType.HELLO, new_correlation_id(),
                 encode_hello_ack(HelloAck(True, None, "gw", "eu1")))


class SessionLifecycleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        app = Microservice("svc", "1.0.0")
        app.endpoint("GET", "/ping")(lambda ctx: RawResponse.text("pong"))
        self.session = RouterSession(app, InstanceDescriptor("i-1", "svc", "1.0.0", "eu1"),
                                     "test-router", self.clock, heartbeat_interval=5.0)
        self.sender = FakeFrameSender()
        self.events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def ignored(self) -> List[str]:
        return [e["event"] for e in self.events if "event" in e
                and "ignored: the session" in e.get("log_format", "")]

    def test_states(self) -> None:
        """
        Connecting, HELLO sent, registered, draining, closed.
        """
        self.assertIs(self.session.state, SessionState.CONNECTING)
        self.session.connectionOpened(self.sender)
        self.assertIs(self.session.state, SessionState.HELLO_SENT)
        self.session.frameReceived(accepted())
        self.assertIs(self.session.state, SessionState.REGISTERED)
        self.session.drain()
        self.assertIs(self.session.state, SessionState.DRAINING)
        self.session.connectionClosed("done")
        self.assertIs(self.session.state, SessionState.CLOSED)
        self.assertTrue(self.session.closed)
        self.assertEqual(self.ignored(), [])

    def test_frame_before_the_connection_opened(self) -> None:
        """
        A frame before the connection opened is logged and dropped (it used
        to fail an assertion).
        """
        self.session.frameReceived(ping_request())
        self.assertEqual(len(self.ignored()), 1)
        self.assertIs(self.session.state, SessionState.CONNECTING)

    def test_frames_after_close_are_dropped(self) -> None:
        """
        A REQUEST after the connection closed is not served: nothing is
        sent on a closed connection.
        """
        self.session.connectionOpened(self.sender)
        self.session.frameReceived(accepted())
        self.session.connectionClosed("gone")
        self.sender.take()
        self.session.frameReceived(ping_request())
        self.assertEqual(self.sender.take(), [])
        self.assertEqual(len(self.ignored()), 1)

    def test_second_acceptance_starts_no_second_heartbeat(self) -> None:
        """
        The answer to a HELLO sent again finds the session registered: it is
        ignored, and one heartbeat goes out per interval, not two.
        """
        self.session.connectionOpened(self.sender)
        self.session.frameReceived(accepted())
        self.session.frameReceived(accepted())
        self.sender.take()
        self.clock.advance(5.0)
        self.assertEqual([f.type for f in self.sender.take()], [FrameType.HEARTBEAT])
        self.assertEqual(len(self.ignored()), 1)

    def test_no_heartbeat_before_registration(self) -> None:
        """
        A heartbeat asked for before the gateway accepted the HELLO (or
        after close) is not sent.
        """
        self.session.send_heartbeat()
        self.session.connectionOpened(self.sender)
        self.sender.take()
        self.session.send_heartbeat()
        self.assertEqual(self.sender.take(), [])
        self.session.connectionClosed("gone")
        self.session.send_heartbeat()
        self.assertEqual(self.sender.take(), [])
        self.assertEqual(len(self.ignored()), 3)

    def test_drain_before_registration(self) -> None:
        """
        Draining before registration is done at once; once registered the
        session is draining and its first heartbeat says so.
        """
        self.session.connectionOpened(self.sender)
        self.successResultOf(self.session.drain())
        self.assertIs(self.session.state, SessionState.HELLO_SENT)
        self.sender.take()
        self.session.frameReceived(accepted())
        self.assertIs(self.session.state, SessionState.DRAINING)
        beats = [decode_heartbeat(f.payload) for f in self.sender.take()
                 if f.type is FrameType.HEARTBEAT]
        self.assertEqual([b.status for b in beats], [InstanceHealthStatus.DRAINING])

    def test_closed_twice_and_opened_twice(self) -> None:
        """
        A second C{connectionOpened} or C{connectionClosed} is a logged
        no-op.
        """
        self.session.connectionOpened(self.sender)
        self.session.connectionOpened(FakeFrameSender())
        self.assertIs(self.session.sender, self.sender)
        self.session.connectionClosed("one")
        self.session.connectionClosed("two")
        self.assertEqual(len(self.ignored()), 2)
