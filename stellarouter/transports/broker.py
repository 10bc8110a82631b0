"""
What both sides of the RabbitMQ transport share: one broker connection
(L{BrokerConnection}) kept alive across broker restarts, one consumed queue
(L{BrokerQueue}), and how a frame becomes a message and back (type in the
C{type} property, correlation id in C{correlation_id}, the sender's queue in
C{reply_to}, the sender's key in the C{stella-key} header, the broker user in
C{user_id}).  The gateway and microservice sides are in C{amqp.py}.

A connection attempt that fails (the broker unreachable, or the broker
refusing the login or the virtual host) is explained in one log line naming
the transport's configuration key, its address (password shown as C{***})
and the broker's reason (L{explain_failure}); the lines are rate-limited and
the attempts back off exponentially up to C{max_delay} (the count of
failures resets only once a link is ready, not when a TCP connection is
made, as C{ClientService}'s own count would).
"""

from __future__ import annotations

import hmac
import os
import random
import time
from typing import Callable, Dict, Optional, Tuple, cast

import pika
from pika.adapters.twisted_connection import (
    ReceivedMessage, TwistedChannel, TwistedProtocolConnection)
from pika.exceptions import (
    AuthenticationError, ConnectionClosedByBroker, ProbableAccessDeniedError,
    ProbableAuthenticationError)
from twisted.application.internet import ClientService
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import (
    IDelayedCall, IProtocol, IProtocolFactory, IReactorTime, IStreamClientEndpoint)
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..common.addresses import parse_amqp_address
from ..common.enums import FrameType
from ..common.errors import MalformedPayload
from ..common.frames import DEFAULT_MAX_FRAME_BYTES, FRAME_OVERHEAD
from ..common.ids import CorrelationId
from ..common.interfaces import IFrameReceiver
from ..common.models import Frame
from ..common.payloads import decode_request
from ..common.redaction import redact_text
from .flush import unsent_bytes
from .hello import HelloBackoff
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


class HandshakeTimeout(Exception):
    """
    The broker accepted the TCP connection but did not complete the AMQP
    handshake in time.
    """

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no AMQP handshake within {seconds:g}s")
        self.seconds = seconds


class QueueSetupTimeout(Exception):
    """
    The broker completed the AMQP handshake but did not open the channel,
    declare, bind and consume the queue in time.
    """

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no queue set up within {seconds:g}s")
        self.seconds = seconds


class BrokerRefused(Exception):
    """
    The broker refused the login (wrong user or password) or the virtual
    host: retrying alone does not heal it.
    """


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def explain_failure(error: BaseException, broker: str) -> Tuple[str, bool]:
    """
    Why a connection attempt failed, for an operator, and whether the
    broker refused us (as opposed to being unreachable, which heals).

    @param error: the broker's C{Connection.Close}
        (L{ConnectionClosedByBroker}), pika's guess when the broker closed
        without one, or the TCP failure.
    @param broker: its C{host:port}.
    @return: C{(reason, refused)}.
    """
    login = "wrong user or password?"
    vhost = "the virtual host does not exist or the user has no permission on it?"
    if isinstance(error, ConnectionClosedByBroker):
        said = f"{error.reply_code} {_one_line(Exception(error.reply_text))}"
        if error.reply_code == 403:
            return f"the broker at {broker} refused the login ({said}): {login}", True
        if error.reply_code == 530:
            return f"the broker at {broker} refused the virtual host ({said}): {vhost}", True
        return f"the broker at {broker} closed the connection ({said})", False
    if isinstance(error, (AuthenticationError, ProbableAuthenticationError)):
        return f"the broker at {broker} refused the login ({_one_line(error)}): {login}", True
    if isinstance(error, ProbableAccessDeniedError):
        return (f"the broker at {broker} refused the virtual host ({_one_line(error)}): "
                f"{vhost}", True)
    if isinstance(error, ConnectError):
        return f"the broker at {broker} is unreachable ({_one_line(error)})", False
    if isinstance(error, HandshakeTimeout):
        return (f"the broker at {broker} accepted the connection but did not complete the AMQP "
                f"handshake within {error.seconds:g}s (an AMQP 0-9-1 broker at that address? "
                f"overloaded?)", False)
    if isinstance(error, QueueSetupTimeout):
        return (f"the broker at {broker} completed the AMQP handshake but did not set up the "
                f"queue within {error.seconds:g}s of the connection (overloaded?)", False)
    return (f"the connection to the broker at {broker} closed before the AMQP handshake ended "
            f"({_one_line(error)})", False)


def _broker_close(link: TwistedProtocolConnection) -> Optional[ConnectionClosedByBroker]:
    """
    The broker's C{Connection.Close} on a connection still opening, if it
    sent one.  pika 1.4's Twisted adapter replaces it with the TCP close
    (C{ConnectionDone}) before telling anyone, so it is read off the
    connection object before that (pinned by
    C{tests/integration/test_rabbitmq_refused.py}).
    """
    error = getattr(getattr(link, "_impl", None), "_error", None)
    return error if isinstance(error, ConnectionClosedByBroker) else None


@implementer(IStreamClientEndpoint)
class BrokerEndpoint:
    """
    The broker's TCP endpoint, telling its owner why a connection attempt
    failed (C{ClientService} only says it will retry).
    """

    def __init__(self, endpoint: IStreamClientEndpoint, host: str, port: str,
                 failed: Callable[[BaseException], None]) -> None:
        self.endpoint = endpoint
        self.address = f"{host}:{port}"
        self.failed = failed

    def connect(self, protocolFactory: IProtocolFactory) -> "Deferred[IProtocol]":
        def report(failure: Failure) -> Failure:
            if not failure.check(CancelledError):
                self.failed(cast(BaseException, failure.value))
            return failure
        return self.endpoint.connect(protocolFactory).addErrback(report)

    def __repr__(self) -> str:
        # Named in ClientService's "Scheduling retry N to connect ..." lines.
        return f"<the AMQP broker at {self.address}>"


class BrokerConnection(TwistedProtocolConnection):
    """
    One broker connection; tells its owner when it is usable, why it could
    not be opened, and when it is gone.
    """

    def __init__(self, parameters: pika.ConnectionParameters, owner: "BrokerQueue") -> None:
        super().__init__(parameters)
        self.owner = owner
        #: Why the connection ended while still opening.
        self.failure: Optional[BaseException] = None
        #: Ends the attempt if the AMQP handshake is not done in time.
        self._handshake_timer: Optional[IDelayedCall] = None
        # pika fails C{ready} (with a bare "AMQPConnectionError: 1") when
        # the connection ends before it is open: tell the owner why instead
        # of leaving an unhandled error in a Deferred.
        if self.ready is not None:
            self.ready.addErrback(self._not_opened)

    def _not_opened(self, failure: Failure) -> None:
        self.owner.open_failed(
            self.failure if self.failure is not None else cast(BaseException, failure.value))

    def connectionMade(self) -> None:
        # A broker (or anything else listening there) that accepts TCP and
        # then stays silent would hold the attempt forever: ClientService
        # only retries once the connection is lost.
        self._handshake_timer = self.owner.clock.callLater(
            self.owner.handshake_timeout, self._handshake_overdue)

    def _handshake_overdue(self) -> None:
        self._handshake_timer = None
        seconds = self.owner.handshake_timeout
        if self.ready is None:
            # The handshake is done; the queue's setup stalled.  (pika's
            # C{ready} has fired: the owner is told here, not by it.)
            self.failure = QueueSetupTimeout(seconds)
            self.owner.open_failed(self.failure)
        else:
            self.failure = HandshakeTimeout(seconds)
        self.transport.abortConnection()  # (then connectionLost, and a retry)

    def set_up(self) -> None:
        """
        The queue is consumed: the link is open, in time.
        """
        self._stop_handshake_timer()

    def _stop_handshake_timer(self) -> None:
        timer = self._handshake_timer
        if timer is not None and timer.active():
            timer.cancel()
        self._handshake_timer = None

    def connectionReady(self) -> object:
        # (The timer runs on until the queue is consumed: L{set_up}.)
        result = super().connectionReady()
        Deferred.fromCoroutine(self.owner.link_ready(self)).addErrback(
            self.owner.setup_failed, self)
        return result

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        self._stop_handshake_timer()
        if self.ready is not None and self.failure is None:
            # Still opening: the broker's own reason if it gave one.
            self.failure = _broker_close(self) or reason.value
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
    #: Seconds from the TCP connection to the end of the AMQP handshake
    #: (RabbitMQ's own C{handshake_timeout} is 10 s); past it the attempt is
    #: abandoned and retried with backoff.
    handshake_timeout = 10.0

    def __init__(self, reactor: IReactorTime, address: str, queue: str, gateway_required: bool,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
                 initial_delay: float = 0.5, max_delay: float = 30.0,
                 jitter: Optional[Callable[[], float]] = None,
                 config_key: str = "rabbitmq") -> None:
        """
        @param config_key: the configuration key of this transport
            (C{transports[0]}, C{routers[1]}), named in its log lines.
        """
        self.reactor = reactor
        self.max_frame_bytes = max_frame_bytes
        self.clock: IReactorTime = reactor
        self.options = parse_amqp_address(address, gateway_required)
        self.user = self.options["user"]
        self.queue = queue
        self.channel: Optional[TwistedChannel] = None
        self.link: Optional[BrokerConnection] = None
        #: C{transports[0] (amqp:host=...:password=***...)}: what log lines name.
        self.described = f"{config_key} ({redact_text(address)})"
        #: Connection attempts failed since a link was last ready.
        self.failed_attempts = 0
        #: Whether a link was ever ready.
        self.ever_opened = False
        #: Whether this side stopped it (L{stop}).
        self.stopped = False
        self._last_reason: Optional[str] = None
        DropCounting.__init__(self)
        factory = Factory.forProtocol(
            lambda: BrokerConnection(_parameters(self.options, queue), self))
        # The failures count until a link is ready: ClientService's own
        # count restarts whenever TCP connects, so a broker refusing the
        # login had us retry at the initial delay forever.  (Factor 1.5, as
        # ClientService's default policy we used before.)
        self.backoff = HelloBackoff(initial_delay, max_delay, 1.5,
                                    jitter or (lambda: random.uniform(0, 0.5)))
        endpoint = TCP4ClientEndpoint(reactor, self.options["host"], int(self.options["port"]))
        self.service = ClientService(
            BrokerEndpoint(endpoint, self.options["host"], self.options["port"],
                           self.open_failed),
            factory, retryPolicy=self.backoff, clock=reactor)

    def open_failed(self, error: BaseException) -> None:
        """
        A connection attempt failed (TCP, or the AMQP handshake): log why
        (the 1st, 2nd, 4th, 8th... failure in a row, and whenever the reason
        changes) unless the side reports it as a start-up failure
        (L{refusal_stops_start}), then tell the side (L{attempt_failed}).
        """
        reason, refused = explain_failure(
            error, f"{self.options['host']}:{self.options['port']}")
        self.failed_attempts += 1
        count = self.failed_attempts
        reported_by_side = refused and self.refusal_stops_start()
        # (An attempt ended by our own stop is not worth a warning that
        # says it is retried: it is not.)
        if not reported_by_side and not self.stopped and (
                reason != self._last_reason or count & (count - 1) == 0):
            self._last_reason = reason
            emit = self.log.error if refused else self.log.warn
            emit("{transport}: cannot open the AMQP link: {reason}; {count} failed "
                 "attempt(s) in a row, retrying with backoff (at most {max_delay:g}s apart)",
                 transport=self.described, reason=reason, count=count,
                 max_delay=self.backoff.max_delay)
        self.attempt_failed(reason, refused)

    async def link_ready(self, link: BrokerConnection) -> None:
        channel = await link.channel()
        channel.add_on_return_callback(self._returned)
        await channel.exchange_declare(exchange=EXCHANGE, exchange_type="direct")
        await channel.queue_declare(queue=self.queue, exclusive=True, auto_delete=True)
        await channel.queue_bind(queue=self.queue, exchange=EXCHANGE, routing_key=self.queue)
        messages, _ = await channel.basic_consume(queue=self.queue, auto_ack=True)
        link.set_up()
        self.channel, self.link = channel, link
        self.log.info("AMQP link to {host}:{port} ready; consuming {queue}{after}",
                      host=self.options["host"], port=self.options["port"], queue=self.queue,
                      after=f" (after {self.failed_attempts} failed attempt(s))"
                      if self.failed_attempts else "")
        self.backoff.accepted()
        self.failed_attempts, self._last_reason, self.ever_opened = 0, None, True
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
        if isinstance(link.failure, QueueSetupTimeout):
            return  # (reported as a failed attempt, and the connection is cut)
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

    def refusal_stops_start(self) -> bool:
        """
        Whether a refused login or virtual host now is a start-up failure,
        reported by the side (L{attempt_failed}) instead of logged here.
        """
        return False

    def attempt_failed(self, reason: str, refused: bool) -> None:
        """
        A connection attempt failed (logged unless L{refusal_stops_start}):
        C{refused} when the broker refused the login or the virtual host.
        """

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


__all__ = ["BrokerConnection", "BrokerEndpoint", "BrokerQueue", "BrokerRefused",
           "CHALLENGE_ANSWER_TYPE", "CHALLENGE_TYPE", "DEFAULT_PORT", "EXCHANGE", "KEY_HEADER",
           "PROBE_TYPE", "SERVICE_QUEUE_PREFIX", "explain_failure", "gateway_queue",
           "message_key", "same_key"]
