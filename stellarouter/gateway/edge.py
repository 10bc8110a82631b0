"""
The HTTP edge: a twisted.web L{Site} whose proxied traffic goes to one leaf
resource (no Klein route per request: routes are dynamic, resolved in our
own trie), while the gateway's own endpoints (C{/health...}) are a Klein app.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from io import BytesIO
from typing import Any, Callable, List, Mapping, Optional, Tuple

from klein import Klein
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.web import http
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.http_headers import Headers
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.http import NO_BODY_CODES, datetimeToString
from twisted.web.server import NOT_DONE_YET, Request, Site
from twisted.web.server import version as SERVER_VERSION
from zope.interface import implementer

from ..common.ids import new_correlation_id
from ..common.enums import CancelReason, InstanceHealthStatus, TransportType
from ..common.errors import InvalidDescriptor
from ..common.interfaces import IResponseSink, IRoutingPlugin
from ..common.models import MAX_VERSION_PART, PayloadLimits, RoutingContext, parse_version
from ..common.payloads import STREAM_WINDOW, RequestMessage, ResponseMessage
from ..common.problems import PROBLEM_CONTENT_TYPE, problem_body
from ..transports.flush import discard_unsent, write_now
from ._web import REFUSALS_IN_FLIGHT, ConnectionRefusal, EdgeChannel, RefusalLog
from .errors import (
    BadRequest,
    BadVersion,
    DispatchError,
    MethodNotAllowed,
    NoRoute,
    PayloadTooLarge,
    BudgetExhausted,
    Forbidden,
    PipelineError,
    TooManyConnections,
    Unauthorized,
    VersionNotFound,
)
from .auth import InvalidToken, TokenVerifier, bearer_token, describe, unmet_requirement
from .buffers import ResponseBudget
from .dispatch import ByteCount
from .expected import CONNECTED, ExpectedInstances
from .forwarding import ClientAddressPolicy
from .overrides import EndpointOverrides
from .state import RoutingState

_ROUTABLE = (InstanceHealthStatus.HEALTHY, InstanceHealthStatus.DEGRADED)

#: Hop-by-hop headers (RFC 9110 section 7.6.1), never forwarded either way.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
})
#: Response headers the gateway sets itself.
_OWN_RESPONSE_HEADERS = HOP_BY_HOP | {"content-length", "x-correlation-id"}
#: Headers twisted.web sets that the microservice's value replaces.
_REPLACED_BY_UPSTREAM = frozenset({"date", "server"})
#: The gateway's own paths, served by the Klein app for GET and HEAD.
HEALTH_PATHS = frozenset({b"/health", b"/health/live", b"/health/ready", b"/health/startup"})

CORRELATION_HEADER = b"X-Correlation-Id"
_PROBLEM = PROBLEM_CONTENT_TYPE.encode()


#: Request headers the edge checks or rewrites itself (issue 17, item 7):
#: at most one C{Host} and one C{Authorization}; C{X-Forwarded-For} and
#: C{Forwarded} are the gateway's to write (L{ClientAddressPolicy}); an
#: incoming C{X-Correlation-Id} is never forwarded (the id is the
#: gateway's: the REQUEST's, C{ctx.correlation_id} in the handler).
_EDGE_HEADERS = frozenset({"host", "authorization", "x-forwarded-for", "forwarded",
                           "x-correlation-id"})


def _read_headers(request: IRequest, forwarding: ClientAddressPolicy,
                  http_version: bytes) -> Tuple[List[Tuple[str, str]], Optional[bytes]]:
    """
    Read the request headers once: those to forward (all but the hop-by-hop
    ones and those named in C{Connection}; L{_EDGE_HEADERS} as the edge
    decides), and the first C{X-Stella-Version} value.

    @param http_version: the request line's, e.g. C{b"HTTP/1.1"}.
    @raise BadRequest: two C{Host} or C{Authorization} headers, or an
        HTTP/1.1 request without C{Host}.
    """
    pairs: List[Tuple[str, str]] = []
    version: Optional[bytes] = None
    named: Optional[List[bytes]] = None
    host = False
    forwarded_for: Optional[List[bytes]] = None
    forwarded: Optional[List[bytes]] = None
    for name, values in request.requestHeaders.getAllRawHeaders():
        text = name.decode("latin-1")
        lower = text.lower()
        if lower in HOP_BY_HOP or lower.startswith("proxy-"):
            if lower == "connection":
                named = values
            continue
        if lower == "x-stella-version":
            version = values[0]
        elif lower in _EDGE_HEADERS:
            if lower == "x-forwarded-for":
                forwarded_for = values
                continue
            if lower == "forwarded":
                forwarded = values
                continue
            if lower == "x-correlation-id":
                continue
            if len(values) > 1:
                raise BadRequest(f"{len(values)} {text} headers; at most one is allowed")
            host = host or lower == "host"
        for value in values:
            pairs.append((text, value.decode("latin-1")))
    if not host and http_version == b"HTTP/1.1":
        raise BadRequest("an HTTP/1.1 request needs a Host header (RFC 9112 section 3.2)")
    if named:
        drop = {t.strip().lower() for v in named for t in v.decode("latin-1").split(",")}
        pairs = [(n, v) for n, v in pairs if n.lower() not in drop]
    if forwarded_for is None and forwarded is None:
        pairs += forwarding.own_headers(request.getClientAddress())
    else:
        pairs += forwarding.headers(request.getClientAddress(), forwarded_for, forwarded)
    return pairs, version


def _without_authorization(headers: List[Tuple[str, str]]) -> List[Tuple[str, str]]:
    return [(n, v) for n, v in headers if n.lower() != "authorization"]


def write_problem(
    request: Request, error: PipelineError, correlation_id: Optional[str]
) -> bytes:
    """
    Set status and headers of a problem+json answer and return its body.
    """
    request.setResponseCode(error.status)
    request.setHeader(b"Content-Type", _PROBLEM)
    extra: dict = {}
    if isinstance(error, MethodNotAllowed):
        request.setHeader(b"Allow", ", ".join(error.allow).encode())
        extra["allow"] = list(error.allow)
    if isinstance(error, Unauthorized):
        request.setHeader(b"WWW-Authenticate", b'Bearer error="invalid_token"'
                          if error.invalid_token else b"Bearer")
    if error.retry_after is not None:
        request.setHeader(b"Retry-After", str(error.retry_after).encode())
    body = problem_body(error.status, error.kind, error.title, error.detail,
                        correlation_id, **extra)
    request.setHeader(b"Content-Length", str(len(body)).encode())
    return body


def _dropped_response_headers(headers: Any) -> frozenset:
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

    def __init__(self, request: Request, correlation_id: str, connection: Any = None,
                 cid: Any = None) -> None:
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
        budget = getattr(connection, "response_budget", None)
        if budget is None:
            return
        self.budget = budget
        if getattr(connection, "response_credit", False):
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
                self.connection.grant(self.cid, amount)
            return
        wanted = STREAM_WINDOW - self.held
        if wanted <= threshold:
            return
        amount = budget.take(wanted)
        if not amount:
            budget.wait(self)
            return
        self.held += amount
        self.connection.grant(self.cid, amount)

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
            if getattr(request.channel, "_waitingForTransport", False):
                # twisted.web does not pause a producer registered while the
                # client's connection is already paused (not public API:
                # pinned by tests/unit/test_streaming.py).
                self.pauseProducing()
            self._open_window()
            return
        body, length = _body_and_length(request.method, status, response.body, upstream_length)
        if length is not None:
            headers.setRawHeaders(b"Content-Length", [length])
        if body:
            request.write(body)
        self._finish()

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
            self.connection.cancel(self.cid, CancelReason.CLIENT_DISCONNECTED)
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


@implementer(IResource)
class ProxyResource(Resource):
    """
    The one leaf resource for every proxied request: resolve, route,
    dispatch.
    """

    isLeaf = True
    log = Logger()

    def __init__(
        self,
        routing_state: RoutingState,
        routing: IRoutingPlugin,
        clock: IReactorTime,
        region: str,
        limits: PayloadLimits = PayloadLimits(),
        aggregate: Optional[ByteCount] = None,
    ) -> None:
        super().__init__()
        self.aggregate = aggregate if aggregate is not None else ByteCount()
        self.routing_state = routing_state
        self.routing = routing
        self.clock = clock
        self.region = region
        self.limits = limits
        self.overrides = EndpointOverrides()
        self.verifier: Optional[TokenVerifier] = None
        self.auth_required = False
        self.forwarding = ClientAddressPolicy()

    def render(self, request: Request) -> Any:
        cid = new_correlation_id()
        cid_text = str(cid)
        own = getattr(request, "own_headers", None)
        if own is not None:
            own.append((CORRELATION_HEADER, cid_text.encode()))
        else:
            request.setHeader(CORRELATION_HEADER, cid_text.encode())
        try:
            return self._dispatch(request, cid, cid_text)
        except PipelineError as e:
            return write_problem(request, e, cid_text)

    def _dispatch(self, request: Request, cid: Any, cid_text: str) -> Any:
        upload: Optional[UploadStream] = getattr(request, "upload", None)
        if upload is not None:
            # A streaming endpoint whose REQUEST went out with the headers:
            # the body has been forwarded as it came; close the stream.
            upload.finish()
            if upload.sink.finish_pending and not request.finished:
                request.finish()
                return NOT_DONE_YET
            self._watch_client(request, upload.sink, upload.connection, upload.cid)
            return NOT_DONE_YET
        early_error = getattr(request, "early_error", None)
        if early_error is not None:
            raise early_error
        method = request.method.decode("ascii", "replace")
        if request.path in HEALTH_PATHS:
            raise MethodNotAllowed(f"{method} is not allowed on the gateway's health endpoints",
                                   ("GET", "HEAD"))
        too_large = getattr(request, "too_large", None)
        if too_large is not None:
            raise PayloadTooLarge(
                f"request body of {too_large} bytes exceeds "
                f"{self.limits.max_request_bytes_per_call} bytes")
        body = request.content.read() if request.content is not None else b""
        headers, version = _read_headers(request, self.forwarding, request.clientproto)
        plan = self._plan(request, method, request.path.decode("latin-1"), len(body), cid_text,
                          version, getattr(request, "resolution", None))
        if len(body) > plan.limit:
            raise PayloadTooLarge(f"request body of {len(body)} bytes exceeds {plan.limit} bytes")
        if (self.overrides.strips_authorization
                and not self.overrides.forwards_authorization(plan.endpoint)):
            headers = _without_authorization(headers)
        self._check_budgets(plan.connection, len(body))
        uri = request.uri
        query = uri.split(b"?", 1)[1].decode("latin-1") if b"?" in uri else ""
        message = plan.message(query, headers, body)
        connection = plan.connection
        sink = HttpResponseSink(request, cid_text, connection, cid)
        retries = 0
        if connection.state.transport_type is TransportType.UDP and plan.endpoint.is_idempotent:
            # A lost datagram is repaired by sending the same REQUEST again;
            # the microservice answers a duplicate from its reply cache.
            retries = UDP_RETRIES
        connection.send_request(message, plan.timeout, sink, cid, retries=retries)
        self._watch_client(request, sink, connection, cid)
        return NOT_DONE_YET

    def _plan(self, request: Request, method: str, path: str, body_size: int,
              cid_text: str, raw_version: Optional[bytes] = None,
              resolution: Any = None) -> "_Plan":
        """
        Resolve (unless already resolved), select the version, route, apply
        overrides, authenticate.

        @param raw_version: the C{X-Stella-Version} header's value, if any.

        @raise PipelineError: whatever stops the request.
        """
        if resolution is None:
            resolution = self.routing_state.resolve(method, path)
        route = resolution.route
        requested: Optional[str] = None
        if raw_version is not None:
            requested = raw_version.decode("latin-1").strip()
            try:
                parse_version(requested)
            except InvalidDescriptor:
                shown = requested if len(requested) <= 40 else requested[:40] + "..."
                raise BadVersion(
                    f"X-Stella-Version {shown!r} is not MAJOR.MINOR.PATCH (each part at most "
                    f"{MAX_VERSION_PART})") from None
            if requested not in self.routing_state.versions_seen(route.service_name):
                raise VersionNotFound(
                    f"service {route.service_name} has no version {requested}")
        candidates = self.routing_state.connectionsFor(route.service_name, route.method,
                                                       route.template)
        now = self.clock.seconds()
        context = RoutingContext(  # (positional: one per request, keywords cost more)
            route.method, path, {}, (route.method, route.template), route.service_name,
            resolution.path_params, requested, self.region, None, body_size)
        decision = self.routing.choose(context, candidates, now)
        if decision is None:
            raise _no_route_error(context, candidates, requested, None if requested else getattr(
                self.routing, "default_versions", {}).get(route.service_name))
        endpoint = decision.endpoint
        timeout = decision.effective_timeout
        if self.overrides:
            endpoint, timeout = self.overrides.apply(endpoint, self.routing_state)
        claims = self._authenticate(request, endpoint, cid_text)
        if endpoint.supports_streaming:
            # A streamed body never sits in the gateway: only the endpoint's
            # own limit applies (spec change log, 6).
            limit = endpoint.max_request_bytes if endpoint.max_request_bytes is not None else (
                UNLIMITED)
        else:
            limit = self.limits.max_request_bytes_per_call
            if endpoint.max_request_bytes is not None:
                limit = min(limit, endpoint.max_request_bytes)
        return _Plan(route.method, path, route.template, resolution.path_params, endpoint,
                     timeout, claims, now + timeout, decision.connection, limit)

    def _check_budgets(self, connection: Any, size: int) -> None:
        """
        @raise BudgetExhausted: the connection's or the gateway's request
            bytes in flight would pass their budget (503, Retry-After).
        """
        if not size:
            return
        limits = self.limits
        if connection.state.in_flight_bytes + size > limits.max_request_bytes_per_connection:
            raise BudgetExhausted(
                f"{connection.state.in_flight_bytes} request bytes are in flight to instance "
                f"{connection.state.instance.instance_id}; {size} more would pass its budget of "
                f"{limits.max_request_bytes_per_connection}")
        if self.aggregate.value + size > limits.max_aggregate_inflight_bytes:
            raise BudgetExhausted(
                f"{self.aggregate.value} request bytes are in flight through this gateway; "
                f"{size} more would pass its budget of {limits.max_aggregate_inflight_bytes}")

    def begin_upload(self, request: "GatewayRequest", command: bytes, uri: bytes,
                     length: Optional[int]) -> bool:
        """
        Called when a request's headers are in: if it is for a streaming
        endpoint, send its REQUEST now and forward the body as it arrives.

        @return: C{False} for anything else (the body is then buffered and
            the request dispatched, or refused, when complete).
        """
        path = _origin_form(uri.split(b"?", 1)[0])
        if path in HEALTH_PATHS:
            return False
        method = command.decode("ascii", "replace")
        try:
            resolution = self.routing_state.resolve(method, path.decode("latin-1"))
        except PipelineError:
            return False
        route = resolution.route
        key = (route.method, route.template)
        if not any(c.state.endpoints[key].supports_streaming
                   for c in self.routing_state.connectionsFor(route.service_name, *key)) or (
                self.overrides and self.overrides.buffered(route.service_name, *key)):
            # The usual case: resolve once here, route once when complete.
            request.resolution = resolution
            request.body_limit = self._buffered_limit(route.service_name, key)
            return False
        cid = new_correlation_id()
        cid_text = str(cid)
        try:
            headers, version = _read_headers(request, self.forwarding,
                                             getattr(request.channel, "_version", b"HTTP/1.1"))
        except BadRequest as e:
            # Answer it when the request completes; do not buffer the body.
            request.early_error = e
            return True
        try:
            plan = self._plan(request, method, path.decode("latin-1"), length or 0, cid_text,
                              version, resolution)
        except PipelineError:
            return False
        if not plan.endpoint.supports_streaming:
            return False
        if length is not None and length > plan.limit:
            request.body_limit = plan.limit
            return False
        if (self.overrides.strips_authorization
                and not self.overrides.forwards_authorization(plan.endpoint)):
            headers = _without_authorization(headers)
        try:
            # A stream holds at most one window in flight at a time.
            self._check_budgets(plan.connection, min(length or STREAM_WINDOW, STREAM_WINDOW))
        except PipelineError as e:
            # Answer it when the request completes; do not buffer the body.
            request.early_error = e
            return True
        query = uri.split(b"?", 1)[1].decode("latin-1") if b"?" in uri else ""
        message = plan.message(query, headers, b"", streaming=True)
        connection = plan.connection
        request._early_request_line(command, uri)
        request.setHeader(CORRELATION_HEADER, cid_text.encode())
        sink = HttpResponseSink(request, cid_text, connection, cid)
        try:
            connection.send_request(message, plan.timeout, sink, cid)
        except PipelineError:
            return False
        upload = UploadStream(request, connection, cid, plan.limit, sink)
        connection.uploads[cid] = upload
        request.upload = upload
        return True

    def _buffered_limit(self, service_name: str, key: Tuple[str, str]) -> int:
        """
        The largest request body any routable instance of a buffered
        endpoint could take: the per-call limit, or less where every
        instance's descriptor says less.  A body over it is refused (413)
        as soon as its length is known, before it is read.
        """
        per_call = self.limits.max_request_bytes_per_call
        limits = [min(per_call, e.max_request_bytes) if e.max_request_bytes is not None
                  else per_call
                  for c in self.routing_state.connectionsFor(service_name, *key)
                  for e in (c.state.endpoints.get(key),) if e is not None]
        return max(limits, default=per_call)

    def _authenticate(self, request: Request, endpoint: Any, cid_text: str) -> Mapping[str, Any]:
        """
        Validate the bearer token and check the endpoint's requirements.

        @return: the verified claims (empty when anonymous).
        @raise Unauthorized: a token is needed and missing or invalid (the
            reason is logged, the client only learns "invalid token").
        @raise Forbidden: a valid token lacks a requirement (named).
        """
        needed = bool(endpoint.requiring_claims) or self.auth_required
        verifier = self.verifier
        if verifier is None and not needed:
            return {}  # nothing to check and no claims to give
        what = f"{endpoint.method} {endpoint.path}"
        raw = request.requestHeaders.getRawHeaders(b"authorization")
        token = bearer_token(raw[0]) if raw else None
        if token is None:
            if needed:
                raise Unauthorized(f"{what} requires a bearer token")
            return {}
        if verifier is None:
            # Fail closed: without keys no token can be valid.
            raise Unauthorized(f"{what} requires a valid token and this gateway has no "
                               "token validation configured")
        try:
            claims = verifier.verify(token)
        except InvalidToken as e:
            self.log.info("request {cid}: invalid token: {reason}", cid=cid_text,
                          reason=e.reason)
            raise Unauthorized("invalid token", invalid_token=True) from None
        unmet = unmet_requirement(claims, endpoint.requiring_claims)
        if unmet is not None:
            raise Forbidden(f"the token does not satisfy {describe(unmet)} required by {what}")
        return claims

    def _watch_client(self, request: Request, sink: HttpResponseSink, connection: Any,
                      cid: Any) -> None:
        """
        Cancel the request if its client leaves before the answer.
        """
        if isinstance(request, GatewayRequest):
            request.on_client_gone = (self._client_gone, sink, connection, cid)
        else:
            request.notifyFinish().addErrback(
                lambda failure: self._client_gone(sink, connection, cid))

    def _client_gone(self, sink: HttpResponseSink, connection: Any, cid: Any) -> None:
        sink.gone()
        if connection.cancel(cid, CancelReason.CLIENT_DISCONNECTED):
            self.log.info("client of request {cid} disconnected; CANCEL sent", cid=cid)


#: "No limit" for a streamed body whose endpoint declares none.
UNLIMITED = 2 ** 62

#: How often an idempotent request over UDP is sent again when unanswered.
UDP_RETRIES = 2


def _no_route_error(context: RoutingContext, candidates: Any,
                    requested: Optional[str], default: Optional[str] = None) -> PipelineError:
    """
    Why nothing can serve: too large or streaming for the only (UDP)
    instances that could (413 / 503 saying so), or simply none routable.

    @param default: the service's configured default version, when the
        request named none (the 503 names it: instances of other versions
        may well be connected).
    """
    version = requested or default
    routable = [c for c in candidates if c.state.status in _ROUTABLE and (
        version is None or c.state.instance.version == version)]
    if routable and all(c.state.transport_type is TransportType.UDP for c in routable):
        endpoint = routable[0].state.endpoints.get(context.endpoint)
        if endpoint is not None and endpoint.supports_streaming:
            return NoRoute(f"{context.method} {context.path} is a streaming endpoint and its only "
                           "instances are connected over UDP, which cannot carry streams")
        limit = max(c.state.max_frame_bytes for c in routable)
        return PayloadTooLarge(
            f"a request body of {context.body_size} bytes does not fit in one UDP datagram "
            f"(at most {limit} bytes with the request header) and no instance on another "
            "transport serves this endpoint")
    which = (f" at version {requested}" if requested else
             f" at its default version {default} (services[].default_version)" if default
             else "")
    return NoRoute(f"no healthy instance of {context.service_name}{which} serves "
                   f"{context.endpoint[0]} {context.endpoint[1]}")


@dataclass(slots=True)
class _Plan:
    """
    Everything decided about a request before its REQUEST is sent.  (One
    is made per request: slots and no frozen C{__setattr__} keep it cheap.)
    """

    method: str
    path: str
    template: str
    path_params: Mapping[str, str]
    endpoint: Any
    timeout: float
    claims: Mapping[str, Any]
    deadline: float
    connection: Any
    limit: int

    def message(self, query: str, headers: List[Tuple[str, str]], body: bytes,
                streaming: bool = False) -> RequestMessage:
        return RequestMessage(self.method, self.path, self.template, self.path_params, query,
                              headers, self.claims, self.deadline, streaming, body)


class UploadStream:
    """
    The body of a request to a streaming endpoint, forwarded as it arrives
    (REQUEST_STREAM_DATA frames).  The microservice grants credit as its
    handler reads; while the credit is spent the gateway keeps the client's
    connection paused, so an upload never piles up anywhere.

    @ivar complete: the whole body has been received from the client.
    @ivar forwarding: the body still goes to the microservice (not once the
        request was answered, cancelled or refused; the rest is dropped).
    @ivar outstanding: bytes forwarded and not yet granted back; they count
        against the payload budgets.
    """

    log = Logger()

    def __init__(self, request: "GatewayRequest", connection: Any, cid: Any, limit: int,
                 sink: HttpResponseSink) -> None:
        self.request = request
        self.connection = connection
        self.cid = cid
        self.limit = limit
        self.sink = sink
        self.credit = STREAM_WINDOW
        self.received = 0
        self.outstanding = 0
        self.complete = False
        self.forwarding = True

    def feed(self, data: bytes) -> None:
        if self.complete:
            return
        self.received += len(data)
        if not self.forwarding:
            return
        if self.cid not in self.connection.in_flight:
            self.stop_forwarding()
            return
        if self.received > self.limit:
            self._exceeded()
            return
        self.connection.send_body(self.cid, data)
        self.connection.count_bytes(self.cid, len(data))
        self.outstanding += len(data)
        self.credit -= len(data)
        if self.credit <= 0:
            # Every time: twisted.web may resume the transport on its own
            # (when the client's write buffer drains).
            transport = self._transport()
            if transport is not None:
                transport.pauseProducing()

    def grant(self, amount: int) -> None:
        self.credit += amount
        release = min(amount, self.outstanding)
        self.outstanding -= release
        self.connection.count_bytes(self.cid, -release)
        if self.credit > 0:
            self._resume()

    def _resume(self) -> None:
        transport = self._transport()
        if transport is not None:
            transport.resumeProducing()

    def _transport(self) -> Any:
        """
        The client's TCP transport (an C{IPushProducer}).
        """
        return self.request.channel.transport if self.request.channel else None

    def stop_forwarding(self, abort: bool = True) -> None:
        """
        The request no longer needs its body (answered, cancelled or
        refused): tell the microservice the stream ends (abort), and read
        and drop the rest from the client.
        """
        if self.forwarding:
            self.forwarding = False
            self.connection.uploads.pop(self.cid, None)
            if abort:
                self.connection.send_body(self.cid, b"", abort=True)
            if not self.complete:
                self._resume()

    def finish(self) -> None:
        """
        The whole body has been received from the client.
        """
        self.complete = True
        if self.forwarding:
            self.forwarding = False
            self.connection.uploads.pop(self.cid, None)
            self.connection.send_body(self.cid, b"", end=True)

    def client_gone(self) -> None:
        if not self.complete:
            self.complete = True
            self.sink.gone()
            was_forwarding = self.forwarding
            self.forwarding = False
            self.connection.uploads.pop(self.cid, None)
            if was_forwarding:
                self.connection.cancel(self.cid, CancelReason.CLIENT_DISCONNECTED)

    def _exceeded(self) -> None:
        """
        The body crossed the limit: stop, CANCEL, answer 413 (unless an
        answer has started: then only abort), close.
        """
        self.complete = True
        self.forwarding = False
        self.sink.gone()
        self.connection.uploads.pop(self.cid, None)
        self.connection.cancel(self.cid, CancelReason.PAYLOAD_LIMIT_EXCEEDED)
        self.log.info("request {cid}: body exceeded {limit} bytes; CANCEL sent",
                      cid=self.cid, limit=self.limit)
        channel = self.request.channel
        if channel is None:
            return
        if not self.request.startedWriting and isinstance(channel, EdgeChannel):
            channel.refuse(PayloadTooLarge(f"request body exceeds {self.limit} bytes"),
                           str(self.cid))
        else:
            transport: Any = channel.transport
            if transport is not None:
                transport.abortConnection()


def _origin_form(path: bytes) -> bytes:
    if path.startswith((b"http://", b"https://")):
        parts = path.split(b"/", 3)
        return b"/" + (parts[3] if len(parts) > 3 else b"")
    return path


class HealthApp:
    """
    The gateway's own endpoints, on Klein.

    @ivar started: start-up is complete (all listeners bound).
    """

    app = Klein()

    def __init__(self, routing_state: RoutingState, node_id: str, region: str) -> None:
        self.routing_state = routing_state
        self.node_id = node_id
        self.region = region
        self.started = False
        self.stopping = False
        self.expected = ExpectedInstances(())

    @staticmethod
    def _json(request: IRequest, status: int, obj: Any) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(CORRELATION_HEADER, str(new_correlation_id()).encode())
        return json.dumps(obj, separators=(",", ":")).encode()

    @app.route("/health", methods=["GET", "HEAD"])
    def health(self, request: IRequest) -> bytes:
        services: dict = {}
        for connection in self.routing_state.connections():
            state = connection.state
            entry = services.setdefault(state.instance.service_name,
                                        {"instances": 0, "versions": set()})
            entry["instances"] += 1
            entry["versions"].add(state.instance.version)
        expected = self.expected.report(self.routing_state.connections())
        status = "ok" if self.started and not self.stopping else "unavailable"
        code = 200 if status == "ok" else 503
        if status == "ok" and any(e["status"] != CONNECTED for e in expected.values()):
            # The gateway itself is fine (still 200); an instance it counts on
            # is not there.
            status = "degraded"
        return self._json(request, code, {
            "status": status,
            "node_id": self.node_id,
            "region": self.region,
            "connections": sum(e["instances"] for e in services.values()),
            "services": {
                name: {"instances": e["instances"],
                       "versions": sorted(e["versions"], key=parse_version)}
                for name, e in sorted(services.items())
            },
            **({"expected_instances": expected} if expected else {}),
        })

    @app.route("/health/live", methods=["GET", "HEAD"])
    def live(self, request: IRequest) -> bytes:
        return self._json(request, 200, {"status": "live"})

    @app.route("/health/ready", methods=["GET", "HEAD"])
    def ready(self, request: IRequest) -> bytes:
        if self.started and not self.stopping:
            return self._json(request, 200, {"status": "ready"})
        return self._json(request, 503, {"status": "stopping" if self.stopping else "starting"})

    @app.route("/health/startup", methods=["GET", "HEAD"])
    def startup(self, request: IRequest) -> bytes:
        if self.started:
            return self._json(request, 200, {"status": "started"})
        return self._json(request, 503, {"status": "starting"})


class GatewayRequest(Request):
    """
    The gateway's HTTP request.

     - No default C{Content-Type}: a microservice response without one goes
       out without one.
     - The body is counted as it arrives (twisted.web's C{gotLength} and
       C{handleContentChunk} hooks, not public API: pinned by
       C{tests/unit/test_edge.py}); a body over its limit (the endpoint's
       when the headers resolve it, else the per-call one) is refused 413
       by the connection (L{EdgeChannel.refuse}) as soon as that is known:
       from C{Content-Length} before any of it is read, or at the chunk
       that crosses it; the gateway never holds more than the limit.
     - A C{Transfer-Encoding} other than a lone C{chunked} is 400.
     - An absolute-form request target (C{GET http://host/path}) is reduced
       to its path.
     - Neither the query string nor cookies are parsed (C{args} and
       C{received_cookies} stay empty): both are forwarded as they came.
    """

    defaultContentType = None
    too_large: Optional[int] = None
    #: The body limit known once the headers are in (the endpoint's, when
    #: resolved then), else the site's per-call limit applies.
    body_limit: Optional[int] = None
    upload: Optional["UploadStream"] = None
    early_error: Optional[PipelineError] = None
    resolution: Any = None
    #: The gateway's own response headers (C{Server}, C{Date},
    #: C{X-Correlation-Id}) of a proxied request, kept out of twisted.web's
    #: L{Headers} (which costs a name encoding and a value check per header)
    #: until written: by L{write_whole}, or moved into C{responseHeaders}
    #: by L{write}.
    own_headers: Optional[List[Tuple[bytes, bytes]]] = None
    on_client_gone: Optional[Tuple[Any, ...]] = None
    _received = 0

    def _limit(self) -> Optional[int]:
        if self.body_limit is not None:
            return self.body_limit
        site = getattr(self.channel, "site", None)
        return getattr(site, "max_request_bytes", None)

    def _refuse(self, error: PipelineError) -> None:
        """
        Refuse the request before its body is read: answer, close.
        """
        channel = self.channel
        if isinstance(channel, EdgeChannel):
            channel.refuse(error)

    def gotLength(self, length: Optional[int]) -> None:
        if not length and not self.requestHeaders.hasHeader(b"transfer-encoding"):
            # No body: nothing to stream, nothing to limit.
            super().gotLength(length)
            return
        if length is not None and self.requestHeaders.hasHeader(b"transfer-encoding"):
            # A Transfer-Encoding twisted.web let through that is not
            # chunked ("identity"): RFC 9112 6.3, chunked must be the final
            # coding, else 400 and close.
            self.content = None
            self._refuse(BadRequest("Transfer-Encoding must be chunked (RFC 9112 6.3)"))
            return
        site = getattr(self.channel, "site", None)
        command = getattr(self.channel, "_command", None)
        uri = getattr(self.channel, "_path", None)
        if (isinstance(site, GatewaySite) and isinstance(command, bytes)
                and isinstance(uri, bytes)
                and site.proxy.begin_upload(self, command, uri, length)):
            self.content = BytesIO()
            return
        limit = self._limit()
        if length is not None and limit is not None and length > limit:
            # Refused before anything is read (and with no 100 Continue).
            self.too_large = length
            self.content = None
            self._refuse(PayloadTooLarge(
                f"request body of {length} bytes exceeds {limit} bytes"))
            return
        super().gotLength(length)

    def _early_request_line(self, command: bytes, uri: bytes) -> None:
        """
        Fill in the request line before the body is complete, so a response
        written early (a streaming endpoint may answer before reading the
        whole upload) has a proper status line.
        """
        self.method, self.uri = command, uri
        self.clientproto = getattr(self.channel, "_version", b"HTTP/1.1")

    def handleContentChunk(self, data: bytes) -> None:
        if self.upload is not None:
            self.upload.feed(data)
            return
        if self.early_error is not None:
            return
        self._received += len(data)
        if self.too_large is not None:
            self.too_large = max(self.too_large, self._received)
            return
        limit = self._limit()
        if limit is not None and self._received > limit:
            self.too_large = self._received
            if self.content is not None:
                self.content.close()
            self.content = None
            self._refuse(PayloadTooLarge(f"request body exceeds {limit} bytes"))
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        """
        The request is complete: what twisted.web's C{requestReceived} does,
        without parsing the query string into C{args} (the gateway forwards
        the query as it came and never reads C{args}; form parsing is off
        in L{GatewaySite}), then L{process}.
        """
        if self.content is None:
            # The body was discarded (too large): leave an empty one behind.
            self.content = BytesIO()
        else:
            self.content.seek(0, 0)
        self.args = {}
        self.method, self.uri, self.clientproto = command, path, version
        self.path = path.split(b"?", 1)[0]
        self.process()

    def parseCookies(self) -> None:
        """
        Nothing: the gateway forwards C{Cookie} headers as they came and
        never reads C{received_cookies}.
        """

    log = Logger()

    def process(self) -> None:
        self.path = _origin_form(self.path)
        site = getattr(self.channel, "site", None)
        if isinstance(site, GatewaySite) and self.path == b"*":
            self._asterisk()
            return
        if not isinstance(site, GatewaySite) or self.path in HEALTH_PATHS or (
                site.own_paths is not None and site.own_paths(self.path)):  # openapi.py
            super().process()
            return
        # A proxied request: what twisted.web's Request.process does for our
        # leaf resource, without the parts a leaf does not use (resource
        # traversal, the unquoted postpath, encoders) and with a Date header
        # formatted once a second instead of once a request.
        self.site = site
        self.sitepath: List[bytes] = []
        self.prepath = []
        self.postpath = []
        self.own_headers = [(b"Server", SERVER_VERSION), (b"Date", site.http_date())]
        try:
            self.render(site.proxy)
        except BaseException:
            self.processingFailed(Failure())

    def _asterisk(self) -> None:
        """
        The asterisk-form target (RFC 9112 3.2.4): C{OPTIONS *} is answered
        200 with no body; any other method is a malformed request (400).
        """
        cid = str(new_correlation_id())
        self.setHeader(b"Server", SERVER_VERSION)
        self.setHeader(CORRELATION_HEADER, cid.encode())
        if self.method == b"OPTIONS":
            self.setHeader(b"Content-Length", b"0")
        else:
            method = self.method.decode("ascii", "replace")
            self.write(write_problem(self, BadRequest(
                f"the request target * is only for OPTIONS, not {method} (RFC 9112 3.2.4)"),
                cid))
        self.finish()

    def processingFailed(self, reason: Failure) -> None:
        """
        A bug of ours while handling the request: logged with its
        traceback, answered 500 problem+json (twisted.web would answer
        text/html), or the response cut if it had begun.
        """
        cid = str(new_correlation_id())
        self.log.failure("request {cid} failed in the gateway", failure=reason, cid=cid)
        if self.finished or self._disconnected:
            return
        if self.startedWriting:
            self.channel.loseConnection()
            return
        self.responseHeaders = Headers()
        self.own_headers = None
        self.setHeader(CORRELATION_HEADER, cid.encode())
        self.write(write_problem(self, PipelineError(
            "the gateway failed to handle this request"), cid))
        self.finish()

    def drop_own_header(self, lower_name: bytes) -> None:
        """
        Leave out the gateway's own header C{lower_name} (lower case): the
        microservice's value replaces it.
        """
        own = self.own_headers
        if own is not None:
            self.own_headers = [(n, v) for n, v in own if n.lower() != lower_name]
        self.responseHeaders.removeHeader(lower_name)

    def write(self, data: bytes) -> None:
        """
        twisted.web's C{write}, after moving the gateway's own headers into
        C{responseHeaders} (unless a header of that name is there already:
        the microservice's C{Date} and C{Server} win).
        """
        own = self.own_headers
        if own is not None and not self.startedWriting:
            self.own_headers = None
            headers = self.responseHeaders
            for name, value in own:
                if not headers.hasHeader(name):
                    headers.setRawHeaders(name, [value])
        super().write(data)

    def can_write_whole(self) -> bool:
        """
        Whether L{write_whole} may answer: nothing written yet, the client is
        still there, and none of twisted.web's own header sources
        (C{lastModified}, C{etag}, cookies) is in use.
        """
        return not (self.startedWriting or self.finished or self._disconnected
                    or self.lastModified is not None or self.etag is not None or self.cookies)

    def write_whole(self, code: int, header_lines: List[bytes], length: Optional[bytes],
                    body: bytes) -> None:
        """
        Write a whole response at once and finish: what C{setResponseCode},
        C{write} and C{finish} do for a response whose length is known, with
        the status line and headers formatted here in one pass.

        @param header_lines: more headers, each C{b"Name: value\\r\\n"},
            after the gateway's own (L{own_headers}) and those in
            C{responseHeaders}.
        @param length: the C{Content-Length} value, or L{None} for none
            (204, 304).
        """
        self.setResponseCode(code)
        self.startedWriting = 1
        out = [self.clientproto, b" %d " % code, self.code_message, b"\r\n"]
        own = self.own_headers
        if own is not None:
            self.own_headers = None
            for name, value in own:
                out += (name, b": ", value, b"\r\n")
        for name, values in self.responseHeaders.getAllRawHeaders():
            for value in values:
                out += (name, b": ", value, b"\r\n")
        out += header_lines
        if length is not None:
            out += (b"Content-Length: ", length, b"\r\n")
        out.append(b"\r\n")
        if body and self.method != b"HEAD" and code not in NO_BODY_CODES:
            out.append(body)
            self.sentLength = len(body)
        channel = self.channel
        # (A type test, not isinstance(channel, http.HTTPChannel): the
        # twisted.web.http module is a deprecation proxy, and looking up an
        # attribute on it costs ~1.3 us.)
        if type(channel) is GatewayChannel:
            # The response is complete: offer it to the socket now, not on
            # the reactor's next turn.
            write_now(channel.transport, b"".join(out))
        else:
            channel.writeSequence(out)
        self.finish()

    def connectionLost(self, reason: Any) -> None:
        upload = self.upload
        if upload is not None:
            upload.client_gone()
        gone = self.on_client_gone
        if gone is not None and not self.finished:
            # The client left before its answer (cheaper than a notifyFinish
            # Deferred per request).
            self.on_client_gone = None
            gone[0](*gone[1:])
        super().connectionLost(reason)


class GatewayChannel(EdgeChannel):
    """
    The gateway's HTTP/1.1 connection: L{EdgeChannel} (twisted.web's
    L{http.HTTPChannel} with the edge's refusals, head deadline and lazily
    moved timers), except that it asks the socket for its own address once
    per connection (twisted.web asks on every request: a C{getsockname}
    system call each), and counts itself in its site's open connections.
    """

    _host: Any = None
    #: Counted in L{GatewaySite.open_connections}.
    _counted = False

    def getHost(self) -> Any:
        host = self._host
        if host is None:
            host = self._host = super().getHost()
        return host

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        # What a client that left did not read goes now, not when the
        # garbage collector finds this channel's reference cycles.
        discard_unsent(self.transport)
        site = getattr(self, "site", None)
        if isinstance(site, GatewaySite) and self._counted:
            self._counted = False
            site.open_connections -= 1


class GatewaySite(Site):
    """
    The gateway's L{Site}: C{/health} and below go to the Klein app, every
    other path to the proxy leaf, without resource traversal.  Form parsing
    is off (bodies are opaque), and the access log is optional.  Its
    connections are L{GatewayChannel}s: HTTP/1.1 (twisted.web's HTTP/2
    negotiation wrapper is left out; HTTP/2 needs the h2 package, which the
    gateway does not install).
    """

    noisy = False
    protocol = GatewayChannel  # type: ignore[assignment]
    _date_second = -1
    _date = b""
    #: Seconds from a request head's first byte to its last (408 after).
    head_timeout: Optional[float] = None
    #: The request line, each header line and all of them together.
    max_header_bytes: Optional[int] = None
    #: Client connections held at most (beyond: 503 and close).
    max_connections: Optional[int] = None
    #: Client connections open now.
    open_connections = 0
    #: Connections over the cap being answered 503 now.
    refusing = 0
    #: Other paths of the gateway's own (C{openapi.expose: public}) and the
    #: resource that serves them.
    own_paths: Optional[Callable[[bytes], bool]] = None
    own_resource: Optional[IResource] = None

    def __init__(
        self,
        proxy: ProxyResource,
        health: HealthApp,
        access_log: bool = False,
        reactor: Optional[Any] = None,
    ) -> None:
        """
        @param reactor: drives HTTP timeouts and the C{Date} header
            (default: the global reactor, as in L{Site}).
        """
        super().__init__(proxy, parsePOSTFormSubmission=False, reactor=reactor,
                         requestFactory=GatewayRequest)
        self.max_request_bytes = proxy.limits.max_request_bytes_per_call
        self.proxy = proxy
        self.health = health
        self.health_resource = health.app.resource()
        self.access_log = access_log
        self.refusal_log = RefusalLog()

    def buildProtocol(self, addr: Any) -> Any:
        cap = self.max_connections
        if cap is not None and self.open_connections >= cap:
            if self.refusing >= REFUSALS_IN_FLIGHT:
                return None  # closed at once by the port, unanswered
            self.refusing += 1
            return ConnectionRefusal(TooManyConnections(
                f"this gateway holds {cap} client connections already"), self._refused)
        channel = super().buildProtocol(addr)
        if isinstance(channel, GatewayChannel):
            channel.clock = self.reactor
            channel.refusal_log = self.refusal_log
            channel.head_timeout = self.head_timeout
            if self.max_header_bytes is not None:
                channel.set_max_header_bytes(self.max_header_bytes)
            channel._counted = True
            self.open_connections += 1
        return channel

    def _refused(self) -> None:
        self.refusing -= 1

    def acceptableProtocols(self) -> List[bytes]:
        """
        What TLS offers in ALPN: HTTP/1.1 only, the one protocol a
        L{GatewayChannel} speaks (twisted.web's L{Site} also offers h2 when
        the h2 package is importable).
        """
        return [b"http/1.1"]

    def http_date(self) -> bytes:
        """
        The C{Date} header value for now (RFC 9110 IMF-fixdate), formatted
        once per second of the site's clock.
        """
        now = int(self.reactor.seconds())
        if now != self._date_second:
            self._date_second = now
            self._date = datetimeToString(now)
        return self._date

    def getResourceFor(self, request: Request) -> IResource:
        request.site = self
        request.sitepath = []  # type: ignore[attr-defined]
        if request.path in HEALTH_PATHS and request.method in (b"GET", b"HEAD"):
            return self.health_resource
        if self.own_paths is not None and self.own_paths(request.path):
            return self.own_resource  # type: ignore[return-value]
        return self.proxy

    def log(self, request: http.Request) -> None:
        if self.access_log:
            super().log(request)
