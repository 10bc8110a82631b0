"""
One microservice ↔ router connection, seen from the microservice: sends
HELLO, heartbeats and ping echoes, hands REQUEST and CANCEL frames to the
dispatcher, and drains on request.
"""

from __future__ import annotations

from typing import Callable, Optional, Set, Tuple

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
    decode_cancel,
    decode_heartbeat,
    decode_hello_ack,
    encode_heartbeat,
)
from ..common.schemas import ENDPOINT_SCHEMAS
from .budget import ResponseStreamBudget
from .descriptions import fitting_hello, schemas_for
from .dispatcher import RequestDispatcher
from .endpoints import Microservice

# A member read from an enum class goes through the enum metaclass (about
# 60 ns on Python 3.11, against a few for a global): the frame type every
# request has is read once, here.
_REQUEST = FrameType.REQUEST


@implementer(IFrameReceiver)
class RouterSession:
    """
    The microservice's receiver for one connection to one router.

    @ivar accepted: the gateway's HELLO answer, once received.
    @ivar status: what the heartbeats report (HEALTHY, or DRAINING).
    """

    log = Logger()

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
        self.closed = False
        self._hello_id = new_correlation_id()
        self._heartbeat: Optional[LoopingCall] = None
        self._drain_ids: Set[CorrelationId] = set()
        self._drain_acked: Deferred = Deferred()
        self._counted = (0, 0)
        self._warned_cancel = False

    def connectionOpened(self, sender: IFrameSender) -> None:
        self.sender = sender
        self.dispatcher = RequestDispatcher(self.app, sender, self.clock, self.max_frame_bytes,
                                            instance=self.instance, can_stream=self.can_stream,
                                            response_budget=self.response_budget)
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
        assert self.dispatcher is not None and self.sender is not None
        kind = frame.type
        if kind is _REQUEST:
            self.dispatcher.request_received(frame)
        elif kind is FrameType.CANCEL:
            try:
                reason = decode_cancel(frame.payload)
            except MalformedPayload as e:
                if not self._warned_cancel:
                    self._warned_cancel = True
                    self.log.warn("malformed CANCEL {cid} ignored (said once per "
                                  "connection): {error}", cid=frame.correlation_id, error=e)
                return
            self.dispatcher.cancel(frame.correlation_id, reason)
        elif kind is FrameType.REQUEST_STREAM_DATA:
            self.dispatcher.stream_data_received(frame)
        elif kind is FrameType.HEARTBEAT:
            self._heartbeat_received(frame)
        elif kind is FrameType.HELLO:
            self._hello_answered(frame)
        else:
            self.log.warn("unexpected {kind} frame from router {router}; closing",
                          kind=kind.name, router=self.router)
            self.sender.close(f"unexpected {kind.name} frame from the gateway")

    def _heartbeat_received(self, frame: Frame) -> None:
        assert self.sender is not None
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
            self.sender.sendFrame(frame)

    def _hello_answered(self, frame: Frame) -> None:
        assert self.sender is not None and self.dispatcher is not None
        try:
            ack = decode_hello_ack(frame.payload)
        except MalformedPayload as e:
            self.log.warn("malformed HELLO answer from {router}: {error}",
                          router=self.router, error=e)
            self.sender.close("malformed HELLO answer")
            return
        if not ack.accepted and ack.hello_again:
            if self.accepted is not None:
                # A message transport's gateway that restarted, or forgot us.
                self.log.warn("gateway {node} at {router} has no session for us (it restarted?); "
                              "sending HELLO again", node=ack.node_id, router=self.router)
                self.sender.close("the gateway asked for a new HELLO")
            # (Before our HELLO is answered: it answers a frame of an older
            # session; ours is on its way.)
            return
        if not ack.accepted:
            if self.on_rejected is not None:
                self.on_rejected(self, ack.reason or "no reason given")
                return
            self.log.error(
                "router {router} rejected HELLO of {service} {version}: {reason}",
                router=self.router, service=self.app.name, version=self.app.version,
                reason=ack.reason,
            )
            return
        self.accepted = ack
        self.dispatcher.compact_headers = (
            self.compact_headers and COMPACT_HEADERS in ack.features)
        self.dispatcher.response_credit = self.can_stream and RESPONSE_CREDIT in ack.features
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
        if self.status is InstanceHealthStatus.DRAINING:
            self.send_heartbeat()
        if self.on_accepted is not None:
            self.on_accepted(self)

    def send_heartbeat(self) -> None:
        """
        Report status, requests in flight and the error rate since the last
        report.
        """
        if self.sender is None or self.dispatcher is None or self.closed:
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

    def drain(self) -> Deferred:
        """
        Report DRAINING now; fires when the gateway has acknowledged it (so
        no new request will come) and no request is in flight.  A session not
        (yet) registered is done at once.
        """
        self.status = InstanceHealthStatus.DRAINING
        if self.accepted is None or self.closed or self.dispatcher is None:
            return succeed(None)
        self.send_heartbeat()
        dispatcher = self.dispatcher

        async def drained() -> None:
            await self._drain_acked
            await dispatcher.when_idle()

        return Deferred.fromCoroutine(drained())

    def connectionClosed(self, reason: str) -> None:
        self.closed = True
        if self._heartbeat is not None and self._heartbeat.running:
            self._heartbeat.stop()
        if self.dispatcher is not None:
            self.dispatcher.connection_lost()
        if not self._drain_acked.called:
            self._drain_acked.callback(None)
        self.log.info("connection to router {router} closed: {reason}",
                      router=self.router, reason=reason)


__all__ = ["RouterSession"]
