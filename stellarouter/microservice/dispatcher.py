"""
The microservice's request dispatcher: REQUEST frames in, handler calls,
RESPONSE frames out, multiplexed by correlation id; CANCEL cancels the
handler's Deferred.
"""

from __future__ import annotations

from asyncio import AbstractEventLoop
from typing import Any, Dict, List, Mapping, Optional, Tuple, cast

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..common.enums import CancelReason, FrameType
from ..common.errors import MalformedPayload
from ..common.frames import DEFAULT_MAX_FRAME_BYTES, FRAME_OVERHEAD
from ..common.ids import CorrelationId
from ..common.interfaces import IFrameSender, ISendBacklog
from ..common.models import Frame, InstanceDescriptor
from ..common.payloads import (
    RequestMessage,
    ResponseMessage,
    decode_request,
    decode_stream_data,
    encode_response,
    STREAM_WINDOW,
    encode_credit,
    encode_stream_data,
    headers_problem,
    stream_credit,
)
from ..common.problems import PROBLEM_CONTENT_TYPE, problem_body
from .budget import ResponseStreamBudget
from .asyncio_bridge import (
    ASYNCIO_REACTOR_FIX,
    awaitable_deferred,
    needs_asyncio_reactor,
    reactor_event_loop,
)
from .context import BodyStream, HeaderMap, RawRequestContext, RawResponse, StreamingResponse
from .endpoints import Microservice
from .errors import Problem

_PROBLEM_HEADERS = (("Content-Type", PROBLEM_CONTENT_TYPE),)
# A member read from an enum class goes through the enum metaclass (about
# 60 ns on Python 3.11, against a few for a global): the frame type every
# answer has is read once, here.
_RESPONSE = FrameType.RESPONSE


class _InFlight:
    """
    One request being served: its correlation id (the key of the
    dispatcher's tables; C{ctx} has only its text), its context and the
    handler's Deferred.
    """

    __slots__ = ("cid", "ctx", "deferred")

    def __init__(self, cid: CorrelationId, ctx: RawRequestContext) -> None:
        self.cid = cid
        self.ctx = ctx
        self.deferred: Optional[Deferred] = None


class _Assembly:
    """
    A non-streaming request whose body arrives as REQUEST_STREAM_DATA frames.
    """

    __slots__ = ("message", "chunks", "size")

    def __init__(self, message: RequestMessage) -> None:
        self.message = message
        self.chunks: List[bytes] = [message.body] if message.body else []
        self.size = len(message.body)


class _Credit:
    """
    Room the gateway granted for one streamed response.

    @ivar outstanding: bytes sent and not yet credited back (held in the
        process's L{ResponseStreamBudget}).
    """

    __slots__ = ("available", "_waiter", "outstanding")

    def __init__(self, available: int = STREAM_WINDOW) -> None:
        self.available = available
        self.outstanding = 0
        self._waiter: Optional[Deferred] = None

    def wait(self) -> Deferred:
        self._waiter = Deferred()
        return self._waiter

    def grant(self, amount: int) -> None:
        self.available += amount
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.called:
            waiter.callback(None)


#: L{RequestDispatcher._dispatch}'s "look the endpoint up yourself".
_LOOKUP: Any = object()


class RequestDispatcher:
    """
    Serves the REQUEST frames of one gateway connection.

    @ivar late_results: handler results discarded because their request was
        cancelled (or the connection lost) first.
    @ivar ignored_cancels: CANCEL frames for ids not in flight.
    @ivar expired: requests not dispatched because they arrived past their
        deadline.
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
        self.can_stream = can_stream
        self.event_loop = event_loop if event_loop is not None else reactor_event_loop(clock)
        self.max_frame_bytes = max_frame_bytes
        self.max_request_bytes = max_request_bytes
        #: RESPONSE headers go in the compact form (the gateway's HELLO
        #: answer listed C{compact-headers}).
        self.compact_headers = False
        #: Response streams start with no credit: the gateway grants the
        #: first window (both sides listed C{response-credit} in HELLO).
        self.response_credit = False
        self.response_budget = (response_budget if response_budget is not None
                                else ResponseStreamBudget())
        #: Added to every response: the version that served it.
        self.version_header = ("X-Stella-Version", app.version)
        self._in_flight: Dict[CorrelationId, _InFlight] = {}
        self._idle_waiters: List[Deferred] = []
        self._credits: Dict[CorrelationId, _Credit] = {}
        self._uploads: Dict[CorrelationId, BodyStream] = {}
        self._assembling: Dict[CorrelationId, _Assembly] = {}
        self.late_results = 0
        self.ignored_cancels = 0
        self.expired = 0
        self.served = 0
        self.failed = 0

    @property
    def in_flight(self) -> int:
        """
        Requests whose handler has not finished.
        """
        return len(self._in_flight) + len(self._assembling)

    def when_idle(self) -> Deferred:
        """
        A Deferred that fires once no request is in flight (at once if none
        is).
        """
        d: Deferred = Deferred()
        self._idle_waiters.append(d)
        self._check_idle()
        return d

    def _check_idle(self) -> None:
        if self._idle_waiters and not self._in_flight and not self._assembling:
            waiters, self._idle_waiters = self._idle_waiters, []
            for d in waiters:
                d.callback(None)

    def shutdown(self) -> int:
        """
        Cancel every request still in flight with reason SHUTDOWN and answer
        each 503, so the gateway can tell its clients at once.

        @return: how many were cancelled.
        """
        self._assembling.clear()
        cids = list(self._in_flight)
        for cid in cids:
            entry = self._in_flight.pop(cid)
            self.log.warn("request {cid} cancelled: the microservice is shutting down", cid=cid)
            self._cancel_entry(entry, CancelReason.SHUTDOWN)
            self._send(cid, _problem(503, "shutting-down", "Service shutting down",
                                     "the microservice stopped before the request finished",
                                     cid))
        self._check_idle()
        return len(cids)

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
            self._send(cid, _problem(400, "malformed-request", "Malformed request frame", str(e), cid))
            return
        if cid in self._in_flight or cid in self._assembling:
            self.log.warn("duplicate REQUEST {cid} ignored", cid=cid)
            return
        if message.streaming:
            registered = self.app.lookup(message.method, message.template)
            if registered is not None and registered.descriptor.supports_streaming:
                stream = BodyStream(lambda amount: self._grant_upload(cid, amount),
                                    STREAM_WINDOW)
                self._uploads[cid] = stream
                self._dispatch(cid, message, stream)
                return
            self._assembling[cid] = _Assembly(message)
            return
        registered = self.app.lookup(message.method, message.template)
        if registered is not None and registered.descriptor.supports_streaming:
            # A streaming handler whose body came inline (YAML announced the
            # endpoint as non-streaming): the same async stream, already whole.
            stream = BodyStream(lambda amount: None, STREAM_WINDOW)
            if message.body:
                stream.feed(message.body)
            stream.end()
            self._dispatch(cid, message, stream, registered)
            return
        self._dispatch(cid, message, message.body, registered)

    def stream_data_received(self, frame: Frame) -> None:
        """
        Handle one REQUEST_STREAM_DATA frame (body of a large request).
        """
        self._stream_data(frame)
        self._check_idle()

    def _stream_data(self, frame: Frame) -> None:
        cid = frame.correlation_id
        try:
            amount = stream_credit(frame.payload)
        except MalformedPayload as e:
            self.log.warn("malformed credit for request {cid} ignored: {error}", cid=cid, error=e)
            return
        if amount is not None:
            self.credit_received(cid, amount)
            return
        upload = self._uploads.get(cid)
        if upload is not None:
            try:
                chunk, end, abort = decode_stream_data(frame.payload)
            except MalformedPayload as e:
                del self._uploads[cid]
                upload.fail(ValueError(f"malformed request stream: {e}"))
                return
            if abort:
                del self._uploads[cid]
                upload.fail(ConnectionError("the gateway aborted the request body"))
                return
            upload.feed(chunk)
            if end:
                del self._uploads[cid]
                upload.end()
            return
        assembly = self._assembling.get(cid)
        if assembly is None:
            self.log.debug("stream data for unknown request {cid} dropped", cid=cid)
            return
        try:
            chunk, end, abort = decode_stream_data(frame.payload)
        except MalformedPayload as e:
            del self._assembling[cid]
            self._send(cid, _problem(400, "malformed-request", "Malformed request frame", str(e), cid))
            return
        if abort:
            del self._assembling[cid]
            return
        assembly.size += len(chunk)
        if assembly.size > self.max_request_bytes:
            del self._assembling[cid]
            self._send(cid, _problem(
                413, "payload-too-large", "Payload too large",
                f"request body exceeds {self.max_request_bytes} bytes", cid,
            ))
            return
        if chunk:
            assembly.chunks.append(chunk)
            # Keep a streamed upload flowing (YAML announced a bytes handler's
            # endpoint as streaming): the body is bounded by max_request_bytes
            # above.  The gateway ignores credit for a body it sends whole.
            self.sender.sendFrame(Frame(FrameType.RESPONSE_STREAM_DATA, cid,
                                        encode_credit(len(chunk))))
        if end:
            del self._assembling[cid]
            self._dispatch(cid, assembly.message, b"".join(assembly.chunks))

    def cancel(self, cid: CorrelationId, reason: CancelReason) -> None:
        """
        Cancel the handler of request C{cid}; an unknown id is a no-op.
        """
        if self._assembling.pop(cid, None) is not None:
            self.log.info("request {cid} cancelled before its body was complete: {reason}",
                          cid=cid, reason=reason.value)
            self._check_idle()
            return
        entry = self._in_flight.pop(cid, None)
        if entry is None:
            self.ignored_cancels += 1
            self.log.debug("CANCEL for unknown request {cid} ignored", cid=cid)
            return
        self.log.info("request {cid} cancelled: {reason}", cid=cid, reason=reason.value)
        self._cancel_entry(entry, reason)
        self._check_idle()

    def connection_lost(self) -> None:
        """
        The gateway connection is gone: cancel every handler still running.
        """
        self._assembling.clear()
        entries = list(self._in_flight.values())
        self._in_flight.clear()
        for entry in entries:
            self._cancel_entry(entry, None)
        self._check_idle()

    # -- handler calls ---------------------------------------------------

    def _dispatch(self, cid: CorrelationId, message: RequestMessage, body: Any,
                  registered: Any = _LOOKUP) -> None:
        """
        Run the handler of C{message} (C{registered}: its endpoint, if the
        caller looked it up already, C{None} if there is none).
        """
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
                self._send(cid, _problem(504, "deadline-expired", "Deadline expired",
                                         "the request arrived after its deadline", cid))
                return
        if registered is _LOOKUP:
            registered = self.app.lookup(message.method, message.template)
        if registered is None:
            self._send(cid, _problem(
                404, "not-found", "No such endpoint",
                f"{message.method} {message.template} is not served by "
                f"{self.app.name} {self.app.version}", cid,
            ))
            return
        # By position, in the order of RawRequestContext's fields: matching
        # ten keywords to parameters costs a call more than these do.
        ctx = RawRequestContext(
            message.method, message.path, message.path_params, message.query,
            HeaderMap(message.headers), message.claims, body, str(cid), message.deadline,
            instance=self.instance,
        )
        try:
            result = registered.handler(ctx)
        except Exception:
            self._handler_failed(Failure(), cid, message)
            return
        if isinstance(result, RawResponse):
            self._respond(cid, result, message)
            return
        if hasattr(result, "__await__") and not isinstance(result, Deferred):
            result = awaitable_deferred(result, self.event_loop)
        if not isinstance(result, Deferred):
            self._respond(cid, result, message)
            return
        entry = _InFlight(cid, ctx)
        entry.deferred = result
        self._in_flight[cid] = entry
        result.addCallbacks(
            self._handler_done, self._handler_errback,
            callbackArgs=(cid, entry, message), errbackArgs=(cid, entry, message),
        )

    def _handler_done(self, result: Any, cid: CorrelationId, entry: _InFlight,
                      message: RequestMessage) -> None:
        if self._in_flight.get(cid) is not entry:
            self.late_results += 1
            self.log.debug("late result of cancelled request {cid} discarded", cid=cid)
            return
        del self._in_flight[cid]
        self._respond(cid, result, message, entry)
        self._check_idle()

    def _handler_errback(self, failure: Failure, cid: CorrelationId, entry: _InFlight,
                         message: RequestMessage) -> None:
        if self._in_flight.get(cid) is not entry:
            if not failure.check(CancelledError):
                self.late_results += 1
            return
        del self._in_flight[cid]
        self._handler_failed(failure, cid, message)
        self._check_idle()

    def _handler_failed(self, failure: Failure, cid: CorrelationId,
                        message: RequestMessage) -> None:
        self._uploads.pop(cid, None)
        if isinstance(failure.value, Problem):
            # An answer the handler chose (404, 409, 400 ...), not a failure.
            self._respond(cid, failure.value.response(str(cid)), message)
            return
        self.failed += 1
        if self.event_loop is None and needs_asyncio_reactor(failure):
            self.log.failure(
                "handler for {method} {template} awaited asyncio, which needs Twisted's asyncio "
                "reactor (request {cid}): {fix}", failure, method=message.method,
                template=message.template, cid=cid, fix=ASYNCIO_REACTOR_FIX)
            self._send(cid, _problem(500, "asyncio-reactor-required", "asyncio reactor required",
                                     f"the handler awaited asyncio: {ASYNCIO_REACTOR_FIX}", cid))
            return
        self.log.failure(
            "handler for {method} {template} failed (request {cid})",
            failure, method=message.method, template=message.template, cid=cid,
        )
        self._send(cid, _problem(500, "internal-error", "Internal server error",
                                 "the handler raised an exception", cid))

    def _cancel_entry(self, entry: _InFlight, reason: Optional[CancelReason]) -> None:
        if not entry.ctx.cancelled.called:
            entry.ctx.cancel_reason = reason
            entry.ctx.cancelled.callback(reason)
        upload = self._uploads.pop(entry.cid, None)
        if upload is not None:
            upload.fail(CancelledError(f"cancelled: {reason.value if reason else 'lost'}"))
        if entry.deferred is not None and not entry.deferred.called:
            entry.deferred.cancel()

    # -- frames out ------------------------------------------------------

    def _respond(self, cid: CorrelationId, result: object, message: RequestMessage,
                 entry: Optional[_InFlight] = None) -> None:
        """
        Send a handler's result, or a 500 if it is not a valid response.
        """
        if isinstance(result, StreamingResponse):
            self._start_stream(cid, result, message, entry)
            return
        # Answered: whatever of a streamed request body still comes is
        # dropped (the gateway aborts the stream).
        self._uploads.pop(cid, None)
        problem = response_problem(result)
        if problem is not None:
            self.failed += 1
            self.log.error(
                "handler for {method} {template} returned an invalid response (request "
                "{cid}): {problem}", method=message.method, template=message.template,
                cid=cid, problem=problem,
            )
            self._send(cid, _problem(500, "internal-error", "Internal server error",
                                     "the handler returned an invalid response", cid))
            return
        assert isinstance(result, RawResponse)
        if result.status >= 500:
            self.failed += 1
        else:
            self.served += 1
        self._send(cid, result)

    def _start_stream(self, cid: CorrelationId, response: StreamingResponse,
                      message: RequestMessage, entry: Optional[_InFlight]) -> None:
        problem = response_problem(RawResponse(response.status, response.headers, b""))
        if problem is None and not self.can_stream:
            problem = "this transport cannot carry a streamed response"
        if problem is not None:
            self.failed += 1
            self.log.error("handler for {method} {template} returned an invalid streaming "
                           "response (request {cid}): {problem}", method=message.method,
                           template=message.template, cid=cid, problem=problem)
            self._send(cid, _problem(500, "internal-error", "Internal server error",
                                     "the handler returned an invalid response", cid))
            self._close_body(cid, response.body)
            return
        self.sender.sendFrame(Frame(FrameType.RESPONSE, cid, encode_response(ResponseMessage(
            response.status, _header_pairs(response.headers) + [self.version_header], b"",
            streaming=True),
            self.compact_headers)))
        credit = _Credit(0 if self.response_credit else STREAM_WINDOW)
        self._credits[cid] = credit
        if entry is None:
            entry = _InFlight(cid, RawRequestContext(
                method=message.method, path=message.path, path_params=message.path_params,
                query=message.query, headers=HeaderMap(message.headers), claims=message.claims,
                body=b"", correlation_id=str(cid), deadline=message.deadline,
                instance=self.instance))
        pump = awaitable_deferred(self._pump(cid, response.body, credit), self.event_loop)
        entry.deferred = pump
        self._in_flight[cid] = entry
        pump.addCallbacks(self._stream_done, self._stream_failed,
                          callbackArgs=(cid, entry), errbackArgs=(cid, entry))

    async def _pump(self, cid: CorrelationId, body: Any, credit: "_Credit") -> None:
        """
        Send a streamed body as the gateway grants room for it.
        """
        step = self.max_frame_bytes - FRAME_OVERHEAD - 1
        send = self.sender.sendFrame
        budget = self.response_budget
        backlog = cast(ISendBacklog, self.sender) if ISendBacklog.providedBy(self.sender) else None

        async def put(chunk: bytes) -> None:
            offset = 0
            while offset < len(chunk):
                if credit.available <= 0:
                    await credit.wait()
                    continue
                if backlog is not None and backlog.unsent:
                    # The connection's write buffer is full: wait until it
                    # has gone out rather than pile more behind it.
                    await _drained(backlog)
                    continue
                # Room in the process's budget too: what this stream sent
                # stays counted until the gateway credits it back.
                size = budget.take(min(credit.available, step, len(chunk) - offset))
                if not size:
                    await budget.wait()
                    continue
                send(Frame(FrameType.RESPONSE_STREAM_DATA, cid,
                           encode_stream_data(chunk[offset:offset + size])))
                credit.available -= size
                credit.outstanding += size
                offset += size

        if hasattr(body, "__aiter__"):
            iterator = body.__aiter__()
            try:
                while True:
                    try:
                        chunk = await iterator.__anext__()
                    except StopAsyncIteration:
                        break
                    await put(bytes(chunk))
            finally:
                close = getattr(iterator, "aclose", None)
                if close is not None and not getattr(iterator, "ag_running", False):
                    try:
                        await close()
                    except Exception:
                        self.log.failure("closing the body of request {cid} failed", cid=cid)
        else:
            iterator = iter(body)
            try:
                for chunk in iterator:
                    await put(bytes(chunk))
            finally:
                # Whether it ran out, failed, or was cancelled (client gone,
                # timeout, connection lost): a generator's finally runs now.
                self._close_body(cid, iterator)

    def _close_body(self, cid: CorrelationId, body: Any) -> None:
        """
        Close a streamed body that will not be (further) sent: C{close()}
        for a generator or any iterator that has it (a file), C{aclose()}
        for an async generator not running.
        """
        close = getattr(body, "close", None)
        aclose = getattr(body, "aclose", None)
        try:
            if close is not None:
                close()
            elif aclose is not None and not getattr(body, "ag_running", False):
                Deferred.fromCoroutine(aclose()).addErrback(
                    lambda failure: self.log.failure(
                        "closing the body of request {cid} failed", failure, cid=cid))
        except Exception:
            self.log.failure("closing the body of request {cid} failed", cid=cid)

    def _end_credit(self, cid: CorrelationId) -> None:
        """
        A response stream ended: what it sent and was not credited back
        leaves the budget (the gateway will not credit a finished stream).
        """
        credit = self._credits.pop(cid, None)
        if credit is not None and credit.outstanding:
            self.response_budget.release(credit.outstanding)
            credit.outstanding = 0

    def _stream_done(self, result: object, cid: CorrelationId, entry: _InFlight) -> None:
        self._end_credit(cid)
        self._uploads.pop(cid, None)
        if self._in_flight.get(cid) is not entry:
            return
        del self._in_flight[cid]
        self.sender.sendFrame(Frame(FrameType.RESPONSE_STREAM_DATA, cid,
                                    encode_stream_data(b"", end=True)))
        self.served += 1
        self._check_idle()

    def _stream_failed(self, failure: Failure, cid: CorrelationId, entry: _InFlight) -> None:
        self._end_credit(cid)
        self._uploads.pop(cid, None)
        if self._in_flight.get(cid) is not entry:
            return
        del self._in_flight[cid]
        self.failed += 1
        hint = ("" if self.event_loop is not None or not needs_asyncio_reactor(failure) else
                f" (it awaited asyncio, which needs Twisted's asyncio reactor: "
                f"{ASYNCIO_REACTOR_FIX})")
        self.log.failure("the streamed body of request {cid} failed; aborting the stream{hint}",
                         failure, cid=cid, hint=hint)
        self.sender.sendFrame(Frame(FrameType.RESPONSE_STREAM_DATA, cid,
                                    encode_stream_data(b"", abort=True)))
        self._check_idle()

    def _grant_upload(self, cid: CorrelationId, amount: int) -> None:
        if cid in self._uploads or cid in self._in_flight:
            self.sender.sendFrame(Frame(FrameType.RESPONSE_STREAM_DATA, cid,
                                        encode_credit(amount)))

    def credit_received(self, cid: CorrelationId, amount: int) -> None:
        """
        The gateway granted room for C{amount} more bytes of a streamed
        response.
        """
        credit = self._credits.get(cid)
        if credit is not None:
            returned = min(amount, credit.outstanding)
            if returned:
                credit.outstanding -= returned
                self.response_budget.release(returned)
            credit.grant(amount)

    def _send(self, cid: CorrelationId, response: RawResponse) -> None:
        """
        Send a valid response: one RESPONSE frame, or a streaming RESPONSE
        header and stream frames (the last one flagged end) when it does not
        fit in one frame.
        """
        body = response.body
        if type(body) is not bytes:
            body = bytes(body)
        headers = response.headers
        if type(headers) is not tuple and type(headers) is not list:
            headers = _header_pairs(headers)
        # Which version served: the client sees it whatever it asked for.
        headers = (*headers, self.version_header)
        if len(body) < self.max_frame_bytes:
            payload = encode_response(ResponseMessage(response.status, headers, body),
                                      self.compact_headers)
            if len(payload) + FRAME_OVERHEAD <= self.max_frame_bytes:
                self.sender.sendFrame(Frame(_RESPONSE, cid, payload))
                return
        if not self.can_stream:
            self.log.error("the response to request {cid} ({size} bytes) does not fit in one "
                           "datagram of {limit} bytes", cid=cid, size=len(body),
                           limit=self.max_frame_bytes)
            self._send(cid, _problem(500, "response-too-large", "Response too large",
                                     "the response does not fit in one datagram of this "
                                     "transport", cid))
            return
        header = encode_response(ResponseMessage(response.status, headers, b"", streaming=True),
                                 self.compact_headers)
        if len(header) + FRAME_OVERHEAD > self.max_frame_bytes:
            self.log.error("response headers of request {cid} do not fit in one frame "
                           "({size} bytes)", cid=cid, size=len(header))
            self._send(cid, _problem(500, "internal-error", "Internal server error",
                                     "the response headers are too large", cid))
            return
        self.sender.sendFrame(Frame(FrameType.RESPONSE, cid, header))
        step = self.max_frame_bytes - FRAME_OVERHEAD - 1
        last = max(len(body) - 1, 0) // step * step
        for offset in range(0, last + 1, step):
            self.sender.sendFrame(Frame(
                FrameType.RESPONSE_STREAM_DATA, cid,
                encode_stream_data(body[offset : offset + step], end=offset == last),
            ))


def _drained(backlog: ISendBacklog) -> Deferred:
    """
    A Deferred that fires once C{backlog}'s write buffer has drained
    (cancelling it just stops waiting).
    """
    waiter: Deferred = Deferred()
    backlog.notifyDrained(lambda: None if waiter.called else waiter.callback(None))
    return waiter


def response_problem(result: object) -> Optional[str]:
    """
    Why C{result} is not a response the SDK can send, or C{None}.
    """
    if not isinstance(result, RawResponse):
        return f"expected a RawResponse, got {type(result).__name__}"
    status = result.status
    if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599:
        return f"status {status!r} is not a final HTTP status (200-599)"
    if not isinstance(result.body, (bytes, bytearray, memoryview)):
        return f"body must be bytes, not {type(result.body).__name__}"
    headers = result.headers
    if type(headers) is not tuple and type(headers) is not list:
        try:
            headers = _header_pairs(headers)
        except TypeError:
            return "headers must be (name, value) pairs"
    return headers_problem(headers)


def _header_pairs(headers: Any) -> List[Tuple[Any, Any]]:
    """
    A response's headers as a list of pairs: a handler may give pairs (any
    iterable of them) or a mapping of names to values.

    @raise TypeError: C{headers} is not iterable.
    """
    if type(headers) is not tuple and type(headers) is not list and isinstance(headers, Mapping):
        return list(headers.items())
    return list(headers)


def _problem(status: int, kind: str, title: str, detail: str, cid: CorrelationId) -> RawResponse:
    return RawResponse(status, _PROBLEM_HEADERS, problem_body(status, kind, title, detail, str(cid)))


__all__ = ["RequestDispatcher"]
