"""
What both sides of the RabbitMQ transport share: one broker connection
(L{BrokerConnection}) kept alive across broker restarts, one consumed queue
(L{BrokerQueue}), and how a frame becomes a message and back (type in the
C{type} property, correlation id in C{correlation_id}, the sender's queue in
C{reply_to}, the sender's key in the C{stella-key} header, the broker user in
C{user_id}).  The gateway and microservice sides are in C{amqp.py}.
"""

from __future__ import annotations

import hmac
import os
import random
import time
from typing import Callable, Dict, Optional

import pika
from pika.adapters.twisted_connection import (
    ReceivedMessage, TwistedChannel, TwistedProtocolConnection)
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..common.addresses import parse_amqp_address
from ..common.enums import FrameType
from ..common.errors import MalformedPayload
from ..common.frames import DEFAULT_MAX_FRAME_BYTES, FRAME_OVERHEAD
from ..common.ids import CorrelationId
from ..common.interfaces import IFrameReceiver
from ..common.models import Frame
from ..common.payloads import decode_request
from .flush import unsent_bytes
from .peers import DropCounting

#: The exchange every router message goes through.
EXCHANGE = "stellaops.router"
#: The default AMQP port.
DEFAULT_PORT = 5672
_TYPES = {str(int(t)): t for t in FrameType}
#: The message header that carries a microservice's key.
KEY_HEADER = "stella-key"
#: The type of the gateway's probe messages (not a frame: dropped unread).
PROBE_TYPE = "probe"
#: The types of the gateway's challenge to a queue's owner, and of its
#: answer (not frames): see L{AMQPTransportServer.challenge}.
CHALLENGE_TYPE = "challenge"
CHALLENGE_ANSWER_TYPE = "challenge-answer"
#: How every microservice queue's name starts; a gateway takes messages
#: only from such queues.
SERVICE_QUEUE_PREFIX = "stella.svc."

ReceiverFactory = Callable[[], IFrameReceiver]


def gateway_queue(node_id: str) -> str:
    """
    The queue a gateway node consumes.
    """
    return f"stella.gw.{node_id}"


def message_key(properties: pika.BasicProperties) -> Optional[str]:
    """
    The microservice key a message carries in its C{stella-key} header,
    if any.
    """
    value = (getattr(properties, "headers", None) or {}).get(KEY_HEADER)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def same_key(given: Optional[str], expected: Optional[str]) -> bool:
    """
    Whether a message's key is the expected one (compared in constant
    time; no key expected matches only no key).
    """
    if expected is None or given is None:
        return given is expected
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _parameters(options: Dict[str, str], queue: str) -> pika.ConnectionParameters:
    return pika.ConnectionParameters(
        host=options["host"], port=int(options["port"]), virtual_host=options["vhost"],
        credentials=pika.PlainCredentials(options["user"], options["password"]),
        heartbeat=30,
        # Shown by the broker's tools (rabbitmqctl list_connections client_properties).
        client_properties={"connection_name": f"stellarouter {queue} pid {os.getpid()}"})


class BrokerConnection(TwistedProtocolConnection):
    """
    One broker connection; tells its owner when it is usable and when it
    is gone.
    """

    def __init__(self, parameters: pika.ConnectionParameters, owner: "BrokerQueue") -> None:
        super().__init__(parameters)
        self.owner = owner

    def connectionReady(self) -> object:
        result = super().connectionReady()
        Deferred.fromCoroutine(self.owner.link_ready(self)).addErrback(
            self.owner.setup_failed, self)
        return result

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        super().connectionLost(reason)
        self.owner.link_lost(self, reason)


class BrokerQueue(DropCounting):
    """
    What both sides share: one consumed queue on the exchange, kept alive
    across broker restarts with a reconnecting L{ClientService}.  Dropped
    messages are counted (L{DropCounting}: one log line per interval).

    @ivar drops: dropped messages by reason (C{malformed}, C{oversize},
        C{unknown_peer}, C{forged}, C{not_a_service_queue}).
    @ivar max_frame_bytes: the largest frame (type, id and payload) sent or
        accepted; a larger message is refused on send and dropped on receipt.
    """

    log = Logger()
    #: The most bytes the broker connection may hold unsent before frames
    #: are dropped (counted as C{broker_backlog}).  The broker stops reading
    #: from publishers under a resource alarm (RabbitMQ's "connection
    #: blocked"); without a cap every frame published meanwhile would stay in
    #: this process's memory.
    max_unsent_bytes = 32 * 1024 * 1024

    def __init__(self, reactor: IReactorTime, address: str, queue: str, gateway_required: bool,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
                 initial_delay: float = 0.5, max_delay: float = 30.0,
                 jitter: Optional[Callable[[], float]] = None) -> None:
        self.reactor = reactor
        self.max_frame_bytes = max_frame_bytes
        self.clock: IReactorTime = reactor
        self.options = parse_amqp_address(address, gateway_required)
        self.user = self.options["user"]
        self.queue = queue
        self.channel: Optional[TwistedChannel] = None
        self.link: Optional[BrokerConnection] = None
        DropCounting.__init__(self)
        factory = Factory.forProtocol(
            lambda: BrokerConnection(_parameters(self.options, queue), self))
        self.service = ClientService(
            TCP4ClientEndpoint(reactor, self.options["host"], int(self.options["port"])),
            factory,
            retryPolicy=backoffPolicy(initialDelay=initial_delay, maxDelay=max_delay,
                                      jitter=jitter or (lambda: random.uniform(0, 0.5))),
            clock=reactor)

    async def link_ready(self, link: BrokerConnection) -> None:
        channel = await link.channel()
        channel.add_on_return_callback(self._returned)
        await channel.exchange_declare(exchange=EXCHANGE, exchange_type="direct")
        await channel.queue_declare(queue=self.queue, exclusive=True, auto_delete=True)
        await channel.queue_bind(queue=self.queue, exchange=EXCHANGE, routing_key=self.queue)
        messages, _ = await channel.basic_consume(queue=self.queue, auto_ack=True)
        self.channel, self.link = channel, link
        self.log.info("AMQP link to {host}:{port} ready; consuming {queue}",
                      host=self.options["host"], port=self.options["port"], queue=self.queue)
        self.opened()
        while True:
            try:
                _, _, properties, body = await messages.get()
            except Exception:
                return
            if properties.type == PROBE_TYPE:
                continue
            if properties.type in (CHALLENGE_TYPE, CHALLENGE_ANSWER_TYPE):
                if len(body) <= 64:
                    self.challenge_message(properties, bytes(body))
                continue
            frame = self._decode(properties, body)
            if frame is not None:
                try:
                    self.received(frame, properties)
                except Exception:
                    self.log.failure("handling a {kind} message failed", kind=frame.type.name)

    def setup_failed(self, failure: Failure, link: BrokerConnection) -> None:
        self.log.failure("setting up the AMQP link failed; reconnecting", failure)
        if link.transport is not None:
            link.transport.loseConnection()

    def link_lost(self, link: BrokerConnection, reason: Failure) -> None:
        if link is self.link:
            self.link, self.channel = None, None
            self.log.warn("AMQP link lost: {reason}", reason=reason.getErrorMessage())
            self.closed(f"broker connection lost: {reason.getErrorMessage()}")

    def _decode(self, properties: pika.BasicProperties, body: bytes) -> Optional[Frame]:
        if len(body) + FRAME_OVERHEAD > self.max_frame_bytes:
            self.drop("oversize", properties.reply_to, f"({len(body)} bytes)")
            count = self.drops["oversize"]
            if count & (count - 1) == 0:
                # Usually a max_frame_bytes mismatch between the two sides:
                # say so (the 1st, 2nd, 4th, 8th... time), the request waits
                # for its timeout otherwise.
                self.log.warn("dropped a {size}-byte message from {source}: over "
                              "max_frame_bytes {limit} (does the other side use the same "
                              "max_frame_bytes?); {count} dropped so far", size=len(body),
                              source=properties.reply_to, limit=self.max_frame_bytes,
                              count=count)
            return None
        kind = _TYPES.get(str(properties.type or ""))
        try:
            cid = CorrelationId.parse(str(properties.correlation_id))
        except (ValueError, TypeError):
            cid = None
        if kind is None or cid is None:
            self.drop("malformed", properties.reply_to,
                      f"type {properties.type!r} id {properties.correlation_id!r}")
            return None
        return Frame(kind, cid, bytes(body))

    def drop_forged(self, frame: Frame, properties: pika.BasicProperties) -> None:
        """
        Drop a message that names a session it does not belong to (wrong
        key or C{user_id}); warn the 1st, 2nd, 4th, 8th... time.
        """
        self.drop("forged", properties.reply_to, frame.type.name)
        count = self.drops["forged"]
        if count & (count - 1) == 0:
            self.log.warn("dropped a {kind} message claiming to come from {source} "
                          "(user_id {user}): its key or user_id is not that session's; "
                          "{count} dropped so far", kind=frame.type.name,
                          source=properties.reply_to, user=properties.user_id or "not set",
                          count=count)

    def _returned(self, message: ReceivedMessage) -> None:
        try:
            self.returned(message.method.routing_key, message.properties)
        except Exception:
            self.log.failure("handling a returned message failed")

    def probe(self, target: str, key: Optional[str]) -> None:
        """
        Publish a probe message to C{target}: its receiver drops it unread;
        the broker returns it if no queue takes it.
        """
        if self.channel is None:
            return
        self._send(self.channel, target, b"", pika.BasicProperties(
            type=PROBE_TYPE, reply_to=self.queue, user_id=self.user, expiration="0",
            headers={KEY_HEADER: key} if key else None), "probe")

    def _send(self, channel: TwistedChannel, target: str, body: bytes,
              properties: pika.BasicProperties,
              what: str) -> None:
        """
        C{basic_publish}, C{mandatory}; a failure is logged.
        """
        try:
            d = channel.basic_publish(exchange=EXCHANGE, routing_key=target, body=body,
                                      properties=properties, mandatory=True)
        except Exception as e:
            self.log.warn("publishing a {kind} message failed: {error}", kind=what, error=e)
            return
        d.addErrback(lambda f: self.log.warn("publishing a {kind} message failed: {error}",
                                             kind=what, error=f.getErrorMessage()))

    def publish(self, target: str, frame: Frame, key: Optional[str] = None) -> None:
        """
        Publish C{frame} to queue C{target}, C{mandatory} (the broker
        returns it if no queue takes it), with C{key} in the C{stella-key}
        header and our broker user as C{user_id}.
        """
        channel = self.channel
        if channel is None or self._backlogged(target, frame):
            return
        if len(frame.payload) + FRAME_OVERHEAD > self.max_frame_bytes:
            self.log.error("a {kind} frame of {size} bytes is over max_frame_bytes ({limit}); "
                           "not sent", kind=frame.type.name,
                           size=len(frame.payload) + FRAME_OVERHEAD, limit=self.max_frame_bytes)
            return
        expiration = None
        if frame.type is FrameType.REQUEST:
            try:
                deadline = decode_request(frame.payload).deadline
            except MalformedPayload:
                deadline = None
            if deadline is not None:
                expiration = str(max(1, int((deadline - time.time()) * 1000)))
        properties = pika.BasicProperties(
            type=str(int(frame.type)), correlation_id=str(frame.correlation_id),
            reply_to=self.queue, expiration=expiration, user_id=self.user,
            headers={KEY_HEADER: key} if key else None)
        self._send(channel, target, frame.payload, properties, frame.type.name)

    def _backlogged(self, target: str, frame: Frame) -> bool:
        """
        Whether the broker connection holds more than C{max_unsent_bytes}
        unsent: C{frame} is then dropped and counted, with a warning the
        1st, 2nd, 4th, 8th... time.  A dropped REQUEST ends in its timeout
        (504), as a lost message would.
        """
        link = self.link
        unsent = unsent_bytes(link.transport) if link is not None else 0
        if unsent <= self.max_unsent_bytes:
            return False
        self.drop("broker_backlog", target, frame.type.name)
        count = self.drops["broker_backlog"]
        if count & (count - 1) == 0:
            self.log.warn("the broker is not reading ({unsent} bytes unsent, over {limit}; a "
                          "resource alarm?): a {kind} message to {target} dropped, {count} so far",
                          unsent=unsent, limit=self.max_unsent_bytes, kind=frame.type.name,
                          target=target, count=count)
        return True

    # overridden by each side
    def opened(self) -> None:
        raise NotImplementedError

    def closed(self, reason: str) -> None:
        raise NotImplementedError

    def received(self, frame: Frame, properties: pika.BasicProperties) -> None:
        raise NotImplementedError

    def returned(self, target: str, properties: pika.BasicProperties) -> None:
        """
        The broker returned a message we published to queue C{target}: no
        queue took it.
        """
        raise NotImplementedError

    def challenge_message(self, properties: pika.BasicProperties, body: bytes) -> None:
        """
        A challenge (to a microservice) or its answer (to a gateway)
        arrived; the other side ignores it.
        """


__all__ = ["BrokerConnection", "BrokerQueue", "CHALLENGE_ANSWER_TYPE", "CHALLENGE_TYPE",
           "DEFAULT_PORT", "EXCHANGE", "KEY_HEADER", "PROBE_TYPE", "SERVICE_QUEUE_PREFIX",
           "gateway_queue", "message_key", "same_key"]
