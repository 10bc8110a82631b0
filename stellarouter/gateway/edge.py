"""
The HTTP edge: the one twisted.web leaf resource (L{ProxyResource}) every
proxied request goes to (no Klein route per request: routes are dynamic,
resolved in our own trie).  It reads a request's headers, asks the
L{Planner} for a plan (or the problem that answers the request), sends the
REQUEST over the chosen microservice connection (an L{IEdgeConnection})
and leaves the answer to an L{HttpResponseSink}.  A request to a
streaming endpoint is sent as soon as its headers are in
(L{ProxyResource.begin_upload}) and its body follows as an
L{UploadStream}.

The site, request and channel classes are in L{stellarouter.gateway._web},
the health app in L{stellarouter.gateway.health_app}.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Optional, Union

from twisted.internet.interfaces import IReactorTime, ISSLTransport
from twisted.logger import Logger
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from ..common.enums import CancelReason
from ..common.ids import CorrelationId, new_correlation_id
from ..common.interfaces import IRoutingPlugin
from ..common.models import PayloadLimits
from ..common.payloads import STREAM_WINDOW
from ._web import GatewayChannel, GatewayRequest, GatewaySite
from .attempts import Attempts, RetryDispatcher
from .dispatch import ByteCount
from .errors import BadRequest, MethodNotAllowed, PayloadTooLarge, PipelineError
from .forwarding import ClientAddressPolicy
from .health_app import HEALTH_PATHS, HealthApp
from .interfaces import IEdgeConnection
from .planner import Planner, origin_form, read_headers, split_target
from .problems import CORRELATION_HEADER
from .response import HttpResponseSink
from .writer import write_problem
from .state import RoutingState
from .upload import UploadStream

__all__ = ["GatewayChannel", "GatewaySite", "HealthApp", "HttpResponseSink", "ProxyResource", "UploadStream"]


def _planner_setting(name: str, doc: str) -> Any:
    """
    A property of L{ProxyResource} that reads and replaces its planner's
    C{name} (the gateway service sets these on reload).
    """
    def get(self: ProxyResource) -> Any:
        return getattr(self.planner, name)

    def set_(self: ProxyResource, value: Any) -> None:
        setattr(self.planner, name, value)

    return property(get, set_, doc=doc)


@implementer(IResource)
class ProxyResource(Resource):
    """
    The one leaf resource for every proxied request: read, plan, dispatch.

    @ivar forwarding: how the client's address is forwarded.
    """

    isLeaf = True
    log = Logger()

    routing = _planner_setting("routing", "The routing plugin.")
    region = _planner_setting("region", "The gateway's region.")
    limits = _planner_setting("limits", "The L{PayloadLimits}.")
    overrides = _planner_setting("overrides", "The L{EndpointOverrides}.")
    verifier = _planner_setting("verifier", "The L{TokenVerifier}, or None.")
    auth_required = _planner_setting("auth_required", "Every endpoint needs a token.")

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
        self.clock = clock
        self.planner = Planner(routing_state, routing, region, limits, self.aggregate)
        self.forwarding = ClientAddressPolicy()
        #: Retries and outlier ejection (issue 24).
        self.retries = RetryDispatcher(routing_state, clock)

    def render(self, request: Request) -> int:
        assert isinstance(request, GatewayRequest), "the gateway's site builds GatewayRequests"
        cid = new_correlation_id()
        cid_text = str(cid)
        if request.correlation_id is None:
            request.correlation_id = cid_text  # (telemetry; an upload has its own already)
        request.add_own_header(CORRELATION_HEADER, cid_text.encode())
        try:
            return self._dispatch(request, cid, cid_text)
        except PipelineError as e:
            write_problem(request, e, cid_text)
            request.finish()
            return NOT_DONE_YET

    def _dispatch(self, request: GatewayRequest, cid: CorrelationId, cid_text: str) -> int:
        """
        Plan and send a complete request (or close the stream of one whose
        REQUEST went out with its headers).

        @raise PipelineError: whatever stops the request.
        """
        upload = request.upload
        if upload is not None:
            # A streaming endpoint whose REQUEST went out with the headers:
            # the body has been forwarded as it came; close the stream.
            upload.finish()
            if not upload.sink.body_complete():
                # Not answered yet.
                self._watch_client(request, upload.sink, upload.connection, upload.cid)
            return NOT_DONE_YET
        early_error = request.early_error
        if early_error is not None:
            raise early_error
        method = request.method.decode("ascii", "replace")
        if request.path in HEALTH_PATHS:
            raise MethodNotAllowed(f"{method} is not allowed on the gateway's health endpoints",
                                   ("GET", "HEAD"))
        too_large = request.too_large
        planner = self.planner
        if too_large is not None:
            raise PayloadTooLarge(
                f"request body of {too_large} bytes exceeds "
                f"{planner.limits.max_request_bytes_per_call} bytes")
        body = request.content.read() if request.content is not None else b""
        headers, version, authorization = read_headers(
            request.requestHeaders.getAllRawHeaders(), request.getClientAddress(),
            self.forwarding, request.clientproto, _came_over_tls(request))
        plan = planner.plan(method, request.path.decode("latin-1"), headers, version,
                            authorization, len(body), self.clock.seconds(), cid_text,
                            request.resolution)
        if len(body) > plan.limit:
            raise PayloadTooLarge(f"request body of {len(body)} bytes exceeds {plan.limit} bytes")
        connection = plan.connection
        planner.check_budgets(connection, len(body))
        sink = HttpResponseSink(request, cid_text, connection, cid)
        if isinstance(request, GatewayRequest):
            request.dispatched(plan, self.clock.seconds())  # (telemetry)
        # Issue 24: the attempts object sends the REQUEST, retries it on
        # another instance when that is safe, and records outliers.
        attempts = self.retries.start(request, plan, plan.message(split_target(request.uri), body),
                                      sink, cid, self.routing, self.region, self.overrides,
                                      plan.retries)
        self._watch_client(request, sink, attempts, cid)
        return NOT_DONE_YET

    def begin_upload(self, request: GatewayRequest, command: bytes, uri: bytes,
                     length: Optional[int]) -> bool:
        """
        Called when a request's headers are in: if it is for a streaming
        endpoint, send its REQUEST now and forward the body as it arrives.

        @return: C{False} for anything else (the body is then buffered and
            the request dispatched, or refused, when complete).
        """
        path = origin_form(uri.split(b"?", 1)[0])
        if path in HEALTH_PATHS:
            return False
        method = command.decode("ascii", "replace")
        planner = self.planner
        try:
            resolution = self.routing_state.resolve(method, path.decode("latin-1"))
        except PipelineError:
            return False
        if not planner.may_stream(resolution):
            # The usual case: resolve once here, route once when complete.
            request.resolved(resolution, planner.buffered_limit(resolution))
            return False
        cid = new_correlation_id()
        cid_text = str(cid)
        try:
            headers, version, authorization = read_headers(
                request.requestHeaders.getAllRawHeaders(), request.getClientAddress(),
                self.forwarding, request.line_version(), _came_over_tls(request))
        except BadRequest as e:
            # Answer it when the request completes; do not buffer the body.
            request.answer_when_complete(e)
            return True
        try:
            plan = planner.plan(method, path.decode("latin-1"), headers, version, authorization,
                                length or 0, self.clock.seconds(), cid_text, resolution)
        except PipelineError:
            return False
        if not plan.endpoint.supports_streaming:
            return False
        if length is not None and length > plan.limit:
            request.limit_body(plan.limit)
            return False
        connection = plan.connection
        try:
            # A stream holds at most one window in flight at a time.
            planner.check_budgets(connection, min(length or STREAM_WINDOW, STREAM_WINDOW))
        except PipelineError as e:
            # Answer it when the request completes; do not buffer the body.
            request.answer_when_complete(e)
            return True
        message = plan.message(split_target(uri), b"", streaming=True)
        request.early_request_line(command, uri)
        request.correlation_id = cid_text  # (telemetry)
        request.dispatched(plan, self.clock.seconds())  # (telemetry)
        request.setHeader(CORRELATION_HEADER, cid_text.encode())
        sink = HttpResponseSink(request, cid_text, connection, cid)
        # (The upload is in place before the REQUEST goes out: an answer
        # written at once, the REQUEST failing on a closed connection, then
        # waits for the body instead of finishing the request mid-body.)
        upload = UploadStream(request, connection, cid, plan.limit, sink)
        connection.attach_upload(cid, upload)
        request.stream_body_to(upload)
        try:
            # Issue 24: observed for outlier ejection, never retried (streamed).
            self.retries.start(request, plan, message, sink, cid, self.routing, self.region,
                               self.overrides)
        except PipelineError:
            connection.detach_upload(cid)
            request.stream_body_to(None)
            return False
        return True

    def _watch_client(self, request: GatewayRequest, sink: HttpResponseSink,
                      connection: Union[IEdgeConnection, Attempts], cid: CorrelationId) -> None:
        """
        Cancel the request if its client leaves before the answer.
        """
        request.when_client_gone(partial(self._client_gone, sink, connection, cid))

    def _client_gone(self, sink: HttpResponseSink,
                     connection: Union[IEdgeConnection, Attempts], cid: CorrelationId) -> None:
        sink.gone()
        if connection.cancel(cid, CancelReason.CLIENT_DISCONNECTED):
            self.log.info("client of request {cid} disconnected; CANCEL sent", cid=cid)


def _came_over_tls(request: Request) -> bool:
    """
    Whether C{request} came over TLS (issue 25: C{X-Forwarded-Proto}).
    (Not C{request.isSecure()}: it adapts the transport to
    C{ISSLTransport}, ~10k instructions on every plain request.)
    """
    return ISSLTransport.providedBy(getattr(request, "transport", None))
