"""
One microservice connection, seen from the gateway: validates the HELLO,
registers the connection in the routing state, sends REQUEST frames and
delivers RESPONSE frames to the waiting HTTP requests.
"""

from __future__ import annotations

import itertools
from typing import Callable, Dict, List, Mapping, Optional, Sequence, cast

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from ..common.enums import CancelReason, FrameType, InstanceHealthStatus, TransportType
from ..common.errors import InvalidDescriptor, MalformedPayload
from ..common.frames import DEFAULT_MAX_FRAME_BYTES, FRAME_OVERHEAD, stream_data_frames
from ..common.ids import CorrelationId, new_correlation_id
from ..common.interfaces import IFrameReceiver, IFrameSender, IResponseSink, ISendBacklog
from ..common.models import ConnectionState, Frame, RegistrationLimits, RoutableConnection
from ..common.payloads import (
    COMPACT_HEADERS,
    RESPONSE_CREDIT,
    HelloAck,
    RequestMessage,
    decode_endpoints_update,
    Heartbeat,
    decode_heartbeat,
    decode_hello,
    decode_response,
    decode_stream_data,
    encode_cancel,
    encode_credit,
    encode_heartbeat,
    encode_hello_ack,
    encode_request,
    encode_stream_data,
    stream_credit,
)
from ..common.schemas import ENDPOINT_SCHEMAS, SchemasProblem, ServiceSchemas, read_schemas
from ..config.gateway import HealthConfig
from .buffers import ResponseBudget
from .dispatch import ByteCount, InFlightRequests, PendingRequest
from .health import evaluate_status, update_ping_average
from .interfaces import IEdgeConnection, IUpload
from .errors import (
    GatewayShuttingDown,
    PayloadTooLarge,
    RequestHeadersTooLarge,
    UpstreamLost,
    UpstreamProtocolError,
)
from .state import RoutingState

_ids = itertools.count(1)

# Module globals, not FrameType.X in frameReceived: reading an enum member
# from its class costs ~0.4 us on Python 3.11 (python -m timeit: 475 ns
# against 56 ns), several times per request (issue 20 measured it).
_ENDPOINTS_UPDATE = FrameType.ENDPOINTS_UPDATE
_RESPONSE = FrameType.RESPONSE
_RESPONSE_STREAM_DATA = FrameType.RESPONSE_STREAM_DATA
_HEARTBEAT = FrameType.HEARTBEAT
_HELLO = FrameType.HELLO
_SILENT = (InstanceHealthStatus.DEGRADED, InstanceHealthStatus.UNHEALTHY)


@implementer(IFrameReceiver, IEdgeConnection)
class GatewayConnection:
    """
    The gateway's receiver for one microservice connection.

    @ivar state: the L{ConnectionState}, once the HELLO was accepted.
    @ivar in_flight: the requests awaiting a response on this connection.
    """

    log = Logger()

    #: If set, C{policy(service, version)} says why an instance may not
    #: register (C{services[].allowed_versions}), or returns C{None}.
    registration_policy: Optional[Callable[[str, str], Optional[str]]] = None
    #: Keep the endpoint descriptions of a HELLO (feature C{endpoint-schemas})
    #: for the OpenAPI document (off: C{openapi.expose: none}).
    keep_schemas = True

    def __init__(
        self,
        routing_state: RoutingState,
        clock: IReactorTime,
        node_id: str,
        region: str,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        health: HealthConfig = HealthConfig(),
        allowed_client_names: Optional[Mapping[str, Sequence[str]]] = None,
        aggregate: Optional[ByteCount] = None,
        hello_timeout: float = 10.0,
        response_budget: Optional[ResponseBudget] = None,
        max_unsent_bytes: int = 32 * 1024 * 1024,
        stalled_close_after: float = 5.0,
    ) -> None:
        """
        @param max_unsent_bytes: bytes written to this connection that may
            wait in the process (the peer not reading) before it counts as
            stalled: no new requests go to it, and it is closed unless it
            drains within C{stalled_close_after} seconds.
        @param response_budget: the gateway's budget for streamed response
            bytes (shared by all connections; a fresh default one if none).
        @param health: the liveness thresholds (a HEARTBEAT re-evaluates the
            status at once).
        @param allowed_client_names: service → certificate names allowed to
            register it (TLS listeners); empty: no restriction.
        """
        self.allowed_client_names = dict(allowed_client_names or {})
        self.aggregate = aggregate if aggregate is not None else ByteCount()
        self.hello_timeout = hello_timeout
        self._hello_timer: Optional[IDelayedCall] = None
        self.routing_state = routing_state
        self.health = health
        self.reported_status = InstanceHealthStatus.HEALTHY
        self._pings: Dict[CorrelationId, float] = {}
        self.clock = clock
        self.node_id = node_id
        self.region = region
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
        self._backlog: Optional[ISendBacklog] = None
        #: Request body bytes of finished requests still counted in the
        #: budgets because they may wait in the write buffer.
        self.retained_bytes = 0
        self._stall_timer: Optional[IDelayedCall] = None
        self._closed = False
        #: Caps on what a HELLO or ENDPOINTS_UPDATE may announce.
        self.registration = RegistrationLimits()
        #: When the status last became UNHEALTHY (C{None}: it is not).
        self.unhealthy_since: Optional[float] = None
        self._warned_status = False

    def __repr__(self) -> str:
        if self.state is None:
            return f"<GatewayConnection (no HELLO yet) from {self.peer}>"
        i = self.state.instance
        return f"<GatewayConnection {self.state.connection_id} {i.service_name} {i.version} {i.instance_id}>"

    def _routable(self) -> RoutableConnection:
        """
        This connection, for the routing state (it has a state by now).
        """
        assert self.state is not None
        return cast(RoutableConnection, self)

    @property
    def peer(self) -> str:
        return self.sender.peer if self.sender is not None else "?"

    # -- IFrameReceiver ----------------------------------------------------

    def connectionOpened(self, sender: IFrameSender) -> None:
        self.sender = sender
        if ISendBacklog.providedBy(sender):
            backlog = cast(ISendBacklog, sender)
            self._backlog = backlog
            backlog.limitUnsent(self.max_unsent_bytes, self._stalled)
        self._hello_timer = self.clock.callLater(self.hello_timeout, self._no_hello)

    def _no_hello(self) -> None:
        self._hello_timer = None
        if self.state is None and not self._closed:
            self._reject(f"no HELLO within {self.hello_timeout:g}s")

    def _stop_hello_timer(self) -> None:
        if self._hello_timer is not None and self._hello_timer.active():
            self._hello_timer.cancel()
        self._hello_timer = None

    def frameReceived(self, frame: Frame) -> None:
        kind = frame.type
        if self.state is None:
            if kind is _HELLO:
                self._hello(frame)
            else:
                self._reject(f"expected HELLO first, got {kind.name}", frame.correlation_id)
        elif kind is _RESPONSE:
            self._response(frame)
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
        self._closed = True
        self._stop_hello_timer()
        if self._stall_timer is not None and self._stall_timer.active():
            self._stall_timer.cancel()
        self._stall_timer = None
        self._release_retained()
        if self.state is not None:
            self.routing_state.unregister(self._routable())
            i = self.state.instance
            self.log.info(
                "instance {instance_id} ({service} {version}) disconnected: {reason}",
                instance_id=i.instance_id, service=i.service_name, version=i.version,
                reason=reason,
            )
        failed = self.in_flight.fail_all(UpstreamLost(
            f"the connection to the microservice closed: {reason}"))
        if failed:
            self.log.warn("{count} request(s) in flight lost with the connection",
                          count=failed)

    # -- HELLO ------------------------------------------------------------

    def _hello(self, frame: Frame) -> None:
        assert self.sender is not None
        self._stop_hello_timer()
        if self._closed:
            return
        try:
            hello = decode_hello(frame.payload, self.registration)
        except (MalformedPayload, InvalidDescriptor) as e:
            self._reject(f"invalid HELLO: {e}", frame.correlation_id)
            return
        identity = tuple(getattr(self.sender, "peer_identity", ()) or ())
        if self.allowed_client_names:
            allowed = self.allowed_client_names.get(hello.instance.service_name, ())
            if not any(name in allowed for name in identity):
                self._reject(
                    f"HELLO refused: certificate {', '.join(identity) or '(none)'} may not "
                    f"register service {hello.instance.service_name!r}", frame.correlation_id)
                return
        if self.registration_policy is not None:
            refusal = self.registration_policy(hello.instance.service_name,
                                               hello.instance.version)
            if refusal is not None:
                self._reject(f"HELLO refused: {refusal}", frame.correlation_id)
                return
        schemas = self._schemas(hello.schemas)
        now = self.clock.seconds()
        state = ConnectionState(
            connection_id=f"{self.sender.transport_type.value}-{next(_ids)}",
            instance=hello.instance,
            transport_type=self.sender.transport_type,
            endpoints={e.key: e for e in hello.endpoints},
            connected_at=now,
            last_heartbeat=now,
            peer=self.sender.peer,
            peer_identity=identity,
            max_frame_bytes=self.max_frame_bytes,
            schemas=schemas,
        )
        self.state = state
        try:
            self.routing_state.register(self._routable())
        except InvalidDescriptor as e:
            self.state = None
            self._reject(f"HELLO refused: {e}", frame.correlation_id)
            return
        self.compact_headers = COMPACT_HEADERS in hello.features
        self.response_credit = RESPONSE_CREDIT in hello.features
        features = ((COMPACT_HEADERS,) if self.compact_headers else ()) + (
            (RESPONSE_CREDIT,) if self.response_credit else ()) + (
            (ENDPOINT_SCHEMAS,) if schemas is not None else ())
        self.sender.sendFrame(Frame(_HELLO, frame.correlation_id, encode_hello_ack(
            HelloAck(True, None, self.node_id, self.region, features))))
        i = hello.instance
        self.log.info(
            "registered instance {instance_id} of {service} {version} (region {region}) "
            "over {transport} from {peer}{identity} with {count} endpoint(s)",
            instance_id=i.instance_id, service=i.service_name, version=i.version,
            region=i.region, transport=state.transport_type.value, peer=state.peer,
            identity=f" (certificate {', '.join(identity)})" if identity else "",
            count=len(hello.endpoints),
        )

    def _schemas(self, raw: object) -> Optional[ServiceSchemas]:
        """
        The endpoint descriptions of a HELLO, if it has some, they are
        kept, and their shape is right (else they are left out, logged:
        the endpoints are routed all the same).
        """
        if raw is None or not self.keep_schemas:
            return None
        try:
            return read_schemas(raw)
        except SchemasProblem as e:
            self.log.warn("endpoint descriptions in the HELLO from {peer} left out: {error}",
                          peer=self.peer, error=e)
            return None

    def _reject(self, reason: str, cid: Optional[CorrelationId] = None,
                answer: bool = False) -> None:
        """
        Close the connection, logging why; before registration (or when
        C{answer} is set) first tell the microservice in a HELLO answer.
        """
        assert self.sender is not None
        self.log.warn("closing connection from {peer}: {reason}", peer=self.peer, reason=reason)
        if self.state is None or answer:
            # Tell the microservice why before closing, so it can log it.
            if cid is None:
                cid = new_correlation_id()
            self.sender.sendFrame(Frame(_HELLO, cid, encode_hello_ack(
                HelloAck(False, reason, self.node_id, self.region))))
        self.sender.close(reason)

    # -- other frames -------------------------------------------------------

    def _heartbeat(self, frame: Frame) -> None:
        assert self.state is not None
        try:
            beat = decode_heartbeat(frame.payload)
        except MalformedPayload as e:
            self.log.warn("malformed HEARTBEAT from {peer} ignored: {error}",
                          peer=self.peer, error=e)
            return
        if beat.unknown_status is not None and not self._warned_status:
            self._warned_status = True
            self.log.warn("HEARTBEAT from {peer} has an unknown status {status} (taken as "
                          "alive, status unknown; said once per connection)",
                          peer=self.peer, status=beat.unknown_status)
        now = self.clock.seconds()
        self.state.last_heartbeat = now
        if beat.ping is not None:
            sent = self._pings.pop(frame.correlation_id, None)
            if sent is not None:
                self.state.average_ping_ms = update_ping_average(
                    self.state.average_ping_ms, (now - sent) * 1000.0)
        else:
            status = beat.status
            if status is InstanceHealthStatus.UNKNOWN:
                status = InstanceHealthStatus.HEALTHY
            if status is InstanceHealthStatus.DRAINING and (
                    self.reported_status is not InstanceHealthStatus.DRAINING):
                self.log.info("instance {instance_id} is draining: no new requests",
                              instance_id=self.state.instance.instance_id)
            self.reported_status = status
            if status is InstanceHealthStatus.DRAINING:
                # Acknowledge: every REQUEST sent before this echo reaches the
                # microservice before it, so once it has the echo and its
                # requests are done it may close (protocol.md, HEARTBEAT).
                assert self.sender is not None
                self.sender.sendFrame(frame)
        self.refresh_status(now)

    def refresh_status(self, now: float, thresholds: Optional[HealthConfig] = None) -> None:
        """
        Re-evaluate the status from the last report and the silence since
        the last HEARTBEAT; log a change.
        """
        state = self.state
        if state is None or self._closed:
            return
        thresholds = thresholds or self.health
        status = evaluate_status(self.reported_status, state.last_heartbeat, now, thresholds)
        if status is not InstanceHealthStatus.UNHEALTHY:
            self.unhealthy_since = None
        elif self.unhealthy_since is None:
            self.unhealthy_since = now
        elif now - self.unhealthy_since >= thresholds.close_unhealthy_after:
            # Closed, not kept forever: a silent registration costs memory
            # and a place in the routing table until it goes.
            self._reject(f"UNHEALTHY for {now - self.unhealthy_since:.1f}s "
                         f"(close_unhealthy_after {thresholds.close_unhealthy_after:g}s)")
            return
        if status is not state.status:
            self.log.info(
                "instance {instance_id} ({service} {version}) {old} -> {new} "
                "({silence:.1f}s since its last heartbeat)",
                instance_id=state.instance.instance_id, service=state.instance.service_name,
                version=state.instance.version, old=state.status.value, new=status.value,
                silence=now - state.last_heartbeat,
            )
            if status is InstanceHealthStatus.HEALTHY and state.status in _SILENT:
                # Round trips measured across the silence say nothing about
                # the network: start the average afresh.
                state.average_ping_ms = None
                self._pings.clear()
            state.status = status
            self.routing_state.status_changed(self._routable())

    def ping(self, now: float) -> None:
        """
        Send a HEARTBEAT ping; its echo updates C{average_ping_ms}.
        """
        if self.state is None or self.sender is None or self._closed:
            return
        if len(self._pings) >= 8:
            # Unanswered pings of a silent peer: forget the oldest.
            del self._pings[next(iter(self._pings))]
        cid = new_correlation_id()
        self._pings[cid] = now
        self.sender.sendFrame(Frame(_HEARTBEAT, cid, encode_heartbeat(Heartbeat(ping=now))))

    def _endpoints_update(self, frame: Frame) -> None:
        assert self.state is not None
        try:
            endpoints = decode_endpoints_update(frame.payload, self.state.instance,
                                                self.registration)
        except (MalformedPayload, InvalidDescriptor) as e:
            self._reject(f"invalid ENDPOINTS_UPDATE: {e}", frame.correlation_id, answer=True)
            return
        old = self.state.endpoints
        self.routing_state.unregister(self._routable())
        self.state.endpoints = {e.key: e for e in endpoints}
        try:
            self.routing_state.register(self._routable())
        except InvalidDescriptor as e:
            self.state.endpoints = old
            self.routing_state.register(self._routable())
            self._reject(f"ENDPOINTS_UPDATE refused: {e}", frame.correlation_id, answer=True)
            return
        self.log.info("instance {instance_id} now serves {count} endpoint(s)",
                      instance_id=self.state.instance.instance_id, count=len(endpoints))

    def _response(self, frame: Frame) -> None:
        cid = frame.correlation_id
        if cid not in self.in_flight:
            self.in_flight.late_frames += 1
            return
        try:
            message = decode_response(frame.payload)
        except MalformedPayload as e:
            self.log.warn("malformed RESPONSE {cid} from {peer}: {error}",
                          cid=cid, peer=self.peer, error=e)
            self.in_flight.fail(cid, UpstreamProtocolError(str(e)))
            return
        self.in_flight.response(cid, message)

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
        if cid not in self.in_flight:
            self.in_flight.late_frames += 1
            return
        try:
            chunk, end, abort = decode_stream_data(frame.payload)
        except MalformedPayload as e:
            self.log.warn("malformed RESPONSE_STREAM_DATA {cid} from {peer}: {error}",
                          cid=cid, peer=self.peer, error=e)
            self.in_flight.fail(cid, UpstreamProtocolError(str(e)))
            return
        self.in_flight.stream_data(
            cid, chunk, end, abort,
            lambda: UpstreamProtocolError("the microservice aborted the response stream"))

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
        """
        assert self.sender is not None and self.state is not None
        if cid is None:
            cid = new_correlation_id()
        frames: List[Frame]
        payload = encode_request(message, self.compact_headers)
        if len(payload) + FRAME_OVERHEAD <= self.max_frame_bytes:
            frames = [Frame(FrameType.REQUEST, cid, payload)]
        elif self.sender.transport_type is TransportType.UDP:
            raise PayloadTooLarge(
                f"the request ({len(payload) + FRAME_OVERHEAD} bytes as a frame) does not fit in "
                f"one UDP datagram of at most {self.max_frame_bytes} bytes")
        else:
            header = encode_request(message._replace(streaming=True, body=b""),
                                    self.compact_headers)
            if len(header) + FRAME_OVERHEAD > self.max_frame_bytes:
                raise RequestHeadersTooLarge(
                    f"the request's headers take {len(header)} bytes; a frame holds "
                    f"{self.max_frame_bytes}")
            frames = [Frame(FrameType.REQUEST, cid, header)]
            frames.extend(stream_data_frames(FrameType.REQUEST_STREAM_DATA, cid, message.body,
                                             self.max_frame_bytes))
        resend = None
        if retries and len(frames) == 1:
            sender, frame = self.sender, frames[0]

            def resend() -> None:
                sender.sendFrame(frame)
        self.in_flight.add(cid, sink, timeout, len(message.body), resend, retries)
        state = self.state
        state.in_flight += 1
        state.in_flight_bytes += len(message.body)
        self.aggregate.value += len(message.body)
        send = self.sender.sendFrame
        for frame in frames:
            send(frame)
        return cid

    def send_body(self, cid: CorrelationId, data: bytes, end: bool = False,
                  abort: bool = False) -> None:
        """
        Send a piece of a streamed request body (split to fit frames), or
        end or abort the stream.
        """
        if self.sender is None or self._closed:
            return
        if abort:
            self.sender.sendFrame(Frame(FrameType.REQUEST_STREAM_DATA, cid,
                                        encode_stream_data(b"", abort=True)))
            return
        for frame in stream_data_frames(FrameType.REQUEST_STREAM_DATA, cid, data,
                                        self.max_frame_bytes, end):
            self.sender.sendFrame(frame)

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
        if self.sender is not None and not self._closed and cid in self.in_flight:
            self.sender.sendFrame(Frame(FrameType.REQUEST_STREAM_DATA, cid, encode_credit(amount)))

    def cancel(self, cid: CorrelationId, reason: CancelReason) -> bool:
        """
        Cancel a request whose client went away (no answer is written).

        @return: C{False} if it was no longer in flight.
        """
        return self.in_flight.cancel(cid, reason)

    def shutdown(self) -> int:
        """
        Cancel every request in flight with reason SHUTDOWN; their clients
        get 503.

        @return: how many were cancelled.
        """
        return self.in_flight.cancel_all(
            CancelReason.SHUTDOWN, GatewayShuttingDown("the gateway is shutting down"))

    def _send_cancel(self, cid: CorrelationId, reason: CancelReason) -> None:
        if self.sender is not None and not self._closed:
            self.sender.sendFrame(Frame(FrameType.CANCEL, cid, encode_cancel(reason)))

    def _finished(self, pending: PendingRequest) -> None:
        if self.state is not None:
            self.state.in_flight -= 1
        backlog = self._backlog
        if pending.size and backlog is not None and backlog.unsent and not self._closed:
            # Its body may still wait in the write buffer: it stays counted
            # in the budgets until the buffer drains.
            if not self.retained_bytes:
                backlog.notifyDrained(self._release_retained)
            self.retained_bytes += pending.size
            return
        if self.state is not None:
            self.state.in_flight_bytes -= pending.size
        self.aggregate.value -= pending.size

    def _release_retained(self) -> None:
        """
        The write buffer drained (or the connection closed): the bodies of
        finished requests kept counted no longer take memory.
        """
        amount, self.retained_bytes = self.retained_bytes, 0
        if amount:
            if self.state is not None:
                self.state.in_flight_bytes -= amount
            self.aggregate.value -= amount

    def _stalled(self) -> None:
        """
        More than C{max_unsent_bytes} wait to be sent: the microservice does
        not read.  Route nothing more to it; close it unless it drains in
        time.
        """
        if self._closed or self._stall_timer is not None or self._backlog is None:
            return
        self.log.warn(
            "connection from {peer} ({instance}) is stalled: {unsent} bytes wait to be sent "
            "(limit {limit}); no new requests go to it, and it closes in {grace:g}s unless it "
            "reads them", peer=self.peer, unsent=self._backlog.unsent,
            limit=self.max_unsent_bytes, grace=self.stalled_close_after,
            instance=self.state.instance.instance_id if self.state is not None else "no HELLO",
        )
        if self.state is not None:
            self.routing_state.unregister(self._routable())
        self._stall_timer = self.clock.callLater(self.stalled_close_after, self._stall_expired)
        self._backlog.notifyDrained(self._unstalled)

    def _unstalled(self) -> None:
        """
        The write buffer drained in time: route to it again.
        """
        timer, self._stall_timer = self._stall_timer, None
        if timer is None or not timer.active() or self._closed:
            return
        timer.cancel()
        if self.state is not None:
            try:
                self.routing_state.register(self._routable())
            except InvalidDescriptor as e:
                self._reject(f"could not route to it again after a stall: {e}")
                return
        self.log.info("connection from {peer} drained its backlog; routing to it again",
                      peer=self.peer)

    def _stall_expired(self) -> None:
        self._stall_timer = None
        if self._closed or self._backlog is None:
            return
        self._backlog.abort(
            f"stalled: {self._backlog.unsent} bytes unsent for {self.stalled_close_after:g}s")

    def count_bytes(self, cid: CorrelationId, amount: int) -> None:
        """
        Count C{amount} more streamed body bytes of request C{cid} in flight.
        """
        pending = self.in_flight.pending(cid)
        if pending is not None and self.state is not None:
            pending.size += amount
            self.state.in_flight_bytes += amount
            self.aggregate.value += amount
