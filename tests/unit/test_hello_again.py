"""
The gateway's "send HELLO again" answer (issue 18 item 6): its encoding, and
what a microservice session does with it.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from stellarouter.common.enums import FrameType
from stellarouter.common.ids import new_correlation_id
from stellarouter.common.models import Frame, InstanceDescriptor
from stellarouter.common.payloads import HelloAck, decode_hello_ack, encode_hello_ack
from stellarouter.microservice import Microservice, RawResponse
from stellarouter.microservice.session import RouterSession
from stellarouter.testing.fakes import FakeFrameSender

AGAIN = HelloAck(False, "no session; send HELLO again", "gw-1", hello_again=True)


class HelloAgainPayloadTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        """
        C{hello_again} survives encoding; an answer without it decodes as
        C{False} and is encoded as before (no new key).
        """
        self.assertEqual(decode_hello_ack(encode_hello_ack(AGAIN)), AGAIN)
        plain = HelloAck(False, "nope", "gw-1", "eu1")
        self.assertNotIn(b"hello_again", encode_hello_ack(plain))
        self.assertFalse(decode_hello_ack(encode_hello_ack(plain)).hello_again)

    def test_wrong_type_refused(self) -> None:
        """
        A C{hello_again} that is not a boolean makes the answer malformed.
        """
        from stellarouter.common.errors import MalformedPayload
        self.assertRaises(MalformedPayload, decode_hello_ack,
                          b'{"accepted": false, "hello_again": "yes"}')


class SessionHelloAgainTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        app = Microservice("svc", "1.0.0")
        app.endpoint("GET", "/ping")(lambda ctx: RawResponse.text("pong"))
        self.session = RouterSession(app, InstanceDescriptor("i-1", "svc", "1.0.0", "eu1"),
                                     "test-router", self.clock, heartbeat_interval=5.0)
        self.sender = FakeFrameSender()
        self.session.connectionOpened(self.sender)
        self.hello = self.sender.take()[0]

    def test_registered_session_starts_over(self) -> None:
        """
        A registered session told to HELLO again closes its connection (the
        message transport then starts a new session, which sends HELLO).
        """
        self.session.frameReceived(Frame(FrameType.HELLO, self.hello.correlation_id,
                                         encode_hello_ack(HelloAck(True, None, "gw-1", "eu1"))))
        self.assertIsNone(self.sender.closed)
        self.session.frameReceived(Frame(FrameType.HELLO, new_correlation_id(),
                                         encode_hello_ack(AGAIN)))
        self.assertEqual(self.sender.closed, "the gateway asked for a new HELLO")

    def test_unregistered_session_waits_for_its_answer(self) -> None:
        """
        Before its own HELLO is answered a session ignores the request (it
        answers a frame of an older session; our HELLO is on its way).
        """
        self.session.frameReceived(Frame(FrameType.HELLO, new_correlation_id(),
                                         encode_hello_ack(AGAIN)))
        self.assertIsNone(self.sender.closed)
        self.assertIsNone(self.session.accepted)
        self.assertEqual(self.sender.take(), [])
