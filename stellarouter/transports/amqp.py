"""
The RabbitMQ transport (AMQP 0-9-1, with pika's Twisted adapter; the choice
and its evidence are in C{docs/router/decisions.md}).

Topology: one direct exchange, C{stellaops.router}.  Each gateway node
consumes its own queue C{stella.gw.<node_id>}; each microservice instance
consumes C{stella.svc.<instance_id>.<random>}; queues are exclusive and
deleted with their connection.  One AMQP message = one frame: the frame
type in the message C{type} property, the correlation id (its GUID text) in
C{correlation_id}, the sender's queue in C{reply_to}, the payload as the
body.  A REQUEST message carries an C{expiration} so the broker drops it
once its deadline has passed.

Delivery is at most once: messages are consumed with automatic
acknowledgement, so nothing is redelivered after a handler got it.

There is no connection between gateway and microservice, so the gateway
keeps a peer per microservice queue, opened by HELLO and closed when the
microservice says goodbye (a HEARTBEAT with C{"goodbye": true}), when it
has been silent for C{idle_timeout}, when the broker connection is lost, or
when a message to its queue comes back (below).  A frame from a queue
without a peer is dropped, counted, and answered with a HELLO answer
C{{"accepted": false, "hello_again": true}}: a gateway restarted under a
registered microservice gets it back within one heartbeat.

Anyone allowed to publish on the exchange can put any queue in
C{reply_to}, so a peer belongs to whoever registered it: each microservice
process draws a random key, sends it in the C{stella-key} header of every
message, and sets the C{user_id} property, which the broker checks against
the connection's user.  The gateway takes both from the HELLO and drops
(counts as C{forged}) any later message for that peer whose key or
C{user_id} differ; it sends the key back on its own messages and the
microservice drops messages without it (C{docs/router/security.md}).  A
HELLO with another key for a registered queue challenges the queue's owner
(L{AMQPTransportServer.challenge}).

Every message is published C{mandatory}: the broker returns one that no
queue takes.  A message returned to the gateway means the microservice's
exclusive queue is gone (its broker connection closed: the process died),
so its peer closes at once and its requests fail with 502.  While a peer
has requests in flight and has been silent for C{probe_interval}, the
gateway publishes a probe message to it (type C{probe}, no body, expiring
at once) to find out.  A non-HELLO message returned to the microservice
means the gateway's queue is gone, so its session ends (a new one sends
HELLO until a gateway answers), and a microservice stopping after its
gateway died does not wait for a drain acknowledgement that cannot come.

The microservice starts a new session (a new HELLO) when it has heard
nothing from the gateway for C{idle_timeout}, and after every reconnect.
Both sides reconnect to the broker with backoff (C{ClientService}).
"""

from __future__ import annotations

import hmac
import json
import os
import random
import secrets
import time
import uuid
from typing import Any, Callable, Dict, Optional, Tuple

import pika
from pika.adapters.twisted_connection import TwistedProtocolConnection
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..common.addresses import parse_amqp_address
from ..common.enums import FrameType, TransportType
from ..common.errors import MalformedPayload
from ..common.frames import DEFAULT_MAX_FRAME_BYTES, FRAME_OVERHEAD
from ..common.ids import CorrelationId, new_correlation_id
from ..common.interfaces import IFrameReceiver, IFrameSender, ITransportClient, ITransportServer
from ..common.models import Frame
from ..common.payloads import HelloAck, decode_request, encode_hello_ack

#: The exchange every router message goes through.
EXCHANGE = "stellaops.router"
#: The default AMQP port.
DEFAULT_PORT = 5672
_TYPES = {str(int(t)): t for t in FrameType}
_HELLO_TYPE = str(int(FrameType.HELLO))
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


def message_key(properties: Any) -> Optional[str]:
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


class _Link(TwistedProtocolConnection):
    """
    One broker connection; tells its owner when it is usable and when it
    is gone.
    """

    def __init__(self, parameters: pika.ConnectionParameters, owner: "_Node") -> None:
        super().__init__(parameters)
        self.owner = owner

    def connectionReady(self) -> Any:
        result = super().connectionReady()
        Deferred.fromCoroutine(self.owner.link_ready(self)).addErrback(
            self.owner.setup_failed, self)
        return result

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        super().connectionLost(reason)
        self.owner.link_lost(self, reason)


class _Node:
    """
    What both sides share: one consumed queue on the exchange, kept alive
    across broker restarts with a reconnecting L{ClientService}.

    @ivar drops: dropped messages by reason (C{malformed}, C{oversize},
        C{unknown_peer}, C{forged}, C{not_a_service_queue}).
    @ivar max_frame_bytes: the largest frame (type, id and payload) sent or
        accepted; a larger message is refused on send and dropped on receipt.
    """

    log = Logger()

    def __init__(self, reactor: Any, address: str, queue: str, gateway_required: bool,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
                 initial_delay: float = 0.5, max_delay: float = 30.0,
                 jitter: Optional[Callable[[], float]] = None) -> None:
        self.reactor = reactor
        self.max_frame_bytes = max_frame_bytes
        self.clock: IReactorTime = reactor
        self.options = parse_amqp_address(address, gateway_required)
        self.user = self.options["user"]
        self.queue = queue
        self.channel: Any = None
        self.link: Optional[_Link] = None
        self.drops: Dict[str, int] = {}
        factory = Factory.forProtocol(lambda: _Link(_parameters(self.options, queue), self))
        self.service = ClientService(
            TCP4ClientEndpoint(reactor, self.options["host"], int(self.options["port"])),
            factory,
            retryPolicy=backoffPolicy(initialDelay=initial_delay, maxDelay=max_delay,
                                      jitter=jitter or (lambda: random.uniform(0, 0.5))),
            clock=reactor)

    async def link_ready(self, link: _Link) -> None:
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

    def setup_failed(self, failure: Failure, link: _Link) -> None:
        self.log.failure("setting up the AMQP link failed; reconnecting", failure)
        if link.transport is not None:
            link.transport.loseConnection()

    def link_lost(self, link: _Link, reason: Failure) -> None:
        if link is self.link:
            self.link, self.channel = None, None
            self.log.warn("AMQP link lost: {reason}", reason=reason.getErrorMessage())
            self.closed(f"broker connection lost: {reason.getErrorMessage()}")

    def _decode(self, properties: Any, body: bytes) -> Optional[Frame]:
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

    def drop(self, reason: str, source: Any, detail: str = "") -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1
        self.log.debug("dropped a message from {source}: {reason} {detail}",
                       source=source, reason=reason, detail=detail)

    def drop_forged(self, frame: Frame, properties: Any) -> None:
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

    def _returned(self, message: Any) -> None:
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

    def _send(self, channel: Any, target: str, body: bytes, properties: Any,
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
        if channel is None:
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

    # overridden by each side
    def opened(self) -> None:
        raise NotImplementedError

    def closed(self, reason: str) -> None:
        raise NotImplementedError

    def received(self, frame: Frame, properties: Any) -> None:
        raise NotImplementedError

    def returned(self, target: str, properties: Any) -> None:
        """
        The broker returned a message we published to queue C{target}: no
        queue took it.
        """
        raise NotImplementedError

    def challenge_message(self, properties: Any, body: bytes) -> None:
        """
        A challenge (to a microservice) or its answer (to a gateway)
        arrived; the other side ignores it.
        """


def _busy(receiver: IFrameReceiver) -> bool:
    """
    Whether a receiver awaits answers (the gateway's connection has requests
    in C{in_flight}).
    """
    return len(getattr(receiver, "in_flight", ())) > 0


@implementer(IFrameSender)
class AMQPPeer:
    """
    The gateway's pseudo-connection to one microservice queue.
    """

    transport_type = TransportType.RABBITMQ
    peer_identity: Tuple[str, ...] = ()

    def __init__(self, server: "AMQPTransportServer", queue: str,
                 receiver: IFrameReceiver, key: Optional[str] = None,
                 user_id: Optional[str] = None) -> None:
        """
        @param key: the microservice's key, from its HELLO.
        @param user_id: the broker user its HELLO was published by.
        """
        self.server = server
        self.queue = queue
        self.key = key
        self.user_id = user_id
        self.peer = f"amqp:{queue}"
        self.receiver = receiver
        self.last_seen = server.clock.seconds()
        self.closed = False
        self.hello_id: Optional[CorrelationId] = None
        self.hello_answer: Optional[Frame] = None
        #: The nonce of an unanswered challenge, when it was sent.
        self.challenge: Optional[bytes] = None
        self.challenged_at = float("-inf")

    def sendFrame(self, frame: Frame) -> None:
        if not self.closed:
            if frame.type is FrameType.HELLO:
                self.hello_answer = frame
            self.server.publish(self.queue, frame, self.key)

    def owns(self, properties: Any) -> bool:
        """
        Whether a message comes from the session that registered this peer:
        same key, same (broker-checked) C{user_id}.
        """
        return (same_key(message_key(properties), self.key)
                and (properties.user_id or None) == self.user_id)

    def close(self, reason: str) -> None:
        self.server.forget(self, reason)


@implementer(ITransportServer)
class AMQPTransportServer(_Node):
    """
    The gateway side: consumes C{stella.gw.<node_id>}; one L{AMQPPeer} per
    microservice queue.
    """

    transport_type = TransportType.RABBITMQ

    def __init__(self, reactor: Any, listen: str, receiver_factory: ReceiverFactory,
                 node_id: str, idle_timeout: float = 90.0,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES, probe_interval: float = 0.5,
                 challenge_timeout: float = 2.0, **backoff: Any) -> None:
        """
        @param probe_interval: how often a peer with requests in flight that
            has said nothing for that long is probed (a probe comes back if
            its queue is gone).
        @param challenge_timeout: how long the owner of a peer's queue has
            to answer a challenge (L{challenge}).
        """
        super().__init__(reactor, listen, gateway_queue(node_id), False, max_frame_bytes,
                         **backoff)
        self.node_id = node_id
        self.receiver_factory = receiver_factory
        self.idle_timeout = idle_timeout
        self.probe_interval = probe_interval
        self.challenge_timeout = challenge_timeout
        self.peers: Dict[str, AMQPPeer] = {}
        self._sweeper = LoopingCall(self.sweep)
        self._sweeper.clock = reactor
        self._prober = LoopingCall(self.probe_busy_peers)
        self._prober.clock = reactor
        self._ready: Optional[Deferred] = None

    def start(self) -> Deferred:
        self._ready = Deferred()
        self.service.startService()
        self._sweeper.start(max(self.idle_timeout / 4, 0.05), now=False)
        self._prober.start(self.probe_interval, now=False)
        return self._ready

    def opened(self) -> None:
        if self._ready is not None and not self._ready.called:
            self._ready.callback(
                f"rabbitmq:{self.options['host']}:{self.options['port']}/{self.queue}")

    def stop(self) -> Deferred:
        if self._sweeper.running:
            self._sweeper.stop()
        if self._prober.running:
            self._prober.stop()
        for peer in list(self.peers.values()):
            self.forget(peer, "gateway transport stopping")
        return self.service.stopService()

    def probe_busy_peers(self) -> None:
        """
        Probe each peer that has requests in flight and has been silent for
        C{probe_interval}: if its queue is gone the probe comes back and the
        peer is closed (L{returned}).
        """
        now = self.clock.seconds()
        for peer in list(self.peers.values()):
            if now - peer.last_seen >= self.probe_interval and _busy(peer.receiver):
                self.probe(peer.queue, peer.key)

    def sweep(self) -> None:
        now = self.clock.seconds()
        for peer in list(self.peers.values()):
            if now - peer.last_seen >= self.idle_timeout:
                self.forget(peer, f"silent for {now - peer.last_seen:.1f}s")

    def forget(self, peer: AMQPPeer, reason: str) -> None:
        if peer.closed:
            return
        peer.closed = True
        self.peers.pop(peer.queue, None)
        peer.receiver.connectionClosed(reason)

    def closed(self, reason: str) -> None:
        for peer in list(self.peers.values()):
            self.forget(peer, reason)

    def returned(self, target: str, properties: Any) -> None:
        peer = self.peers.get(target)
        if peer is not None:
            self.log.warn("the queue {queue} of a microservice is gone (its broker connection "
                          "closed); closing its peer", queue=target)
            self.forget(peer, "its queue is gone: the microservice's broker connection closed")

    def received(self, frame: Frame, properties: Any) -> None:
        reply_to = properties.reply_to or ""
        if not reply_to.startswith(SERVICE_QUEUE_PREFIX):
            # Not a microservice's queue: answering it could start a loop
            # (a forged HELLO naming this gateway's own queue, or another
            # gateway's, had two gateways reject each other forever).
            self.drop("not_a_service_queue", reply_to, frame.type.name)
            return
        peer = self.peers.get(reply_to)
        if peer is not None and not peer.owns(properties):
            if frame.type is FrameType.HELLO and self._failed_challenge(peer):
                # The session we have for this queue could not answer for
                # it: it was never its owner's; this HELLO may be.
                self.forget(peer, "it did not answer a challenge sent to its queue")
                peer = None
            else:
                if frame.type is FrameType.HELLO:
                    self.challenge(peer)
                self.drop_forged(frame, properties)
                return
        if (peer is not None and frame.type is FrameType.HELLO and peer.hello_id is not None
                and peer.hello_id != frame.correlation_id):
            # The same microservice (it has the key) starts a new session,
            # e.g. after it reconnected to the broker: the old one is over.
            self.forget(peer, "replaced by a new session of the same microservice")
            peer = None
        if peer is None:
            if frame.type is not FrameType.HELLO:
                self.drop("unknown_peer", reply_to, frame.type.name)
                self._ask_for_hello(reply_to, frame, message_key(properties))
                return
            peer = AMQPPeer(self, reply_to, self.receiver_factory(), message_key(properties),
                            properties.user_id or None)
            self.peers[reply_to] = peer
            peer.receiver.connectionOpened(peer)
        peer.last_seen = self.clock.seconds()
        if frame.type is FrameType.HELLO:
            if peer.hello_id == frame.correlation_id:
                # The microservice resent its HELLO before it saw our answer:
                # answer again instead of treating it as a second HELLO.
                if peer.hello_answer is not None:
                    self.publish(peer.queue, peer.hello_answer)
                return
            if peer.hello_id is None:
                peer.hello_id = frame.correlation_id
        if frame.type is FrameType.HEARTBEAT and _is_goodbye(frame.payload):
            self.forget(peer, "the microservice said goodbye")
            return
        peer.receiver.frameReceived(frame)


    def challenge(self, peer: AMQPPeer) -> None:
        """
        A HELLO with another key claims C{peer}'s queue: ask the queue's
        owner to prove the session is its own.  The challenge (a random
        nonce, with the session's key) reaches only the consumer of that
        exclusive queue; a microservice answers it when the key is its own.
        An answer keeps the session; without one within C{challenge_timeout}
        the next HELLO for the queue replaces it (so someone who registered
        another's queue first cannot lock its owner out).  At most one
        challenge per C{challenge_timeout} per peer.
        """
        now = self.clock.seconds()
        if self.channel is None or now - peer.challenged_at < self.challenge_timeout:
            return
        peer.challenge = secrets.token_hex(16).encode()
        peer.challenged_at = now
        self._send(self.channel, peer.queue, peer.challenge, pika.BasicProperties(
            type=CHALLENGE_TYPE, reply_to=self.queue, user_id=self.user,
            headers={KEY_HEADER: peer.key} if peer.key else None), "challenge")

    def _failed_challenge(self, peer: AMQPPeer) -> bool:
        return (peer.challenge is not None
                and self.clock.seconds() - peer.challenged_at >= self.challenge_timeout)

    def challenge_message(self, properties: Any, body: bytes) -> None:
        peer = self.peers.get(properties.reply_to or "")
        if (properties.type != CHALLENGE_ANSWER_TYPE or peer is None or peer.challenge is None
                or not peer.owns(properties)
                or not hmac.compare_digest(body, peer.challenge)):
            self.drop("forged", properties.reply_to, "challenge answer")
            return
        peer.challenge = None
        peer.last_seen = self.clock.seconds()
        self.log.warn("the microservice at {queue} answered a challenge: a HELLO with another "
                      "key for its queue was forged", queue=peer.queue)

    def _ask_for_hello(self, queue: str, frame: Frame, key: Optional[str]) -> None:
        """
        Tell the sender of a frame from a queue we have no peer for (we
        restarted, or forgot it) to start a new session: a HELLO answer
        C{accepted: false, hello_again: true} under that frame's id.
        """
        answer = HelloAck(False, f"gateway {self.node_id} has no session for {queue}; "
                          "send HELLO again", self.node_id, hello_again=True)
        self.publish(queue, Frame(FrameType.HELLO, frame.correlation_id,
                                  encode_hello_ack(answer)), key)


def _is_goodbye(payload: bytes) -> bool:
    try:
        return bool(json.loads(payload).get("goodbye"))
    except (ValueError, AttributeError, UnicodeDecodeError):
        return False


@implementer(ITransportClient, IFrameSender)
class AMQPTransportClient(_Node):
    """
    The microservice side: consumes its own queue and talks to one gateway
    node's queue; a fresh receiver (session) after every reconnect and
    after silence.
    """

    transport_type = TransportType.RABBITMQ
    peer_identity: Tuple[str, ...] = ()

    def __init__(self, reactor: Any, address: str, receiver_factory: ReceiverFactory,
                 idle_timeout: float = 90.0, hello_retry: float = 1.0,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
                 hello_retry_max: float = 5.0, **backoff: Any) -> None:
        """
        @param hello_retry: resend an unanswered HELLO after this long
            (doubling up to C{hello_retry_max}): the gateway's queue may not
            exist yet.
        @param hello_retry_max: the longest wait between two HELLOs; a HELLO
            nobody takes comes straight back from the broker, so resending
            costs little, and a gateway that comes back after a long outage
            has the microservice within this long.
        """
        options = parse_amqp_address(address, gateway_required=True)
        super().__init__(reactor, address,
                         f"{SERVICE_QUEUE_PREFIX}{uuid.uuid4().hex[:12]}", True, max_frame_bytes,
                         **backoff)
        self.target = gateway_queue(options["gateway"])
        self.peer = f"amqp:{self.target}"
        #: This process's key: in every message we send, required in every
        #: message we accept (the gateway sends it back).
        self.key = secrets.token_hex(16)
        self._answered = False
        self.receiver_factory = receiver_factory
        self.idle_timeout = idle_timeout
        self.receiver: Optional[IFrameReceiver] = None
        self._idle: Optional[IDelayedCall] = None
        self.hello_retry = hello_retry
        self.hello_retry_max = hello_retry_max
        self._hello: Optional[Frame] = None
        self._hello_call: Optional[IDelayedCall] = None
        self._hello_delay = hello_retry

    def start(self) -> None:
        self.service.startService()

    def stop(self) -> Deferred:
        if self.receiver is not None and self.channel is not None:
            self.publish(self.target, Frame(FrameType.HEARTBEAT, new_correlation_id(),
                                            json.dumps({"goodbye": True}).encode()), self.key)
        self._end_session("stopped")
        return self.service.stopService()

    # link events

    def opened(self) -> None:
        self._new_session()

    def closed(self, reason: str) -> None:
        self._end_session(reason)

    def received(self, frame: Frame, properties: Any) -> None:
        if not same_key(message_key(properties), self.key):
            self.drop_forged(frame, properties)
            return
        if self.receiver is None:
            return
        self._touch()
        if (frame.type is FrameType.HELLO and self._hello is not None
                and frame.correlation_id == self._hello.correlation_id):
            self._hello = None
            self._answered = True
            self._cancel_hello()
        self.receiver.frameReceived(frame)

    def challenge_message(self, properties: Any, body: bytes) -> None:
        if properties.type != CHALLENGE_TYPE or not same_key(message_key(properties), self.key):
            self.drop("forged", properties.reply_to, "challenge")
            return
        if self.channel is not None:
            self._send(self.channel, self.target, body, pika.BasicProperties(
                type=CHALLENGE_ANSWER_TYPE, reply_to=self.queue, user_id=self.user,
                headers={KEY_HEADER: self.key}), "challenge answer")

    def returned(self, target: str, properties: Any) -> None:
        if target != self.target or self.receiver is None or properties.type == _HELLO_TYPE:
            # A HELLO nobody took is sent again until a gateway answers.
            return
        if not self._answered:
            # From before this session's HELLO was answered: an older one's.
            return
        self.log.warn("the queue of gateway {peer} is gone (it stopped or restarted); "
                      "starting a new session", peer=self.peer)
        self.close("the gateway's queue is gone")

    # IFrameSender

    def sendFrame(self, frame: Frame) -> None:
        if self.receiver is not None:
            if frame.type is FrameType.HELLO and self._hello is None:
                self._hello = frame
                self._hello_delay = self.hello_retry
                self._hello_call = self.clock.callLater(self._hello_delay, self._resend_hello)
            self.publish(self.target, frame, self.key)

    def _resend_hello(self) -> None:
        self._hello_call = None
        if self._hello is None or self.receiver is None:
            return
        self.log.info("HELLO to {peer} not answered; sending it again", peer=self.peer)
        self.publish(self.target, self._hello, self.key)
        self._hello_delay = min(self._hello_delay * 2, self.hello_retry_max)
        self._hello_call = self.clock.callLater(self._hello_delay, self._resend_hello)

    def _cancel_hello(self) -> None:
        if self._hello_call is not None and self._hello_call.active():
            self._hello_call.cancel()
        self._hello_call = None

    def close(self, reason: str) -> None:
        self._end_session(reason)
        if self.channel is not None:
            self._new_session()

    # sessions

    def _new_session(self) -> None:
        self._answered = False
        self.receiver = self.receiver_factory()
        self._touch()
        self.receiver.connectionOpened(self)

    def _end_session(self, reason: str) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None
        self._hello = None
        self._cancel_hello()
        receiver, self.receiver = self.receiver, None
        if receiver is not None:
            receiver.connectionClosed(reason)

    def _touch(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = self.clock.callLater(self.idle_timeout, self._silent)

    def _silent(self) -> None:
        self._idle = None
        self.log.warn("nothing heard from {peer} for {timeout:g}s; starting over",
                      peer=self.peer, timeout=self.idle_timeout)
        self.close(f"nothing heard from the gateway for {self.idle_timeout:g}s")


def amqp_server(reactor: Any, listen: str, receiver_factory: ReceiverFactory, node_id: str,
                idle_timeout: float = 90.0, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
                probe_interval: float = 0.5, challenge_timeout: float = 2.0,
                **backoff: Any) -> AMQPTransportServer:
    """
    A RabbitMQ L{ITransportServer} for gateway node C{node_id}.
    """
    return AMQPTransportServer(reactor, listen, receiver_factory, node_id, idle_timeout,
                               max_frame_bytes, probe_interval, challenge_timeout, **backoff)


def amqp_client(reactor: Any, address: str, receiver_factory: ReceiverFactory,
                idle_timeout: float = 90.0, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
                **backoff: Any) -> AMQPTransportClient:
    """
    A RabbitMQ L{ITransportClient} (C{address} names the gateway node).
    """
    return AMQPTransportClient(reactor, address, receiver_factory, idle_timeout,
                               max_frame_bytes=max_frame_bytes, **backoff)


__all__ = ["AMQPTransportClient", "AMQPTransportServer", "CHALLENGE_ANSWER_TYPE", "CHALLENGE_TYPE",
           "EXCHANGE", "KEY_HEADER", "PROBE_TYPE",
           "SERVICE_QUEUE_PREFIX", "amqp_client", "amqp_server", "gateway_queue", "message_key", "same_key"]
