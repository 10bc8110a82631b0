"""
One microservice ↔ router connection, seen from the microservice: a
L{RouterSession} sends HELLO, heartbeats and ping echoes, hands REQUEST,
REQUEST_STREAM_DATA and CANCEL frames to its L{RequestDispatcher}, and
drains on request.  Its lifecycle is explicit (L{SessionState}: connecting,
HELLO sent, registered, draining, closed); an event that means nothing in
the current state (a frame before the connection opened or after it
closed, a second HELLO answer, a heartbeat to send before registration) is
logged and dropped, never an C{AttributeError}.
"""

from __future__ import annotations

from enum import Enum
from typing import Callable, Dict, Optional, Set, Tuple

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from ..common.enums import FrameType, InstanceHealthStatus
from ..common.errors import MalformedPayload
from ..common.frames import DEFAULT_MAX_FRAME_BYTES
from ..common.ids import CorrelationId, new_correlation_id
from ..common.interfaces import IFrameReceiver, IFrameSender
from ..common.models import EndpointDescriptor, Frame, InstanceDescriptor
from ..common.payloads import (
    COMPACT_HEADERS,
    RESPONSE_CREDIT,
    Heartbeat,
    Hello,
    HelloAck,
    decode_cancel_message,
    decode_heartbeat,
    decode_hello_ack,
    encode_heartbeat,
)
from ..common.schemas import ENDPOINT_SCHEMAS
from ..common.untrusted import shown_if_needed
from .admission import RequestAdmission
from .budget import ResponseStreamBudget
from .descriptions import fitting_hello, schemas_for
from .dispatcher import RequestDispatcher
from .endpoints import Microservice


class SessionState(Enum):
    """
    Where a L{RouterSession} is.

    @cvar CONNECTING: no connection yet.
    @cvar HELLO_SENT: connected, HELLO sent, no acceptance yet.
    @cvar REGISTERED: the gateway accepted the HELLO; heartbeats run.
    @cvar DRAINING: registered, and reporting DRAINING.
    @cvar CLOSED: the connection is gone (a new connection gets a new
        session).
    """

    # Hashed by identity, in C (Enum's own __hash__ is Python code): every
    # frame checks the state.
    __hash__ = object.__hash__

    CONNECTING = "connecting"
    HELLO_SENT = "HELLO sent"
    REGISTERED = "registered"
    DRAINING = "draining"
    CLOSED = "closed"


#: The most characters of a gateway's HELLO refusal logged.
MAX_REASON_CHARS = 1000

#: The states in which the gateway's frames are handled (a REQUEST may
#: overtake the HELLO answer on a datagram or message transport).
_OPEN = frozenset({SessionState.HELLO_SENT, SessionState.REGISTERED, SessionState.DRAINING})
#: The states in which heartbeats go out.
_BEATING = frozenset({SessionState.REGISTERED, SessionState.DRAINING})


@implementer(IFrameReceiver)
class RouterSession:
    """
    The microservice's receiver for one connection to one router.

    @ivar state: where the session is in its lifecycle.
    @ivar accepted: the gateway's HELLO answer, once received.
    @ivar status: what the heartbeats report (HEALTHY, or DRAINING; set
        before registration, it is reported from the first heartbeat).
    """

    log = Logger()

    #: Requests in flight at most on the connection; more are answered
    #: "not started" (C{max_concurrent_requests}; C{None}: no limit).
    max_concurrent_requests: Optional[int] = None

    def __init__(
        self,
        app: Microservice,
        instance: InstanceDescriptor,
        router: str,
        clock: IReactorTime,
        heartbeat_interval: float = 5.0,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        on_accepted: Optional[Callable[["RouterSession"], None]] = None,
        descriptors: Optional[Tuple[EndpointDescriptor, ...]] = None,
        can_stream: bool = True,
        compact_headers: bool = True,
        response_budget: Optional[ResponseStreamBudget] = None,
        on_rejected: Optional[Callable[["RouterSession", str], None]] = None,
        describe_endpoints: bool = True,
    ) -> None:
        """
        @param router: a description of the router, for the logs.
        @param compact_headers: announce in HELLO that this side reads
            compact REQUEST headers, and write compact RESPONSE headers when
            the gateway's answer says it reads them (C{False}: JSON headers
            both ways, readable in a packet capture).
        @param on_accepted: called once the gateway accepted the HELLO.
        @param on_rejected: called with the gateway's reason when it rejects
            the HELLO (it logs it); without it the session logs the reason.
        @param descriptors: the endpoints HELLO announces (default: the
            app's, without configuration overrides).
        @param response_budget: the process's budget for streamed response
            bytes, shared by all its sessions.
        @param describe_endpoints: describe the endpoints in HELLO (feature
            C{endpoint-schemas}, as much as fits in C{max_frame_bytes}).
        """
        self.describe_endpoints = describe_endpoints
        self.described = False
        self.response_budget = response_budget
        self.descriptors = descriptors if descriptors is not None else app.descriptors()
        self.can_stream = can_stream
        self.compact_headers = compact_headers
        self.app = app
        self.instance = instance
        self.router = router
        self.clock = clock
        self.heartbeat_interval = heartbeat_interval
        self.max_frame_bytes = max_frame_bytes
        self.on_accepted = on_accepted
        self.on_rejected = on_rejected
        self.sender: Optional[IFrameSender] = None
        self.dispatcher: Optional[RequestDispatcher] = None
        self.accepted: Optional[HelloAck] = None
        self.status = InstanceHealthStatus.HEALTHY
        self.state = SessionState.CONNECTING
        self._hello_id = new_correlation_id()
        self._heartbeat: Optional[LoopingCall] = None
        self._drain_ids: Set[CorrelationId] = set()
        self._drain_acked: Deferred[None] = Deferred()
        self._counted = (0, 0)
        self._warned_cancel = False
        #: What each kind of frame from the gateway goes to (filled in once
        #: the connection is open; any other kind closes the connection).
        self._frame_handlers: Dict[FrameType, Callable[[Frame], None]] = {}

    @property
    def closed(self) -> bool:
        """
        Whether the connection is gone.
        """
        return self.state is SessionState.CLOSED

    def _wrong_state(self, event: str) -> None:
        self.log.warn("{event} ignored: the session with router {router} is {state}",
                      event=event, router=self.router, state=self.state.value)

    def connectionOpened(self, sender: IFrameSender) -> None:
        if self.state is not SessionState.CONNECTING:
            self._wrong_state("connection opened")
            return
        self.state = SessionState.HELLO_SENT
        self.sender = sender
        dispatcher = self.dispatcher = RequestDispatcher(
            self.app, sender, self.clock, self.max_frame_bytes, instance=self.instance,
            can_stream=self.can_stream, response_budget=self.response_budget)
        dispatcher.endpoint_timeouts = {  # issue 25: the streams' idle timeout
            (d.method, d.path): d.default_timeout for d in self.descriptors}
        # Issue 24: whether a REQUEST may start (draining, concurrency).
        dispatcher.admission = RequestAdmission(self.max_concurrent_requests)
        dispatcher.admission.draining = self.status is InstanceHealthStatus.DRAINING
        self._frame_handlers = {
            FrameType.REQUEST: dispatcher.request_received,
            FrameType.REQUEST_STREAM_DATA: dispatcher.stream_data_received,
            FrameType.CANCEL: self._cancel_received,
            FrameType.HEARTBEAT: self._heartbeat_received,
            FrameType.HELLO: self._hello_answered,
        }
        hello = Hello(self.instance, self.descriptors, self.heartbeat_interval,
                      ((COMPACT_HEADERS,) if self.compact_headers else ())
                      + ((RESPONSE_CREDIT,) if self.can_stream else ()))
        self.log.info(
            "connected to router {router}; sending HELLO for {service} {version} "
            "({count} endpoints)", router=self.router, service=self.app.name,
            version=self.app.version, count=len(hello.endpoints),
        )
        schemas = schemas_for(self.app, self.descriptors) if self.describe_endpoints else None
        sender.sendFrame(Frame(FrameType.HELLO, self._hello_id, fitting_hello(
            hello, schemas, self.max_frame_bytes, f"HELLO to router {self.router}")))

    def frameReceived(self, frame: Frame) -> None:
        if self.state not in _OPEN:
            self._wrong_state(f"{frame.type.name} frame {frame.correlation_id}")
            return
        handler = self._frame_handlers.get(frame.type)
        if handler is None:
            self.log.warn("unexpected {kind} frame from router {router}; closing",
                          kind=frame.type.name, router=self.router)
            self._connection().close(f"unexpected {frame.type.name} frame from the gateway")
            return
        handler(frame)

    def _connection(self) -> IFrameSender:
        sender = self.sender
        assert sender is not None, "no connection before connectionOpened"
        return sender

    def _cancel_received(self, frame: Frame) -> None:
        try:
            cancel = decode_cancel_message(frame.payload)
        except MalformedPayload as e:
            if not self._warned_cancel:
                self._warned_cancel = True
                self.log.warn("malformed CANCEL {cid} ignored (said once per "
                              "connection): {error}", cid=frame.correlation_id, error=e)
            return
        assert self.dispatcher is not None
        if cancel.head_only:
            self.dispatcher.head_answered(frame.correlation_id, cancel.reason)
        else:
            self.dispatcher.cancel(frame.correlation_id, cancel.reason)

    def _heartbeat_received(self, frame: Frame) -> None:
        if frame.correlation_id in self._drain_ids:
            # The gateway saw our DRAINING report: it sends no new request.
            if not self._drain_acked.called:
                self._drain_acked.callback(None)
            return
        try:
            beat = decode_heartbeat(frame.payload)
        except MalformedPayload as e:
            self.log.warn("malformed HEARTBEAT from {router} ignored: {error}",
                          router=self.router, error=e)
            return
        if beat.ping is not None:
            # A gateway ping: echo it unchanged, same correlation id.
            self._connection().sendFrame(frame)
        elif beat.status is InstanceHealthStatus.DRAINING:
            self._drain_asked()

    def _drain_asked(self) -> None:
        """
        The gateway asks this instance to drain (an operator drained it in
        the admin API): report DRAINING on this connection from now on (the
        gateway acknowledges, as on SIGTERM); the connection stays open.
        """
        if self.status is InstanceHealthStatus.DRAINING:
            return
        self.log.warn("router {router} asks {instance_id} to drain (an operator drained it): "
                      "reporting DRAINING to it from now on; stop this instance when its "
                      "requests are done", router=self.router,
                      instance_id=self.instance.instance_id)
        self.status = InstanceHealthStatus.DRAINING
        if self.state is SessionState.REGISTERED:
            self.state = SessionState.DRAINING
        if self.state is SessionState.DRAINING:
            self.send_heartbeat()

    def _hello_answered(self, frame: Frame) -> None:
        sender = self._connection()
        dispatcher = self.dispatcher
        assert dispatcher is not None
        try:
            ack = decode_hello_ack(frame.payload)
        except MalformedPayload as e:
            self.log.warn("malformed HELLO answer from {router}: {error}",
                          router=self.router, error=e)
            sender.close("malformed HELLO answer")
            return
        if not ack.accepted and ack.hello_again:
            if self.state in _BEATING:
                # A message transport's gateway that restarted, or forgot us.
                self.log.warn("gateway {node} at {router} has no session for us (it restarted?); "
                              "sending HELLO again", node=ack.node_id, router=self.router)
                sender.close("the gateway asked for a new HELLO")
            # (Before our HELLO is answered: it answers a frame of an older
            # session; ours is on its way.)
            return
        if not ack.accepted:
            # (The gateway escapes what it quotes; a peer that is not one of
            # ours must not write raw control characters into our log.)
            reason = shown_if_needed(ack.reason or "no reason given", MAX_REASON_CHARS)
            if self.on_rejected is not None:
                self.on_rejected(self, reason)
                return
            self.log.error(
                "router {router} rejected HELLO of {service} {version}: {reason}",
                router=self.router, service=self.app.name, version=self.app.version,
                reason=reason,
            )
            return
        if self.state is not SessionState.HELLO_SENT:
            # The answer to a HELLO sent again (a datagram or message
            # transport resends until answered): registered already.
            self._wrong_state("a second HELLO acceptance")
            return
        self.accepted = ack
        self.state = (SessionState.DRAINING if self.status is InstanceHealthStatus.DRAINING
                      else SessionState.REGISTERED)
        dispatcher.compact_headers = self.compact_headers and COMPACT_HEADERS in ack.features
        dispatcher.response_credit = self.can_stream and RESPONSE_CREDIT in ack.features
        # The gateway kept the endpoint descriptions (for its OpenAPI document).
        self.described = ENDPOINT_SCHEMAS in ack.features
        self.log.info(
            "registered with gateway {node} (region {region}) at {router} as {instance_id}",
            node=ack.node_id, region=ack.region, router=self.router,
            instance_id=self.instance.instance_id,
        )
        self._heartbeat = LoopingCall(self.send_heartbeat)
        self._heartbeat.clock = self.clock
        self._heartbeat.start(self.heartbeat_interval, now=False)
        if self.state is SessionState.DRAINING:
            self.send_heartbeat()
        if self.on_accepted is not None:
            self.on_accepted(self)

    def send_heartbeat(self) -> None:
        """
        Report status, requests in flight and the error rate since the last
        report.
        """
        if self.state not in _BEATING or self.sender is None or self.dispatcher is None:
            self._wrong_state("heartbeat")
            return
        served, failed = self.dispatcher.served, self.dispatcher.failed
        done = (served - self._counted[0]) + (failed - self._counted[1])
        error_rate = (failed - self._counted[1]) / done if done else 0.0
        self._counted = (served, failed)
        cid = new_correlation_id()
        if self.status is InstanceHealthStatus.DRAINING:
            self._drain_ids.add(cid)
        beat = Heartbeat(self.instance.instance_id, self.status, self.dispatcher.in_flight,
                         error_rate)
        self.sender.sendFrame(Frame(FrameType.HEARTBEAT, cid, encode_heartbeat(beat)))

    def drain(self) -> Deferred[None]:
        """
        Report DRAINING now; fires when the gateway has acknowledged it (so
        no new request will come) and no request is in flight.  A session not
        (yet) registered is done at once (it reports DRAINING from its
        first heartbeat if it gets that far).
        """
        self.status = InstanceHealthStatus.DRAINING
        if self.dispatcher is not None:
            # Requests already on their way are answered "not started".
            self.dispatcher.admission.draining = True
        dispatcher = self.dispatcher
        if self.state not in _BEATING or dispatcher is None:
            return succeed(None)
        self.state = SessionState.DRAINING
        self.send_heartbeat()

        async def drained() -> None:
            await self._drain_acked
            await dispatcher.when_idle()

        return Deferred.fromCoroutine(drained())

    def connectionClosed(self, reason: str) -> None:
        if self.state is SessionState.CLOSED:
            self._wrong_state("connection closed")
            return
        self.state = SessionState.CLOSED
        if self._heartbeat is not None and self._heartbeat.running:
            self._heartbeat.stop()
        if self.dispatcher is not None:
            self.dispatcher.connection_lost()
        if not self._drain_acked.called:
            self._drain_acked.callback(None)
        self.log.info("connection to router {router} closed: {reason}",
                      router=self.router, reason=reason)


__all__ = ["RouterSession", "SessionState"]
