"""
RabbitMQ faults from issue 18 (items 6 to 9), against the real broker on
127.0.0.1:5672: a gateway restarted under a registered microservice, an
instance killed with requests and a stream in flight, a goodbye (or any
frame) forged by another broker client, and a microservice stopped after its
gateway went away.
"""

import json
import re
import uuid
from typing import Any, Tuple

import pika
import treq
from pika.adapters.twisted_connection import TwistedProtocolConnection
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ClientCreator, Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.client import ResponseFailed

from stellarouter.common.enums import FrameType
from stellarouter.common.ids import new_correlation_id
from stellarouter.common.models import Frame
from stellarouter.common.payloads import decode_hello_ack
from stellarouter.testing.contract import ReceiverLog, observe
from stellarouter.transports.amqp import EXCHANGE, amqp_client, amqp_server, gateway_queue

from .test_processes import ProcessTestCase

BROKER = "amqp:host=127.0.0.1:port=5672"


async def settle(d: Deferred, timeout: float = 10) -> Any:
    """
    Wait (at most C{timeout} seconds) for C{d} without consuming it, then
    let the reactor finish the turn.
    """
    waiter = observe(d)
    waiter.addTimeout(timeout, reactor)
    result = await waiter
    await deferLater(reactor, 0, lambda: None)
    return result


async def until(condition: Any, timeout: float = 5) -> None:
    """
    Wait until C{condition()} is true, checking every 10 ms for at most
    C{timeout} seconds (the broker gives no event for a dropped message).
    """
    deadline = reactor.seconds() + timeout
    while not condition():
        if reactor.seconds() > deadline:
            raise AssertionError(f"not true within {timeout}s: {condition}")
        await deferLater(reactor, 0.01, lambda: None)


class Stranger:
    """
    Another broker client with the same broker user (guest), publishing
    whatever it likes on the router exchange.
    """

    def __init__(self, case: TestCase) -> None:
        self.case = case
        self.channel: Any = None

    async def connect(self) -> "Stranger":
        parameters = pika.ConnectionParameters(
            host="127.0.0.1", port=5672, credentials=pika.PlainCredentials("guest", "guest"))
        creator = ClientCreator(reactor, TwistedProtocolConnection, parameters)
        protocol = await creator.connectTCP("127.0.0.1", 5672)
        await protocol.ready
        self.case.addCleanup(protocol.close)
        self.channel = await protocol.channel()
        return self

    async def publish(self, target: str, frame: Frame, reply_to: str, **extra: Any) -> None:
        await self.channel.basic_publish(
            exchange=EXCHANGE, routing_key=target, body=frame.payload,
            properties=pika.BasicProperties(type=str(int(frame.type)),
                                            correlation_id=str(frame.correlation_id),
                                            reply_to=reply_to, **extra))


class AMQPTransportFaultTests(TestCase):
    """
    The transport pair (gateway server, microservice client) through the
    real broker, with receivers that record what they get.
    """

    timeout = 30

    async def pair(self, node: str = "") -> Tuple[Any, Any, ReceiverLog, ReceiverLog]:
        node = node or f"fault-{uuid.uuid4().hex[:8]}"
        servers, clients = ReceiverLog(), ReceiverLog()
        server = amqp_server(reactor, BROKER, servers, node, initial_delay=0.05,
                             jitter=lambda: 0)
        await settle(server.start())
        self.addCleanup(server.stop)
        client = amqp_client(reactor, f"{BROKER}:gateway={node}", clients, initial_delay=0.05,
                             jitter=lambda: 0)
        client.start()
        self.addCleanup(client.stop)
        session = await settle(clients.opened(1))
        session.connection.sendFrame(Frame(FrameType.HELLO, new_correlation_id(), b"{}"))
        await settle(servers.opened(1))
        return server, client, servers, clients

    async def round_trip(self, client: Any, servers: ReceiverLog, index: int = -1) -> None:
        """
        A HEARTBEAT from the client reaches the server's receiver: whatever
        was published before it to the gateway's queue has been handled.
        """
        receiver = servers.receivers[index]
        count = len(receiver.frames) + 1
        client.sendFrame(Frame(FrameType.HEARTBEAT, new_correlation_id(), b"{}"))
        await settle(receiver.received(count))

    async def test_unknown_peer_is_told_to_hello_again(self) -> None:
        """
        Item 6: a gateway restarted under a registered microservice answers
        the microservice's next frame (a HEARTBEAT from a queue it does not
        know) with a HELLO answer C{accepted: false, hello_again: true}
        under that frame's correlation id, instead of dropping it silently.
        """
        node = f"restart-{uuid.uuid4().hex[:8]}"
        server, client, servers, clients = await self.pair(node)
        await server.stop()
        again = ReceiverLog()
        restarted = amqp_server(reactor, BROKER, again, node, initial_delay=0.05,
                                jitter=lambda: 0)
        await settle(restarted.start())
        self.addCleanup(restarted.stop)
        session = clients.receivers[-1]
        seen = len(session.frames)
        beat = Frame(FrameType.HEARTBEAT, new_correlation_id(), b'{"instance_id": "x"}')
        client.sendFrame(beat)
        frames = await settle(session.received(seen + 1))
        answer = frames[-1]
        self.assertEqual((answer.type, answer.correlation_id), (FrameType.HELLO,
                                                                beat.correlation_id))
        ack = decode_hello_ack(answer.payload)
        self.assertEqual((ack.accepted, ack.hello_again), (False, True))
        self.assertEqual(restarted.drops.get("unknown_peer"), 1)
        self.assertEqual(again.receivers, [])

    async def test_gone_queue_closes_the_peer(self) -> None:
        """
        Item 7: when a microservice's queue disappears (its broker
        connection died), the gateway's next message to it comes back from
        the broker and the peer is closed at once.
        """
        server, client, servers, clients = await self.pair()
        await client.service.stopService()  # as if it died: no goodbye, no reconnect
        peer = servers.receivers[0].sender
        closed = servers.receivers[0].closed
        # The broker deletes the queue a moment after the connection closed
        # (a message routed before that is simply lost): send until one
        # comes back, at most 5 s.
        deadline = reactor.seconds() + 5
        while not closed.called and reactor.seconds() < deadline:
            peer.sendFrame(Frame(FrameType.CANCEL, new_correlation_id(), b'{"reason":"Timeout"}'))
            await deferLater(reactor, 0.1, lambda: None)
        reason = await settle(closed)
        self.assertIn("queue is gone", reason)
        self.assertNotIn(peer.queue, server.peers)

    async def test_busy_silent_peer_is_probed(self) -> None:
        """
        Item 7: a peer whose receiver has requests in flight and that has
        been silent for C{probe_interval} is probed; the probe comes back
        from the broker if its queue is gone, which closes the peer even
        though the gateway had nothing else to send it.
        """
        node = f"probe-{uuid.uuid4().hex[:8]}"
        servers, clients = ReceiverLog(), ReceiverLog()
        server = amqp_server(reactor, BROKER, servers, node, initial_delay=0.05,
                             jitter=lambda: 0, probe_interval=0.1)
        await settle(server.start())
        self.addCleanup(server.stop)
        client = amqp_client(reactor, f"{BROKER}:gateway={node}", clients, initial_delay=0.05,
                             jitter=lambda: 0)
        client.start()
        self.addCleanup(client.stop)
        session = await settle(clients.opened(1))
        session.connection.sendFrame(Frame(FrameType.HELLO, new_correlation_id(), b"{}"))
        receiver = await settle(servers.opened(1))
        receiver.in_flight = [object()]  # one request awaiting its answer
        await client.service.stopService()  # as if it died: no goodbye, no reconnect
        reason = await settle(receiver.closed, timeout=5)
        self.assertIn("queue is gone", reason)

    async def test_forged_goodbye_is_refused(self) -> None:
        """
        Item 8: another broker client publishing a goodbye with the victim's
        queue as C{reply_to} (with or without the broker-validated
        C{user_id}) does not close the victim's peer; the forgeries are
        dropped and counted, and the real microservice still gets through.
        """
        server, client, servers, clients = await self.pair()
        stranger = await Stranger(self).connect()
        goodbye = Frame(FrameType.HEARTBEAT, new_correlation_id(), json.dumps(
            {"goodbye": True}).encode())
        await stranger.publish(server.queue, goodbye, client.queue)
        await stranger.publish(server.queue, goodbye, client.queue, user_id="guest")
        receiver = servers.receivers[0]
        await until(lambda: server.drops.get("forged") == 2 or receiver.closed.called)
        await self.round_trip(client, servers)
        self.assertFalse(servers.receivers[0].closed.called)
        self.assertEqual(server.drops.get("forged"), 2)
        self.assertEqual(len(servers.receivers[0].frames), 2)  # HELLO and the HEARTBEAT

    async def test_forged_hello_does_not_replace_a_session(self) -> None:
        """
        Item 8: a HELLO forged with a registered microservice's queue as
        C{reply_to} neither replaces nor closes its session.
        """
        server, client, servers, clients = await self.pair()
        stranger = await Stranger(self).connect()
        await stranger.publish(server.queue, Frame(FrameType.HELLO, new_correlation_id(), b"{}"),
                               client.queue, user_id="guest")
        await until(lambda: server.drops.get("forged") == 1 or len(servers.receivers) > 1
                    or servers.receivers[0].closed.called or len(servers.receivers[0].frames) > 1)
        await self.round_trip(client, servers)
        self.assertEqual(len(servers.receivers), 1)
        self.assertFalse(servers.receivers[0].closed.called)
        self.assertEqual(server.drops.get("forged"), 1)

    async def test_queue_claimed_first_by_another_does_not_lock_its_owner_out(self) -> None:
        """
        Item 8: someone who registers a microservice's queue before it does
        (with a key of their own) cannot keep it out: the owner's HELLO
        challenges that session through the queue, nobody answers for it,
        and the owner's next HELLO replaces it.
        """
        node = f"claim-{uuid.uuid4().hex[:8]}"
        servers, clients = ReceiverLog(), ReceiverLog()
        server = amqp_server(reactor, BROKER, servers, node, initial_delay=0.05,
                             jitter=lambda: 0, challenge_timeout=0.3)
        await settle(server.start())
        self.addCleanup(server.stop)
        client = amqp_client(reactor, f"{BROKER}:gateway={node}", clients, initial_delay=0.05,
                             jitter=lambda: 0, hello_retry=0.2)
        client.start()
        self.addCleanup(client.stop)
        session = await settle(clients.opened(1))
        stranger = await Stranger(self).connect()
        await stranger.channel.basic_publish(
            exchange=EXCHANGE, routing_key=server.queue, body=b"{}",
            properties=pika.BasicProperties(type="1", correlation_id=str(new_correlation_id()),
                                            reply_to=client.queue, user_id="guest",
                                            headers={"stella-key": "m" * 32}))
        squatter = await settle(servers.opened(1))
        session.connection.sendFrame(Frame(FrameType.HELLO, new_correlation_id(), b"{}"))
        owner = await settle(servers.opened(2))
        self.assertIn("did not answer a challenge", await settle(squatter.closed))
        self.assertEqual(server.peers[client.queue].receiver, owner)
        await self.round_trip(client, servers)

    async def test_forged_hello_is_challenged_and_the_owner_answers(self) -> None:
        """
        Item 8: a HELLO forged for a registered microservice's queue makes
        the gateway challenge the queue's owner, which answers: the session
        stays, however long the forger keeps trying.
        """
        server, client, servers, clients = await self.pair()
        peer = server.peers[client.queue]
        stranger = await Stranger(self).connect()
        await stranger.publish(server.queue, Frame(FrameType.HELLO, new_correlation_id(), b"{}"),
                               client.queue, user_id="guest")
        await until(lambda: peer.challenged_at > float("-inf"))  # challenge sent
        await until(lambda: peer.challenge is None)  # and answered by the owner
        self.assertFalse(servers.receivers[0].closed.called)
        self.assertEqual(len(servers.receivers), 1)

    async def test_forged_request_to_the_microservice_is_refused(self) -> None:
        """
        Item 8, the other way: a REQUEST published to a microservice's queue
        by someone other than its gateway (naming the gateway's queue in
        C{reply_to}) never reaches the microservice's session.
        """
        server, client, servers, clients = await self.pair()
        stranger = await Stranger(self).connect()
        await stranger.publish(client.queue, Frame(FrameType.REQUEST, new_correlation_id(),
                                                   b"\x00\x00\x00\x02{}"), server.queue)
        session = clients.receivers[0]
        await until(lambda: client.drops.get("forged") == 1 or session.frames)
        ping = Frame(FrameType.HEARTBEAT, new_correlation_id(), b'{"ping": 1}')
        servers.receivers[0].sender.sendFrame(ping)
        self.assertEqual(await settle(session.received(1)), [ping])
        self.assertEqual(client.drops.get("forged"), 1)

    async def test_same_microservice_may_start_a_new_session(self) -> None:
        """
        A new HELLO from the queue of a registered microservice, carrying
        that microservice's key (it started a new session, say after
        reconnecting to the broker), replaces the old session at once.
        """
        server, client, servers, clients = await self.pair()
        client.close("starting over")
        session = await settle(clients.opened(2))
        session.connection.sendFrame(Frame(FrameType.HELLO, new_correlation_id(), b"{}"))
        await settle(servers.opened(2))
        reason = await settle(servers.receivers[0].closed)
        self.assertIn("new session", reason)


class Stopwatch:
    def __init__(self) -> None:
        self.start = reactor.seconds()

    def __call__(self) -> float:
        return reactor.seconds() - self.start


class BodyReader(Protocol):
    """
    Reads a response body, recording how many bytes came and how it ended.
    """

    def __init__(self) -> None:
        self.size = 0
        self.first: Deferred = Deferred()
        self.done: Deferred = Deferred()
        self.reason: Any = None

    def dataReceived(self, data: bytes) -> None:
        self.size += len(data)
        if not self.first.called:
            self.first.callback(None)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.reason = reason
        self.done.callback(None)


class RabbitMQFaultProcessTests(ProcessTestCase):
    """
    Items 6, 7 and 9 with real twistd processes and the real broker.
    """

    timeout = 120

    async def gateway(self, node: str) -> Any:
        return await self.deployment.start_gateway(
            node_id=node, transport=f'{{type: rabbitmq, listen: "{BROKER}"}}',
            extra="health: {degraded_after: 15, unhealthy_after: 30, sweep_interval: 5, "
                  "ping_interval: 5}")

    async def micro(self, gateway: Any, node: str, app: str, instance: str,
                    extra: str = "") -> Any:
        config = self.deployment.write(f"{instance}.yaml", f"""
region: eu1
instance_id: {instance}
{extra}
routers: [{{transport: rabbitmq, address: "{BROKER}:gateway={node}"}}]
""")
        process = self.deployment.spawn(instance, ["stella-micro", "--config", config,
                                                   "--app", app])
        await gateway.wait_for(rf"registered instance {instance} .* over rabbitmq", reactor)
        return process

    async def test_restarted_gateway_gets_the_instance_back_within_a_heartbeat(self) -> None:
        """
        Item 6: after the gateway is restarted (same node id), Billing is
        registered with the new gateway within about one heartbeat interval
        (2 s here), not after the 90 s idle timeout.
        """
        node = f"gw-{uuid.uuid4().hex[:8]}"
        first = await self.gateway(node)
        await self.micro(first, node, "examples.billing:service", "billing-restart",
                         "heartbeat_interval: 2")
        first.signal("TERM")
        await first.ended
        second = await self.gateway(node)
        ready = Stopwatch()
        await second.wait_for(r"registered instance billing-restart .* over rabbitmq", reactor,
                              timeout=15)
        elapsed = ready()
        print(f"\nre-registered {elapsed:.2f}s after the restarted gateway was ready")
        self.assertLess(elapsed, 10)
        response = await treq.get(second.base_url + "/ping", pool=self.pool)
        self.assertEqual((response.code, await response.content()), (200, b"pong"))

    async def test_killed_instance_fails_in_flight_requests_at_once(self) -> None:
        """
        Item 7: requests in flight on an instance killed with SIGKILL get
        502 within seconds (not 504 at their 30 s timeout; well under a
        second on an idle machine, the 10 s bound leaves room for load), and
        the next request is not routed to the dead instance (503: it was the
        only one, and its route was served moments ago).
        """
        node = f"gw-{uuid.uuid4().hex[:8]}"
        gateway = await self.gateway(node)
        micro = await self.micro(gateway, node, "examples.slowpoke:service", "slow-killed")
        base = gateway.base_url
        requests = [treq.get(base + "/slow?seconds=20", pool=self.pool) for _ in range(3)]
        started = len(micro.lines)
        while len(re.findall(r"slow request \S+ started", "\n".join(micro.lines[started:]))) < 3:
            await micro.wait_for(r"slow request \S+ started", reactor, since=len(micro.lines))
        micro.signal("KILL")
        clock = Stopwatch()
        codes = []
        for request in requests:
            response = await request
            codes.append(response.code)
            await response.content()
        elapsed = clock()
        print(f"\n{codes} {elapsed:.2f}s after SIGKILL")
        self.assertEqual(codes, [502, 502, 502], gateway.lines[-20:])
        self.assertLess(elapsed, 10)
        # Not routed to the dead instance (never a 502 or 504 from trying
        # it): a known route without an instance.
        response = await treq.get(base + "/slow?seconds=0", pool=self.pool)
        self.assertEqual(response.code, 503, gateway.lines[-20:])  # known route, no instance
        await response.content()

    async def test_killed_instance_cuts_its_stream(self) -> None:
        """
        Item 7: a streamed export in flight when its instance is killed is
        cut within seconds (the client sees the connection
        end), instead of hanging until the peer's idle timeout.
        """
        node = f"gw-{uuid.uuid4().hex[:8]}"
        gateway = await self.gateway(node)
        micro = await self.micro(gateway, node, "examples.billing:service", "billing-killed")
        response = await treq.get(gateway.base_url + f"/invoices/7/export?bytes={8 * 1024 ** 3}",
                                  pool=self.pool)
        self.assertEqual(response.code, 200)
        body = BodyReader()
        response.deliverBody(body)
        await settle(body.first)
        micro.signal("KILL")
        clock = Stopwatch()
        await settle(body.done, timeout=20)
        elapsed = clock()
        print(f"\nstream cut {elapsed:.2f}s after SIGKILL, {body.size} bytes received")
        self.assertLess(elapsed, 10)
        self.assertLess(body.size, 8 * 1024 ** 3)
        self.assertIsInstance(body.reason.value, ResponseFailed)

    async def test_forged_hello_naming_a_gateway_queue_does_not_loop(self) -> None:
        """
        One forged HELLO whose C{reply_to} is the gateway's own queue (or
        another gateway's) is dropped: before, the gateway rejected it to
        that queue, got its own rejection back as a HELLO, rejected that...
        forever (794 rejections in 3 s, 47 KB/s of log); two gateways did the
        same to each other.  A Billing registered afterwards works.
        """
        node, other = f"gw-{uuid.uuid4().hex[:8]}", f"gw-{uuid.uuid4().hex[:8]}"
        gateway = await self.gateway(node)
        second = await self.gateway(other)
        stranger = await Stranger(self).connect()
        for reply_to in (gateway_queue(node), gateway_queue(other)):
            await stranger.publish(gateway_queue(node), Frame(
                FrameType.HELLO, new_correlation_id(), b"not a hello"), reply_to)
        await self.micro(gateway, node, "examples.billing:service", "billing-after-loop")
        response = await treq.get(gateway.base_url + "/ping", pool=self.pool)
        self.assertEqual(response.code, 200)
        await response.content()
        rejections = [line for line in gateway.lines + second.lines
                      if "closing connection from amqp:stella.gw." in line]
        self.assertEqual(rejections, [])

    async def test_stop_without_gateway_does_not_wait_for_the_grace_period(self) -> None:
        """
        Item 9: a microservice stopped (SIGTERM, as Ctrl-C) after its
        gateway died, with nothing in flight, exits within seconds instead
        of waiting out its 30 s drain grace period.
        """
        node = f"gw-{uuid.uuid4().hex[:8]}"
        gateway = await self.gateway(node)
        micro = await self.micro(gateway, node, "examples.billing:service", "billing-orphan")
        gateway.signal("KILL")
        await gateway.ended
        micro.signal("TERM")
        clock = Stopwatch()
        await micro.ended
        elapsed = clock()
        print(f"\nstopped {elapsed:.2f}s after SIGTERM")
        self.assertIn("Server Shut Down.", "\n".join(micro.lines))
        self.assertLess(elapsed, 10)
