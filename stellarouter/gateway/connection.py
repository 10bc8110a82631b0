"""
One microservice connection, seen from the gateway: takes its frames in the
order of its lifecycle, sends REQUEST frames and delivers RESPONSE frames to
the waiting HTTP requests.

Its lifecycle is L{ConnectionPhase}: opened and awaiting the HELLO,
registered, closed; a frame or call the phase does not expect is logged and
ignored (or, for a frame from the microservice, closes the connection with
the reason).  What has a job of its own lives next to it: registration (the
HELLO and its answer, ENDPOINTS_UPDATE; L{stellarouter.gateway.registration}),
the in-flight table (L{stellarouter.gateway.dispatch}), the instance's
liveness (L{stellarouter.gateway.liveness}) and the write backlog
(L{stellarouter.gateway.backlog}).
"""

from __future__ import annotations

from enum import Enum
from typing import Dict, Optional, cast

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from ..common.enums import CancelReason, FrameType
from ..common.errors import InvalidDescriptor, MalformedPayload
from ..common.frames import DEFAULT_MAX_FRAME_BYTES, FRAME_OVERHEAD
from ..common.ids import CorrelationId, new_correlation_id
from ..common.interfaces import IFrameReceiver, IFrameSender, IResponseSink, ISendBacklog
from ..common.models import ConnectionState, Frame, RoutableConnection
from ..common.payloads import (
    STREAM_CREDIT,
    RequestMessage,
    decode_heartbeat,
    encode_cancel,
    stream_credit,
)
from ..config.gateway import HealthConfig
from .backlog import BacklogWatch
from .buffers import ResponseBudget
from .dispatch import ByteCount, InFlightRequests, PendingRequest
from .hello import HelloRefused
from .liveness import InstanceLiveness, UnhealthyTooLong
from .metrics import TransportTraffic
from .outgoing import body_frames, credit_frame, request_frames
from .interfaces import IEdgeConnection, IUpload
from .errors import GatewayShuttingDown, UpstreamLost
from .registration import EndpointsRefused, Registrar

# Module globals, not FrameType.X in frameReceived: reading an enum member
# from its class costs ~0.4 us on Python 3.11 (python -m timeit: 475 ns
# against 56 ns), several times per request (issue 20 measured it).
_ENDPOINTS_UPDATE = FrameType.ENDPOINTS_UPDATE
_RESPONSE = FrameType.RESPONSE
_RESPONSE_STREAM_DATA = FrameType.RESPONSE_STREAM_DATA
_HEARTBEAT = FrameType.HEARTBEAT
_HELLO = FrameType.HELLO
_REQUEST_STREAM_DATA = FrameType.REQUEST_STREAM_DATA


class ConnectionPhase(Enum):
    """
    Where a L{GatewayConnection} is in its life.
    """

    #: Built; the transport has not opened it yet (no sender).
    NEW = "new"
    #: Open; the first frame must be an acceptable HELLO.
    AWAITING_HELLO = "awaiting HELLO"
    #: The HELLO was accepted: the connection is in the routing state.
    REGISTERED = "registered"
    #: Closed: nothing more is sent or routed.
    CLOSED = "closed"


# (Module globals for the same reason as the frame types above.)
_NEW = ConnectionPhase.NEW
_AWAITING_HELLO = ConnectionPhase.AWAITING_HELLO
_REGISTERED = ConnectionPhase.REGISTERED
_CLOSED = ConnectionPhase.CLOSED


@implementer(IFrameReceiver, IEdgeConnection)
class GatewayConnection:
    """
    The gateway's receiver for one microservice connection.

    @ivar phase: where it is in its life (L{ConnectionPhase}).
    @ivar state: the L{ConnectionState}, once the HELLO was accepted.
    @ivar in_flight: the requests awaiting a response on this connection.
    """

    log = Logger()

    def __init__(
        self,
        registrar: Registrar,
        clock: IReactorTime,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        health: HealthConfig = HealthConfig(),
        aggregate: Optional[ByteCount] = None,
        hello_timeout: float = 10.0,
        response_budget: Optional[ResponseBudget] = None,
        max_unsent_bytes: int = 32 * 1024 * 1024,
        stalled_close_after: float = 5.0,
    ) -> None:
        """
        @param registrar: registers it in the routing state (shared by the
            connections of its listener).
        @param max_unsent_bytes: bytes written to this connection that may
            wait in the process (the peer not reading) before it counts as
            stalled: no new requests go to it, and it is closed unless it
            drains within C{stalled_close_after} seconds.
        @param response_budget: the gateway's budget for streamed response
            bytes (shared by all connections; a fresh default one if none).
        @param health: the liveness thresholds (a HEARTBEAT re-evaluates the
            status at once).
        """
        self.registrar = registrar
        self.routing_state = registrar.routing_state
        self.aggregate = aggregate if aggregate is not None else ByteCount()
        self.hello_timeout = hello_timeout
        self._hello_timer: Optional[IDelayedCall] = None
        self.liveness = InstanceLiveness(health)
        self.phase = _NEW
        #: Calls and frames ignored because the phase did not expect them.
        self.ignored_events = 0
        self.clock = clock
        self.max_frame_bytes = max_frame_bytes
        self.sender: Optional[IFrameSender] = None
        self.state: Optional[ConnectionState] = None
        self.in_flight = InFlightRequests(clock, self._send_cancel, self._finished)
        self.uploads: Dict[CorrelationId, IUpload] = {}
        #: REQUEST headers go in the compact form: the microservice announced
        #: that it reads it (and the HELLO answer said the gateway reads its
        #: compact RESPONSE headers).
        self.compact_headers = False
        #: The microservice's response streams start with no credit: the
        #: gateway grants each first window from L{response_budget}.
        self.response_credit = False
        self.response_budget = (response_budget if response_budget is not None
                                else ResponseBudget())
        self.max_unsent_bytes = max_unsent_bytes
        self.stalled_close_after = stalled_close_after
        #: The sender's write backlog, when its transport has one.
        self.backlog: Optional[BacklogWatch] = None
        #: Where this connection's frames are counted while metrics are on
        #: (the gateway service sets it), else C{None}.
        self.traffic: Optional[TransportTraffic] = None

    @property
    def health(self) -> HealthConfig:
        """
        The liveness thresholds in force (a reload sets them: the next
        HEARTBEAT is judged by the new ones).
        """
        return self.liveness.health

    @health.setter
    def health(self, thresholds: HealthConfig) -> None:
        self.liveness.health = thresholds

    def __repr__(self) -> str:
        if self.state is None:
            return f"<GatewayConnection (no HELLO yet) from {self.peer}>"
        i = self.state.instance
        return f"<GatewayConnection {self.state.connection_id} {i.service_name} {i.version} {i.instance_id}>"

    def _unexpected(self, event: str) -> None:
        """
        A call or frame the phase does not expect: ignored, and logged the
        first time (what a peer sends after the close must not flood the
        log).
        """
        self.ignored_events += 1
        if self.ignored_events == 1:
            self.log.warn("connection from {peer}: {event} ignored while {phase} (said once "
                          "per connection)", peer=self.peer, event=event,
                          phase=self.phase.value)

    def _routable(self) -> RoutableConnection:
        """
        This connection, for the routing state (it has a state by now).
        """
        assert self.state is not None
        return cast(RoutableConnection, self)

    @property
    def is_closed(self) -> bool:
        """
        The connection is closed: nothing sent on it is written.
        """
        return self.phase is _CLOSED

    @property
    def peer(self) -> str:
        return self.sender.peer if self.sender is not None else "?"

    # -- IFrameReceiver ----------------------------------------------------

    def connectionOpened(self, sender: IFrameSender) -> None:
        if self.phase is not _NEW:
            self._unexpected("a second connectionOpened")
            return
        self.phase = _AWAITING_HELLO
        self.sender = sender
        self.in_flight.peer = sender.peer
        if ISendBacklog.providedBy(sender):
            self.backlog = BacklogWatch(
                cast(ISendBacklog, sender), self.clock, self.max_unsent_bytes,
                self.stalled_close_after, self._release, self._unroute, self._reroute,
                self._describe)
        self._hello_timer = self.clock.callLater(self.hello_timeout, self._no_hello)

    def _describe(self) -> str:
        """
        The peer and instance, for the log.
        """
        instance = self.state.instance.instance_id if self.state is not None else "no HELLO"
        return f"{self.peer} ({instance})"

    def _no_hello(self) -> None:
        self._hello_timer = None
        if self.phase is _AWAITING_HELLO:
            self._reject(f"no HELLO within {self.hello_timeout:g}s")

    def _stop_hello_timer(self) -> None:
        if self._hello_timer is not None and self._hello_timer.active():
            self._hello_timer.cancel()
        self._hello_timer = None

    def _send(self, frame: Frame) -> None:
        """
        Send C{frame} (there is a sender), counting it while metrics are on.
        """
        traffic = self.traffic
        if traffic is not None:
            size = len(frame.payload)
            traffic.frames_out += 1
            traffic.bytes_out += size + FRAME_OVERHEAD
            if frame.type is _REQUEST_STREAM_DATA and size and frame.payload[0] != STREAM_CREDIT:
                traffic.streamed_out += size - 1
        assert self.sender is not None
        self.sender.sendFrame(frame)

    def frameReceived(self, frame: Frame) -> None:
        traffic = self.traffic
        if traffic is not None:  # (metrics)
            traffic.frames_in += 1
            traffic.bytes_in += len(frame.payload) + FRAME_OVERHEAD
        kind = frame.type
        phase = self.phase
        if phase is not _REGISTERED:
            if phase is not _AWAITING_HELLO:
                self._unexpected(f"a {kind.name} frame")
            elif kind is _HELLO:
                self._hello(frame)
            else:
                self._reject(f"expected HELLO first, got {kind.name}", frame.correlation_id)
        elif kind is _RESPONSE:
            self.in_flight.response_frame(frame.correlation_id, frame.payload)
        elif kind is _RESPONSE_STREAM_DATA:
            self._response_stream_data(frame)
        elif kind is _HEARTBEAT:
            self._heartbeat(frame)
        elif kind is _ENDPOINTS_UPDATE:
            self._endpoints_update(frame)
        elif kind is _HELLO:
            self._reject("HELLO sent twice on one connection")
        else:
            self._reject(f"a microservice may not send {kind.name} frames")

    def connectionClosed(self, reason: str) -> None:
        if self.phase is _CLOSED:
            self._unexpected("a second connectionClosed")
            return
        registered = self.phase is _REGISTERED
        self.phase = _CLOSED
        self._stop_hello_timer()
        if self.backlog is not None:
            self.backlog.closed()
        if registered:
            self.registrar.unregister(self._routable(), reason)
        failed = self.in_flight.fail_all(UpstreamLost(
            f"the connection to the microservice closed: {reason}"))
        if failed:
            self.log.warn("{count} request(s) in flight lost with the connection",
                          count=failed)

    # -- HELLO ------------------------------------------------------------

    def _hello(self, frame: Frame) -> None:
        assert self.sender is not None
        self._stop_hello_timer()
        registrar = self.registrar
        try:
            admission = registrar.admit(frame.payload, self.sender, self.clock.seconds(),
                                        self.max_frame_bytes)
            self.state = admission.state
            registrar.register(self._routable())
        except HelloRefused as e:
            self.state = None
            self._reject(str(e), frame.correlation_id)
            return
        self.phase = _REGISTERED
        self.compact_headers = admission.compact_headers
        self.response_credit = admission.response_credit
        self._send(registrar.accepted(frame.correlation_id, admission))

    def _reject(self, reason: str, cid: Optional[CorrelationId] = None,
                answer: bool = False) -> None:
        """
        Close the connection, logging why; before registration (or when
        C{answer} is set) first tell the microservice in a HELLO answer.
        """
        assert self.sender is not None
        self.log.warn("closing connection from {peer}: {reason}", peer=self.peer, reason=reason)
        if self.phase is _AWAITING_HELLO or answer:
            self._send(self.registrar.refusal(reason, cid))
        self.sender.close(reason)

    # -- other frames -------------------------------------------------------

    def _heartbeat(self, frame: Frame) -> None:
        assert self.state is not None and self.sender is not None
        try:
            beat = decode_heartbeat(frame.payload)
        except MalformedPayload as e:
            self.log.warn("malformed HEARTBEAT from {peer} ignored: {error}",
                          peer=self.peer, error=e)
            return
        now = self.clock.seconds()
        if self.liveness.heartbeat(self.state, beat, frame.correlation_id, now, self.peer):
            # Acknowledge a DRAINING report: every REQUEST sent before this
            # echo reaches the microservice before it, so once it has the
            # echo and its requests are done it may close (protocol.md,
            # HEARTBEAT).
            self._send(frame)
        self.refresh_status(now)

    def refresh_status(self, now: float, thresholds: Optional[HealthConfig] = None) -> None:
        """
        Re-evaluate the status from the last report and the silence since
        the last HEARTBEAT; log a change.
        """
        state = self.state
        if self.phase is not _REGISTERED or state is None:
            return
        try:
            changed = self.liveness.refresh(state, now, thresholds)
        except UnhealthyTooLong as e:
            # Closed, not kept forever: a silent registration costs memory
            # and a place in the routing table until it goes.
            self._reject(str(e))
            return
        if changed:
            self.routing_state.status_changed(self._routable())

    @property
    def drain_requested(self) -> bool:
        """
        Whether an operator asked the gateway to drain this connection (admin
        API): it then stays DRAINING whatever the microservice reports.
        """
        return self.liveness.drain_requested

    def request_drain(self) -> bool:
        """
        Drain this connection at an operator's request (admin API): route
        no new request to it from now on (its status is DRAINING whatever
        its HEARTBEATs report) and ask the microservice to drain with a
        HEARTBEAT whose status is C{draining} (protocol.md, HEARTBEAT).
        Requests in flight finish as usual.

        @return: C{False} if the connection is not registered or closed.
        """
        state = self.state
        if self.phase is not _REGISTERED or state is None or self.sender is None:
            return False
        ask = self.liveness.drain(state)
        self.refresh_status(self.clock.seconds())
        self._send(ask)
        return True

    def ping(self, now: float) -> None:
        """
        Send a HEARTBEAT ping; its echo updates C{average_ping_ms}.
        """
        if self.phase is not _REGISTERED or self.sender is None:
            return
        self._send(self.liveness.ping(now))

    def _endpoints_update(self, frame: Frame) -> None:
        try:
            self.registrar.update_endpoints(self._routable(), frame.payload)
        except EndpointsRefused as e:
            self._reject(str(e), frame.correlation_id, answer=True)

    def _response_stream_data(self, frame: Frame) -> None:
        cid = frame.correlation_id
        try:
            amount = stream_credit(frame.payload)
        except MalformedPayload as e:
            self.log.warn("malformed credit for request {cid} from {peer} ignored: {error}",
                          cid=cid, peer=self.peer, error=e)
            return
        if amount is not None:
            self.upload_credit(cid, amount)
            return
        if self.traffic is not None:  # (metrics: the body bytes after the marker)
            self.traffic.streamed_in += len(frame.payload) - 1
        self.in_flight.stream_data_frame(cid, frame.payload)

    # -- dispatch -------------------------------------------------------------

    def send_request(
        self, message: RequestMessage, timeout: Optional[float], sink: IResponseSink,
        cid: Optional[CorrelationId] = None, retries: int = 0,
    ) -> CorrelationId:
        """
        Send one REQUEST (its body split into REQUEST_STREAM_DATA frames if it
        does not fit one frame) and track it.

        @param timeout: seconds until CANCEL(Timeout) and a 504.
        @param sink: receives the response or the failure.
        @param cid: the correlation id to use (fresh by default).
        @param retries: how many times to send the same REQUEST again while
            no answer has come (for idempotent requests over UDP), spread
            over the timeout.
        @return: the correlation id.
        @raise RequestHeadersTooLarge: the request's headers alone do not fit
            in one frame (nothing is sent).
        @raise UpstreamLost: the connection is not (or no longer) registered.
        """
        if self.phase is not _REGISTERED:
            self._unexpected("a REQUEST to send")
            raise UpstreamLost(f"the connection to the microservice is {self.phase.value}")
        assert self.sender is not None and self.state is not None
        if cid is None:
            cid = new_correlation_id()
        frames = request_frames(message, cid, self.compact_headers, self.max_frame_bytes,
                                self.state.transport_type)
        resend = None
        if retries and len(frames) == 1:
            send_once, frame = self._send, frames[0]

            def resend() -> None:
                send_once(frame)
        self.in_flight.add(cid, sink, timeout, len(message.body), resend, retries)
        state = self.state
        state.in_flight += 1
        state.in_flight_bytes += len(message.body)
        self.aggregate.value += len(message.body)
        # (Straight to the sender while metrics are off: one call less.)
        send = self.sender.sendFrame if self.traffic is None else self._send
        for frame in frames:
            send(frame)
        return cid

    def send_body(self, cid: CorrelationId, data: bytes, end: bool = False,
                  abort: bool = False) -> None:
        """
        Send a piece of a streamed request body (split to fit frames), or
        end or abort the stream.
        """
        if self.phase is not _REGISTERED or self.sender is None:
            return
        for frame in body_frames(cid, data, self.max_frame_bytes, end, abort):
            self._send(frame)

    def upload_credit(self, cid: CorrelationId, amount: int) -> None:
        """
        The microservice granted room for C{amount} more bytes of request
        C{cid}'s streamed body.
        """
        stream = self.uploads.get(cid)
        if stream is not None:
            stream.grant(amount)

    def attach_upload(self, cid: CorrelationId, upload: IUpload) -> None:
        """
        Route the microservice's credit for request C{cid}'s streamed body
        to C{upload} (L{upload_credit}).
        """
        self.uploads[cid] = upload

    def detach_upload(self, cid: CorrelationId) -> None:
        """
        Stop routing credit for request C{cid}'s body (no error if none).
        """
        self.uploads.pop(cid, None)

    def is_in_flight(self, cid: CorrelationId) -> bool:
        """
        Whether request C{cid} still awaits its response here.
        """
        return cid in self.in_flight

    def grant(self, cid: CorrelationId, amount: int) -> None:
        """
        Give the microservice room for C{amount} more bytes of the streamed
        response of request C{cid}.
        """
        if (self.phase is _REGISTERED and self.sender is not None
                and cid in self.in_flight):
            self._send(credit_frame(cid, amount))

    def cancel(self, cid: CorrelationId, reason: CancelReason) -> bool:
        """
        Cancel a request whose client went away (no answer is written).

        @return: C{False} if it was no longer in flight.
        """
        return self.in_flight.cancel(cid, reason)

    def head_answered(self, cid: CorrelationId) -> bool:
        """
        Stop the streamed response of a HEAD answered from its head
        (L{InFlightRequests.head_answered}).

        @return: C{False} if it was no longer in flight.
        """
        return self.in_flight.head_answered(cid)

    def shutdown(self) -> int:
        """
        Cancel every request in flight with reason SHUTDOWN; their clients
        get 503.

        @return: how many were cancelled.
        """
        return self.in_flight.cancel_all(
            CancelReason.SHUTDOWN, GatewayShuttingDown("the gateway is shutting down"))

    def _send_cancel(self, cid: CorrelationId, reason: CancelReason, head_only: bool) -> None:
        if self.phase is not _CLOSED and self.sender is not None:
            self._send(Frame(FrameType.CANCEL, cid, encode_cancel(reason, head_only)))

    def _finished(self, pending: PendingRequest) -> None:
        if self.state is not None:
            self.state.in_flight -= 1
        # Its body may still wait in the write buffer: then it stays counted
        # in the budgets until the buffer drains.
        if self.backlog is None or not self.backlog.retain(pending.size):
            self._release(pending.size)

    def _release(self, amount: int) -> None:
        """
        Request body bytes no longer in flight leave the budgets.
        """
        if self.state is not None:
            self.state.in_flight_bytes -= amount
        self.aggregate.value -= amount

    def _unroute(self) -> None:
        """
        The connection stalled: route nothing more to it.
        """
        if self.phase is _REGISTERED:
            self.routing_state.unregister(self._routable())

    def _reroute(self) -> None:
        """
        The connection drained in time: route to it again.
        """
        if self.phase is not _REGISTERED:
            return
        try:
            self.routing_state.register(self._routable())
        except InvalidDescriptor as e:
            self._reject(f"could not route to it again after a stall: {e}")

    def count_bytes(self, cid: CorrelationId, amount: int) -> None:
        """
        Count C{amount} more streamed body bytes of request C{cid} in flight.
        """
        pending = self.in_flight.pending(cid)
        if pending is not None and self.state is not None:
            pending.size += amount
            self.state.in_flight_bytes += amount
            self.aggregate.value += amount
