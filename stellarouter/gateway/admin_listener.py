"""
The admin listener's connections (issue 21): the twisted.web site that
serves the admin app on C{admin.listen} (L{AdminSite}), its connections
(L{AdminChannel}) and its requests (L{AdminRequest}).  An admin port is
for a handful of operators and scripts, so it holds little: at most
C{admin.max_connections} connections (one more is answered 503 and
closed at once); a connection silent for C{admin.idle_timeout} is closed,
and a request must arrive in full within C{admin.idle_timeout} of its
first byte (408 and closed otherwise: a client sending a byte now and then
keeps no connection); a body over L{MAX_ADMIN_BODY_BYTES} is answered 413
before it is buffered.  Refusals are logged at most once per
L{RateLimitedLog.interval} per cause, with a count of the others: a flood
of connections does not flood the log.  Which requests are served is
L{stellarouter.gateway.admin_guard}'s decision, what they answer
L{stellarouter.gateway.admin}'s.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional
from urllib.parse import unquote_to_bytes

from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime, ITransport
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from ..common.problems import PROBLEM_CONTENT_TYPE, problem_body
from ..config.admin import AdminConfig
from .host_header import MALFORMED_HOST, well_formed_hosts
from ._web import REFUSALS_IN_FLIGHT, ConnectionRefusal, HeadRefusals, request_hostname
from .errors import BadRequest, PayloadTooLarge, PipelineError, TooManyConnections
from .problems import refusal_reason


def answer_and_close(transport: ITransport, status: int, reason: str, kind: str, title: str,
                     detail: str) -> None:
    """
    Write a whole problem+json answer with C{Connection: close} on
    C{transport} and close it (nothing more of it is read).
    """
    body = problem_body(status, kind, title, detail)
    transport.write(b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
                    b"Cache-Control: no-store\r\nConnection: close\r\n\r\n"
                    % (status, reason.encode(), PROBLEM_CONTENT_TYPE.encode(), len(body))
                    + body)
    transport.loseConnection()


class RateLimitedLog:
    """
    Logs the admin listener's refusals: at most one line per C{interval}
    seconds (of its clock) per cause; the refusals not written are counted
    and the count is in the cause's next line.
    """

    log = Logger()
    interval = 10.0

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._last: Dict[str, float] = {}
        self._unlogged: Dict[str, int] = {}

    def refused(self, cause: str, template: str, **fields: object) -> None:
        """
        Log one refusal of C{cause}, or count it if one was logged less than
        C{interval} ago.

        @param template: the line (PEP 3101, with C{fields}), to which
            C{"; N more since the last such line"} is added when N
            refusals of this cause were not logged since the last line.
        """
        now = self.clock.seconds()
        last = self._last.get(cause)
        if last is not None and now - last < self.interval:
            self._unlogged[cause] = self._unlogged.get(cause, 0) + 1
            return
        self._last[cause] = now
        more = self._unlogged.pop(cause, 0)
        if more:
            template += "; {more} more since the last such line"
        self.log.warn(template, more=more, **fields)


#: The largest request body the admin listener takes (its API takes none):
#: a connection sending more is dropped before it is buffered.
MAX_ADMIN_BODY_BYTES = 64 * 1024


class AdminRequest(Request):
    """
    An admin request: its body is bounded (L{MAX_ADMIN_BODY_BYTES}),
    through twisted.web's public C{gotLength} / C{handleContentChunk}
    request hooks.
    """

    _received = 0
    _dropped = False

    def gotLength(self, length: Optional[int]) -> None:
        if length is not None and length > MAX_ADMIN_BODY_BYTES:
            super().gotLength(None)  # (a body holder that stays empty)
            self._refuse(_body_too_large())
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._dropped:
            return
        self._received += len(data)
        if self._received > MAX_ADMIN_BODY_BYTES:
            self._refuse(_body_too_large())
            return
        super().handleContentChunk(data)

    def process(self) -> None:
        channel = self.channel
        if isinstance(channel, AdminChannel):
            channel.request_complete()
        if self._dropped:  # a refused request is never served
            return
        # What Klein reads before any route, and the guard, runs: a Host it
        # can map, a path that is UTF-8 once percent-decoded.
        if not well_formed_hosts(self):
            self._refuse(BadRequest(MALFORMED_HOST))
            return
        if self.clientproto == b"HTTP/1.1" and self.getHeader(b"host") is None:
            self._refuse(BadRequest("an HTTP/1.1 request needs a Host header"))
            return
        try:
            unquote_to_bytes(self.path).decode("utf-8")
        except UnicodeDecodeError:
            self._refuse(BadRequest("the path is not UTF-8 once percent-decoded"))
            return
        super().process()

    def getRequestHostname(self) -> bytes:
        return request_hostname(self, super().getRequestHostname)

    def _refuse(self, error: PipelineError) -> None:
        """
        Answer C{error} (problem+json) and close: nothing more of this
        connection is read or served.
        """
        if self._dropped:
            return
        self._dropped = True
        channel = self.channel
        if isinstance(channel, AdminChannel):
            channel.refuse_head(error)


def _body_too_large() -> PayloadTooLarge:
    return PayloadTooLarge(f"the admin API takes bodies of at most {MAX_ADMIN_BODY_BYTES} bytes")


class AdminChannel(HeadRefusals):
    """
    An admin connection: twisted.web's HTTP/1.1 connection (its idle
    timeout is the site's C{admin.idle_timeout}) with a deadline for each
    request, from its first byte to its last (L{request_timeout}): past it,
    408 and closed.  A head that is malformed or over the limits is
    answered 400, 414 or 431 problem+json and closed (L{HeadRefusals}).

    @ivar clock: runs the deadline (the site's reactor).
    @ivar request_timeout: seconds a request has to arrive in full, or
        L{None} for no deadline.
    @ivar on_closed: called once when the connection is gone.
    @ivar refusal_log: where its refusals are logged (the site's).
    """

    clock: Optional[IReactorTime] = None
    refusal_log: Optional[RateLimitedLog] = None
    request_timeout: Optional[float] = None
    on_closed: Optional[Callable[[], None]] = None
    _deadline: Optional[IDelayedCall] = None
    #: A refusal (408, 400, 414, 431) was answered: nothing more is read.
    _refused = False

    def dataReceived(self, data: bytes) -> None:
        if self._refused:
            return
        if self._deadline is None and self.clock is not None and self.request_timeout:
            # The first byte of a request (a request's own bytes after its
            # first arrive with the deadline set; process() clears it).
            self._deadline = self.clock.callLater(self.request_timeout, self._too_slow)
        super().dataReceived(data)

    def refuse_head(self, error: PipelineError) -> None:
        """
        Answer C{error} (problem+json) and close, logged at a bounded rate
        per status: a malformed or oversized head, a malformed C{Host}, a
        body over L{MAX_ADMIN_BODY_BYTES}.
        """
        transport = self.transport
        if self._refused or transport is None:
            return
        self._refused = True
        self._cancel_deadline()
        if self.refusal_log is not None:
            # (One rate per refusal: the details are the listener's own
            # few texts, so the causes stay few.)
            self.refusal_log.refused(
                f"{error.status} {error.detail}",
                "admin listener answered {peer} {status} and closed the connection: {detail}",
                peer=str(transport.getPeer()), status=error.status, detail=error.detail)
        answer_and_close(transport, error.status, refusal_reason(error.status).decode(),
                         error.kind, error.title, error.detail)

    def request_complete(self) -> None:
        """
        A request arrived in full (its L{AdminRequest.process} runs): its
        deadline is met.
        """
        self._cancel_deadline()

    def _too_slow(self) -> None:
        self._deadline = None
        transport = self.transport
        if transport is None:
            return
        self._refused = True
        if self.refusal_log is not None:
            self.refusal_log.refused(
                "idle_timeout", "admin listener closed the connection of {peer}: its request "
                "did not arrive in full within {timeout:g}s (admin.idle_timeout)",
                peer=str(transport.getPeer()),
                timeout=self.request_timeout)
        answer_and_close(transport, 408, "Request Timeout", "request-timeout",
                         "Request not received in time",
                         f"an admin request must arrive in full within {self.request_timeout:g}s "
                         "of its first byte (admin.idle_timeout)")

    def _cancel_deadline(self) -> None:
        call, self._deadline = self._deadline, None
        if call is not None and call.active():
            call.cancel()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self._cancel_deadline()
        closed, self.on_closed = self.on_closed, None
        if closed is not None:
            closed()


class AdminSite(Site):
    """
    The admin listener's site (named in the logs: C{AdminSite starting on
    9901}): its connections are L{AdminChannel}s, at most
    C{admin.max_connections} of them, its requests L{AdminRequest}s.  The
    limits are read from C{settings} for each new connection: a reload
    applies to the connections accepted after it.

    @ivar open_connections: admin connections open now.
    @ivar refusing: connections over the cap being answered 503 now.
    """

    protocol = AdminChannel  # type: ignore[assignment]
    #: No "Starting factory <AdminSite object at 0x...>" line: the gateway's
    #: ready line names the admin address.
    noisy = False
    requestFactory = AdminRequest
    open_connections = 0
    refusing = 0

    def __init__(self, resource: IResource, reactor: Optional[IReactorTime] = None,
                 settings: Optional[Callable[[], AdminConfig]] = None) -> None:
        """
        @param reactor: runs the timeouts (default: the global reactor, as
            in L{Site}).
        @param settings: the C{admin} section in force (default: its
            defaults).
        """
        super().__init__(resource, reactor=reactor)
        self.settings: Callable[[], AdminConfig] = settings or AdminConfig
        self.refusal_log = RateLimitedLog(self.reactor)

    # Any: over the cap it builds a ConnectionRefusal, not the HTTP channel
    # HTTPFactory.buildProtocol is declared to return.
    def buildProtocol(self, addr: Optional[IAddress]) -> Any:
        settings = self.settings()
        cap = settings.max_connections
        if self.open_connections >= cap:
            self.refusal_log.refused(
                "max_connections", "admin listener refused a connection from {peer}: "
                "{cap} admin connections are open (admin.max_connections)", peer=str(addr),
                cap=cap)
            if self.refusing >= REFUSALS_IN_FLIGHT:
                return None  # closed at once by the port, unanswered
            self.refusing += 1
            return ConnectionRefusal(TooManyConnections(
                f"the admin listener holds {cap} connections already "
                "(admin.max_connections)"), self._refusal_closed)
        channel = super().buildProtocol(addr)
        if isinstance(channel, AdminChannel):
            # (twisted.web types timeOut as an int; TimeoutMixin hands it to
            # callLater, which takes seconds as a float.)
            channel.timeOut = settings.idle_timeout  # type: ignore[assignment]
            channel.clock = self.reactor
            channel.request_timeout = settings.idle_timeout
            channel.on_closed = self._connection_closed
            channel.refusal_log = self.refusal_log
            self.open_connections += 1
        return channel

    def _refusal_closed(self) -> None:
        self.refusing -= 1

    def _connection_closed(self) -> None:
        self.open_connections -= 1

    def log(self, request: http.Request) -> None:
        """
        No access line: an admin URL may carry a token in its query, and no
        secret is ever logged (the gateway's own access log covers proxied
        requests only).
        """


__all__ = ["AdminChannel", "AdminRequest", "AdminSite", "MAX_ADMIN_BODY_BYTES",
           "RateLimitedLog", "answer_and_close"]
