"""
The gateway's twisted.web request and site.  L{GatewayRequest} counts and
limits a request body as it arrives, hands a streaming endpoint's body to
its L{UploadStream} as soon as the headers are in, and writes the heads the
gateway's one response writer formats
(L{stellarouter.gateway.writer.write_response}) in one write
(L{GatewayRequest.send_head}); L{GatewaySite} sends
C{/health...} to the Klein app and every other request straight to the
proxy leaf, and caps the client connections it holds.

Its uses of twisted.web private names are listed in
L{stellarouter.gateway._web.PRIVATE_NAMES}.
"""

from __future__ import annotations

from io import BytesIO
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Tuple

from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.http import datetimeToString
from twisted.web.http_headers import Headers
from twisted.web.resource import IResource
from twisted.web.server import Request, Site
from twisted.web.server import version as SERVER_VERSION

from ...common.ids import new_correlation_id
from ...transports.flush import write_now
from ..errors import BadRequest, PayloadTooLarge, PipelineError, TooManyConnections
from ..health_app import HEALTH_PATHS, HealthApp
from ..host_header import MALFORMED_HOST, well_formed_hosts
from ..planner import Plan, origin_form
from ..problems import CORRELATION_HEADER, RefusalLog
from ..writer import header_lines, write_problem, write_response
from ..resolver import Resolution
from .channel import (
    REFUSALS_IN_FLIGHT,
    ConnectionRefusal,
    EdgeChannel,
    GatewayChannel,
    transport_paused,
)

if TYPE_CHECKING:
    from ..edge import ProxyResource
    from ..telemetry import RequestTelemetry
    from ..upload import UploadStream


def request_hostname(request: Request, twisted_web: Callable[[], bytes]) -> bytes:
    """
    C{request}'s host name as twisted.web's C{getRequestHostname} gives it
    (C{twisted_web}), except on a unix socket without a C{Host} header:
    C{localhost} (twisted.web reads the socket's host, which a unix socket
    has not, and Klein's URL mapping failed with C{AttributeError}).
    """
    if request.getHeader(b"host") is None and not hasattr(request.getHost(), "host"):
        return b"localhost"
    return twisted_web()


class GatewayRequest(Request):
    """
    The gateway's HTTP request.

     - No default C{Content-Type}: a microservice response without one goes
       out without one.
     - The body is counted as it arrives (twisted.web's C{gotLength} and
       C{handleContentChunk} hooks, not public API: pinned by
       C{tests/unit/test_web_private.py}); a body over its limit (the endpoint's
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
    upload: Optional[UploadStream] = None
    #: An error found before the body was in, answered once it is.
    early_error: Optional[PipelineError] = None
    #: The path resolved once the headers were in.
    resolution: Optional[Resolution] = None
    #: The gateway's own response headers (C{Server}, C{Date},
    #: C{X-Correlation-Id}) of a proxied request, kept out of twisted.web's
    #: L{Headers} (which costs a name encoding and a value check per header)
    #: until the response writer takes them (L{take_own_headers}).
    own_headers: Optional[List[Tuple[bytes, bytes]]] = None
    #: Called if the client leaves before its answer.
    on_client_gone: Optional[Callable[[], None]] = None
    #: Whether the answer may have a body (not for HEAD, 1xx, 204, 304).
    body_allowed = True
    _received = 0
    #: What telemetry reads when the request ends (L{RequestTelemetry}):
    #: the correlation id of a proxied request, its plan, and when its
    #: head arrived, its REQUEST went out and the RESPONSE head came back.
    correlation_id: Optional[str] = None
    plan: Optional[Plan] = None
    received_at = 0.0
    dispatched_at = 0.0
    answered_at: Optional[float] = None
    #: The status of the failure that cut a started answer short (the
    #: gateway closed the connection: 502 upstream lost, 503 shutting down,
    #: 504 timeout), logged instead of 499 (client left).
    cut_short: Optional[int] = None

    # What the proxy tells a request about itself (no one else sets its
    # attributes).

    def resolved(self, resolution: Resolution, body_limit: int) -> None:
        """
        The headers resolved the request: keep the resolution for the
        dispatch, and refuse a body over C{body_limit}.
        """
        self.resolution = resolution
        self.body_limit = body_limit

    def limit_body(self, body_limit: int) -> None:
        """
        Refuse a body over C{body_limit} (as soon as that is known).
        """
        self.body_limit = body_limit

    def answer_when_complete(self, error: PipelineError) -> None:
        """
        Answer C{error} once the request is complete; drop its body.
        """
        self.early_error = error

    def early_request_line(self, command: bytes, uri: bytes) -> None:
        """
        Fill in the request line before the body is complete, so a response
        written early (a streaming endpoint may answer before reading the
        whole upload) has a proper status line.
        """
        self.method, self.uri = command, uri
        self.clientproto = self.line_version()

    def line_version(self) -> bytes:
        """
        The HTTP version of the request line, while the request is still
        arriving (C{clientproto} is only set once it is complete).
        """
        version = getattr(self.channel, "_version", b"HTTP/1.1")
        return version if isinstance(version, bytes) else b"HTTP/1.1"

    def stream_body_to(self, upload: Optional[UploadStream]) -> None:
        """
        Hand the body, as it arrives, to C{upload} (not buffered; L{None}:
        buffered after all).
        """
        self.upload = upload

    def dispatched(self, plan: Plan, now: float) -> None:
        """
        Note the request's plan and when its REQUEST went out (telemetry).
        """
        self.plan = plan
        self.dispatched_at = now

    def upstream_answered(self) -> None:
        """
        Note when the microservice's RESPONSE head came back (telemetry).
        """
        clock = getattr(self.channel, "clock", None)
        if clock is not None:
            self.answered_at = clock.seconds()

    def cut_short_by(self, status: int) -> None:
        """
        Note that a failure (its C{status}) cut the started answer short.
        """
        self.cut_short = status

    def when_client_gone(self, callback: Callable[[], None]) -> None:
        """
        Call C{callback} if the client leaves before its answer (cheaper
        than a C{notifyFinish} Deferred per request).  A request already
        answered (at once: its REQUEST could not go out) keeps none: see
        L{release_if_done}.
        """
        if not self.finished:
            self.on_client_gone = callback

    def pause_reading(self) -> None:
        """
        Read nothing more from the client for now (an upload's credit is
        spent).
        """
        if self.channel is not None and self.channel.transport is not None:
            self.channel.transport.pauseProducing()  # type: ignore[attr-defined]

    def resume_reading(self) -> None:
        """
        Read from the client again.
        """
        if self.channel is not None and self.channel.transport is not None:
            self.channel.transport.resumeProducing()  # type: ignore[attr-defined]

    def refuse_or_abort(self, error: PipelineError, correlation_id: str) -> None:
        """
        Refuse the request with C{error} and close the connection, or,
        once a response has begun, abort the connection.
        """
        channel = self.channel
        if channel is None:
            return
        if not self.startedWriting and isinstance(channel, EdgeChannel):
            channel.refuse(error, correlation_id)
        elif channel.transport is not None:
            channel.transport.abortConnection()  # type: ignore[attr-defined]

    def _limit(self) -> Optional[int]:
        """
        The body limit: the one the headers set, else the site's.
        """
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
        clock = getattr(self.channel, "clock", None)
        if clock is not None:
            self.received_at = clock.seconds()  # (telemetry: the head is in)
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
        self.path = origin_form(self.path)
        site = getattr(self.channel, "site", None)
        if isinstance(site, GatewaySite) and self.path == b"*":
            self._asterisk()
            return
        if not isinstance(site, GatewaySite) or self.path in HEALTH_PATHS or (
                site.own_paths is not None and site.own_paths(self.path)):  # openapi.py
            # (Klein binds its routes to the Host first: one it cannot encode
            # would fail there, a 500 and a traceback per request.)
            channel = self.channel
            if not well_formed_hosts(self) and isinstance(channel, EdgeChannel):
                channel.refuse(BadRequest(MALFORMED_HOST))
                return
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
        if self.method == b"OPTIONS":
            self.setHeader(b"Server", SERVER_VERSION)
            self.setHeader(CORRELATION_HEADER, cid.encode())
            self.setHeader(b"Content-Length", b"0")
            write_response(self, 200, header_lines(self.responseHeaders.getAllRawHeaders()))
        else:
            method = self.method.decode("ascii", "replace")
            self.own_headers = [(b"Server", SERVER_VERSION), (CORRELATION_HEADER, cid.encode())]
            write_problem(self, BadRequest(
                f"the request target * is only for OPTIONS, not {method} (RFC 9112 3.2.4)"), cid)
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
        write_problem(self, PipelineError("the gateway failed to handle this request"), cid)
        self.finish()

    def add_own_header(self, name: bytes, value: bytes) -> None:
        """
        Add one of the gateway's own response headers (kept apart until
        written, see L{own_headers}; set at once on a request that keeps
        none).
        """
        own = self.own_headers
        if own is not None:
            own.append((name, value))
        else:
            self.setHeader(name, value)

    def drop_own_header(self, lower_name: bytes) -> None:
        """
        Leave out the gateway's own header C{lower_name} (lower case): the
        microservice's value replaces it.
        """
        own = self.own_headers
        if own is not None:
            self.own_headers = [(n, v) for n, v in own if n.lower() != lower_name]
        self.responseHeaders.removeHeader(lower_name)

    def getRequestHostname(self) -> bytes:
        return request_hostname(self, super().getRequestHostname)

    def take_own_headers(self) -> Optional[List[Tuple[bytes, bytes]]]:
        """
        The gateway's own response headers kept apart (L{own_headers}), for
        the head being written; none are kept after this.
        """
        own, self.own_headers = self.own_headers, None
        return own

    def transport_paused(self) -> bool:
        """
        Whether the client's connection is paused (its write buffer is
        full): twisted.web does not pause a producer registered while it
        is.
        """
        return transport_paused(self.channel)

    def send_head(self, pieces: List[bytes], body_allowed: bool, complete: bool) -> None:
        """
        Write a response head (and a whole answer's body) formatted by
        L{stellarouter.gateway.writer.write_response}, in one write.

        @param body_allowed: C{False} for HEAD and for 1xx, 204 and 304:
            whatever L{write} gets afterwards is dropped.
        @param complete: the answer is whole: offer it to the socket now,
            not on the reactor's next turn.
        """
        if not body_allowed:
            self.body_allowed = False
        channel = self.channel
        # (A type test, not isinstance(channel, http.HTTPChannel): the
        # twisted.web.http module is a deprecation proxy, and looking up an
        # attribute on it costs ~1.3 us.)
        if complete and type(channel) is GatewayChannel:
            write_now(channel.transport, b"".join(pieces))
        else:
            channel.writeSequence(pieces)

    def write(self, data: bytes) -> None:
        """
        twisted.web's C{write}, except that a body the head said there is
        none of (L{send_head}) is dropped.
        """
        if self.body_allowed:
            super().write(data)

    def finish(self) -> None:
        """
        twisted.web's C{finish}, then L{release_if_done}.
        """
        super().finish()
        self.release_if_done()

    def release_if_done(self) -> None:
        """
        Once the answer is complete (and, for an upload, the whole body is
        in), drop what refers back to this request: the client-gone
        callback (through the request's sink and attempts) and the upload
        stream.  They made each request part of a reference cycle; without
        them, reference counting frees the request and its ~20 objects at
        once instead of the cyclic garbage collector later.
        """
        if self.finished:
            self.on_client_gone = None
            upload = self.upload
            if upload is not None and upload.complete:
                self.upload = None

    def connectionLost(self, reason: Failure) -> None:
        upload = self.upload
        if upload is not None:
            upload.client_gone()
        if not self.finished and self.correlation_id is not None:
            site = getattr(self.channel, "site", None)
            if isinstance(site, GatewaySite) and site.telemetry is not None:
                # (telemetry: the client left before its answer)
                site.telemetry.finished(self, answered=False)
        gone = self.on_client_gone
        if gone is not None and not self.finished:
            self.on_client_gone = None
            gone()
        super().connectionLost(reason)


class GatewaySite(Site):
    """
    The gateway's L{Site}: C{/health} and below go to the Klein app, every
    other path to the proxy leaf, without resource traversal.  Form parsing
    is off (bodies are opaque), and each proxied request that ends goes to
    its L{telemetry} (twisted.web's access log is not used).  Its
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
    #: Told of every proxied request when it ends (L{RequestTelemetry}).
    telemetry: Optional[RequestTelemetry] = None

    def __init__(
        self,
        proxy: ProxyResource,
        health: HealthApp,
        reactor: Optional[IReactorTime] = None,
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
        self.refusal_log = RefusalLog()

    # Any: over the cap it builds a ConnectionRefusal, not the HTTP channel
    # HTTPFactory.buildProtocol is declared to return.
    def buildProtocol(self, addr: Optional[IAddress]) -> Any:
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
            channel.on_closed = self._connection_closed
            self.open_connections += 1
        return channel

    def _refused(self) -> None:
        self.refusing -= 1

    def _connection_closed(self) -> None:
        self.open_connections -= 1

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
        """
        A request ended: telemetry (metrics, access log), instead of
        twisted.web's Apache-combined line.
        """
        telemetry = self.telemetry
        if telemetry is not None:
            telemetry.finished(request, answered=True)
