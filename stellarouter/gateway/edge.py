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

from twisted.internet.interfaces import IReactorTime
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
from .dispatch import ByteCount
from .errors import BadRequest, MethodNotAllowed, PayloadTooLarge, PipelineError
from .forwarding import ClientAddressPolicy
from .health_app import HEALTH_PATHS, HealthApp
from .interfaces import IEdgeConnection
from .planner import Planner, origin_form, read_headers, split_target
from .problems import CORRELATION_HEADER, write_problem
from .response import HttpResponseSink
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

    def render(self, request: Request) -> Union[bytes, int]:
        cid = new_correlation_id()
        cid_text = str(cid)
        if isinstance(request, GatewayRequest):
            request.add_own_header(CORRELATION_HEADER, cid_text.encode())
        else:
            request.setHeader(CORRELATION_HEADER, cid_text.encode())
        try:
            return self._dispatch(request, cid, cid_text)
        except PipelineError as e:
            return write_problem(request, e, cid_text)

    def _dispatch(self, request: Request, cid: CorrelationId, cid_text: str) -> int:
        """
        Plan and send a complete request (or close the stream of one whose
        REQUEST went out with its headers).

        @raise PipelineError: whatever stops the request.
        """
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
        planner = self.planner
        if too_large is not None:
            raise PayloadTooLarge(
                f"request body of {too_large} bytes exceeds "
                f"{planner.limits.max_request_bytes_per_call} bytes")
        body = request.content.read() if request.content is not None else b""
        headers, version, authorization = read_headers(
            request.requestHeaders.getAllRawHeaders(), request.getClientAddress(),
            self.forwarding, request.clientproto)
        plan = planner.plan(method, request.path.decode("latin-1"), headers, version,
                            authorization, len(body), self.clock.seconds(), cid_text,
                            getattr(request, "resolution", None))
        if len(body) > plan.limit:
            raise PayloadTooLarge(f"request body of {len(body)} bytes exceeds {plan.limit} bytes")
        connection = plan.connection
        planner.check_budgets(connection, len(body))
        sink = HttpResponseSink(request, cid_text, connection, cid)
        connection.send_request(plan.message(split_target(request.uri), body), plan.timeout,
                                sink, cid, retries=plan.retries)
        self._watch_client(request, sink, connection, cid)
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
                self.forwarding, request.line_version())
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
        request.setHeader(CORRELATION_HEADER, cid_text.encode())
        sink = HttpResponseSink(request, cid_text, connection, cid)
        try:
            connection.send_request(message, plan.timeout, sink, cid)
        except PipelineError:
            return False
        upload = UploadStream(request, connection, cid, plan.limit, sink)
        connection.attach_upload(cid, upload)
        request.stream_body_to(upload)
        return True

    def _watch_client(self, request: Request, sink: HttpResponseSink,
                      connection: IEdgeConnection, cid: CorrelationId) -> None:
        """
        Cancel the request if its client leaves before the answer.
        """
        if isinstance(request, GatewayRequest):
            request.when_client_gone(partial(self._client_gone, sink, connection, cid))
        else:
            request.notifyFinish().addErrback(
                lambda failure: self._client_gone(sink, connection, cid))

    def _client_gone(self, sink: HttpResponseSink, connection: IEdgeConnection,
                     cid: CorrelationId) -> None:
        sink.gone()
        if connection.cancel(cid, CancelReason.CLIENT_DISCONNECTED):
            self.log.info("client of request {cid} disconnected; CANCEL sent", cid=cid)
