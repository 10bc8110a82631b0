"""
The RabbitMQ transport (AMQP 0-9-1, with pika's Twisted adapter; the choice
and its evidence are in C{docs/router/decisions.md}): the gateway side
(L{AMQPTransportServer}, its peers in the shared L{PeerTable}) and the
microservice side (L{AMQPTransportClient}, its sessions a L{ClientSession});
the broker connection and the frame-to-message mapping both use are in
C{broker.py}.

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

Start-up: a broker that refuses the login or the virtual host at the
first attempt is a start-up failure (L{AMQPTransportServer.start} fails;
the microservice's L{AMQPTransportClient.on_refused_at_start} is called);
a broker that is unreachable is not: the gateway starts without it (its
other listeners serve) and both sides keep retrying with backoff.  A
refusal after that (the password changed on the broker) is retried with
the same backoff, logged as an error (C{broker.py}).
"""

from __future__ import annotations

import hmac
import json
import secrets
import uuid
from typing import TYPE_CHECKING, Callable, Optional, Tuple

import pika
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from zope.interface import implementer

from ..common.addresses import parse_amqp_address
from ..common.enums import FrameType, TransportType
from ..common.frames import DEFAULT_MAX_FRAME_BYTES
from ..common.ids import CorrelationId, new_correlation_id
from ..common.interfaces import IFrameReceiver, IFrameSender, ITransportClient, ITransportServer
from ..common.models import Frame
from ..common.payloads import HelloAck, encode_hello_ack
from .broker import (
    CHALLENGE_ANSWER_TYPE,
    CHALLENGE_TYPE,
    DEFAULT_PORT,
    EXCHANGE,
    KEY_HEADER,
    PROBE_TYPE,
    SERVICE_QUEUE_PREFIX,
    BrokerQueue,
    BrokerRefused,
    gateway_queue,
    message_key,
    same_key,
)
from .hello import Backoff, HelloRetry
from .peers import Peer, PeerTable
from .session import ClientSession

if TYPE_CHECKING:
    from typing_extensions import Unpack

ReceiverFactory = Callable[[], IFrameReceiver]
_HELLO_TYPE = str(int(FrameType.HELLO))


def _busy(receiver: IFrameReceiver) -> bool:
    """
    Whether a receiver awaits answers (the gateway's connection has requests
    in C{in_flight}).
    """
    return len(getattr(receiver, "in_flight", ())) > 0


@implementer(IFrameSender)
class AMQPPeer(Peer[str]):
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
        super().__init__(queue, receiver, server.clock.seconds())
        self.server = server
        self.queue = queue
        self.key = key
        self.user_id = user_id
        self.peer = f"amqp:{queue}"
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

    def owns(self, properties: pika.BasicProperties) -> bool:
        """
        Whether a message comes from the session that registered this peer:
        same key, same (broker-checked) C{user_id}.
        """
        return (same_key(message_key(properties), self.key)
                and (properties.user_id or None) == self.user_id)

    def close(self, reason: str) -> None:
        self.server.forget(self, reason)


@implementer(ITransportServer)
class AMQPTransportServer(BrokerQueue):
    """
    The gateway side: consumes C{stella.gw.<node_id>}; one L{AMQPPeer} per
    microservice queue.
    """

    transport_type = TransportType.RABBITMQ

    def __init__(self, reactor: IReactorTime, listen: str, receiver_factory: ReceiverFactory,
                 node_id: str, idle_timeout: float = 90.0,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES, probe_interval: float = 0.5,
                 challenge_timeout: float = 2.0, config_key: str = "rabbitmq",
                 **backoff: Unpack[Backoff]) -> None:
        """
        @param probe_interval: how often a peer with requests in flight that
            has said nothing for that long is probed (a probe comes back if
            its queue is gone).
        @param challenge_timeout: how long the owner of a peer's queue has
            to answer a challenge (L{challenge}).
        @param config_key: C{transports[i]}, named in log lines.
        """
        super().__init__(reactor, listen, gateway_queue(node_id), False, max_frame_bytes,
                         config_key=config_key, **backoff)
        self.node_id = node_id
        self.receiver_factory = receiver_factory
        self.idle_timeout = idle_timeout
        self.probe_interval = probe_interval
        self.challenge_timeout = challenge_timeout
        self.peers: PeerTable[str, AMQPPeer] = PeerTable(reactor, idle_timeout)
        self._prober = LoopingCall(self.probe_busy_peers)
        self._prober.clock = reactor
        self._ready: Optional[Deferred[str]] = None

    def start(self) -> Deferred[str]:
        """
        Connect to the broker.

        @return: a Deferred that fires with a description of the queue
            consumed once the first connection attempt is over: the link
            is ready, or the broker is unreachable (retried with backoff
            meanwhile; the gateway starts without it).  It fails with
            L{BrokerRefused} when the broker refused the login or the
            virtual host.
        """
        self._ready = Deferred()
        self.service.startService()
        self.peers.start()
        self._prober.start(self.probe_interval, now=False)
        return self._ready

    def _description(self) -> str:
        return f"rabbitmq:{self.options['host']}:{self.options['port']}/{self.queue}"

    def opened(self) -> None:
        if self._ready is not None and not self._ready.called:
            self._ready.callback(self._description())

    def refusal_stops_start(self) -> bool:
        return self._ready is not None and not self._ready.called

    def attempt_failed(self, reason: str, refused: bool) -> None:
        if self._ready is None or self._ready.called:
            return
        if refused:
            # The gateway stops, naming this listener (a StartupError).
            self._ready.errback(BrokerRefused(reason))
        else:
            # Unreachable: the gateway starts without the broker.
            self._ready.callback(self._description())

    def stop(self) -> Deferred[None]:
        if self._prober.running:
            self._prober.stop()
        self.report_drops()
        self.peers.stop("gateway transport stopping")
        self.stopped = True
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
        """
        Close the peers silent for C{idle_timeout}.
        """
        self.peers.sweep()

    def forget(self, peer: AMQPPeer, reason: str) -> None:
        """
        Close C{peer} (its receiver is told C{reason}).
        """
        self.peers.forget(peer, reason)

    def closed(self, reason: str) -> None:
        self.peers.close_all(reason)

    def returned(self, target: str, properties: pika.BasicProperties) -> None:
        peer = self.peers.get(target)
        if peer is not None:
            self.log.warn("the queue {queue} of a microservice is gone (its broker connection "
                          "closed); closing its peer", queue=target)
            self.forget(peer, "its queue is gone: the microservice's broker connection closed")

    def received(self, frame: Frame, properties: pika.BasicProperties) -> None:
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
            self.peers.add(peer)
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

    def challenge_message(self, properties: pika.BasicProperties, body: bytes) -> None:
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
class AMQPTransportClient(BrokerQueue):
    """
    The microservice side: consumes its own queue and talks to one gateway
    node's queue; a L{ClientSession} whose receiver is replaced after every
    reconnect and after silence.
    """

    transport_type = TransportType.RABBITMQ
    peer_identity: Tuple[str, ...] = ()

    def __init__(self, reactor: IReactorTime, address: str, receiver_factory: ReceiverFactory,
                 idle_timeout: float = 90.0, hello_retry: float = 1.0,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
                 hello_retry_max: float = 5.0, config_key: str = "rabbitmq",
                 **backoff: Unpack[Backoff]) -> None:
        """
        @param hello_retry: resend an unanswered HELLO after this long
            (doubling up to C{hello_retry_max}): the gateway's queue may not
            exist yet.
        @param hello_retry_max: the longest wait between two HELLOs; a HELLO
            nobody takes comes straight back from the broker, so resending
            costs little, and a gateway that comes back after a long outage
            has the microservice within this long.
        @param config_key: C{routers[i]}, named in log lines.
        """
        options = parse_amqp_address(address, gateway_required=True)
        super().__init__(reactor, address,
                         f"{SERVICE_QUEUE_PREFIX}{uuid.uuid4().hex[:12]}", True, max_frame_bytes,
                         config_key=config_key, **backoff)
        #: Called with the reason when the broker refused the login or the
        #: virtual host at the first connection attempt (the microservice
        #: sets it: a start-up failure); unset, that refusal is logged and
        #: retried like any other.
        self.on_refused_at_start: Optional[Callable[[str], None]] = None
        self.target = gateway_queue(options["gateway"])
        self.peer = f"amqp:{self.target}"
        #: This process's key: in every message we send, required in every
        #: message we accept (the gateway sends it back).
        self.key = secrets.token_hex(16)
        self.idle_timeout = idle_timeout
        self.hello_retry = hello_retry
        self.hello_retry_max = hello_retry_max
        self.session = ClientSession(
            reactor, receiver_factory, self, self._write,
            HelloRetry(reactor, self._write, hello_retry, hello_retry_max, peer=self.peer),
            idle_timeout, self.peer, can_reopen=lambda: self.channel is not None,
            fresh_backoff_per_session=True)

    @property
    def receiver(self) -> Optional[IFrameReceiver]:
        """
        The current session's receiver, if one is open.
        """
        return self.session.receiver

    def start(self) -> None:
        self.service.startService()

    def stop(self) -> Deferred[None]:
        if self.receiver is not None and self.channel is not None:
            self.publish(self.target, Frame(FrameType.HEARTBEAT, new_correlation_id(),
                                            json.dumps({"goodbye": True}).encode()), self.key)
        self.report_drops()
        self.session.close("stopped")
        self.stopped = True
        return self.service.stopService()

    # link events

    def opened(self) -> None:
        self.session.open()

    def closed(self, reason: str) -> None:
        self.session.close(reason)

    def refusal_stops_start(self) -> bool:
        return (self.on_refused_at_start is not None and self.failed_attempts == 1
                and not self.ever_opened)

    def attempt_failed(self, reason: str, refused: bool) -> None:
        if refused and self.on_refused_at_start is not None and self.refusal_stops_start():
            self.on_refused_at_start(reason)

    def received(self, frame: Frame, properties: pika.BasicProperties) -> None:
        if not same_key(message_key(properties), self.key):
            self.drop_forged(frame, properties)
            return
        if self.session.heard(frame):
            self.session.deliver(frame)

    def challenge_message(self, properties: pika.BasicProperties, body: bytes) -> None:
        if properties.type != CHALLENGE_TYPE or not same_key(message_key(properties), self.key):
            self.drop("forged", properties.reply_to, "challenge")
            return
        if self.channel is not None:
            self._send(self.channel, self.target, body, pika.BasicProperties(
                type=CHALLENGE_ANSWER_TYPE, reply_to=self.queue, user_id=self.user,
                headers={KEY_HEADER: self.key}), "challenge answer")

    def returned(self, target: str, properties: pika.BasicProperties) -> None:
        if target != self.target or self.receiver is None or properties.type == _HELLO_TYPE:
            # A HELLO nobody took is sent again until a gateway answers.
            return
        if not self.session.answered:
            # From before this session's HELLO was answered: an older one's.
            return
        self.log.warn("the queue of gateway {peer} is gone (it stopped or restarted); "
                      "starting a new session", peer=self.peer)
        self.close("the gateway's queue is gone")

    # IFrameSender

    def sendFrame(self, frame: Frame) -> None:
        self.session.send(frame)

    def close(self, reason: str) -> None:
        self.session.restart(reason)

    def _write(self, frame: Frame) -> None:
        self.publish(self.target, frame, self.key)


def amqp_server(reactor: IReactorTime, listen: str, receiver_factory: ReceiverFactory, node_id: str,
                idle_timeout: float = 90.0, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
                probe_interval: float = 0.5, challenge_timeout: float = 2.0,
                config_key: str = "rabbitmq",
                **backoff: Unpack[Backoff]) -> AMQPTransportServer:
    """
    A RabbitMQ L{ITransportServer} for gateway node C{node_id}.
    """
    return AMQPTransportServer(reactor, listen, receiver_factory, node_id, idle_timeout,
                               max_frame_bytes, probe_interval, challenge_timeout,
                               config_key=config_key, **backoff)


def amqp_client(reactor: IReactorTime, address: str, receiver_factory: ReceiverFactory,
                idle_timeout: float = 90.0, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
                hello_retry: float = 1.0, config_key: str = "rabbitmq",
                **backoff: Unpack[Backoff]) -> AMQPTransportClient:
    """
    A RabbitMQ L{ITransportClient} (C{address} names the gateway node).
    """
    return AMQPTransportClient(reactor, address, receiver_factory, idle_timeout,
                               hello_retry=hello_retry, max_frame_bytes=max_frame_bytes,
                               config_key=config_key, **backoff)


__all__ = ["AMQPPeer", "AMQPTransportClient", "AMQPTransportServer", "BrokerRefused",
           "CHALLENGE_ANSWER_TYPE", "CHALLENGE_TYPE", "DEFAULT_PORT", "EXCHANGE", "KEY_HEADER",
           "PROBE_TYPE", "SERVICE_QUEUE_PREFIX", "amqp_client", "amqp_server", "gateway_queue",
           "message_key", "same_key"]
