"""
The message transport contract over the real RabbitMQ broker on
127.0.0.1:5672, with a gateway node id unique to each test (its queues are
exclusive and go away with the test's connections).
"""

import uuid
from typing import Any, Tuple

import pika
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from stellarouter.common.enums import FrameType, TransportType
from stellarouter.common.ids import new_correlation_id
from stellarouter.common.models import Frame
from stellarouter.testing.contract import MessageContractTests, ReceiverLog, observe
from stellarouter.transports.amqp import EXCHANGE, amqp_client, amqp_server

BROKER = "amqp:host=127.0.0.1:port=5672"


class AMQPContractTests(MessageContractTests, TestCase):
    """
    RabbitMQ keeps the message contract against the real broker.
    """

    transport_type = TransportType.RABBITMQ
    max_frame_bytes = 256 * 1024
    timeout = 30

    async def startServer(self, receiver_factory: ReceiverLog) -> Tuple[Any, str]:
        node = f"contract-{uuid.uuid4().hex[:8]}"
        self.servers = receiver_factory
        server = amqp_server(reactor, BROKER, receiver_factory, node,
                             max_frame_bytes=self.max_frame_bytes, initial_delay=0.05,
                             jitter=lambda: 0)
        await server.start()
        return server, f"{BROKER}:gateway={node}"

    def makeClient(self, address: str, receiver_factory: Any) -> Any:
        self.client = amqp_client(reactor, address, receiver_factory,
                                  max_frame_bytes=self.max_frame_bytes, initial_delay=0.05,
                                  jitter=lambda: 0)
        return self.client

    async def settle(self, d: Deferred) -> Any:
        waiter = observe(d)
        waiter.addTimeout(10, reactor)
        result = await waiter
        await deferLater(reactor, 0, lambda: None)
        return result

    def publishRaw(self, server: Any, body: bytes, kind: str, reply_to: str) -> None:
        """
        Publish a message to the gateway node's queue on the client's own
        channel, around the transport's checks.
        """
        properties = pika.BasicProperties(type=kind, correlation_id=str(new_correlation_id()),
                                          reply_to=reply_to)
        self.client.channel.basic_publish(exchange=EXCHANGE, routing_key=server.queue,
                                          body=body, properties=properties)

    def injectStranger(self, server: Any, frame: Frame) -> None:
        self.publishRaw(server, frame.payload, str(int(frame.type)),
                        f"stella.svc.stranger-{uuid.uuid4().hex[:8]}")

    def injectMalformed(self, server: Any) -> None:
        self.publishRaw(server, b"{}", "not-a-frame-type", self.client.queue)

    def injectOversized(self, server: Any, frame: Frame) -> None:
        self.publishRaw(server, frame.payload, str(int(frame.type)), self.client.queue)

    def roundTrip(self) -> Deferred:
        # One channel's messages to one queue arrive in order: a probe frame
        # sent after the injected messages marks their arrival.
        receiver = self.servers.receivers[0]
        count = len(receiver.frames) + 1
        self.client.sendFrame(Frame(FrameType.HEARTBEAT, new_correlation_id(), b"{}"))
        return receiver.received(count)

    def test_oversized_frame_is_not_sent(self) -> None:
        """
        A frame over C{max_frame_bytes} is refused on the sending side
        (logged), not published.
        """
        published = []
        node = amqp_client(reactor, f"{BROKER}:gateway=nowhere", ReceiverLog(),
                           max_frame_bytes=1024)

        class Channel:
            def basic_publish(self, **kwargs: Any) -> Deferred:
                published.append(kwargs)
                return Deferred()

        node.channel = Channel()
        node.publish("somewhere", Frame(FrameType.RESPONSE, new_correlation_id(), b"x" * 1007))
        self.assertEqual(len(published), 1)
        node.publish("somewhere", Frame(FrameType.RESPONSE, new_correlation_id(), b"x" * 1008))
        self.assertEqual(len(published), 1)
