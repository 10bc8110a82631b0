"""
The pieces the connectionless transports (UDP, RabbitMQ) share: the
microservice's session state machine (L{ClientSession}), the gateway's peer
table (L{PeerTable}), and that an event in the wrong state is a logged no-op
in both transports' clients, never an C{AttributeError}.
"""

from typing import Any, Dict, List

from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from stellarouter.common.enums import FrameType
from stellarouter.common.ids import new_correlation_id
from stellarouter.common.interfaces import IFrameReceiver, IFrameSender
from stellarouter.common.models import Frame
from stellarouter.common.payloads import HelloAck, encode_hello_ack
from stellarouter.testing.datagrams import FakeDatagramReactor
from stellarouter.testing.fakes import FakeFrameSender, RecordingReceiver
from stellarouter.transports.amqp import AMQPTransportClient
from stellarouter.transports.hello import HelloRetry
from stellarouter.transports.peers import Peer, PeerTable
from stellarouter.transports.session import ClientSession, SessionState
from stellarouter.transports.udp import UDPTransportClient


@implementer(IFrameReceiver)
class HelloSayer(RecordingReceiver):
    """
    A receiver that sends a HELLO when its session opens, as the SDK's does.
    """

    def connectionOpened(self, sender: IFrameSender) -> None:
        super().connectionOpened(sender)
        sender.sendFrame(Frame(FrameType.HELLO, new_correlation_id(), b"{}"))


@implementer(IFrameSender)
class Transport(FakeFrameSender):
    """
    What the receivers send through: the session, as in both transports.
    """

    session: ClientSession

    def sendFrame(self, frame: Frame) -> None:
        self.session.send(frame)

    def close(self, reason: str) -> None:
        self.session.restart(reason)


def accepted(hello: Frame) -> Frame:
    return Frame(FrameType.HELLO, hello.correlation_id,
                 encode_hello_ack(HelloAck(True, None, "gw", "eu1")))


class ClientSessionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.written: List[Frame] = []
        self.receivers: List[HelloSayer] = []
        self.reachable = True
        self.events: List[Dict[str, Any]] = []
        self.retry = HelloRetry(self.clock, self.written.append, 1.0, 8.0)
        transport = Transport()
        self.session = ClientSession(
            self.clock, self._receiver, transport, self.written.append, self.retry,
            idle_timeout=30.0, peer="gw", can_reopen=lambda: self.reachable)
        transport.session = self.session
        self.session.log = Logger(observer=self.events.append)

    def _receiver(self) -> HelloSayer:
        receiver = HelloSayer()
        self.receivers.append(receiver)
        return receiver

    def test_lifecycle(self) -> None:
        """
        CLOSED -> open (HELLO written) -> HELLO_SENT -> its answer ->
        ANSWERED -> close -> CLOSED, the receiver told why.
        """
        self.assertIs(self.session.state, SessionState.CLOSED)
        self.session.open()
        self.assertIs(self.session.state, SessionState.HELLO_SENT)
        [hello] = self.written
        self.assertTrue(self.session.heard(accepted(hello)))
        self.assertIs(self.session.state, SessionState.ANSWERED)
        self.session.close("bye")
        self.assertIs(self.session.state, SessionState.CLOSED)
        self.assertEqual(self.successResultOf(self.receivers[0].closed), "bye")

    def test_unanswered_hello_resent_with_backoff(self) -> None:
        """
        The HELLO goes out again after 1, 2, 4 s until answered; then no
        more.
        """
        self.session.open()
        for delay in (1.0, 2.0, 4.0):
            self.clock.advance(delay)
        self.assertEqual(len(self.written), 4)
        self.session.heard(accepted(self.written[0]))
        self.clock.advance(20.0)
        self.assertEqual(len(self.written), 4)

    def test_events_while_closed_are_logged_no_ops(self) -> None:
        """
        A frame, a delivery, a send and a close while no session is open do
        nothing (and raise nothing), each with a debug line.
        """
        frame = Frame(FrameType.HEARTBEAT, new_correlation_id(), b"{}")
        self.assertFalse(self.session.heard(frame))
        self.session.deliver(frame)
        self.session.send(frame)
        self.session.close("again")
        self.assertEqual(self.written, [])
        self.assertEqual(self.receivers, [])
        self.assertEqual(len(self.events), 4)
        self.assertTrue(all(e["state"] == "closed" for e in self.events))

    def test_open_while_open_is_a_no_op(self) -> None:
        """
        A second open while a session is open starts no second session.
        """
        self.session.open()
        self.session.open()
        self.assertEqual(len(self.receivers), 1)
        self.assertEqual(len(self.written), 1)
        self.assertEqual(self.events[-1]["event"], "open")

    def test_silence_starts_over_when_reachable(self) -> None:
        """
        After C{idle_timeout} without a frame the session ends and a new one
        says HELLO at once; when the transport cannot reach the gateway it
        stays closed, and its timers are gone.
        """
        self.session.open()
        self.session.heard(accepted(self.written[0]))
        self.clock.advance(30.0)
        self.assertEqual(len(self.receivers), 2)
        self.assertIn("nothing heard", self.successResultOf(self.receivers[0].closed))
        self.reachable = False
        self.clock.advance(30.0)
        self.assertIs(self.session.state, SessionState.CLOSED)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_fresh_backoff_per_session(self) -> None:
        """
        With C{fresh_backoff_per_session}, a new session's HELLO resends
        start again at the initial delay.
        """
        self.session.fresh_backoff_per_session = True
        self.session.open()
        self.clock.advance(1.0)
        self.clock.advance(2.0)
        self.session.restart("over")
        self.assertEqual(self.retry.delay, 2.0)  # the first resend is armed at 1 s


class PeerTableTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.table: PeerTable[str, Peer[str]] = PeerTable(self.clock, idle_timeout=10.0)

    def peer(self, address: str) -> Peer[str]:
        peer: Peer[str] = Peer(address, RecordingReceiver(), self.clock.seconds())
        self.table.add(peer)
        return peer

    def test_forget_once(self) -> None:
        """
        A peer forgotten twice tells its receiver once.
        """
        peer = self.peer("a")
        self.table.forget(peer, "one")
        self.table.forget(peer, "two")
        self.assertNotIn("a", self.table)
        self.assertEqual(peer.receiver.reasons, ["one"])  # type: ignore[attr-defined]

    def test_forgetting_a_replaced_peer_keeps_its_successor(self) -> None:
        """
        Closing an old peer whose address has a new peer leaves the new one.
        """
        old = self.peer("a")
        new = self.peer("a")
        self.table.forget(old, "replaced")
        self.assertIs(self.table.get("a"), new)

    def test_sweep_and_stop(self) -> None:
        """
        The sweeper closes peers silent for C{idle_timeout}; stop closes the
        rest and the timer.
        """
        self.table.start()
        quiet = self.peer("quiet")
        self.clock.advance(5.0)
        busy = self.peer("busy")
        self.clock.advance(5.0)
        self.assertTrue(quiet.closed)
        self.assertFalse(busy.closed)
        self.table.stop("stopping")
        self.assertTrue(busy.closed)
        self.assertEqual(len(self.table), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class WrongStateTests(SynchronousTestCase):
    """
    The two clients before start, after stop and without a link: frames in,
    frames out and closes are no-ops.
    """

    def test_udp_client(self) -> None:
        reactor = FakeDatagramReactor()
        client = UDPTransportClient(reactor, "udp:host=127.0.0.1:port=5102", HelloSayer)
        beat = Frame(FrameType.HEARTBEAT, new_correlation_id(), b"{}")
        from stellarouter.common.frames import encode_datagram
        client.datagramReceived(encode_datagram(beat), ("127.0.0.1", 5102))
        client.sendFrame(beat)
        client.close("nothing to close")
        client.stopProtocol()
        self.assertIsNone(client.receiver)
        client.start()
        self.assertIs(client.session.state, SessionState.HELLO_SENT)
        self.successResultOf(client.stop())
        client.sendFrame(beat)
        client.close("after stop")
        client.datagramReceived(encode_datagram(beat), ("127.0.0.1", 5102))
        self.assertIs(client.session.state, SessionState.CLOSED)
        self.assertEqual(len(reactor.sent), 1)  # the one HELLO

    def test_amqp_client(self) -> None:
        clock = Clock()
        client = AMQPTransportClient(clock, "amqp:host=127.0.0.1:port=5672:gateway=gw-1",
                                     HelloSayer)
        beat = Frame(FrameType.HEARTBEAT, new_correlation_id(), b"{}")
        import pika
        from stellarouter.transports.amqp import KEY_HEADER
        props = pika.BasicProperties(headers={KEY_HEADER: client.key})
        client.received(beat, props)
        client.sendFrame(beat)
        client.close("no channel")
        client.closed("link lost")
        client.returned(client.target, pika.BasicProperties(type="4"))
        self.assertIs(client.session.state, SessionState.CLOSED)
        self.assertIsNone(client.receiver)
        self.assertEqual(clock.getDelayedCalls(), [])


class TestFakesTests(SynchronousTestCase):
    def test_fakes_provide_their_interfaces(self) -> None:
        """
        This module's receiver and transport fakes provide the interfaces
        they stand in for.
        """
        from zope.interface.verify import verifyObject

        self.assertTrue(verifyObject(IFrameReceiver, HelloSayer()))
        self.assertTrue(verifyObject(IFrameSender, Transport()))
