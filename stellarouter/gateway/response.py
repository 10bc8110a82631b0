"""
Writing a microservice's answer to the HTTP client: L{HttpResponseSink}
receives one dispatched request's outcome (L{IResponseSink}) and writes it
to its twisted.web request: a whole response in one write with the
gateway's own headers (L{GatewayRequest.write_whole}); a streamed one
through twisted.web, flow-controlled by the client (the sink is its push
producer and grants the microservice credit from the gateway's
L{ResponseBudget} as the client reads); a failure as problem+json
(L{write_problem}), or a cut connection once the head has gone out.
"""

from __future__ import annotations

from typing import FrozenSet, Iterable, List, Optional, Tuple

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.web.http_headers import Headers
from twisted.web.server import Request
from zope.interface import implementer

from ..common.enums import CancelReason
from ..common.ids import CorrelationId
from ..common.interfaces import IResponseSink
from ..common.payloads import STREAM_WINDOW, ResponseMessage
from ._web import GatewayRequest, transport_paused
from .buffers import ResponseBudget
from .errors import DispatchError
from .interfaces import IEdgeConnection
from .planner import HOP_BY_HOP
from .problems import CORRELATION_HEADER, write_problem

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


@implementer(IResponseSink, IPushProducer)
class HttpResponseSink:
    """
    Writes one dispatched request's outcome to its HTTP request.

    For a streamed response it is also the HTTP client's producer: it grants
    the microservice room for more of the body (credit) only as the client
    takes it, and stops granting while the client's connection is paused,
    so a slow client slows the producer instead of filling the gateway.
    """

    __slots__ = ("request", "correlation_id", "client_gone", "connection", "cid", "paused",
                 "unacked", "streaming", "finish_pending", "held", "budget")

    log = Logger()

    def __init__(self, request: Request, correlation_id: str,
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
        self.client_gone = False
        self.connection = connection
        self.cid = cid
        self.paused = False
        self.unacked = 0
        self.streaming = False
        self.finish_pending = False
        #: Bytes of the gateway's L{ResponseBudget} this stream holds: credit
        #: granted and not yet used, and bytes written to the client and not
        #: yet gone out (while its connection is paused).
        self.held = 0
        self.budget: Optional[ResponseBudget] = None

    def _finish(self) -> None:
        """
        Finish the HTTP response, unless the client is still sending the
        request's body: then finish once the body is in (twisted.web would
        otherwise parse the rest of the body as a new request).
        """
        upload = getattr(self.request, "upload", None)
        if upload is not None and not upload.complete:
            self.finish_pending = True
            upload.stop_forwarding()
            return
        self.request.finish()

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
        no room.  Nothing while the client's connection is paused.
        """
        if self.paused or self.client_gone:
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

    def gone(self) -> None:
        """
        The client left: write nothing more, give the budget back.
        """
        self.client_gone = True
        self._close_window()

    def responseStarted(self, response: ResponseMessage) -> None:
        if self.client_gone:
            return
        request = self.request
        status = response.status
        if not response.streaming and isinstance(request, GatewayRequest) and (
                request.upload is None and request.can_write_whole()):
            self._write_whole(request, response)
            return
        request.setResponseCode(status)
        headers = request.responseHeaders
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
        if response.streaming:
            if request.method == b"HEAD":
                self._head_of_stream(request)
                return
            self.streaming = True
            request.registerProducer(self, True)
            if transport_paused(request.channel):
                # twisted.web does not pause a producer registered while the
                # client's connection is already paused.
                self.pauseProducing()
            self._open_window()
            return
        body, length = _body_and_length(request.method, status, response.body, upstream_length)
        if length is not None:
            headers.setRawHeaders(b"Content-Length", [length])
        if body:
            request.write(body)
        self._finish()

    def _cid(self) -> CorrelationId:
        """
        The request's correlation id (set whenever a connection is).
        """
        assert self.cid is not None
        return self.cid

    def _head_of_stream(self, request: Request) -> None:
        """
        A HEAD request whose GET endpoint streams its body: the head is the
        whole answer.  Finish at once and cancel the stream upstream (reason
        ClientDisconnected: nobody will read that body), so neither the
        microservice nor this connection moves a byte of it, and a request
        pipelined behind the HEAD does not wait (issue 17, item 5).
        """
        self.client_gone = True  # drop whatever of the body is already on its way
        if self.connection is not None:
            self.connection.cancel(self._cid(), CancelReason.CLIENT_DISCONNECTED)
        self._finish()

    def _write_whole(self, request: "GatewayRequest", response: ResponseMessage) -> None:
        """
        A whole (not streamed) response: the microservice's headers go out
        as they came (the RESPONSE decoder checked they are tokens and values
        without CR, LF or NUL), without a round through twisted.web's
        L{Headers}, in one write with the gateway's own headers and the body.
        """
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
        request.write_whole(response.status, lines, length, body)

    def bodyChunk(self, data: bytes) -> None:
        if not self.client_gone:
            self.request.write(data)
            self.unacked += len(data)
            if not self.paused:
                if self.budget is not None:
                    self._written_out()
                self._refill(STREAM_WINDOW // 2)

    def responseFinished(self) -> None:
        if self.budget is not None:
            self._close_window()
        if not self.client_gone:
            if self.streaming:
                self.request.unregisterProducer()
            self._finish()

    def failed(self, error: DispatchError) -> None:
        if self.budget is not None:
            self._close_window()
        if self.client_gone:
            return
        request = self.request
        if self.streaming:
            self.streaming = False
            request.unregisterProducer()
        if request.startedWriting:
            # Headers are gone already: all we can do is cut the response.
            self.log.warn("response {cid} cut short: {error}", cid=self.correlation_id,
                          error=error.detail)
            if request.channel is not None:
                request.channel.loseConnection()
            return
        # Nothing of a response that failed may reach the client (no
        # Set-Cookie or Cache-Control of the microservice on an error).
        request.responseHeaders = Headers()
        request.setHeader(CORRELATION_HEADER, self.correlation_id.encode())
        body = write_problem(request, error, self.correlation_id)
        request.write(body)
        self._finish()
