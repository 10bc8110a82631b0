"""
In-flight requests of one microservice connection: correlation ids,
timeouts, the one cancel path (CANCEL sent at most once per request, with its
reason), and late frames (counted and dropped).
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from ..common.enums import CancelReason
from ..common.ids import CorrelationId
from ..common.interfaces import IResponseSink
from ..common.payloads import ResponseMessage
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
    """

    __slots__ = ("sink", "timer", "started", "size", "retry")

    def __init__(self, sink: IResponseSink, timer: Optional[IDelayedCall], size: int) -> None:
        self.sink = sink
        self.timer = timer
        self.started = False
        self.size = size
        self.retry: Optional[IDelayedCall] = None


class InFlightRequests:
    """
    The table of requests in flight on one connection.

    @ivar late_frames: RESPONSE / stream frames for ids not in flight
        (cancelled, timed out, or never sent), dropped.
    @ivar cancels_sent: CANCEL frames sent, by reason value.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        send_cancel: Callable[[CorrelationId, CancelReason], None],
        on_finished: Callable[[PendingRequest], None] = lambda pending: None,
    ) -> None:
        """
        @param clock: runs the timeouts.
        @param send_cancel: sends one CANCEL frame.
        @param on_finished: called once for every request leaving the table
            (for in-flight accounting).
        """
        self._clock = clock
        self._send_cancel = send_cancel
        self._on_finished = on_finished
        self._pending: Dict[CorrelationId, PendingRequest] = {}
        self.late_frames = 0
        self.retries_sent = 0
        self.cancels_sent: Dict[str, int] = {}

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
        timer = None
        if timeout is not None:
            timer = self._clock.callLater(timeout, self._timed_out, cid, timeout)
        pending = PendingRequest(sink, timer, size)
        self._pending[cid] = pending
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

    def _remove(self, cid: CorrelationId) -> Optional[PendingRequest]:
        pending = self._pending.pop(cid, None)
        if pending is not None:
            if pending.timer is not None and pending.timer.active():
                pending.timer.cancel()
            pending.timer = None
            if pending.retry is not None and pending.retry.active():
                pending.retry.cancel()
            pending.retry = None
            self._on_finished(pending)
        return pending

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
            # The timeout keeps running until the stream ends: a stalled
            # stream is cancelled like a missing response.
            pending.started = True
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
                self._send_cancel(cid, CancelReason.CLIENT_DISCONNECTED)
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
        self._send_cancel(cid, reason)
        if error is not None:
            pending.sink.failed(error)
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

    def _timed_out(self, cid: CorrelationId, timeout: float) -> None:
        pending = self._pending.get(cid)
        if pending is None:
            return
        pending.timer = None
        self.log.warn("request {cid} timed out after {timeout}s; sending CANCEL",
                      cid=cid, timeout=timeout)
        self.cancel(cid, CancelReason.TIMEOUT,
                    GatewayTimeout(f"no response within {timeout:g} s"))
