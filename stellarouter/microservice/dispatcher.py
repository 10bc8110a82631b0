"""
The microservice's request dispatcher, one per gateway connection: REQUEST
and REQUEST_STREAM_DATA frames in, handler calls, multiplexed by
correlation id.  Each request is one L{InboundRequest} in one table, moving
through the states of L{RequestState}; a frame that finds its request in a
state where it means nothing (stream data for a request whose body is
complete, credit for a response that is not streamed) is logged and
dropped, and a CANCEL cancels the handler's Deferred.  How each outcome of
a handler becomes an answer (including a bug in that code: a 500) is
L{HandlerAnswers}, its base class.
"""

from __future__ import annotations

from asyncio import AbstractEventLoop
from functools import partial
from typing import Dict, List, Optional, Tuple, Union

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from ..common.enums import CancelReason
from ..common.errors import MalformedPayload
from ..common.frames import DEFAULT_MAX_FRAME_BYTES
from ..common.ids import CorrelationId
from ..common.interfaces import IFrameSender
from ..common.models import Frame, InstanceDescriptor
from ..common.payloads import (
    STREAM_WINDOW,
    RequestMessage,
    decode_request,
    decode_stream_data,
    stream_credit,
)
from .admission import RequestAdmission, not_started_response
from .answers import HandlerAnswers
from .asyncio_bridge import awaitable_deferred, reactor_event_loop
from .budget import ResponseStreamBudget
from .context import BodyStream, HeaderMap, RawRequestContext, RawResponse
from .endpoints import Microservice, RegisteredEndpoint
from .inbound import InboundRequest, RequestState
from .responses import ResponseWriter, problem_response

#: What a handler receives as C{ctx.body}.
RequestBody = Union[bytes, BodyStream]


class RequestDispatcher(HandlerAnswers):
    """
    Serves the REQUEST frames of one gateway connection.

    @ivar ignored_cancels: CANCEL frames for ids not in flight.
    @ivar expired: requests not dispatched because they arrived past their
        deadline.
    """

    def __init__(
        self,
        app: Microservice,
        sender: IFrameSender,
        clock: IReactorTime,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_request_bytes: int = 16 * 1024 * 1024,
        instance: Optional[InstanceDescriptor] = None,
        can_stream: bool = True,
        response_budget: Optional[ResponseStreamBudget] = None,
        event_loop: Optional[AbstractEventLoop] = None,
    ) -> None:
        """
        @param app: the endpoints to serve.
        @param sender: where RESPONSE frames go.
        @param clock: tells whether a request's deadline has passed.
        @param max_frame_bytes: the connection's frame cap; larger response
            bodies are sent as RESPONSE_STREAM_DATA frames.
        @param max_request_bytes: the largest body reassembled from stream
            frames.
        @param instance: the serving instance, shown to handlers.
        @param can_stream: whether a response may be split into stream
            frames (not over UDP, where a response must fit one datagram).
        @param response_budget: the process's budget for streamed response
            bytes not yet credited back (shared by every connection; a
            fresh default one if none).
        @param event_loop: the asyncio loop handler coroutines run on as
            tasks (default: the loop of C{clock} if it is Twisted's asyncio
            reactor; C{None}: Twisted steps them, see L{awaitable_deferred}).
        """
        self.app = app
        self.sender = sender
        self.clock = clock
        self.instance = instance
        self.event_loop = event_loop if event_loop is not None else reactor_event_loop(clock)
        self.max_request_bytes = max_request_bytes
        self.writer = ResponseWriter(sender, max_frame_bytes, can_stream, app.version)
        self.response_credit = False
        self.response_budget = (response_budget if response_budget is not None
                                else ResponseStreamBudget())
        #: The requests not finished yet: whose body is arriving, whose
        #: handler runs, or whose response is streaming.
        self._requests: Dict[CorrelationId, InboundRequest] = {}
        self._idle_waiters: List[Deferred[None]] = []
        self.endpoint_timeouts: Dict[Tuple[str, str], float] = {}
        #: Whether a new request may start (draining, concurrency; issue 24).
        self.admission = RequestAdmission()
        self.late_results = 0
        self.ignored_cancels = 0
        self.expired = 0
        self.served = 0
        self.failed = 0

    @property
    def compact_headers(self) -> bool:
        """
        RESPONSE headers go in the compact form (the gateway's HELLO answer
        listed C{compact-headers}).
        """
        return self.writer.compact_headers

    @compact_headers.setter
    def compact_headers(self, value: bool) -> None:
        self.writer.compact_headers = value

    @property
    def in_flight(self) -> int:
        """
        Requests not finished yet.
        """
        return len(self._requests)

    def when_idle(self) -> Deferred[None]:
        """
        A Deferred that fires once no request is in flight (at once if none
        is).
        """
        d: Deferred[None] = Deferred()
        self._idle_waiters.append(d)
        self._check_idle()
        return d

    def _check_idle(self) -> None:
        if self._idle_waiters and not self._requests:
            waiters, self._idle_waiters = self._idle_waiters, []
            for d in waiters:
                d.callback(None)

    def shutdown(self) -> int:
        """
        Cancel every request still in flight with reason SHUTDOWN and answer
        each 503, so the gateway can tell its clients at once.

        @return: how many were cancelled.
        """
        requests = list(self._requests.values())
        self._requests.clear()
        cancelled = 0
        for request in requests:
            if request.state is RequestState.RECEIVING_BODY:
                request.move_to(RequestState.CANCELLED)
                continue
            cancelled += 1
            self.log.warn("request {cid} cancelled: the microservice is shutting down",
                          cid=request.cid)
            self._cancel(request, CancelReason.SHUTDOWN)
            if self.request_log is not None:  # (access log)
                self.request_log.cancelled(request, CancelReason.SHUTDOWN.value)
            self.writer.send(request.cid, problem_response(
                503, "shutting-down", "Service shutting down",
                "the microservice stopped before the request finished", request.cid))
        self._check_idle()
        return cancelled

    # -- frames in -------------------------------------------------------

    def request_received(self, frame: Frame) -> None:
        """
        Handle one REQUEST frame.
        """
        cid = frame.correlation_id
        try:
            message = decode_request(frame.payload)
        except MalformedPayload as e:
            self.log.warn("malformed REQUEST {cid}: {error}", cid=cid, error=e)
            self.writer.send(cid, problem_response(400, "malformed-request",
                                                   "Malformed request frame", str(e), cid))
            return
        if cid in self._requests:
            self.log.warn("duplicate REQUEST {cid} ignored", cid=cid)
            return
        refusal = self.admission.refusal(self.in_flight)
        if refusal is not None:
            # Issue 24: not started, so the gateway may send it elsewhere.
            self.writer.send(cid, not_started_response(refusal, cid))
            return
        registered = self.app.lookup(message.method, message.template)
        if message.streaming or (registered is not None
                                 and registered.descriptor.supports_streaming):
            self._streamed_request_received(cid, message, registered)
            return
        request = InboundRequest(cid, message)
        try:
            self._call_handler(request, message.body, registered)
        except Exception:
            self._completion_failed(Failure(), request)

    def _streamed_request_received(self, cid: CorrelationId, message: RequestMessage,
                                   registered: Optional[RegisteredEndpoint]) -> None:
        """
        A REQUEST whose body comes as stream frames, or whose handler reads
        its body as a stream.
        """
        streaming_handler = registered is not None and registered.descriptor.supports_streaming
        if not streaming_handler:
            self._requests[cid] = InboundRequest.receiving_body(cid, message)
            return
        request = InboundRequest(cid, message)
        if message.streaming:
            # (The grant names the request by its id: a callback holding the
            # request itself would make it, its context and its body a
            # reference cycle that only the cyclic collector frees.)
            body = request.upload = BodyStream(partial(self._grant_upload, cid), STREAM_WINDOW)
            self._requests[cid] = request
        else:
            # A streaming handler whose body came inline (YAML announced the
            # endpoint as non-streaming): the same async stream, already whole.
            body = BodyStream(lambda amount: None, STREAM_WINDOW)
            if message.body:
                body.feed(message.body)
            body.end()
        try:
            self._call_handler(request, body, registered)
        except Exception:
            self._completion_failed(Failure(), request)

    def stream_data_received(self, frame: Frame) -> None:
        """
        Handle one REQUEST_STREAM_DATA frame: credit for a streamed response,
        or a piece of a request body.
        """
        cid = frame.correlation_id
        try:
            amount = stream_credit(frame.payload)
        except MalformedPayload as e:
            self.log.warn("malformed credit for request {cid} ignored: {error}", cid=cid, error=e)
            return
        if amount is not None:
            self.credit_received(cid, amount)
            return
        request = self._requests.get(cid)
        if request is None:
            self.log.debug("stream data for unknown request {cid} dropped", cid=cid)
        elif request.upload is not None:
            self._feed_upload(request, request.upload, frame.payload)
        elif request.state is RequestState.RECEIVING_BODY:
            self._feed_body(request, frame.payload)
        else:
            self.log.debug("stream data for request {cid} dropped: its body is complete "
                           "({state})", cid=cid, state=request.state.value)
        self._check_idle()

    def _feed_upload(self, request: InboundRequest, upload: BodyStream, payload: bytes) -> None:
        """
        A piece of the body of a request whose streaming handler runs.
        """
        try:
            chunk, end, abort = decode_stream_data(payload)
        except MalformedPayload as e:
            request.upload = None
            upload.fail(ValueError(f"malformed request stream: {e}"))
            return
        if abort:
            request.upload = None
            upload.fail(ConnectionError("the gateway aborted the request body"))
            return
        upload.feed(chunk)
        if end:
            request.upload = None
            upload.end()

    def _feed_body(self, request: InboundRequest, payload: bytes) -> None:
        """
        A piece of the body of a request whose handler takes it whole.
        """
        cid = request.cid
        try:
            chunk, end, abort = decode_stream_data(payload)
        except MalformedPayload as e:
            self._answer(request, problem_response(400, "malformed-request",
                                                   "Malformed request frame", str(e), cid))
            return
        if abort:
            self._finish(request, RequestState.CANCELLED)
            return
        chunks = request.body_chunks
        assert chunks is not None  # (set in RECEIVING_BODY)
        request.body_size += len(chunk)
        if request.body_size > self.max_request_bytes:
            self._answer(request, problem_response(
                413, "payload-too-large", "Payload too large",
                f"request body exceeds {self.max_request_bytes} bytes", cid))
            return
        if chunk:
            chunks.append(chunk)
            # Keep a streamed upload flowing (YAML announced a bytes handler's
            # endpoint as streaming): the body is bounded by max_request_bytes
            # above.  The gateway ignores credit for a body it sends whole.
            self.writer.send_credit(cid, len(chunk))
        if end:
            request.move_to(RequestState.HANDLING)
            body = b"".join(chunks)
            request.body_chunks = None
            message = request.message
            try:
                self._call_handler(request, body,
                                   self.app.lookup(message.method, message.template))
            except Exception:
                self._completion_failed(Failure(), request)

    def _grant_upload(self, cid: CorrelationId, amount: int) -> None:
        """
        The streaming handler of request C{cid} read C{amount} bytes of its
        body: the gateway may send that much more, unless the request is
        over.
        """
        request = self._requests.get(cid)
        if request is not None and not request.finished:
            self.writer.send_credit(cid, amount)

    def cancel(self, cid: CorrelationId, reason: CancelReason) -> None:
        """
        Cancel the handler of request C{cid}; an unknown id is a no-op.
        """
        request = self._requests.get(cid)
        if request is None:
            self.ignored_cancels += 1
            self.log.debug("CANCEL for unknown request {cid} ignored", cid=cid)
            return
        if self.request_log is not None:  # (access log)
            self.request_log.cancelled(request, reason.value)
        if request.state is RequestState.RECEIVING_BODY:
            self.log.info("request {cid} cancelled before its body was complete: {reason}",
                          cid=cid, reason=reason.value)
            self._finish(request, RequestState.CANCELLED)
            return
        self.log.info("request {cid} cancelled: {reason}", cid=cid, reason=reason.value)
        self._cancel(request, reason)
        self._check_idle()

    def head_answered(self, cid: CorrelationId, reason: CancelReason) -> None:
        """
        A CANCEL marked C{head_only}: the gateway answered a HEAD from the
        head of this GET's streamed response, and nobody reads its body.
        The request is complete: logged as a streamed answer that ended
        (its status, outcome C{ok}, the body bytes sent so far), and its
        producer is stopped as for a CANCEL (C{ctx.cancelled} fires with
        C{reason}).  In any other state than streaming it is an ordinary
        CANCEL.
        """
        request = self._requests.get(cid)
        if request is None or request.state is not RequestState.STREAMING_RESPONSE:
            self.cancel(cid, reason)
            return
        sent = self._end_credit(request)
        # (No log line of its own: the access log's line says it, one per
        # HEAD is noise.)
        if self.request_log is not None:  # (access log)
            self.request_log.stream_ended(request, True, sent)
        self.served += 1
        self._cancel(request, reason)
        self._check_idle()

    def connection_lost(self) -> None:
        """
        The gateway connection is gone: cancel every handler still running.
        """
        requests = list(self._requests.values())
        self._requests.clear()
        for request in requests:
            if request.state is RequestState.RECEIVING_BODY:
                request.move_to(RequestState.CANCELLED)
            else:
                self._cancel(request, None)
        self._check_idle()

    def _cancel(self, request: InboundRequest, reason: Optional[CancelReason]) -> None:
        """
        Take C{request} out of the table and tell its handler (C{None}: the
        connection is lost); what its handler gives later is discarded.
        """
        request.move_to(RequestState.CANCELLED)
        if self._requests.get(request.cid) is request:
            del self._requests[request.cid]
        ctx = request.context
        if ctx is not None and not ctx.cancelled.called:
            ctx.cancel_reason = reason
            ctx.cancelled.callback(reason)
        upload, request.upload = request.upload, None
        if upload is not None:
            upload.fail(CancelledError(f"cancelled: {reason.value if reason else 'lost'}"))
        running = request.running
        if running is not None and not running.called:
            running.cancel()

    # -- handler calls ---------------------------------------------------

    def _call_handler(self, request: InboundRequest, body: RequestBody,
                      registered: Optional[RegisteredEndpoint]) -> None:
        """
        Call the handler of C{request} (C{registered}: its endpoint, C{None}
        if there is none) and answer, now or when its Deferred fires.  (A
        raise out of here is a bug of the SDK: the caller hands it to
        L{_completion_failed}.)
        """
        cid = request.cid
        message = request.message
        if self.request_log is not None:  # (access log)
            request.started_at = self.clock.seconds()
        deadline = message.deadline
        if deadline is not None:
            late = self.clock.seconds() - deadline
            if late >= 0:
                self.expired += 1
                self.log.warn(
                    "request {cid} ({method} {template}) arrived {late:.3f}s past its "
                    "deadline; not dispatched", cid=cid, method=message.method,
                    template=message.template, late=late,
                )
                self._answer(request, problem_response(
                    504, "deadline-expired", "Deadline expired",
                    "the request arrived after its deadline", cid))
                return
        if registered is None:
            self._answer(request, problem_response(
                404, "not-found", "No such endpoint",
                f"{message.method} {message.template} is not served by "
                f"{self.app.name} {self.app.version}", cid,
            ))
            return
        ctx = request.context = RawRequestContext(
            message.method, message.path, message.path_params, message.query,
            HeaderMap(message.headers), message.claims, body, str(cid), message.deadline,
            instance=self.instance,
        )
        try:
            result = registered.handler(ctx)
        except Exception:
            self._handler_failed(Failure(), request)
            return
        if isinstance(result, RawResponse):
            self._respond(request, result)
            return
        if hasattr(result, "__await__") and not isinstance(result, Deferred):
            result = awaitable_deferred(result, self.event_loop)
        if not isinstance(result, Deferred):
            self._respond(request, result)
            return
        request.running = result
        self._requests[cid] = request
        result.addCallbacks(self._handler_done, self._handler_errback,
                            callbackArgs=(request,), errbackArgs=(request,))
        result.addErrback(self._completion_failed, request)


__all__ = ["RequestDispatcher"]
