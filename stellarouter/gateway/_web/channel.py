"""
The gateway's HTTP/1.1 connection at the connection level: what it refuses
before a request reaches the pipeline, and how.

L{EdgeChannel} is twisted.web's L{http.HTTPChannel} with:

 - one way to refuse (L{EdgeChannel.refuse}): a problem+json answer with an
   C{X-Correlation-Id} and C{Connection: close}, after which nothing more
   of the connection is parsed; the connection is closed once the answer
   is out (the client's bytes still in flight are drained, at most
   L{LINGER_BYTES} for at most L{LINGER_SECONDS}, so that its kernel does
   not reset the connection before the client has read the answer);
 - twisted.web's own bare C{400 Bad Request} replaced by that answer, and
   a request head over C{max_header_bytes} answered 414 (the request line)
   or 431 (a header line, all headers, or too many of them) instead of a
   silent close or a 400;
 - a deadline for the whole request head (C{head_timeout}, from its first
   byte to its last): a client that sends its headers a byte at a time
   gets 408 and is closed, however often it sends.

L{ConnectionRefusal} answers a connection over the client-connection cap.

L{GatewayChannel} is the L{EdgeChannel} the gateway's site builds.
L{HeadRefusals}, the answers to a malformed or oversized head, is shared
with the admin listener's connections.

Its uses of twisted.web private names are listed in
L{stellarouter.gateway._web.PRIVATE_NAMES}.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web import http

from ...common.ids import new_correlation_id
from ...transports.flush import discard_unsent
from ..problems import RefusalLog
from ..writer import refusal
from ..errors import (
    BadRequest,
    PipelineError,
    RequestHeadersTooLarge,
    RequestHeadTimeout,
    RequestLineTooLong,
)

#: After a refusal, how long (seconds) and how many bytes the client's
#: bytes still in flight are read and dropped before the connection is cut.
LINGER_SECONDS = 2.0
LINGER_BYTES = 1 << 20

#: The default of C{http.max_header_bytes}: twisted.web's own line and
#: head limits.
DEFAULT_MAX_HEADER_BYTES = 16384

#: How early (seconds) a timer may fire and still count as on time.
_SLACK = 1e-6

def transport_paused(channel: object) -> bool:
    """
    Whether the client's connection is paused (its write buffer is full):
    twisted.web does not pause a producer registered while it is.
    """
    return bool(getattr(channel, "_waitingForTransport", False))


def _ignore(*args: object) -> None:
    """
    Stands in for a parsing step of a refused connection.
    """


class HeadRefusals(http.HTTPChannel):
    """
    twisted.web's HTTP/1.1 connection, answering a malformed request head
    and one over its limits through L{refuse_head} (as problem+json)
    instead of a bare C{400 Bad Request} or a silent close: 431 for a
    header line, all headers or too many of them over the limits, 414 for
    a request line, 400 for anything else malformed (the request line,
    header syntax, NUL/CR/LF in a value, conflicting or bad framing
    headers, a bad chunk).
    """

    def refuse_head(self, error: PipelineError) -> None:
        """
        Answer C{error} and close; nothing more of the connection is read.
        """
        raise NotImplementedError

    def _respondToBadRequestAndDisconnect(self) -> None:
        if (self._receivedHeaderSize > self.totalHeadersSize
                or self._receivedHeaderCount > self.maxHeaders):
            self.refuse_head(RequestHeadersTooLarge(
                f"the request head exceeds {self.totalHeadersSize} bytes or "
                f"{self.maxHeaders} header fields"))
            return
        self.refuse_head(BadRequest(
            "malformed request: its request line, a header field, its framing "
            "(Content-Length / Transfer-Encoding) or a chunk is invalid"))

    def lineLengthExceeded(self, line: bytes) -> None:
        """
        One line of the head is over C{MAX_LENGTH}: 414 for the request line
        (no request of this head exists yet), 431 for a header line.
        """
        if self.requests:
            self.refuse_head(RequestHeadersTooLarge(
                f"a header field line exceeds {self.MAX_LENGTH} bytes"))
        else:
            self.refuse_head(RequestLineTooLong(
                f"the request line exceeds {self.MAX_LENGTH} bytes"))


class EdgeChannel(HeadRefusals):
    """
    twisted.web's HTTP/1.1 connection with the edge's refusals and its
    request-head deadline (see the module docstring).

    @ivar clock: drives the head deadline and the linger; without one (a
        channel not built by the gateway's site) there is neither.
    @ivar head_timeout: seconds from the first byte of a request head to
        its end, or L{None} for no deadline.
    @ivar refused: the status of the refusal sent, or L{None}.
    """

    clock: Optional[IReactorTime] = None
    #: Where refusals are logged (shared by the site's connections).
    refusal_log: Optional[RefusalLog] = None
    head_timeout: Optional[float] = None
    refused: Optional[int] = None
    _idle_call: Optional[IDelayedCall] = None
    _idle_deadline: Optional[float] = None
    _head_deadline: Optional[float] = None
    _head_call: Optional[IDelayedCall] = None
    _linger_call: Optional[IDelayedCall] = None
    _lingered = 0

    def set_max_header_bytes(self, limit: int) -> None:
        """
        Bound the request line, each header line and all of them together
        to C{limit} bytes (line ends not counted).
        """
        self.MAX_LENGTH = limit
        self.totalHeadersSize = limit

    # Refusing

    def refuse(self, error: PipelineError, correlation_id: Optional[str] = None) -> None:
        """
        Answer C{error} at once, parse nothing more of this connection, and
        close it once the answer is out.  A second refusal is ignored.

        @param correlation_id: the request's, if it has one already.
        """
        if self.refused is not None or self.transport is None:
            return
        self.refused = error.status
        for name in ("dataReceived", "lineReceived", "rawDataReceived",
                     "allContentReceived", "_send100Continue"):
            setattr(self, name, _ignore)
        self._cancel_head_timer()
        cid = correlation_id or str(new_correlation_id())
        if self.refusal_log is not None and self.clock is not None:
            self.refusal_log.refused(self.clock.seconds(), self.transport.getPeer(), error, cid)
        self.transport.write(refusal(error, cid))
        self._close_after_answer()

    def _close_after_answer(self) -> None:
        """
        Send our FIN after the answer and drain what the client still sends
        for a little while (bounded), or close at once where a half-close is
        not possible.
        """
        transport: Any = self.transport
        producer: Any = self._networkProducer
        producer.unregisterProducer()
        half_close = getattr(transport, "loseWriteConnection", None)
        if half_close is None or self.clock is None:
            transport.loseConnection()
            return
        self.dataReceived = self._drain  # type: ignore[method-assign]
        half_close()
        transport.resumeProducing()
        self._linger_call = self.clock.callLater(LINGER_SECONDS, self._linger_over)

    def _drain(self, data: bytes) -> None:
        self._lingered += len(data)
        if self._lingered > LINGER_BYTES:
            self._linger_over()

    def _linger_over(self) -> None:
        if self._linger_call is not None and self._linger_call.active():
            self._linger_call.cancel()
        self._linger_call = None
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def refuse_head(self, error: PipelineError) -> None:
        self.refuse(error)

    # Timers: the idle timeout (twisted.web's TimeoutMixin API) and the
    # request-head deadline, each kept with one lazily moved timer per
    # connection.  twisted.web turns the idle timeout off while a request is
    # handled and on again after it (with TimeoutMixin's own timer: a
    # DelayedCall cancelled and another created on every request); here
    # setting and resetting only move a deadline, and a timer that fires
    # early waits for the rest.  The head deadline rides on the same hooks,
    # so it costs no call of its own per request: twisted.web resets the
    # idle timeout on every read (a read while no request is being read or
    # handled begins a head) and turns it off once a request is complete
    # (which ends the head at the latest; a body that is still arriving
    # ends it too).  Without an idle timeout (C{timeOut} unset) there is no
    # head deadline either.

    def setTimeout(self, period: Optional[int]) -> Optional[int]:
        if self.clock is None:
            # Not built by the gateway's site (no clock to read): TimeoutMixin's way.
            return super().setTimeout(period)
        prev = self.timeOut
        self.timeOut = period
        if period is None:
            self._idle_deadline = None
            self._head_deadline = None  # the request is complete
        else:
            self._idle_from_now(period)
        return prev

    def resetTimeout(self) -> None:
        clock = self.clock
        if clock is None:
            super().resetTimeout()
            return
        if (self._head_deadline is None and self.timeOut and self.head_timeout is not None
                and not self._handlingRequest and self._transferDecoder is None):
            self._head_begins(clock, self.head_timeout)
        if self.timeOut is not None and self._idle_deadline is not None:
            self._idle_from_now(self.timeOut)

    def _idle_from_now(self, period: float) -> None:
        assert self.clock is not None
        self._idle_deadline = self.clock.seconds() + period
        call = self._idle_call
        if call is None:
            self._idle_call = self.callLater(period, self._idle_due)
        elif call.getTime() > self._idle_deadline:
            call.reset(period)

    def _idle_due(self) -> None:
        self._idle_call = None
        deadline = self._idle_deadline
        if deadline is None:
            return  # turned off (a request is being handled)
        assert self.clock is not None
        remaining = deadline - self.clock.seconds()
        if remaining > _SLACK:
            self._idle_call = self.callLater(remaining, self._idle_due)
            return
        self._idle_deadline = None
        self.timeoutConnection()

    def _head_begins(self, clock: IReactorTime, timeout: float) -> None:
        self._head_deadline = deadline = clock.seconds() + timeout
        call = self._head_call
        if call is None:
            self._head_call = clock.callLater(timeout, self._head_due)
        elif call.getTime() > deadline:
            call.reset(timeout)

    def _head_due(self) -> None:
        self._head_call = None
        deadline = self._head_deadline
        if deadline is None:
            return  # the head completed in time; the next one re-arms
        if self._handlingRequest or self._transferDecoder is not None:
            self._head_deadline = None  # the head is in; its body is arriving
            return
        assert self.clock is not None
        remaining = deadline - self.clock.seconds()
        if remaining > _SLACK:
            self._head_call = self.clock.callLater(remaining, self._head_due)
            return
        self._head_deadline = None
        self.refuse(RequestHeadTimeout(
            f"the request line and headers did not arrive within {self.head_timeout:g}s"))

    def _cancel_head_timer(self) -> None:
        self._head_deadline = None
        call, self._head_call = self._head_call, None
        if call is not None and call.active():
            call.cancel()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self._cancel_head_timer()
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.cancel()
        self._idle_call = None
        if self._linger_call is not None and self._linger_call.active():
            self._linger_call.cancel()
        self._linger_call = None


#: At most this many connections over the cap are being answered 503 at a
#: time (each holds its descriptor until the answer is out); beyond, a
#: connection is closed as soon as it is accepted, unanswered.
REFUSALS_IN_FLIGHT = 16


class ConnectionRefusal(Protocol):
    """
    A client connection over the cap: answered 503 (problem+json,
    C{Retry-After}) at once and closed, never parsed.
    """

    def __init__(self, error: PipelineError, closed: Callable[[], None]) -> None:
        """
        @param closed: called once the connection is gone.
        """
        self.error = error
        self.closed = closed

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(refusal(self.error, str(new_correlation_id())))
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed()


def client_connection_cap(configured: Optional[int], open_files_limit: int,
                          reserved: int) -> int:
    """
    How many client HTTP connections the gateway holds at most.

    @param configured: C{http.max_connections}, or L{None} for automatic.
    @param open_files_limit: the process's soft C{RLIMIT_NOFILE}.
    @param reserved: C{http.reserved_descriptors}: file descriptors kept
        for everything else (microservice connections, listeners, files).
    @return: C{configured} if set; otherwise the open-files limit less the
        reserve, but never less than half the limit (so a small limit still
        leaves half of it to microservices and files).
    """
    if configured is not None:
        return configured
    return max(open_files_limit - reserved, open_files_limit // 2, 1)


class GatewayChannel(EdgeChannel):
    """
    The gateway's HTTP/1.1 connection: L{EdgeChannel} (twisted.web's
    L{http.HTTPChannel} with the edge's refusals, head deadline and lazily
    moved timers), except that it asks the socket for its own address once
    per connection (twisted.web asks on every request: a C{getsockname}
    system call each), and counts itself in its site's open connections.
    """

    _host: Optional[IAddress] = None
    #: Called once when the connection is gone (set by the site that
    #: counts it in its open connections).
    on_closed: Optional[Callable[[], None]] = None

    def getHost(self) -> IAddress:
        host = self._host
        if host is None:
            host = self._host = super().getHost()
        return host

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        # What a client that left did not read goes now, not when the
        # garbage collector finds this channel's reference cycles.
        discard_unsent(self.transport)
        closed, self.on_closed = self.on_closed, None
        if closed is not None:
            closed()
