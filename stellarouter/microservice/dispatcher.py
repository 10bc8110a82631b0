"""
The microservice's request dispatcher, one per gateway connection: REQUEST
and REQUEST_STREAM_DATA frames in, handler calls, answers out through a
L{ResponseWriter}, multiplexed by correlation id.  Each request is one
L{InboundRequest} in one table, moving through the states of
L{RequestState}; a frame that finds its request in a state where it means
nothing (stream data for a request whose body is complete, credit for a
response that is not streamed) is logged and dropped, and a CANCEL cancels
the handler's Deferred.  Every outcome of a handler ends in an answer:
its result, a problem it raised, a 500 for anything else, and a 500 (or an
aborted stream) too when the SDK's own completion code fails, through one
terminal errback, L{RequestDispatcher._completion_failed}.
"""

from __future__ import annotations

from asyncio import AbstractEventLoop
from typing import Dict, List, Optional, Union

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..common.enums import CancelReason
from ..common.errors import MalformedPayload
from ..common.frames import DEFAULT_MAX_FRAME_BYTES
from ..common.ids import CorrelationId
from ..common.interfaces import IFrameSender
from ..common.models import Frame, InstanceDescriptor
from ..common.payloads import (
    STREAM_WINDOW,
    decode_request,
    decode_stream_data,
    stream_credit,
)
from .asyncio_bridge import (
    ASYNCIO_REACTOR_FIX,
    awaitable_deferred,
    needs_asyncio_reactor,
    reactor_event_loop,
)
from .budget import ResponseStreamBudget
from .context import BodyStream, HeaderMap, RawRequestContext, RawResponse, StreamingResponse
from .endpoints import Microservice, RegisteredEndpoint
from .errors import Problem
from .inbound import InboundRequest, RequestState, StreamCredit
from .responses import ResponseWriter, problem_response, response_problem

#: What a handler receives as C{ctx.body}.
RequestBody = Union[bytes, BodyStream]


class RequestDispatcher:
    """
    Serves the REQUEST frames of one gateway connection.

    @ivar writer: sends the answers.
    @ivar response_credit: response streams start with no credit: the
        gateway grants the first window (both sides listed
        C{response-credit} in HELLO).
    @ivar late_results: handler results discarded because their request was
        cancelled (or the connection lost) first.
    @ivar ignored_cancels: CANCEL frames for ids not in flight.
    @ivar expired: requests not dispatched because they arrived past their
        deadline.
    @ivar served: requests answered below 500.
    @ivar failed: requests answered 500 or above, or whose stream failed.
    """

    log = Logger()

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

    def _finish(self, request: InboundRequest, state: RequestState) -> None:
        """
        Move C{request} to a final state and out of the table.
        """
        request.move_to(state)
        if self._requests.get(request.cid) is request:
            del self._requests[request.cid]
            self._check_idle()

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
        registered = self.app.lookup(message.method, message.template)
        streaming_handler = registered is not None and registered.descriptor.supports_streaming
        if message.streaming and not streaming_handler:
            self._requests[cid] = InboundRequest(cid, message, RequestState.RECEIVING_BODY)
            return
        request = InboundRequest(cid, message)
        body: RequestBody = message.body
        if message.streaming:
            request.upload = body = BodyStream(
                lambda amount: self._grant_upload(request, amount), STREAM_WINDOW)
            self._requests[cid] = request
        elif streaming_handler:
            # A streaming handler whose body came inline (YAML announced the
            # endpoint as non-streaming): the same async stream, already whole.
            body = BodyStream(lambda amount: None, STREAM_WINDOW)
            if message.body:
                body.feed(message.body)
            body.end()
        self._handle(request, body, registered)

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
        request.body_size += len(chunk)
        if request.body_size > self.max_request_bytes:
            self._answer(request, problem_response(
                413, "payload-too-large", "Payload too large",
                f"request body exceeds {self.max_request_bytes} bytes", cid))
            return
        if chunk:
            request.body_chunks.append(chunk)
            # Keep a streamed upload flowing (YAML announced a bytes handler's
            # endpoint as streaming): the body is bounded by max_request_bytes
            # above.  The gateway ignores credit for a body it sends whole.
            self.writer.send_credit(cid, len(chunk))
        if end:
            request.move_to(RequestState.HANDLING)
            body = b"".join(request.body_chunks)
            request.body_chunks = []
            message = request.message
            self._handle(request, body, self.app.lookup(message.method, message.template))

    def _grant_upload(self, request: InboundRequest, amount: int) -> None:
        """
        A streaming handler read C{amount} bytes of its body: the gateway
        may send that much more, unless the request is over.
        """
        if not request.finished:
            self.writer.send_credit(request.cid, amount)

    def credit_received(self, cid: CorrelationId, amount: int) -> None:
        """
        The gateway granted room for C{amount} more bytes of a streamed
        response.
        """
        request = self._requests.get(cid)
        credit = request.credit if request is not None else None
        if credit is None:
            self.log.debug("credit for request {cid}, which streams no response, ignored",
                           cid=cid)
            return
        returned = min(amount, credit.outstanding)
        if returned:
            credit.outstanding -= returned
            self.response_budget.release(returned)
        credit.grant(amount)

    def cancel(self, cid: CorrelationId, reason: CancelReason) -> None:
        """
        Cancel the handler of request C{cid}; an unknown id is a no-op.
        """
        request = self._requests.get(cid)
        if request is None:
            self.ignored_cancels += 1
            self.log.debug("CANCEL for unknown request {cid} ignored", cid=cid)
            return
        if request.state is RequestState.RECEIVING_BODY:
            self.log.info("request {cid} cancelled before its body was complete: {reason}",
                          cid=cid, reason=reason.value)
            self._finish(request, RequestState.CANCELLED)
            return
        self.log.info("request {cid} cancelled: {reason}", cid=cid, reason=reason.value)
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

    def _handle(self, request: InboundRequest, body: RequestBody,
                registered: Optional[RegisteredEndpoint]) -> None:
        """
        Call the handler of C{request} (C{registered}: its endpoint, C{None}
        if there is none) and answer, now or when its Deferred fires.
        """
        try:
            self._call_handler(request, body, registered)
        except Exception:
            self._completion_failed(Failure(), request)

    def _call_handler(self, request: InboundRequest, body: RequestBody,
                      registered: Optional[RegisteredEndpoint]) -> None:
        cid = request.cid
        message = request.message
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

    def _handler_done(self, result: object, request: InboundRequest) -> None:
        if request.state is not RequestState.HANDLING:
            self.late_results += 1
            self.log.debug("late result of cancelled request {cid} discarded", cid=request.cid)
            return
        self._respond(request, result)

    def _handler_errback(self, failure: Failure, request: InboundRequest) -> None:
        if request.state is not RequestState.HANDLING:
            if not failure.check(CancelledError):
                self.late_results += 1
            return
        self._handler_failed(failure, request)

    def _handler_failed(self, failure: Failure, request: InboundRequest) -> None:
        cid = request.cid
        message = request.message
        request.upload = None
        if isinstance(failure.value, Problem):
            # An answer the handler chose (404, 409, 400 ...), not a failure.
            self._respond(request, failure.value.response(str(cid)))
            return
        self.failed += 1
        if self.event_loop is None and needs_asyncio_reactor(failure):
            self.log.failure(
                "handler for {method} {template} awaited asyncio, which needs Twisted's asyncio "
                "reactor (request {cid}): {fix}", failure, method=message.method,
                template=message.template, cid=cid, fix=ASYNCIO_REACTOR_FIX)
            self._answer(request, problem_response(
                500, "asyncio-reactor-required", "asyncio reactor required",
                f"the handler awaited asyncio: {ASYNCIO_REACTOR_FIX}", cid))
            return
        self.log.failure(
            "handler for {method} {template} failed (request {cid})",
            failure, method=message.method, template=message.template, cid=cid,
        )
        self._answer(request, problem_response(500, "internal-error", "Internal server error",
                                               "the handler raised an exception", cid))

    def _completion_failed(self, failure: Failure, request: InboundRequest) -> None:
        """
        The terminal errback: the SDK's own code failed while calling a
        handler or answering for it (a bug).  Answer 500 if nothing was
        sent yet, abort the stream if the response is streaming, and take
        the request out of the table whatever happens.
        """
        self.failed += 1
        self.log.failure("answering request {cid} failed (a bug of the SDK); answering 500",
                         failure, cid=request.cid)
        request.upload = None
        try:
            if request.state is RequestState.STREAMING_RESPONSE:
                self._end_credit(request)
                self.writer.send_stream_data(request.cid, b"", abort=True)
            elif not request.finished:
                self.writer.send(request.cid, problem_response(
                    500, "internal-error", "Internal server error",
                    "the microservice failed to answer", request.cid))
        except Exception:
            self.log.failure("request {cid} could not be answered after a bug; dropped",
                             cid=request.cid)
        if not request.finished:
            request.move_to(RequestState.ANSWERED)
        if self._requests.get(request.cid) is request:
            del self._requests[request.cid]
        self._check_idle()

    # -- answers ---------------------------------------------------------

    def _answer(self, request: InboundRequest, response: RawResponse) -> None:
        """
        Send an answer of the SDK's own (a problem) and finish C{request}.
        """
        self.writer.send(request.cid, response)
        self._finish(request, RequestState.ANSWERED)

    def _respond(self, request: InboundRequest, result: object) -> None:
        """
        Send a handler's result, or a 500 if it is not a valid response.
        """
        if isinstance(result, StreamingResponse):
            self._start_stream(request, result)
            return
        # Answered: whatever of a streamed request body still comes is
        # dropped (the gateway aborts the stream).
        request.upload = None
        problem = response_problem(result)
        if problem is not None:
            self.failed += 1
            self.log.error(
                "handler for {method} {template} returned an invalid response (request "
                "{cid}): {problem}", method=request.message.method,
                template=request.message.template, cid=request.cid, problem=problem,
            )
            self._answer(request, problem_response(500, "internal-error",
                                                   "Internal server error",
                                                   "the handler returned an invalid response",
                                                   request.cid))
            return
        assert isinstance(result, RawResponse)
        if result.status >= 500:
            self.failed += 1
        else:
            self.served += 1
        self._answer(request, result)

    def _start_stream(self, request: InboundRequest, response: StreamingResponse) -> None:
        cid = request.cid
        problem = response_problem(RawResponse(response.status, response.headers, b""))
        if problem is None and not self.writer.can_stream:
            problem = "this transport cannot carry a streamed response"
        if problem is not None:
            self.failed += 1
            self.log.error("handler for {method} {template} returned an invalid streaming "
                           "response (request {cid}): {problem}",
                           method=request.message.method, template=request.message.template,
                           cid=cid, problem=problem)
            self._answer(request, problem_response(500, "internal-error",
                                                   "Internal server error",
                                                   "the handler returned an invalid response",
                                                   cid))
            self.writer.close_body(cid, response.body)
            return
        self.writer.send_stream_header(cid, response.status, response.headers)
        request.move_to(RequestState.STREAMING_RESPONSE)
        credit = request.credit = StreamCredit(0 if self.response_credit else STREAM_WINDOW)
        # In the table before the pump starts: credit may come back while
        # the pump's first pieces go out.
        self._requests[cid] = request
        pump = awaitable_deferred(
            self.writer.pump(cid, response.body, credit, self.response_budget), self.event_loop)
        request.running = pump
        pump.addCallbacks(self._stream_done, self._stream_failed,
                          callbackArgs=(request,), errbackArgs=(request,))
        pump.addErrback(self._completion_failed, request)

    def _end_credit(self, request: InboundRequest) -> None:
        """
        A response stream ended: what it sent and was not credited back
        leaves the budget (the gateway will not credit a finished stream).
        """
        credit, request.credit = request.credit, None
        if credit is not None and credit.outstanding:
            self.response_budget.release(credit.outstanding)
            credit.outstanding = 0

    def _stream_done(self, result: object, request: InboundRequest) -> None:
        self._end_credit(request)
        request.upload = None
        if request.state is not RequestState.STREAMING_RESPONSE:
            return
        self.writer.send_stream_data(request.cid, b"", end=True)
        self.served += 1
        self._finish(request, RequestState.ANSWERED)

    def _stream_failed(self, failure: Failure, request: InboundRequest) -> None:
        self._end_credit(request)
        request.upload = None
        if request.state is not RequestState.STREAMING_RESPONSE:
            return
        self.failed += 1
        hint = ("" if self.event_loop is not None or not needs_asyncio_reactor(failure) else
                f" (it awaited asyncio, which needs Twisted's asyncio reactor: "
                f"{ASYNCIO_REACTOR_FIX})")
        self.log.failure("the streamed body of request {cid} failed; aborting the stream{hint}",
                         failure, cid=request.cid, hint=hint)
        self.writer.send_stream_data(request.cid, b"", abort=True)
        self._finish(request, RequestState.ANSWERED)


__all__ = ["RequestDispatcher"]
