"""
In-flight requests of one microservice connection: correlation ids,
timeouts, the one cancel path (CANCEL sent at most once per request, with its
reason), and late frames (counted and dropped).

Timeouts share one timer per connection.  Each request's deadline goes into
a heap; one C{callLater} is armed for the earliest, and when it fires every
request whose deadline has come times out (the same moment a timer of its
own would have fired).  A request that is answered is not looked for in the
heap: its entry is dropped when it reaches the top, or when dead entries
outnumber live ones.  A C{DelayedCall} per request cost its construction,
the reactor's heap push and its cancellation: a few microseconds on every
proxied request.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Callable, Dict, List, Optional, Tuple

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from ..common.enums import CancelReason
from ..common.ids import CorrelationId
from ..common.interfaces import IResponseSink
from ..common.errors import MalformedPayload
from ..common.payloads import ResponseMessage, decode_response, decode_stream_data
from .errors import DispatchError, GatewayTimeout, UpstreamProtocolError


class ByteCount:
    """
    Request body bytes in flight across all connections of a gateway (the
    aggregate payload budget).
    """

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


class PendingRequest:
    """
    One dispatched request awaiting its response.

    @ivar started: the RESPONSE header arrived and a streamed body follows.
    @ivar active_at: when the streamed response last brought bytes (its
        timeout is an idle timeout from there, issue 25).
    """

    __slots__ = ("sink", "timeout", "started", "size", "retry", "active_at")

    def __init__(self, sink: IResponseSink, timeout: Optional[float], size: int) -> None:
        """
        @param timeout: seconds it may take, or L{None} for no limit.
        """
        self.sink = sink
        self.timeout = timeout
        self.started = False
        self.size = size
        self.retry: Optional[IDelayedCall] = None
        self.active_at = 0.0


#: A timeout heap entry: deadline, sequence number (first sent times out
#: first), correlation id, and the request (live while it is the one in the
#: table under that id).
_Deadline = Tuple[float, int, CorrelationId, PendingRequest]

#: Dead heap entries tolerated beyond twice the live requests before the heap
#: is rebuilt.
_SLACK = 64


_NEVER = float("inf")


def _aborted() -> DispatchError:
    return UpstreamProtocolError("the microservice aborted the response stream")


class InFlightRequests:
    """
    The table of requests in flight on one connection.

    @ivar late_frames: RESPONSE / stream frames for ids not in flight
        (cancelled, timed out, or never sent), dropped.
    @ivar cancels_sent: CANCEL frames sent, by reason value (not those
        that stop the unread body of a HEAD's answer: L{head_answered}).
    @ivar heads_answered: streamed answers stopped because their request
        was a HEAD answered from the head (L{head_answered}).
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        send_cancel: Callable[[CorrelationId, CancelReason, bool], None],
        on_finished: Callable[[PendingRequest], None] = lambda pending: None,
    ) -> None:
        """
        @param clock: runs the timeouts.
        @param send_cancel: sends one CANCEL frame (its last argument:
            marked C{head_only}).
        @param on_finished: called once for every request leaving the table
            (for in-flight accounting).
        """
        self._clock = clock
        self._send_cancel = send_cancel
        self._on_finished = on_finished
        self._pending: Dict[CorrelationId, PendingRequest] = {}
        self._deadlines: List[_Deadline] = []
        self._sequence = itertools.count()
        self._alarm: Optional[IDelayedCall] = None
        self._alarm_at = _NEVER
        self.late_frames = 0
        #: The microservice's address, for the log (set once it connects).
        self.peer = "?"
        self.retries_sent = 0
        self.cancels_sent: Dict[str, int] = {}
        self.heads_answered = 0

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, cid: object) -> bool:
        return cid in self._pending

    def pending(self, cid: CorrelationId) -> Optional[PendingRequest]:
        """
        The request in flight under C{cid}, if any.
        """
        return self._pending.get(cid)

    def add(self, cid: CorrelationId, sink: IResponseSink, timeout: Optional[float], size: int = 0,
            resend: Optional[Callable[[], None]] = None, retries: int = 0) -> None:
        """
        Track a request just sent.

        @param timeout: seconds until CANCEL(Timeout) and a 504, or C{None}.
        @param size: request body bytes (for in-flight byte accounting).
        @param resend: sends the request again; called up to C{retries}
            times at even intervals within the timeout while no answer came.
        """
        pending = PendingRequest(sink, timeout, size)
        self._pending[cid] = pending
        if timeout is not None:
            deadlines = self._deadlines
            deadline = self._clock.seconds() + timeout
            heapq.heappush(deadlines, (deadline, next(self._sequence), cid, pending))
            if deadline < self._alarm_at:
                self._arm(deadline)
            if len(deadlines) > 2 * len(self._pending) + _SLACK:
                self._compact()
        if resend is not None and retries > 0 and timeout is not None:
            interval = timeout / (retries + 1)
            pending.retry = self._clock.callLater(interval, self._retry, cid, resend,
                                                  interval, retries)

    def _retry(self, cid: CorrelationId, resend: Callable[[], None], interval: float,
               left: int) -> None:
        pending = self._pending.get(cid)
        if pending is None or pending.started:
            return
        pending.retry = None
        self.retries_sent += 1
        self.log.info("no answer to request {cid} yet; sending it again", cid=cid)
        resend()
        if left > 1:
            pending.retry = self._clock.callLater(interval, self._retry, cid, resend,
                                                  interval, left - 1)

    def _arm(self, deadline: float) -> None:
        """
        Set the timer for C{deadline} (earlier than the one set, if any).
        """
        if self._alarm is not None:
            self._alarm.cancel()
        self._alarm_at = deadline
        # (never negative: the real clock moves between reading it and here)
        self._alarm = self._clock.callLater(max(deadline - self._clock.seconds(), 0.0),
                                            self._alarm_rang)

    def _disarm(self) -> None:
        if self._alarm is not None:
            self._alarm.cancel()
            self._alarm = None
        self._alarm_at = _NEVER

    def _compact(self) -> None:
        """
        Drop the heap entries of requests no longer in flight.
        """
        pending = self._pending
        self._deadlines = [e for e in self._deadlines if pending.get(e[2]) is e[3]]
        heapq.heapify(self._deadlines)

    def _alarm_rang(self) -> None:
        """
        Time out every request whose deadline has come, then set the timer
        for the next.
        """
        # What the timer was set for counts as reached, even if the clock's
        # arithmetic (now + (deadline - now)) landed a hair before it.
        now = max(self._clock.seconds(), self._alarm_at)
        self._alarm, self._alarm_at = None, _NEVER
        # (self._deadlines is read afresh each time: a sink told of a timeout
        # may send or finish requests, which can rebuild the heap.)
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, cid, pending = heapq.heappop(self._deadlines)
            if self._pending.get(cid) is pending:
                if pending.started and pending.timeout is not None:
                    # A streaming response times out when idle (issue 25):
                    # its deadline moves on to its last bytes + timeout.
                    idle_until = pending.active_at + pending.timeout
                    if idle_until > now:
                        heapq.heappush(self._deadlines,
                                       (idle_until, next(self._sequence), cid, pending))
                        continue
                self._timed_out(cid, pending.timeout)
        # Skip to the next live deadline (answered requests leave theirs).
        deadlines = self._deadlines
        while deadlines and self._pending.get(deadlines[0][2]) is not deadlines[0][3]:
            heapq.heappop(deadlines)
        if deadlines and deadlines[0][0] < self._alarm_at:
            self._arm(deadlines[0][0])

    def _remove(self, cid: CorrelationId) -> Optional[PendingRequest]:
        pending = self._pending.pop(cid, None)
        if pending is not None:
            if not self._pending:
                # Nothing in flight: no deadline left to watch.
                self._deadlines.clear()
                self._disarm()
            if pending.retry is not None and pending.retry.active():
                pending.retry.cancel()
            pending.retry = None
            self._on_finished(pending)
        return pending

    def response_frame(self, cid: CorrelationId, payload: bytes) -> None:
        """
        A RESPONSE frame arrived: decode it and deliver it (L{response}); a
        malformed one fails its request.
        """
        if cid not in self._pending:
            self.late_frames += 1
            return
        try:
            message = decode_response(payload)
        except MalformedPayload as e:
            self.log.warn("malformed RESPONSE {cid} from {peer}: {error}",
                          cid=cid, peer=self.peer, error=e)
            self.fail(cid, UpstreamProtocolError(str(e)))
            return
        self.response(cid, message)

    def stream_data_frame(self, cid: CorrelationId, payload: bytes) -> None:
        """
        A RESPONSE_STREAM_DATA frame (not a credit) arrived: decode it and
        deliver it (L{stream_data}); a malformed one fails its request.
        """
        if cid not in self._pending:
            self.late_frames += 1
            return
        try:
            chunk, end, abort = decode_stream_data(payload)
        except MalformedPayload as e:
            self.log.warn("malformed RESPONSE_STREAM_DATA {cid} from {peer}: {error}",
                          cid=cid, peer=self.peer, error=e)
            self.fail(cid, UpstreamProtocolError(str(e)))
            return
        self.stream_data(cid, chunk, end, abort, _aborted)

    def response(self, cid: CorrelationId, message: ResponseMessage) -> bool:
        """
        A RESPONSE arrived.

        @return: C{False} if it was late (and dropped).
        """
        pending = self._pending.get(cid)
        if pending is None or pending.started:
            self.late_frames += 1
            return False
        if message.streaming:
            # From here the timeout is an idle timeout (issue 25): a stream
            # that brings no bytes for it is cancelled like a missing
            # response; one that keeps moving may last.
            pending.started = True
            pending.active_at = self._clock.seconds()
            self._deliver(cid, pending, pending.sink.responseStarted, message)
            return True
        self._remove(cid)
        self._deliver(cid, pending, pending.sink.responseStarted, message)
        return True

    def _deliver(self, cid: CorrelationId, pending: PendingRequest, call: Callable[..., None],
                 *args: object) -> None:
        """
        Call the sink; if it fails (a bug, or a response the HTTP layer
        refuses), log it and fail that request alone.
        """
        try:
            call(*args)
        except Exception:
            self.log.failure("writing the response of request {cid} failed", cid=cid)
            if cid in self._pending:
                self._remove(cid)
                self._send_cancel(cid, CancelReason.CLIENT_DISCONNECTED, False)
            try:
                pending.sink.failed(UpstreamProtocolError("the response could not be written"))
            except Exception:
                self.log.failure("reporting the failure of request {cid} failed too", cid=cid)

    def stream_data(self, cid: CorrelationId, chunk: bytes, end: bool, abort: bool,
                    abort_error: Callable[[], DispatchError]) -> bool:
        """
        A RESPONSE_STREAM_DATA frame arrived.

        @param abort_error: builds the error reported when C{abort} is set.
        @return: C{False} if it was late (and dropped).
        """
        pending = self._pending.get(cid)
        if pending is None or not pending.started:
            self.late_frames += 1
            return False
        if abort:
            self._remove(cid)
            self._deliver(cid, pending, pending.sink.failed, abort_error())
            return True
        if chunk:
            pending.active_at = self._clock.seconds()
            self._deliver(cid, pending, pending.sink.bodyChunk, chunk)
        if end and cid in self._pending:
            self._remove(cid)
            self._deliver(cid, pending, pending.sink.responseFinished)
        return True

    def fail(self, cid: CorrelationId, error: DispatchError) -> None:
        """
        Give up on one request without sending CANCEL (the microservice sent
        something unusable for it).
        """
        pending = self._remove(cid)
        if pending is not None:
            pending.sink.failed(error)

    def cancel(self, cid: CorrelationId, reason: CancelReason,
               error: Optional[DispatchError] = None) -> bool:
        """
        The one cancel path: stop tracking, send CANCEL once, and tell the
        sink (unless C{error} is C{None}: the client is gone).

        @return: C{False} if C{cid} was not in flight (nothing is sent).
        """
        pending = self._remove(cid)
        if pending is None:
            return False
        self.cancels_sent[reason.value] = self.cancels_sent.get(reason.value, 0) + 1
        self._send_cancel(cid, reason, False)
        if error is not None:
            pending.sink.failed(error)
        return True

    def head_answered(self, cid: CorrelationId) -> bool:
        """
        A HEAD was answered from the head of its GET endpoint's streamed
        response: stop tracking it and stop its body upstream with a CANCEL
        marked C{head_only} (reason C{ClientDisconnected}, what a
        microservice that does not read the mark understands).  The request
        is complete, not cancelled: not counted in L{cancels_sent}.

        @return: C{False} if C{cid} was not in flight (nothing is sent).
        """
        if self._remove(cid) is None:
            return False
        self.heads_answered += 1
        self._send_cancel(cid, CancelReason.CLIENT_DISCONNECTED, True)
        return True

    def cancel_all(self, reason: CancelReason, error: DispatchError) -> int:
        """
        Cancel every request in flight (gateway shutdown).

        @return: how many were cancelled.
        """
        cids = list(self._pending)
        for cid in cids:
            self.cancel(cid, reason, error)
        return len(cids)

    def fail_all(self, error: DispatchError) -> int:
        """
        The connection is gone: fail every request without sending anything.

        @return: how many failed.
        """
        cids = list(self._pending)
        for cid in cids:
            self.fail(cid, error)
        return len(cids)

    def _timed_out(self, cid: CorrelationId, timeout: Optional[float]) -> None:
        pending = self._pending.get(cid)
        if pending is not None and pending.started:
            self.log.warn("the streamed response of request {cid} brought nothing for "
                          "{timeout}s; sending CANCEL", cid=cid, timeout=timeout)
            self.cancel(cid, CancelReason.TIMEOUT,
                        GatewayTimeout(f"no response bytes for {timeout:g} s"))
            return
        self.log.warn("request {cid} timed out after {timeout}s; sending CANCEL",
                      cid=cid, timeout=timeout)
        self.cancel(cid, CancelReason.TIMEOUT,
                    GatewayTimeout(f"no response within {timeout:g} s"))
