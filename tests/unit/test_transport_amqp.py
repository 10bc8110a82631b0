"""
The RabbitMQ transport's bookkeeping without a broker (issue 18 items 6-9):
a fake channel records what would be published, a L{Clock} drives the
probes and HELLO resends, and messages are handed in as the consumer loop
would.  The same behaviours against the real broker are in
C{tests/integration/test_rabbitmq_faults.py}.
"""

from typing import Any, Dict, List, Optional

import pika
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from stellarouter.common.enums import FrameType
from stellarouter.common.ids import new_correlation_id
from stellarouter.common.models import Frame
from stellarouter.common.payloads import decode_hello_ack
from stellarouter.gateway.connection import GatewayConnection
from stellarouter.gateway.errors import UpstreamLost
from stellarouter.gateway.registration import Registrar
from stellarouter.gateway.state import RoutingState
from stellarouter.testing.contract import ReceiverLog
from stellarouter.testing.fakes import RecordingSink
from stellarouter.transports.amqp import (
    CHALLENGE_ANSWER_TYPE,
    CHALLENGE_TYPE,
    KEY_HEADER,
    PROBE_TYPE,
    AMQPTransportClient,
    AMQPTransportServer,
    _busy,
    message_key,
    same_key,
)

BROKER = "amqp:host=127.0.0.1:port=5672"
QUEUE = "stella.svc.0123456789ab"
KEY = "k" * 32


class FakeChannel:
    """
    Records C{basic_publish} calls.
    """

    def __init__(self) -> None:
        self.published: List[Dict[str, Any]] = []

    def basic_publish(self, **kwargs: Any) -> Deferred:
        self.published.append(kwargs)
        return succeed(None)

    def take(self) -> List[Dict[str, Any]]:
        published, self.published = self.published, []
        return published


def props(kind: Optional[FrameType] = None, reply_to: str = QUEUE, key: Optional[str] = KEY,
          user_id: Optional[str] = "guest") -> Any:
    return pika.BasicProperties(type=str(int(kind)) if kind is not None else None,
                                reply_to=reply_to, user_id=user_id,
                                headers={KEY_HEADER: key} if key is not None else None)


def frame(kind: FrameType, payload: bytes = b"{}") -> Frame:
    return Frame(kind, new_correlation_id(), payload)


class KeyTests(SynchronousTestCase):
    def test_message_key(self) -> None:
        """
        The key is read from the C{stella-key} header (text or bytes);
        anything else is no key.
        """
        self.assertEqual(message_key(props(key="abc")), "abc")
        self.assertEqual(message_key(pika.BasicProperties(headers={KEY_HEADER: b"abc"})), "abc")
        self.assertIsNone(message_key(pika.BasicProperties(headers={KEY_HEADER: 5})))
        self.assertIsNone(message_key(pika.BasicProperties()))

    def test_same_key(self) -> None:
        """
        Keys match only when equal; no key matches only no key.
        """
        self.assertTrue(same_key("abc", "abc"))
        self.assertFalse(same_key("abd", "abc"))
        self.assertFalse(same_key(None, "abc"))
        self.assertFalse(same_key("abc", None))
        self.assertTrue(same_key(None, None))
        self.assertFalse(same_key("é", "abc"))


class BusyTests(SynchronousTestCase):
    def test_gateway_connection_with_requests_in_flight_is_busy(self) -> None:
        """
        The gateway's own receiver counts as busy exactly while it has
        requests in flight (what decides whether a silent peer is probed).
        """
        connection = GatewayConnection(Registrar(RoutingState(), "gw-1", "eu1"), Clock())
        self.assertFalse(_busy(connection))
        cid = new_correlation_id()
        connection.in_flight.add(cid, RecordingSink(), 5.0)
        self.assertTrue(_busy(connection))
        connection.in_flight.fail(cid, UpstreamLost("gone"))
        self.assertFalse(_busy(connection))


class ServerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.servers = ReceiverLog()
        self.server = AMQPTransportServer(self.clock, BROKER, self.servers, "gw-1",
                                          probe_interval=0.5)
        self.channel = FakeChannel()
        self.server.channel = self.channel
        self.hello = frame(FrameType.HELLO)
        self.server.received(self.hello, props(FrameType.HELLO))
        self.receiver = self.servers.receivers[0]

    def test_frames_dropped_while_the_broker_does_not_read(self) -> None:
        """
        While the broker connection (a real TCP connection whose other end
        does not read) holds more than C{max_unsent_bytes} unsent, frames
        are dropped and counted as C{broker_backlog}, not buffered; once it
        is under the cap again they are published.
        """
        from types import SimpleNamespace

        from tests.unit.test_flush_private import fill, stalled_connection
        connection, _ = stalled_connection(self)
        self.server.link = SimpleNamespace(transport=connection)  # type: ignore[assignment]
        self.server.max_unsent_bytes = 1024 * 1024
        request = frame(FrameType.REQUEST, b"x" * 100)
        self.server.publish(QUEUE, request)
        self.assertEqual(len(self.channel.take()), 1)
        fill(connection, 4 * 1024 * 1024)
        for _ in range(3):
            self.server.publish(QUEUE, request)
        self.assertEqual(self.channel.take(), [])
        self.assertEqual(self.server.drops.get("broker_backlog"), 3)
        connection.connected = False
        from stellarouter.transports.flush import discard_unsent
        discard_unsent(connection)
        self.server.publish(QUEUE, request)
        self.assertEqual(len(self.channel.take()), 1)

    def test_busy_silent_peer_probed_after_probe_interval(self) -> None:
        """
        A peer with requests in flight is probed once it has been silent
        for C{probe_interval}, not before; the probe is C{mandatory}, has
        the peer's key, no body and expires at once.
        """
        self.receiver.in_flight = [object()]  # type: ignore[attr-defined]
        self.clock.advance(0.5 - 1e-6)
        self.server.probe_busy_peers()
        self.assertEqual(self.channel.take(), [])
        self.clock.advance(1e-6)
        self.server.probe_busy_peers()
        [probe] = self.channel.take()
        self.assertEqual((probe["routing_key"], probe["body"], probe["mandatory"]),
                         (QUEUE, b"", True))
        self.assertEqual((probe["properties"].type, probe["properties"].expiration,
                          message_key(probe["properties"])), (PROBE_TYPE, "0", KEY))

    def test_idle_peer_not_probed(self) -> None:
        """
        A silent peer without requests in flight is not probed (the
        gateway's pings find out about it).
        """
        self.clock.advance(10)
        self.server.probe_busy_peers()
        self.assertEqual(self.channel.take(), [])

    def test_returned_message_closes_the_peer(self) -> None:
        """
        A message returned for a peer's queue closes that peer.
        """
        self.server.returned(QUEUE, props(FrameType.REQUEST, reply_to="stella.gw.gw-1"))
        self.assertIn("queue is gone", self.successResultOf(self.receiver.closed))
        self.assertEqual(len(self.server.peers), 0)
        self.server.returned("stella.svc.other", props())  # unknown: nothing happens

    def test_everything_published_is_mandatory_with_the_key(self) -> None:
        """
        What the gateway sends to a peer is C{mandatory}, carries the peer's
        key and the gateway's broker user as C{user_id}.
        """
        sent = frame(FrameType.CANCEL, b'{"reason":"Timeout"}')
        self.receiver.sender.sendFrame(sent)  # type: ignore[union-attr]
        [message] = self.channel.take()
        self.assertTrue(message["mandatory"])
        self.assertEqual((message_key(message["properties"]), message["properties"].user_id),
                         (KEY, "guest"))

    def test_forged_messages_dropped(self) -> None:
        """
        Messages for a peer's queue with another key, no key, or another
        C{user_id} are dropped and counted as C{forged}.
        """
        goodbye = frame(FrameType.HEARTBEAT, b'{"goodbye": true}')
        for forged in (props(FrameType.HEARTBEAT, key="x" * 32), props(FrameType.HEARTBEAT,
                       key=None), props(FrameType.HEARTBEAT, user_id="mallory"),
                       props(FrameType.HEARTBEAT, user_id=None)):
            self.server.received(goodbye, forged)
        self.assertEqual(self.server.drops, {"forged": 4})
        self.assertNoResult(self.receiver.closed)
        self.server.received(goodbye, props(FrameType.HEARTBEAT))
        self.assertEqual(self.successResultOf(self.receiver.closed),
                         "the microservice said goodbye")

    def test_unknown_peer_told_to_hello_again(self) -> None:
        """
        A non-HELLO frame from a queue without a peer is dropped and
        answered with a HELLO answer C{hello_again} under its id, with the
        key it carried.
        """
        beat = frame(FrameType.HEARTBEAT)
        self.server.received(beat, props(FrameType.HEARTBEAT, reply_to="stella.svc.new",
                                         key="n" * 32))
        self.assertEqual(self.server.drops, {"unknown_peer": 1})
        [answer] = self.channel.take()
        self.assertEqual((answer["routing_key"], answer["properties"].correlation_id,
                          answer["properties"].type, message_key(answer["properties"])),
                         ("stella.svc.new", str(beat.correlation_id), "1", "n" * 32))
        ack = decode_hello_ack(answer["body"])
        self.assertEqual((ack.accepted, ack.hello_again, ack.node_id), (False, True, "gw-1"))
        self.assertEqual(len(self.servers.receivers), 1)

    def test_only_microservice_queues_heard(self) -> None:
        """
        A message naming a queue that is not a microservice's in
        C{reply_to} (this gateway's own, another gateway's, none) is dropped
        unanswered and opens no peer: answering it could loop forever.
        """
        for reply_to in ("stella.gw.gw-1", "stella.gw.gw-2", "", "amq.gen-xyz"):
            for kind in (FrameType.HELLO, FrameType.HEARTBEAT):
                self.server.received(frame(kind, b"not json"), props(kind, reply_to=reply_to))
        self.assertEqual(self.server.drops, {"not_a_service_queue": 8})
        self.assertEqual(self.channel.take(), [])
        self.assertEqual(len(self.servers.receivers), 1)

    def challenges(self) -> List[Dict[str, Any]]:
        return [m for m in self.channel.take() if m["properties"].type == CHALLENGE_TYPE]

    def test_challenge_answered_keeps_the_session(self) -> None:
        """
        A HELLO with another key for a registered queue is dropped and
        challenges the queue's owner (a nonce, with the session's key; at
        most one per C{challenge_timeout}); the owner's answer keeps the
        session.
        """
        forged = props(FrameType.HELLO, key="x" * 32)
        self.server.received(frame(FrameType.HELLO), forged)
        self.server.received(frame(FrameType.HELLO), forged)
        [challenge] = self.challenges()
        self.assertEqual((challenge["routing_key"], message_key(challenge["properties"])),
                         (QUEUE, KEY))
        self.assertEqual(self.server.drops, {"forged": 2})
        self.server.challenge_message(pika.BasicProperties(
            type=CHALLENGE_ANSWER_TYPE, reply_to=QUEUE, user_id="guest",
            headers={KEY_HEADER: KEY}), challenge["body"])
        self.assertIsNone(self.server.peers[QUEUE].challenge)
        self.clock.advance(2.0)
        self.server.received(frame(FrameType.HELLO), forged)
        self.assertEqual(len(self.challenges()), 1)  # a new one, answered or not
        self.assertNoResult(self.receiver.closed)

    def test_wrong_answer_refused(self) -> None:
        """
        An answer with another nonce or another key does not count.
        """
        self.server.received(frame(FrameType.HELLO), props(FrameType.HELLO, key="x" * 32))
        [challenge] = self.challenges()
        for key, body in ((KEY, b"0" * 32), ("x" * 32, challenge["body"])):
            self.server.challenge_message(pika.BasicProperties(
                type=CHALLENGE_ANSWER_TYPE, reply_to=QUEUE, user_id="guest",
                headers={KEY_HEADER: key}), body)
        self.assertIsNotNone(self.server.peers[QUEUE].challenge)
        self.assertEqual(self.server.drops["forged"], 3)

    def test_unanswered_challenge_lets_the_owner_in(self) -> None:
        """
        When nobody answers for the queue within C{challenge_timeout} (the
        session was registered by someone else than the queue's owner), the
        next HELLO with another key replaces the session.
        """
        owner = props(FrameType.HELLO, key="o" * 32)
        self.server.received(frame(FrameType.HELLO), owner)
        self.assertEqual(len(self.challenges()), 1)
        self.clock.advance(2.0 - 0.25)
        self.server.received(frame(FrameType.HELLO), owner)
        self.assertNoResult(self.receiver.closed)
        self.clock.advance(0.25)
        self.server.received(frame(FrameType.HELLO), owner)
        self.assertIn("did not answer a challenge", self.successResultOf(self.receiver.closed))
        self.assertEqual(len(self.servers.receivers), 2)
        self.assertEqual(self.server.peers[QUEUE].key, "o" * 32)

    def test_new_session_of_the_same_microservice(self) -> None:
        """
        A HELLO with a new id and the peer's own key replaces the session;
        the same HELLO again (a resend) does not.
        """
        self.server.received(self.hello, props(FrameType.HELLO))
        self.assertEqual(len(self.servers.receivers), 1)
        self.server.received(frame(FrameType.HELLO), props(FrameType.HELLO))
        self.assertIn("new session", self.successResultOf(self.receiver.closed))
        self.assertEqual(len(self.servers.receivers), 2)
        self.assertIs(self.server.peers[QUEUE].receiver, self.servers.receivers[1])


class ClientTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clients = ReceiverLog()
        self.client = AMQPTransportClient(self.clock, f"{BROKER}:gateway=gw-1", self.clients,
                                          hello_retry=1.0, hello_retry_max=5.0)
        self.channel = FakeChannel()
        self.client.channel = self.channel
        self.client.opened()
        self.session = self.clients.receivers[0]

    def gateway_props(self, kind: FrameType, key: Optional[str] = None) -> Any:
        return props(kind, reply_to="stella.gw.gw-1", key=key or self.client.key)

    def register(self) -> Frame:
        hello = frame(FrameType.HELLO)
        self.client.sendFrame(hello)
        self.client.received(Frame(FrameType.HELLO, hello.correlation_id, b"{}"),
                             self.gateway_props(FrameType.HELLO))
        self.channel.take()
        return hello

    def test_hello_resent_with_capped_backoff(self) -> None:
        """
        An unanswered HELLO is resent after 1, 2, 4, then every 5 s (the
        cap), not up to 30 s.
        """
        self.client.sendFrame(frame(FrameType.HELLO))
        self.channel.take()
        for delay in (1.0, 2.0, 4.0, 5.0, 5.0):
            # (ε = 1/4: exact in binary, so the sums land on the deadlines)
            self.clock.advance(delay - 0.25)
            self.assertEqual(self.channel.take(), [])
            self.clock.advance(0.25)
            self.assertEqual(len(self.channel.take()), 1)

    def test_returned_heartbeat_ends_a_registered_session(self) -> None:
        """
        A non-HELLO message returned to a registered session (the gateway's
        queue is gone) ends it, and a new session starts.
        """
        self.register()
        self.client.returned("stella.gw.gw-1", props(FrameType.HEARTBEAT))
        self.assertEqual(self.successResultOf(self.session.closed), "the gateway's queue is gone")
        self.assertEqual(len(self.clients.receivers), 2)

    def test_returned_before_registration_ignored(self) -> None:
        """
        Returns before the session's HELLO is answered (a HELLO, or a
        message of an older session) do not end it: the HELLO is resent.
        """
        self.client.sendFrame(frame(FrameType.HELLO))
        self.client.returned("stella.gw.gw-1", props(FrameType.HELLO))
        self.client.returned("stella.gw.gw-1", props(FrameType.HEARTBEAT))
        self.assertNoResult(self.session.closed)
        self.client.stop()  # (cancels the HELLO resend)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_messages_without_our_key_dropped(self) -> None:
        """
        A message without this process's key never reaches the session.
        """
        self.register()
        seen = len(self.session.frames)
        request = frame(FrameType.REQUEST, b"\x00\x00\x00\x02{}")
        self.client.received(request, self.gateway_props(FrameType.REQUEST, key="x" * 32))
        self.assertEqual(len(self.session.frames), seen)
        self.assertEqual(self.client.drops, {"forged": 1})
        self.client.received(request, self.gateway_props(FrameType.REQUEST))
        self.assertEqual(self.session.frames[-1], request)

    def test_challenge_with_our_key_answered(self) -> None:
        """
        A challenge carrying this process's key is answered to the gateway
        with the same nonce; one with another key is dropped unanswered.
        """
        self.client.challenge_message(pika.BasicProperties(
            type=CHALLENGE_TYPE, reply_to="stella.gw.gw-1",
            headers={KEY_HEADER: "x" * 32}), b"n" * 32)
        self.assertEqual(self.channel.take(), [])
        self.assertEqual(self.client.drops, {"forged": 1})
        self.client.challenge_message(pika.BasicProperties(
            type=CHALLENGE_TYPE, reply_to="stella.gw.gw-1",
            headers={KEY_HEADER: self.client.key}), b"n" * 32)
        [answer] = self.channel.take()
        self.assertEqual((answer["routing_key"], answer["body"], answer["properties"].type,
                          message_key(answer["properties"])),
                         ("stella.gw.gw-1", b"n" * 32, CHALLENGE_ANSWER_TYPE, self.client.key))

    def test_published_with_key_user_and_mandatory(self) -> None:
        """
        The microservice's messages carry its key and broker user and are
        C{mandatory}.
        """
        self.register()
        self.client.sendFrame(frame(FrameType.HEARTBEAT))
        [message] = self.channel.take()
        self.assertTrue(message["mandatory"])
        self.assertEqual((message_key(message["properties"]), message["properties"].user_id),
                         (self.client.key, "guest"))
