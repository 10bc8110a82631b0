"""
How the microservice answers for a handler: L{HandlerAnswers}, a base of
L{RequestDispatcher}, turns every outcome of a handler into frames out
through the L{ResponseWriter} - its result (validated; a 500 if it is not a
response), a L{Problem} it raised, a 500 for any other error, a streamed
response pumped as the gateway grants credit - and holds the terminal
errback, L{HandlerAnswers._completion_failed}, that still answers 500 (or
aborts the stream) when this code itself fails, so no request is left
unanswered.  A result that comes after its request was cancelled is
counted and dropped.
"""

from __future__ import annotations

from asyncio import AbstractEventLoop
from typing import Dict, Optional, Tuple

from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..common.enums import CancelReason
from ..common.ids import CorrelationId
from ..common.models import DEFAULT_TIMEOUT
from ..common.payloads import STREAM_WINDOW
from .asyncio_bridge import ASYNCIO_REACTOR_FIX, awaitable_deferred, needs_asyncio_reactor
from .budget import ResponseStreamBudget
from .context import RawResponse, StreamingResponse
from .endpoints import Microservice
from .errors import Problem
from .idle import IdleTimer
from .inbound import (
    FINAL_STATES,
    InboundRequest,
    RequestState,
    StreamCredit,
    WrongRequestState,
)
from .requestlog import RequestLog
from .responses import ResponseWriter, problem_response, response_problem


class HandlerAnswers:
    """
    The answering half of L{RequestDispatcher} (which sets every attribute
    below and keeps the table of requests).

    @ivar writer: sends the answers.
    @ivar response_credit: response streams start with no credit: the
        gateway grants the first window (both sides listed
        C{response-credit} in HELLO).
    @ivar late_results: handler results discarded because their request was
        cancelled (or the connection lost) first.
    @ivar served: requests answered below 500.
    @ivar failed: requests answered 500 or above, or whose stream failed.
    """

    log = Logger()
    clock: IReactorTime
    app: Microservice
    #: The endpoints' timeouts with the YAML overrides, by (method,
    #: template) (the session's HELLO descriptors); else the code's.
    endpoint_timeouts: Dict[Tuple[str, str], float]
    writer: ResponseWriter
    response_budget: ResponseStreamBudget
    response_credit: bool
    event_loop: Optional[AbstractEventLoop]
    _requests: Dict[CorrelationId, InboundRequest]
    late_results: int
    served: int
    failed: int
    #: Told of every answer and cancellation (the SDK's access log).
    request_log: Optional[RequestLog] = None

    def _check_idle(self) -> None:
        raise NotImplementedError()

    def _cancel(self, request: InboundRequest, reason: Optional[CancelReason]) -> None:
        raise NotImplementedError()

    def _finish(self, request: InboundRequest,
                state: RequestState = RequestState.ANSWERED) -> None:
        """
        Move C{request} to a final state (by default: answered) and out of
        the table.  (Every state but a final one may move to a final one:
        the check of L{InboundRequest.move_to}, without its call, as every
        request passes here.)

        @raise WrongRequestState: C{request} was finished already.
        """
        if request.state in FINAL_STATES:
            raise WrongRequestState(
                f"request {request.cid}: no move from {request.state.value} to {state.value}")
        request.state = state
        if self._requests.get(request.cid) is request:
            del self._requests[request.cid]
            self._check_idle()

    def credit_received(self, cid: CorrelationId, amount: int) -> None:
        """
        The gateway granted room for C{amount} more bytes of a streamed
        response.
        """
        request = self._requests.get(cid)
        credit = request.credit if request is not None else None
        if credit is None:
            # (Usually credit the gateway granted while the last frames of
            # an answer were on their way: the stream has ended since.)
            self.log.debug("credit for request {cid} ignored: it is not streaming an answer "
                           "(any more)", cid=cid)
            return
        returned = min(amount, credit.outstanding)
        if returned:
            credit.outstanding -= returned
            self.response_budget.release(returned)
        credit.grant(amount)

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
        if self.request_log is not None:  # (access log)
            self.request_log.answered(request, response.status, len(response.body))
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
        self.writer.send(request.cid, result)
        if self.request_log is not None:  # (access log)
            self.request_log.answered(request, result.status, len(result.body))
        self._finish(request)

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
        request.stream_status = response.status  # (access log: its line when it ends)
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
        if request.credit is credit:
            # issue 25: the endpoint's timeout is an idle timeout from here.
            credit.idle = IdleTimer(self.clock, self._endpoint_timeout(request),
                                    lambda: self._stream_idle(request))

    def _endpoint_timeout(self, request: InboundRequest) -> float:
        """
        The timeout of the endpoint of C{request}: as announced (YAML
        overrides included), else as its code declared it.
        """
        key = (request.message.method, request.message.template)
        timeout = self.endpoint_timeouts.get(key)
        if timeout is not None:
            return timeout
        registered = self.app.lookup(*key)
        return registered.descriptor.default_timeout if registered is not None else DEFAULT_TIMEOUT

    def _stream_idle(self, request: InboundRequest) -> None:
        """
        A streamed response sent nothing for its endpoint's timeout: abort
        it, and cancel its producer with reason TIMEOUT.
        """
        if request.state is not RequestState.STREAMING_RESPONSE:
            return
        credit = request.credit
        self.log.warn("the streamed response of request {cid} sent nothing for {timeout:g}s; "
                      "aborting it", cid=request.cid,
                      timeout=credit.idle.timeout if credit is not None and credit.idle else 0.0)
        self.failed += 1
        self._end_credit(request)
        self.writer.send_stream_data(request.cid, b"", abort=True)
        self._cancel(request, CancelReason.TIMEOUT)
        self._check_idle()

    def _end_credit(self, request: InboundRequest) -> Optional[int]:
        """
        A response stream ended: what it sent and was not credited back
        leaves the budget (the gateway will not credit a finished stream).

        @return: the body bytes the stream sent (L{None}: it had no credit).
        """
        credit, request.credit = request.credit, None
        if credit is None:
            return None
        if credit.idle is not None:
            credit.idle.stop()
        if credit.outstanding:
            self.response_budget.release(credit.outstanding)
            credit.outstanding = 0
        return credit.sent

    def _stream_done(self, result: object, request: InboundRequest) -> None:
        sent = self._end_credit(request)
        request.upload = None
        if request.state is not RequestState.STREAMING_RESPONSE:
            return
        self.writer.send_stream_data(request.cid, b"", end=True)
        if self.request_log is not None:  # (access log)
            self.request_log.stream_ended(request, True, sent)
        self.served += 1
        self._finish(request, RequestState.ANSWERED)

    def _stream_failed(self, failure: Failure, request: InboundRequest) -> None:
        sent = self._end_credit(request)
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
        if self.request_log is not None:  # (access log)
            self.request_log.stream_ended(request, False, sent)
        self._finish(request, RequestState.ANSWERED)


__all__ = ["HandlerAnswers"]
