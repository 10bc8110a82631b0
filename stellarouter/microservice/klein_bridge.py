"""
Serve an unmodified Klein app through the SDK (issue 25):
C{service.mount_klein(app)} announces the app's routes as endpoints, and
each REQUEST runs the app's own code on a real L{twisted.web.server.Request}
fed from the REQUEST frame.

What the request sees:

 - method, path, query, headers, body (C{request.content}; a form post is
   parsed into C{request.args} as twisted.web does), cookies;
 - the client's address from the gateway's C{X-Forwarded-For} (its last
   element, which the gateway appended), the scheme from its
   C{X-Forwarded-Proto}, the host and port from C{Host}: so
   C{getClientAddress}, C{isSecure}, C{URLPath} and absolute URLs are those
   the client used;
 - C{notifyFinish} fires when the response is complete, and fails with
   L{RequestCancelled} when the gateway cancels (client gone, timeout) or
   the stream ends early.

What the app writes becomes the RESPONSE: a response finished in the turn
in which it started (or under L{BUFFER_BYTES}) is sent whole; otherwise it
streams (a L{StreamingResponse} fed by C{request.write}), and a producer
registered on the request is paused while the gateway's credit is spent.
"""

from __future__ import annotations

import re
from collections import deque
from io import BytesIO
from typing import TYPE_CHECKING, Deque, List, Optional, Set, Tuple, Union, cast

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IDelayedCall, IPullProducer, IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.server import Request, Site
from zope.interface import implementer

from ..common.enums import CancelReason
from ..common.models import normalize_path_template, template_shape
from ._web import BridgeChannel, IChannelOwner, address_of
from .chunks import ChunkQueue
from .context import RawRequestContext, RawResponse, StreamingResponse

if TYPE_CHECKING:
    from klein import Klein

#: Methods announced for a Klein route that lists none (werkzeug: any).
ANY_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

#: Bytes of a response kept back while it may still finish (and go out
#: whole); past it the response streams.
BUFFER_BYTES = 64 * 1024

#: Bytes of a streamed response waiting for credit before a registered
#: producer is paused (resumed below half of it).
HIGH_WATER = 256 * 1024

#: Bytes of a streamed response waiting for credit past which the response
#: is abandoned: an app writing without a producer faster than its client
#: reads (twisted.web would buffer it all in the transport).
MAX_BUFFERED = 16 * 1024 * 1024

_CONVERTER = re.compile(r"<(?:([A-Za-z_][A-Za-z0-9_]*)(?:\([^)]*\))?:)?([A-Za-z_][A-Za-z0-9_]*)>")


class RequestCancelled(ConnectionLost):
    """
    The failure C{request.notifyFinish()} fires with when the request ends
    before its response was complete.

    @ivar reason: the gateway's L{CancelReason}, or C{None} (the gateway
        connection was lost, or the response stream was abandoned).
    """

    def __init__(self, reason: Optional[CancelReason], detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def route_templates(app: Klein) -> List[Tuple[str, str]]:
    """
    The C{(method, template)} endpoints of a Klein app's routes, one per
    method, in the app's order: C{<x>} (any converter but C{path}) becomes
    C{{x}}; C{<path:x>} (and a C{branch=True} route's rest) becomes the
    catch-all C{{*x}}, which ends the template (what follows is Klein's to
    match); a segment mixing text and parameters becomes one parameter.
    Two routes of one shape give one endpoint (Klein picks between them).

    @raise ValueError: a route that cannot be announced, naming it.
    """
    seen: Set[Tuple[str, str]] = set()
    endpoints: List[Tuple[str, str]] = []
    for rule in app.url_map.iter_rules():
        template = _template(rule.rule)
        methods = sorted(rule.methods) if rule.methods else list(ANY_METHODS)
        if "GET" in methods and "HEAD" in methods:
            # The gateway sends HEAD to the GET endpoint.
            methods.remove("HEAD")
        for method in methods:
            key = (method, template_shape(template))
            if key not in seen:
                seen.add(key)
                endpoints.append((method, template))
    return endpoints


def _template(rule: str) -> str:
    """
    The path template of one werkzeug rule string.

    @raise ValueError: naming the rule.
    """
    segments: List[str] = []
    used: Set[str] = set()
    for segment in rule.strip("/").split("/") if rule.strip("/") else []:
        params = list(_CONVERTER.finditer(segment))
        rest = [p.group(2) for p in params if p.group(1) == "path"]
        if rest:
            # A path converter takes slashes: the rest is Klein's to match.
            segments.append("{*" + _unique(rest[0], used) + "}")
            break
        if params:
            segments.append("{" + _unique(params[0].group(2), used) + "}")
        else:
            segments.append(segment)
    try:
        return normalize_path_template("/" + "/".join(segments))
    except Exception as e:
        raise ValueError(f"Klein route {rule!r} cannot be an endpoint: {e}") from None


def _unique(name: str, used: Set[str]) -> str:
    while name in used:
        name += "_"
    used.add(name)
    return name


class KleinBridge:
    """
    Runs a Klein app's code for the requests of its endpoints.

    @ivar site: the L{Site} serving the app (its sessions live in this
        process only).
    """

    log = Logger()

    def __init__(self, app: Klein, reactor: Optional[IReactorTime] = None) -> None:
        """
        @param app: the L{klein.Klein} app, unmodified.
        @param reactor: the clock for a response's "still in its first turn"
            and the site's timers (default: the global reactor, looked up at
            the first request).
        """
        self.app = app
        self._reactor = reactor
        self._site: Optional[Site] = None

    @property
    def reactor(self) -> IReactorTime:
        if self._reactor is None:
            from twisted.internet import reactor
            self._reactor = reactor
        assert self._reactor is not None
        return self._reactor

    @property
    def site(self) -> Site:
        if self._site is None:
            self._site = Site(self.app.resource(), reactor=self.reactor)
        return self._site

    def handle(self, ctx: RawRequestContext) -> Union[RawResponse, Deferred[object]]:
        """
        The endpoint handler of every route: run the app on a real request.

        @return: a L{RawResponse} when the app answered at once, else a
            Deferred of a L{RawResponse} or L{StreamingResponse}.
        """
        return BridgedRequest(self, ctx).run()


@implementer(IChannelOwner)
class BridgedRequest:
    """
    One REQUEST served by the Klein app: owns the twisted.web request and
    turns what it writes into the SDK's answer.
    """

    log = Logger()

    def __init__(self, bridge: KleinBridge, ctx: RawRequestContext) -> None:
        self.bridge = bridge
        self.ctx = ctx
        self.code = 200
        self.headers: List[Tuple[str, str]] = []
        self.chunks: Deque[bytes] = deque()
        self.buffered = 0
        self.done = False
        self.answer: Optional[Deferred[object]] = None
        self.stream: Optional[_ResponseBody] = None
        self._head = False
        self._in_render = False
        self._decision: Optional[IDelayedCall] = None
        self._producer: Union[IPushProducer, IPullProducer, None] = None
        #: The same producer when it is a push producer (registered streaming).
        self._push_producer: Optional[IPushProducer] = None
        self._paused = False
        headers = ctx.headers
        secure = (_last(headers.get_all("X-Forwarded-Proto")) or "").lower() == "https"
        peer = address_of(_client(headers.get_all("X-Forwarded-For")), 0)
        host, port = _host_port(headers.get("Host"), secure)
        self.channel = BridgeChannel(self, bridge.site, peer, address_of(host, port), secure)
        self.request = Request(self.channel)
        self.channel.request = self.request

    # -- running the app ----------------------------------------------------

    def run(self) -> Union[RawResponse, Deferred[object]]:
        ctx = self.ctx
        request = self.request
        for name, value in ctx.headers:
            request.requestHeaders.addRawHeader(name.encode("latin-1"),
                                                value.encode("latin-1"))
        request.parseCookies()
        # The app's endpoints are registered as bytes handlers: the body is whole.
        body = ctx.body if isinstance(ctx.body, bytes) else bytes(ctx.body)
        request.content = BytesIO(body)
        request.content.seek(0, 2)
        uri = ctx.path + ("?" + ctx.query if ctx.query else "")
        ctx.cancelled.addCallback(self._cancelled)
        self._in_render = True
        try:
            request.requestReceived(ctx.method.encode("ascii"), uri.encode("latin-1"),
                                    b"HTTP/1.1")
        finally:
            self._in_render = False
        if self.done and self.stream is None:
            return self._whole()
        # A Deferred even when the answer is known: the SDK tracks the
        # request by it (CANCEL reaches notifyFinish through ctx.cancelled).
        self.answer = Deferred(lambda d: None)
        if self.stream is not None:
            self.answer.callback(self._streaming_response())
        elif self._head:
            # Written in the first turn and not finished: a stream.
            self._start_stream()
        return self.answer

    def _whole(self) -> RawResponse:
        return RawResponse(self.code, self.headers, b"".join(self.chunks))

    def _answer(self, result: object) -> None:
        answer = self.answer
        if answer is not None and not answer.called:
            answer.callback(result)

    # -- what the request writes (ChannelOwner) -------------------------------

    def headers_written(self, code: int, headers: Headers) -> None:
        self.code = code
        self.headers = [(name.decode("latin-1"), value.decode("latin-1"))
                        for name, values in headers.getAllRawHeaders() for value in values]
        self._head = True
        if not self._in_render:
            self._decide_soon()

    def body_written(self, data: bytes) -> None:
        if not data:
            return
        if self.stream is not None:
            self.stream.feed(data)
            if self.stream.size > MAX_BUFFERED:
                self._overflow()
                return
            self._maybe_pause()
            return
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > BUFFER_BYTES:
            self._start_stream()

    def finished(self) -> None:
        self.done = True
        if self._decision is not None and self._decision.active():
            self._decision.cancel()
        self._decision = None
        if self.stream is not None:
            self.stream.end()
        elif not self._in_render:
            self._answer(self._whole())

    def producer_registered(self, producer: Union[IPushProducer, IPullProducer],
                            streaming: bool) -> None:
        self._producer = producer
        # registerProducer(producer, True) is twisted.web's word for a push producer.
        self._push_producer = cast(IPushProducer, producer) if streaming else None
        self._paused = False
        if not streaming:
            # A pull producer: asked for more whenever the stream drains.
            self._pull()

    def producer_unregistered(self) -> None:
        self._producer = self._push_producer = None

    def bad_request(self) -> None:
        self.code = 400
        self.headers = []
        self.chunks.clear()
        self.done = True
        if not self._in_render:
            self._answer(self._whole())

    # -- streaming ------------------------------------------------------------

    def _decide_soon(self) -> None:
        """
        Headers came after the app's first turn: stream unless the response
        is finished within this reactor turn.
        """
        if self._decision is None and self.stream is None:
            self._decision = self.bridge.reactor.callLater(0, self._decide)

    def _decide(self) -> None:
        self._decision = None
        if not self.done and self.stream is None:
            self._start_stream()

    def _start_stream(self) -> None:
        stream = self.stream = _ResponseBody(self)
        for chunk in self.chunks:
            stream.feed(chunk)
        self.chunks.clear()
        if self.done:
            stream.end()
        if self._decision is not None and self._decision.active():
            self._decision.cancel()
        self._decision = None
        self._answer(self._streaming_response())

    def _streaming_response(self) -> StreamingResponse:
        assert self.stream is not None
        return StreamingResponse(self.code, self.headers, self.stream)

    def _maybe_pause(self) -> None:
        producer = self._push_producer
        if (producer is not None and not self._paused
                and self.stream is not None and self.stream.size > HIGH_WATER):
            self._paused = True
            producer.pauseProducing()

    def drained(self) -> None:
        """
        The stream handed its bytes on (and is below half the high-water).
        """
        if self._producer is None:
            return
        push = self._push_producer
        if push is not None:
            if self._paused:
                self._paused = False
                push.resumeProducing()
        else:
            self._pull()

    def _pull(self) -> None:
        producer = self._producer
        if producer is not None and self._push_producer is None and not self.done:
            stream = self.stream
            if stream is None or stream.size < HIGH_WATER // 2:
                producer.resumeProducing()

    # -- the end --------------------------------------------------------------

    def _overflow(self) -> None:
        stream = self.stream
        assert stream is not None
        self.log.error(
            "{method} {path}: the Klein app wrote {size} bytes more than its client took "
            "(over {limit}; register a producer to follow the client); abandoning the "
            "response (request {cid})", method=self.ctx.method, path=self.ctx.path,
            size=stream.size, limit=MAX_BUFFERED, cid=self.ctx.correlation_id)
        stream.fail(BufferError(f"over {MAX_BUFFERED} bytes waiting for the client"))
        self._lost(RequestCancelled(None, "the response was abandoned: over "
                                          f"{MAX_BUFFERED} bytes waiting for the client"))

    def _cancelled(self, reason: Optional[CancelReason]) -> None:
        self._lost(RequestCancelled(
            reason, f"cancelled by the gateway: {reason.value}" if reason is not None
            else "the gateway connection was lost"))

    def abandoned(self) -> None:
        """
        The response stream stopped before the response finished.
        """
        self._lost(RequestCancelled(self.ctx.cancel_reason,
                                    "the response stream ended before the response finished"))

    def _lost(self, error: RequestCancelled) -> None:
        if self._decision is not None and self._decision.active():
            self._decision.cancel()
        self._decision = None
        if self.done or getattr(self.request, "channel", None) is None:
            return
        self.done = True
        producer, self._producer, self._push_producer = self._producer, None, None
        if producer is not None:
            # As a channel whose connection is lost does: a file closes.
            producer.stopProducing()
        self.request.connectionLost(Failure(error))


def _last(values: List[str]) -> Optional[str]:
    if not values:
        return None
    return values[-1].split(",")[-1].strip() or None


def _client(values: List[str]) -> Optional[str]:
    """
    The client's address: the last C{X-Forwarded-For} element (the peer of
    the gateway), C{None} if absent or C{unknown}.
    """
    last = _last(values)
    if last is None or last == "unknown":
        return None
    return last.strip("[]")


def _host_port(host: Optional[str], secure: bool) -> Tuple[Optional[str], int]:
    default = 443 if secure else 80
    if not host:
        return None, default
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, port = host.partition(":")
    return name, int(port) if port.isdigit() and int(port) < 65536 else default


class _ResponseBody(ChunkQueue):
    """
    The body of a streamed bridged response, as the SDK pulls it: what the
    app wrote, in order, until it finished; the app's producer is asked for
    more as the SDK reads (L{BridgedRequest.drained}).
    """

    def __init__(self, owner: BridgedRequest) -> None:
        super().__init__()
        self._owner = owner

    def feed(self, chunk: bytes) -> None:
        if self._error is None:
            super().feed(chunk)

    def fail(self, error: Exception) -> None:
        """
        Stop the stream: the SDK aborts it at its next read.
        """
        self._chunks.clear()
        self.size = 0
        super().fail(error)

    def __aiter__(self) -> _ResponseBody:
        return self

    def _starved(self) -> bool:
        self._owner.drained()
        return bool(self._chunks) or self._ended

    def _taken(self, size: int) -> None:
        if self.size < HIGH_WATER // 2:
            self._owner.drained()

    async def aclose(self) -> None:
        """
        The SDK stopped pulling (the stream finished, failed or was
        cancelled): if the app was not done, its request is lost.
        """
        self._chunks.clear()
        self.size = 0
        if not self._ended and self._error is None:
            self._owner.abandoned()


__all__ = ["KleinBridge", "RequestCancelled", "route_templates", "BUFFER_BYTES"]
