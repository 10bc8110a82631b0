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

Every use of a twisted.web private name by this code lives in this module,
listed in L{PRIVATE_NAMES} and pinned by C{tests/unit/test_web_private.py}.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.web import http

from ..common.ids import new_correlation_id
from ..common.problems import PROBLEM_CONTENT_TYPE, problem_body
from .errors import (
    BadRequest,
    PipelineError,
    RequestHeadersTooLarge,
    RequestHeadTimeout,
    RequestLineTooLong,
)

#: The private names of twisted.web's L{http.HTTPChannel} this module relies
#: on (attributes of a connected channel).
#: C{_respondToBadRequestAndDisconnect} is how twisted.web answers every
#: malformed request (overridden); C{_send100Continue} writes
#: C{100 Continue} after C{gotLength} (silenced once a request is refused);
#: C{_receivedHeaderSize} and C{_receivedHeaderCount} tell a head that is
#: too large from one that is malformed; C{_networkProducer} is the
#: transport's producer registration, undone before the half-close;
#: C{_handlingRequest} (a request is complete and being handled) and
#: C{_transferDecoder} (a body is arriving) tell where a connection is
#: between heads.
PRIVATE_NAMES = (
    "_respondToBadRequestAndDisconnect",
    "_send100Continue",
    "_receivedHeaderSize",
    "_receivedHeaderCount",
    "_networkProducer",
    "_handlingRequest",
    "_transferDecoder",
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

_PROBLEM = PROBLEM_CONTENT_TYPE.encode()


#: Reason phrases of the statuses the edge refuses with (RFC 9110 wording,
#: not twisted.web's older table).
_REASONS = {
    400: b"Bad Request", 408: b"Request Timeout", 413: b"Content Too Large",
    414: b"URI Too Long", 431: b"Request Header Fields Too Large",
    501: b"Not Implemented", 503: b"Service Unavailable",
}


def refusal(error: PipelineError, correlation_id: str) -> bytes:
    """
    A whole HTTP/1.1 answer to a refused request or connection:
    problem+json, C{X-Correlation-Id}, C{Connection: close}.
    """
    body = problem_body(error.status, error.kind, error.title, error.detail, correlation_id)
    reason = _REASONS.get(error.status) or http.RESPONSES.get(error.status, b"Error")
    head = [b"HTTP/1.1 %d %s" % (error.status, reason),
            b"Content-Type: " + _PROBLEM,
            b"X-Correlation-Id: " + correlation_id.encode(),
            b"Connection: close",
            b"Content-Length: %d" % len(body)]
    if error.retry_after is not None:
        head.append(b"Retry-After: %d" % error.retry_after)
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class RefusalLog:
    """
    Logs refusals, at most C{per_second} lines a second: a flood of bad
    requests must not become a flood of log lines.  The lines not written
    are counted and the count logged with the next second's first line.
    """

    log = Logger()
    #: Told the status of every refusal (the metrics' rejection counter).
    on_refused: Optional[Callable[[int], None]] = None

    def __init__(self, per_second: int = 10) -> None:
        self.per_second = per_second
        self._second = -1
        self._logged = 0
        self.suppressed = 0

    def refused(self, now: float, peer: Any, error: PipelineError, correlation_id: str) -> None:
        """
        Log (or count) one refusal.

        @param now: the clock's time.
        """
        if self.on_refused is not None:
            self.on_refused(error.status)  # (telemetry)
        second = int(now)
        if second != self._second:
            if self.suppressed:
                self.log.info("{count} more refusal(s) not logged", count=self.suppressed)
            self._second, self._logged, self.suppressed = second, 0, 0
        if self._logged >= self.per_second:
            self.suppressed += 1
            return
        self._logged += 1
        self.log.info("refused {peer}: {status} {detail} ({cid})", peer=str(peer),
                      status=error.status, detail=error.detail, cid=correlation_id)


def _ignore(*args: Any) -> None:
    """
    Stands in for a parsing step of a refused connection.
    """


class EdgeChannel(http.HTTPChannel):
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
    refusal_log: Optional["RefusalLog"] = None
    head_timeout: Optional[float] = None
    refused: Optional[int] = None
    _idle_call: Any = None
    _idle_deadline: Optional[float] = None
    _head_deadline: Optional[float] = None
    _head_call: Any = None
    _linger_call: Any = None
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

    def _respondToBadRequestAndDisconnect(self) -> None:
        """
        twisted.web's answer to a malformed request (request line, header
        syntax, NUL/CR/LF in a value, conflicting or bad framing headers, a
        bad chunk) and to a head over its limits: 431 for the latter, 400
        otherwise, both as problem+json.
        """
        if (self._receivedHeaderSize > self.totalHeadersSize
                or self._receivedHeaderCount > self.maxHeaders):
            self.refuse(RequestHeadersTooLarge(
                f"the request head exceeds {self.totalHeadersSize} bytes or "
                f"{self.maxHeaders} header fields"))
            return
        self.refuse(BadRequest(
            "malformed request: its request line, a header field, its framing "
            "(Content-Length / Transfer-Encoding) or a chunk is invalid"))

    def lineLengthExceeded(self, line: bytes) -> None:
        """
        One line of the head is over C{MAX_LENGTH}: 414 for the request line
        (no request of this head exists yet), 431 for a header line.
        """
        if self.requests:
            self.refuse(RequestHeadersTooLarge(
                f"a header field line exceeds {self.MAX_LENGTH} bytes"))
        else:
            self.refuse(RequestLineTooLong(f"the request line exceeds {self.MAX_LENGTH} bytes"))

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

    def connectionLost(self, reason: Any = None) -> None:
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

    def connectionLost(self, reason: Any = None) -> None:
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


__all__ = ["EdgeChannel", "ConnectionRefusal", "REFUSALS_IN_FLIGHT", "RefusalLog", "client_connection_cap", "refusal",
           "PRIVATE_NAMES", "LINGER_SECONDS", "LINGER_BYTES", "DEFAULT_MAX_HEADER_BYTES"]
