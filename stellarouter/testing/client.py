"""
L{ServiceClient}: unit-test a microservice without sockets or a gateway,
in the spirit of treq's C{StubTreq}::

    client = ServiceClient(service)
    response = await client.get("/invoices/inv-1", claims={"scope": "billing:read"})
    assert response.status == 200 and response.json()["id"] == "inv-1"

Requests go through the SDK's real dispatcher as REQUEST frames, and the
answers come back as RESPONSE frames, so what a test sees is what the
gateway would get: the same status, headers (C{X-Stella-Version}
included), problem bodies, streaming with credit both ways, CANCEL and
deadlines.  Like the gateway, the client resolves the path against the
service's templates (404, 405), checks the endpoint's claim requirements
(401 without claims, 403 when one is unmet) and cancels a request that
outlives its timeout (504).  Time is an injected L{Clock}.
"""

from __future__ import annotations

from asyncio import AbstractEventLoop
from typing import (
    TYPE_CHECKING, Any, AsyncIterator, Callable, Dict, Iterable, List, Mapping, Optional, Sequence,
    Tuple, TypedDict, Union,
)

import msgspec
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import implementer

from ..common.enums import CancelReason, FrameType, TransportType
from ..common.frames import DEFAULT_MAX_FRAME_BYTES, FRAME_OVERHEAD
from ..common.ids import CorrelationId, new_correlation_id
from ..common.interfaces import IFrameSender
from ..common.jsonvalue import JSONValue
from ..common.models import Frame, InstanceDescriptor, parse_path_template
from ..common.payloads import (
    STREAM_WINDOW,
    RequestMessage,
    decode_response,
    decode_stream_data,
    encode_credit,
    encode_request,
    encode_stream_data,
    stream_credit,
)
from ..common.problems import PROBLEM_CONTENT_TYPE, problem_body
from ..gateway.auth import describe, unmet_requirement
from ..gateway.errors import MethodNotAllowed, NotFound
from ..gateway.resolver import EndpointResolver, Route
from ..microservice.context import BodyStream, HeaderMap
from ..microservice.dispatcher import RequestDispatcher
from ..microservice.endpoints import Microservice

if TYPE_CHECKING:
    from typing_extensions import Unpack

_NO_JSON = object()
Body = Union[bytes, Iterable[bytes], AsyncIterator[bytes]]


class RequestOptions(TypedDict, total=False):
    """
    The keyword arguments of L{ServiceClient.request} that L{ServiceClient.get}
    and the other one-method shortcuts pass on.
    """

    body: Body
    json: object
    headers: Union[Sequence[Tuple[str, str]], Mapping[str, str]]
    claims: Optional[Mapping[str, JSONValue]]
    timeout: Optional[float]
    stream: bool


class StreamAborted(Exception):
    """
    The service aborted a streamed response body (its producer raised):
    through a gateway the client's response would be cut.
    """


class ServiceResponse:
    """
    A response as a client of the gateway would get it.

    @ivar status: the HTTP status.
    @ivar headers: the response headers (case-insensitive C{HeaderMap}).
    @ivar body: the whole body (C{b""} for a response requested with
        C{stream=True}: read L{stream} instead).
    @ivar stream: for C{stream=True}, the body as it comes (C{async for
        chunk in response.stream}, C{await response.stream.read()}); the
        service sends more only as the test reads.
    """

    def __init__(self, status: int, headers: HeaderMap, body: bytes = b"",
                 stream: Optional[BodyStream] = None,
                 close: Optional[Callable[[], object]] = None) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.stream = stream
        self._close = close

    def json(self) -> Any:
        """
        The body parsed as JSON.
        """
        return msgspec.json.decode(self.body)

    def close(self) -> None:
        """
        Leave before a streamed body ended, as a client that hangs up: the
        service gets CANCEL (client disconnected) and its producer is closed.
        """
        if self._close is not None:
            self._close()

    def __repr__(self) -> str:
        return f"<ServiceResponse {self.status} {list(self.headers)!r} {self.body[:80]!r}>"


class _Credit:
    """
    Room the service granted for one streamed request body.
    """

    def __init__(self) -> None:
        self.available = STREAM_WINDOW
        self.waiter: Optional[Deferred[None]] = None

    def grant(self, amount: int) -> None:
        self.available += amount
        waiter, self.waiter = self.waiter, None
        if waiter is not None:
            waiter.callback(None)


class _Exchange:
    """
    One request in flight: the test's Deferred, the response being
    assembled or streamed, the timeout.
    """

    def __init__(self, cid: CorrelationId, method: str, stream: bool) -> None:
        self.cid = cid
        self.method = method
        self.want_stream = stream
        self.result: Deferred[ServiceResponse] = Deferred()
        self.status = 0
        self.headers = HeaderMap()
        self.chunks: List[bytes] = []
        self.body_stream: Optional[BodyStream] = None
        self.credit = _Credit()
        self.timer: Optional[IDelayedCall] = None
        #: Seconds without a response byte after which it times out.
        self.timeout = 0.0
        self.done = False


@implementer(IFrameSender)
class _Replies:
    """
    The dispatcher's side of the in-memory connection: frames it sends come
    back to the client.
    """

    transport_type = TransportType.INMEMORY
    peer = "service-client"
    peer_identity: Tuple[str, ...] = ()

    def __init__(self, client: "ServiceClient") -> None:
        self._client = client

    def sendFrame(self, frame: Frame) -> None:
        self._client._frame_received(frame)

    def close(self, reason: str) -> None:
        raise AssertionError(f"the SDK closed the connection: {reason}")


class ServiceClient:
    """
    Send requests to a L{Microservice} in memory and get its responses.

    @ivar clock: the time the service sees (deadlines, timeouts); advance
        it to make a request time out.
    @ivar dispatcher: the SDK dispatcher serving the requests.
    """

    def __init__(self, service: Microservice, clock: Optional[Clock] = None,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
                 region: str = "test",
                 event_loop: Optional[AbstractEventLoop] = None) -> None:
        """
        @param service: the app under test.
        @param clock: a L{Clock} (default: a new one at time 0).
        @param event_loop: the asyncio loop handler coroutines run on as
            tasks, for handlers that await asyncio libraries (default: none,
            Twisted steps coroutines, as under the default reactor).
        @param max_frame_bytes: the frame cap, as configured for a router.
        @param region: the region of the instance handlers see.
        """
        self.service = service
        self.clock = clock if clock is not None else Clock()
        self._replies = _Replies(self)
        self.dispatcher = RequestDispatcher(
            service, self._replies, self.clock, max_frame_bytes,
            instance=InstanceDescriptor(f"{service.name}-test", service.name, service.version,
                                        region),
            event_loop=event_loop)
        self._max_frame_bytes = max_frame_bytes
        self._resolver = EndpointResolver()
        for descriptor in service.descriptors():
            names = tuple(name for _, name in parse_path_template(descriptor.path)
                          if name is not None)
            self._resolver.add(Route(service.name, descriptor.method, descriptor.path, names))
        self._exchanges: Dict[CorrelationId, _Exchange] = {}

    # -- the test's side ---------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Body = b"",
        json: object = _NO_JSON,
        headers: Union[Sequence[Tuple[str, str]], Mapping[str, str]] = (),
        claims: Optional[Mapping[str, JSONValue]] = None,
        timeout: Optional[float] = None,
        stream: bool = False,
    ) -> Deferred[ServiceResponse]:
        """
        Send one request.

        @param path: the path as a client sends it, with an optional query
            (C{"/invoices/inv%201?full=1"}).
        @param body: the body: bytes, or an iterable or async iterable of
            bytes sent as a stream (with credit, as the gateway does).
        @param json: a value encoded as the JSON body instead (sets
            C{Content-Type: application/json}).
        @param claims: the verified claims of the caller; C{None} is an
            anonymous caller (401 for an endpoint with requirements).
        @param timeout: seconds before the request is cancelled (reason
            TIMEOUT) and answered 504; default the endpoint's.
        @param stream: fire with the response as soon as its headers came,
            its body in C{response.stream}.
        @return: a Deferred firing with a L{ServiceResponse}; cancel it to
            leave as a client that hangs up (CANCEL, client disconnected).
        """
        pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
        if json is not _NO_JSON:
            body = msgspec.json.encode(json)
            pairs.append(("Content-Type", "application/json"))
        raw_path, _, query = path.partition("?")
        method = method.upper()
        try:
            resolution = self._resolver.resolve(method, raw_path)
        except NotFound as e:
            return _answer(404, "not-found", "Not found", e.detail)
        except MethodNotAllowed as e:
            return _answer(405, "method-not-allowed", "Method not allowed", e.detail,
                           (("Allow", ", ".join(e.allow)),))
        template = resolution.template
        sent_method = resolution.route.method
        registered = self.service.lookup(sent_method, template)
        assert registered is not None
        descriptor = registered.descriptor
        what = f"{sent_method} {template}"
        if descriptor.requiring_claims:
            if claims is None:
                return _answer(401, "unauthorized", "Unauthorized",
                               f"{what} requires a bearer token",
                               (("WWW-Authenticate", "Bearer"),))
            unmet = unmet_requirement(claims, descriptor.requiring_claims)
            if unmet is not None:
                return _answer(403, "forbidden", "Forbidden",
                               f"the token does not satisfy {describe(unmet)} required by "
                               f"{what}")
        effective = descriptor.default_timeout if timeout is None else timeout
        cid = new_correlation_id()
        exchange = _Exchange(cid, method, stream)
        exchange.result = Deferred(lambda d: self._hang_up(exchange))
        self._exchanges[cid] = exchange
        exchange.timeout = effective
        exchange.timer = self.clock.callLater(effective, self._time_out, exchange)
        streamed = not isinstance(body, (bytes, bytearray, memoryview))
        message = RequestMessage(
            sent_method, raw_path, template, resolution.path_params, query, pairs,
            dict(claims or {}), self.clock.seconds() + effective, streamed,
            b"" if streamed else bytes(body))  # type: ignore[arg-type]
        self.dispatcher.request_received(Frame(FrameType.REQUEST, cid, encode_request(message)))
        if streamed and not exchange.done:
            Deferred.fromCoroutine(self._upload(exchange, body)).addErrback(
                self._upload_failed, exchange)
        return exchange.result

    def get(self, path: str, **options: Unpack[RequestOptions]) -> Deferred[ServiceResponse]:
        """
        L{request} with C{GET}.
        """
        return self.request("GET", path, **options)

    def head(self, path: str, **options: Unpack[RequestOptions]) -> Deferred[ServiceResponse]:
        """
        L{request} with C{HEAD}.
        """
        return self.request("HEAD", path, **options)

    def post(self, path: str, **options: Unpack[RequestOptions]) -> Deferred[ServiceResponse]:
        """
        L{request} with C{POST}.
        """
        return self.request("POST", path, **options)

    def put(self, path: str, **options: Unpack[RequestOptions]) -> Deferred[ServiceResponse]:
        """
        L{request} with C{PUT}.
        """
        return self.request("PUT", path, **options)

    def patch(self, path: str, **options: Unpack[RequestOptions]) -> Deferred[ServiceResponse]:
        """
        L{request} with C{PATCH}.
        """
        return self.request("PATCH", path, **options)

    def delete(self, path: str, **options: Unpack[RequestOptions]) -> Deferred[ServiceResponse]:
        """
        L{request} with C{DELETE}.
        """
        return self.request("DELETE", path, **options)

    @property
    def in_flight(self) -> int:
        """
        Requests the service has not finished (handlers running, streams).
        """
        return self.dispatcher.in_flight

    # -- frames from the service -------------------------------------------

    def _frame_received(self, frame: Frame) -> None:
        exchange = self._exchanges.get(frame.correlation_id)
        if exchange is None:
            return
        if frame.type is FrameType.RESPONSE:
            response = decode_response(frame.payload)
            exchange.status = response.status
            exchange.headers = HeaderMap(response.headers)
            if response.streaming:
                self._moving(exchange)
            if not response.streaming:
                exchange.chunks.append(response.body)
                self._finish(exchange)
            elif exchange.want_stream:
                exchange.body_stream = BodyStream(
                    lambda amount: self._grant(exchange, amount), STREAM_WINDOW)
                self._deliver(exchange, ServiceResponse(
                    exchange.status, exchange.headers, b"", exchange.body_stream,
                    lambda: self._hang_up(exchange)))
            return
        amount = stream_credit(frame.payload)
        if amount is not None:
            exchange.credit.grant(amount)
            return
        chunk, end, abort = decode_stream_data(frame.payload)
        if chunk:
            self._moving(exchange)
        if exchange.body_stream is not None:
            exchange.body_stream.feed(chunk)
            if abort:
                self._forget(exchange)
                exchange.body_stream.fail(StreamAborted("the service aborted the stream"))
            elif end:
                self._forget(exchange)
                exchange.body_stream.end()
            return
        if abort:
            self._fail(exchange, StreamAborted(
                f"the service aborted the body of its {exchange.status} response"))
            return
        exchange.chunks.append(chunk)
        if chunk:
            self._grant(exchange, len(chunk))
        if end:
            self._finish(exchange)

    def _moving(self, exchange: _Exchange) -> None:
        """
        A streamed response started or brought bytes: its timeout is an idle
        timeout from now on, as the gateway's (specs.md change log, 6.4).
        """
        if exchange.timer is not None and exchange.timer.active():
            exchange.timer.reset(exchange.timeout)

    def _grant(self, exchange: _Exchange, amount: int) -> None:
        if exchange.cid in self._exchanges:
            self.dispatcher.stream_data_received(Frame(
                FrameType.REQUEST_STREAM_DATA, exchange.cid, encode_credit(amount)))

    def _finish(self, exchange: _Exchange) -> None:
        self._forget(exchange)
        body = b"".join(exchange.chunks)
        if exchange.method == "HEAD":
            body = b""
        self._deliver(exchange, ServiceResponse(exchange.status, exchange.headers, body))

    def _deliver(self, exchange: _Exchange, response: ServiceResponse) -> None:
        exchange.done = True
        if not exchange.result.called:
            exchange.result.callback(response)

    def _fail(self, exchange: _Exchange, error: BaseException) -> None:
        self._forget(exchange)
        exchange.done = True
        if not exchange.result.called:
            exchange.result.errback(error)

    def _forget(self, exchange: _Exchange) -> None:
        self._exchanges.pop(exchange.cid, None)
        if exchange.timer is not None and exchange.timer.active():
            exchange.timer.cancel()

    # -- leaving, timing out, uploading ------------------------------------

    def _hang_up(self, exchange: _Exchange) -> None:
        """
        The test cancelled the request or closed a streamed response.
        """
        if exchange.cid not in self._exchanges:
            return
        self._forget(exchange)
        exchange.done = True
        self.dispatcher.cancel(exchange.cid, CancelReason.CLIENT_DISCONNECTED)
        if exchange.body_stream is not None:
            exchange.body_stream.fail(CancelledError("the client left"))

    def _time_out(self, exchange: _Exchange) -> None:
        if exchange.cid not in self._exchanges:
            return
        self._forget(exchange)
        self.dispatcher.cancel(exchange.cid, CancelReason.TIMEOUT)
        if exchange.body_stream is not None:
            exchange.body_stream.fail(StreamAborted("the request timed out"))
            return
        self._deliver(exchange, _response(504, "timeout", "Gateway timeout",
                                          "the service did not answer in time",
                                          str(exchange.cid)))

    def _upload_failed(self, failure: Failure, exchange: _Exchange) -> None:
        """
        The test's body iterator raised: the gateway would abort the stream.
        """
        if exchange.cid in self._exchanges:
            self.dispatcher.stream_data_received(Frame(
                FrameType.REQUEST_STREAM_DATA, exchange.cid, encode_stream_data(b"", abort=True)))
        self._fail(exchange, failure.value or Exception("upload failed"))

    async def _upload(self, exchange: _Exchange, body: Body) -> None:
        """
        Send a streamed request body as the service grants room for it.
        """
        step = self._max_frame_bytes - FRAME_OVERHEAD - 1
        credit = exchange.credit

        async def put(chunk: bytes) -> bool:
            offset = 0
            while offset < len(chunk):
                while credit.available <= 0:
                    credit.waiter = Deferred()
                    await credit.waiter
                if exchange.cid not in self._exchanges:
                    return False
                size = min(credit.available, step, len(chunk) - offset)
                self.dispatcher.stream_data_received(Frame(
                    FrameType.REQUEST_STREAM_DATA, exchange.cid,
                    encode_stream_data(chunk[offset:offset + size])))
                credit.available -= size
                offset += size
            return exchange.cid in self._exchanges

        if hasattr(body, "__aiter__"):
            async for chunk in body:
                if not await put(bytes(chunk)):
                    return
        else:
            for chunk in body:
                if not await put(bytes(chunk)):
                    return
        if exchange.cid in self._exchanges:
            self.dispatcher.stream_data_received(Frame(
                FrameType.REQUEST_STREAM_DATA, exchange.cid, encode_stream_data(b"", end=True)))


def _response(status: int, kind: str, title: str, detail: str,
              correlation_id: Optional[str] = None,
              headers: Sequence[Tuple[str, str]] = ()) -> ServiceResponse:
    return ServiceResponse(status, HeaderMap([("Content-Type", PROBLEM_CONTENT_TYPE)]
                                             + list(headers)),
                           problem_body(status, kind, title, detail, correlation_id))


def _answer(status: int, kind: str, title: str, detail: str,
            headers: Sequence[Tuple[str, str]] = ()) -> Deferred[ServiceResponse]:
    """
    What the gateway answers itself (no endpoint, no claims), at once.
    """
    d: Deferred[ServiceResponse] = Deferred()
    d.callback(_response(status, kind, title, detail, str(new_correlation_id()), headers))
    return d


__all__ = ["ServiceClient", "ServiceResponse", "StreamAborted"]
