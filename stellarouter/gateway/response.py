"""
Writing a microservice's answer to the HTTP client: L{HttpResponseSink}
receives one dispatched request's outcome (L{IResponseSink}) and answers
it through the gateway's one response writer
(L{stellarouter.gateway.writer}): a whole response with the microservice's
headers as they came; a streamed one flow-controlled by the client (the
sink is its push producer and grants the microservice credit from the
gateway's L{ResponseBudget} as the client reads); a failure as
problem+json, or a cut connection once the head has gone out.  Its
lifecycle is L{SinkState}: an event in a state that does not expect it is
logged and ignored.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, FrozenSet, Iterable, List, Optional, Tuple

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.web.http_headers import Headers
from zope.interface import implementer

from ..common.ids import CorrelationId
from ..common.interfaces import IResponseSink
from ..common.payloads import STREAM_WINDOW, ResponseMessage
from .buffers import ResponseBudget
from .errors import DispatchError
from .interfaces import IEdgeConnection
from .planner import HOP_BY_HOP
from .writer import header_lines, write_problem, write_response

if TYPE_CHECKING:
    from ._web import GatewayRequest

#: Response headers the gateway sets itself.
_OWN_RESPONSE_HEADERS = HOP_BY_HOP | {"content-length", "x-correlation-id"}
#: Headers twisted.web sets that the microservice's value replaces.
_REPLACED_BY_UPSTREAM = frozenset({"date", "server"})


def _dropped_response_headers(headers: Iterable[Tuple[str, str]]) -> FrozenSet[str]:
    """
    The (lower-case) names of a microservice response's headers that are
    not passed on: hop-by-hop ones, those the gateway sets itself, and those
    named in the response's C{Connection}.
    """
    named = [v for k, v in headers if k.lower() == "connection"]
    if not named:
        return _OWN_RESPONSE_HEADERS
    return _OWN_RESPONSE_HEADERS | {t.strip().lower() for v in named for t in v.split(",")}


def _body_and_length(method: bytes, status: int, body: bytes,
                     upstream_length: Optional[bytes]) -> Tuple[bytes, Optional[bytes]]:
    """
    The body to send and its C{Content-Length} value (L{None}: no header):
    none for 204 and 304; an explicit HEAD endpoint's own length (how long
    the GET body would be); otherwise the body's.
    """
    if status in (204, 304):
        return b"", None
    if method == b"HEAD" and not body and upstream_length is not None:
        return body, upstream_length
    return body, b"%d" % len(body)


class SinkState(Enum):
    """
    Where an L{HttpResponseSink} is in answering its request.
    """

    #: Nothing written yet.
    WAITING = "waiting"
    #: The head of a streamed answer is out; its body is flowing.
    STREAMING = "streaming"
    #: A whole answer is written; the request finishes once its body (an
    #: upload still arriving) is in (L{HttpResponseSink.body_complete}).
    ANSWERED = "answered"
    #: The request is finished.
    FINISHED = "finished"
    #: Nothing more is written: the client left, the answer was cut, or
    #: the answer to a HEAD was its head alone; what still arrives from the
    #: microservice is dropped.
    DISCARDING = "discarding"


# Module globals, not SinkState.X in the sink's methods: reading an enum
# member from its class costs ~0.2-0.4 us on Python 3.11 (python -m timeit),
# several times per request (as in gateway/connection.py).
_WAITING = SinkState.WAITING
_STREAMING = SinkState.STREAMING
_ANSWERED = SinkState.ANSWERED
_FINISHED = SinkState.FINISHED
_DISCARDING = SinkState.DISCARDING


@implementer(IResponseSink, IPushProducer)
class HttpResponseSink:
    """
    Writes one dispatched request's outcome to its HTTP request.

    For a streamed response it is also the HTTP client's producer: it grants
    the microservice room for more of the body (credit) only as the client
    takes it, and stops granting while the client's connection is paused,
    so a slow client slows the producer instead of filling the gateway.

    @ivar state: where it is in answering (L{SinkState}).
    """

    __slots__ = ("request", "correlation_id", "state", "connection", "cid", "paused",
                 "unacked", "held", "budget")

    log = Logger()

    def __init__(self, request: GatewayRequest, correlation_id: str,
                 connection: Optional[IEdgeConnection] = None,
                 cid: Optional[CorrelationId] = None) -> None:
        """
        @param connection: the microservice connection the request went to;
            its C{grant(cid, amount)} gives the microservice room for more of
            a streamed response.
        @param cid: the request's correlation id.
        """
        self.request = request
        self.correlation_id = correlation_id
        self.state = _WAITING
        self.connection = connection
        self.cid = cid
        self.paused = False
        self.unacked = 0
        #: Bytes of the gateway's L{ResponseBudget} this stream holds: credit
        #: granted and not yet used, and bytes written to the client and not
        #: yet gone out (while its connection is paused).
        self.held = 0
        self.budget: Optional[ResponseBudget] = None

    def _unexpected(self, event: str) -> None:
        """
        An event that the current state does not expect: logged, ignored.
        """
        self.log.warn("response {cid}: {event} ignored in state {state}",
                      cid=self.correlation_id, event=event, state=self.state.value)

    # Lifecycle

    def _answered(self) -> None:
        """
        A whole answer is written: finish the request, unless the client is
        still sending its body; then finish once the body is in
        (L{body_complete}; twisted.web would otherwise parse the rest of the
        body as a new request).
        """
        upload = self.request.upload
        if upload is not None and not upload.complete:
            self.state = _ANSWERED
            upload.stop_forwarding()
            return
        self.state = _FINISHED
        self.request.finish()

    def body_complete(self) -> bool:
        """
        The request's body is in.  Finish the request if its answer was
        written while the body was arriving.

        @return: whether the request was answered already (and is now
            finished).
        """
        if self.state is not _ANSWERED:
            return False
        self.state = _FINISHED
        if not self.request.finished:
            self.request.finish()
        return True

    def gone(self) -> None:
        """
        The client left: write nothing more, give the budget back.
        """
        self.state = _DISCARDING
        self._close_window()

    # IResponseSink

    def responseStarted(self, response: ResponseMessage) -> None:
        state = self.state
        if state is not _WAITING:
            if state is not _DISCARDING:
                self._unexpected("a response head")
            return
        self.request.upstream_answered()  # (telemetry)
        if response.streaming:
            self._start_stream(response)
        elif self.request.upload is None:
            self._write_whole(response)
        else:
            self._write_whole_with_upload(response)

    def bodyChunk(self, data: bytes) -> None:
        state = self.state
        if state is not _STREAMING:
            if state is not _DISCARDING:
                self._unexpected("a body chunk")
            return
        self.request.write(data)
        self.unacked += len(data)
        if not self.paused:
            if self.budget is not None:
                self._written_out()
            self._refill(STREAM_WINDOW // 2)

    def responseFinished(self) -> None:
        self._close_window()
        state = self.state
        if state is not _STREAMING:
            if state is not _DISCARDING:
                self._unexpected("the end of the response")
            return
        self.request.unregisterProducer()
        self._answered()

    def failed(self, error: DispatchError) -> None:
        self._close_window()
        state = self.state
        request = self.request
        if state is _STREAMING:
            # The head is gone already: all we can do is cut the response.
            self.state = _DISCARDING
            request.unregisterProducer()
            self.log.warn("response {cid} cut short: {error}", cid=self.correlation_id,
                          error=error.detail)
            request.cut_short_by(error.status)
            if request.channel is not None:
                request.channel.loseConnection()
            return
        if state is not _WAITING:
            if state is not _DISCARDING:
                self._unexpected("a failure")
            return
        # Nothing of a response that failed may reach the client (no
        # Set-Cookie or Cache-Control of the microservice on an error).
        request.responseHeaders = Headers()
        write_problem(request, error, self.correlation_id)
        self._answered()

    # Writing the answer

    def _write_whole(self, response: ResponseMessage) -> None:
        """
        A whole (not streamed) response: the microservice's headers go out
        as they came (the RESPONSE decoder checked they are tokens and values
        without CR, LF or NUL), without a round through twisted.web's
        L{Headers}, in one write with the gateway's own headers and the body.
        """
        request = self.request
        lines: List[bytes] = []
        upstream_length: Optional[bytes] = None
        drop = _dropped_response_headers(response.headers)
        for name, value in response.headers:
            lower = name.lower()
            if lower in drop or lower.startswith("proxy-"):
                if lower == "content-length":
                    upstream_length = value.encode("latin-1")
                continue
            if lower in _REPLACED_BY_UPSTREAM:
                request.drop_own_header(lower.encode("latin-1"))
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        body, length = _body_and_length(request.method, response.status, response.body,
                                        upstream_length)
        if length is not None:
            lines.append(b"Content-Length: " + length + b"\r\n")
        own = request.take_own_headers()
        head = [b"%s: %s\r\n" % pair for pair in own] if own else []
        for raw_name, raw_values in request.responseHeaders.getAllRawHeaders():
            for raw_value in raw_values:
                head.append(b"%s: %s\r\n" % (raw_name, raw_value))
        head += lines
        write_response(request, response.status, head, body)
        self._answered()

    def _headers_into_request(self, response: ResponseMessage) -> Optional[bytes]:
        """
        Put the microservice's headers that are passed on into the request's
        L{Headers} (a streamed answer, or one written while the request's
        body is still arriving), then the gateway's own headers of the
        names not set.

        @return: the microservice's C{Content-Length}, if any.
        """
        headers = self.request.responseHeaders
        upstream_length: Optional[bytes] = None
        drop = _dropped_response_headers(response.headers)
        for name, value in response.headers:
            lower = name.lower()
            raw_value = value.encode("latin-1")
            if lower == "content-length":
                upstream_length = raw_value
            if lower in drop or lower.startswith("proxy-"):
                continue
            if lower in _REPLACED_BY_UPSTREAM:
                headers.setRawHeaders(name.encode("latin-1"), [raw_value])
            else:
                headers.addRawHeader(name.encode("latin-1"), raw_value)
        return upstream_length

    def _head_from_request(self) -> List[bytes]:
        """
        The head's lines from the request's L{Headers}, the gateway's own
        headers added after those of the names not set there.
        """
        headers = self.request.responseHeaders
        own = self.request.take_own_headers()
        for name, value in own or ():
            if not headers.hasHeader(name):
                headers.setRawHeaders(name, [value])
        return header_lines(headers.getAllRawHeaders())

    def _write_whole_with_upload(self, response: ResponseMessage) -> None:
        """
        A whole response to a request whose body is still being streamed
        to the microservice (it may answer before reading it all).
        """
        request = self.request
        upstream_length = self._headers_into_request(response)
        body, length = _body_and_length(request.method, response.status, response.body,
                                        upstream_length)
        if length is not None:
            request.responseHeaders.setRawHeaders(b"Content-Length", [length])
        write_response(request, response.status, self._head_from_request(), body)
        self._answered()

    def _start_stream(self, response: ResponseMessage) -> None:
        """
        The head of a streamed response: out at once; the body follows in
        chunks as the microservice sends it and the client reads it.
        """
        request = self.request
        self._headers_into_request(response)
        if request.method == b"HEAD":
            self._head_of_stream(response.status)
            return
        write_response(request, response.status, self._head_from_request(), stream=True)
        self.state = _STREAMING
        request.registerProducer(self, True)
        if request.transport_paused():
            # twisted.web does not pause a producer registered while the
            # client's connection is already paused.
            self.pauseProducing()
        self._open_window()

    def _head_of_stream(self, status: int) -> None:
        """
        A HEAD request whose GET endpoint streams its body: the head is the
        whole answer.  Finish at once and stop the stream upstream
        (L{IEdgeConnection.head_answered}: a CANCEL marked C{head_only},
        not counted as a cancellation, since the client left nothing), so
        neither the microservice nor this connection moves a byte of it,
        and a request pipelined behind the HEAD does not wait (issue 17,
        item 5).
        """
        request = self.request
        write_response(request, status, self._head_from_request(), stream=True)
        if self.connection is not None:
            self.connection.head_answered(self._cid())
        self._answered()
        if self.state is _FINISHED:
            # Whatever of the body is already on its way is dropped.
            self.state = _DISCARDING

    def _cid(self) -> CorrelationId:
        """
        The request's correlation id (set whenever a connection is).
        """
        assert self.cid is not None
        return self.cid

    # IPushProducer (a streamed response)

    def pauseProducing(self) -> None:
        self.paused = True
        if self.budget is not None:
            self.budget.forget(self)

    def resumeProducing(self) -> None:
        self.paused = False
        self._written_out()
        self._refill(0)

    def stopProducing(self) -> None:
        self.paused = True
        if self.budget is not None:
            self.budget.forget(self)

    # The stream's window in the gateway's response budget

    def _open_window(self) -> None:
        """
        A streamed response starts: take its first window from the budget
        and grant it, if the microservice waits for that grant (the
        C{response-credit} feature); otherwise it sends a whole window
        unasked, which the budget counts even past its limit.
        """
        connection = self.connection
        if connection is None or connection.response_budget is None:
            return
        self.budget = budget = connection.response_budget
        if connection.response_credit:
            self._refill(0)
        else:
            budget.force(STREAM_WINDOW)
            self.held = STREAM_WINDOW

    def _written_out(self) -> None:
        """
        What was written to the client while its connection was not paused
        has gone out (or is within the transport's own small buffer): give
        it back to the budget.
        """
        amount, self.unacked = self.unacked, 0
        if amount and self.budget is not None:
            amount = min(amount, self.held)
            self.held -= amount
            self.budget.release(amount)

    def _refill(self, threshold: int) -> None:
        """
        Grant the microservice room for the rest of a window, from the
        budget, once more than C{threshold} bytes of it are missing (batches
        of half a window while data flows); wait for the budget if it has
        no room.  Nothing while the client's connection is paused, nor
        once the stream is over.
        """
        if self.paused or self.state is not _STREAMING:
            return
        budget = self.budget
        if budget is None:
            # (No budget: a connection without one, in tests.)
            if self.unacked > threshold and self.connection is not None:
                amount, self.unacked = self.unacked, 0
                self.connection.grant(self._cid(), amount)
            return
        wanted = STREAM_WINDOW - self.held
        if wanted <= threshold:
            return
        amount = budget.take(wanted)
        if not amount:
            budget.wait(self)
            return
        self.held += amount
        if self.connection is not None:
            self.connection.grant(self._cid(), amount)

    def budget_available(self) -> None:
        """
        The budget has room again (L{ResponseBudget.release}).
        """
        self._refill(0)

    def _close_window(self) -> None:
        """
        The stream ended (finished, failed, or its client left): give back
        everything it holds.
        """
        budget = self.budget
        if budget is not None:
            self.budget = None
            budget.forget(self)
            held, self.held = self.held, 0
            self.unacked = 0
            if held:
                budget.release(held)
