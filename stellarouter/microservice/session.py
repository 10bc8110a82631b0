"""
One microservice ↔ router connection, seen from the microservice: sends
HELLO, answers pings, hands REQUEST and CANCEL frames to the dispatcher.
"""

from __future__ import annotations

from typing import Callable, Optional
from uuid import uuid4

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from ..common.enums import FrameType, InstanceHealthStatus
from ..common.errors import MalformedPayload
from ..common.frames import DEFAULT_MAX_FRAME_BYTES
from ..common.interfaces import IFrameReceiver, IFrameSender
from ..common.models import Frame, InstanceDescriptor
from ..common.payloads import (
    Heartbeat,
    Hello,
    HelloAck,
    decode_cancel,
    decode_hello_ack,
    encode_heartbeat,
    encode_hello,
)
from .dispatcher import RequestDispatcher
from .endpoints import Microservice


@implementer(IFrameReceiver)
class RouterSession:
    """
    The microservice's receiver for one connection to one router.

    @ivar accepted: the gateway's HELLO answer, once received.
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
    ) -> None:
        """
        @param router: a description of the router, for the logs.
        @param on_accepted: called once the gateway accepted the HELLO.
        """
        self.app = app
        self.instance = instance
        self.router = router
        self.clock = clock
        self.heartbeat_interval = heartbeat_interval
        self.max_frame_bytes = max_frame_bytes
        self.on_accepted = on_accepted
        self.sender: Optional[IFrameSender] = None
        self.dispatcher: Optional[RequestDispatcher] = None
        self.accepted: Optional[HelloAck] = None
        self.status = InstanceHealthStatus.HEALTHY
        self._hello_id = uuid4()
        self._heartbeat: Optional[LoopingCall] = None

    def connectionOpened(self, sender: IFrameSender) -> None:
        self.sender = sender
        self.dispatcher = RequestDispatcher(self.app, sender, self.clock, self.max_frame_bytes)
        hello = Hello(self.instance, self.app.descriptors(), self.heartbeat_interval)
        self.log.info(
            "connected to router {router}; sending HELLO for {service} {version} "
            "({count} endpoints)", router=self.router, service=self.app.name,
            version=self.app.version, count=len(hello.endpoints),
        )
        sender.sendFrame(Frame(FrameType.HELLO, self._hello_id, encode_hello(hello)))

    def frameReceived(self, frame: Frame) -> None:
        assert self.dispatcher is not None and self.sender is not None
        kind = frame.type
        if kind is FrameType.REQUEST:
            self.dispatcher.request_received(frame)
        elif kind is FrameType.CANCEL:
            try:
                reason = decode_cancel(frame.payload)
            except MalformedPayload as e:
                self.log.warn("malformed CANCEL {cid} ignored: {error}",
                              cid=frame.correlation_id, error=e)
                return
            self.dispatcher.cancel(frame.correlation_id, reason)
        elif kind is FrameType.REQUEST_STREAM_DATA:
            self.dispatcher.stream_data_received(frame)
        elif kind is FrameType.HEARTBEAT:
            # A gateway ping: echo it with the same correlation id.
            self.sender.sendFrame(frame)
        elif kind is FrameType.HELLO:
            self._hello_answered(frame)
        else:
            self.log.warn("unexpected {kind} frame from router {router}; closing",
                          kind=kind.name, router=self.router)
            self.sender.close(f"unexpected {kind.name} frame from the gateway")

    def _hello_answered(self, frame: Frame) -> None:
        assert self.sender is not None
        try:
            ack = decode_hello_ack(frame.payload)
        except MalformedPayload as e:
            self.log.warn("malformed HELLO answer from {router}: {error}",
                          router=self.router, error=e)
            self.sender.close("malformed HELLO answer")
            return
        if not ack.accepted:
            self.log.error(
                "router {router} rejected HELLO of {service} {version}: {reason}",
                router=self.router, service=self.app.name, version=self.app.version,
                reason=ack.reason,
            )
            return
        self.accepted = ack
        self.log.info(
            "registered with gateway {node} (region {region}) at {router} as {instance_id}",
            node=ack.node_id, region=ack.region, router=self.router,
            instance_id=self.instance.instance_id,
        )
        self._heartbeat = LoopingCall(self._send_heartbeat)
        self._heartbeat.clock = self.clock
        self._heartbeat.start(self.heartbeat_interval, now=False)
        if self.on_accepted is not None:
            self.on_accepted(self)

    def _send_heartbeat(self) -> None:
        assert self.sender is not None and self.dispatcher is not None
        beat = Heartbeat(self.instance.instance_id, self.status, self.dispatcher.in_flight)
        self.sender.sendFrame(Frame(FrameType.HEARTBEAT, uuid4(), encode_heartbeat(beat)))

    def connectionClosed(self, reason: str) -> None:
        if self._heartbeat is not None and self._heartbeat.running:
            self._heartbeat.stop()
        if self.dispatcher is not None:
            self.dispatcher.connection_lost()
        self.log.info("connection to router {router} closed: {reason}",
                      router=self.router, reason=reason)


__all__ = ["RouterSession"]
