"""
The microservice's access log: one line per request it served, carrying
the correlation id the gateway logged for the same request, so searching
one id finds the request on both sides.

The dispatcher tells L{RequestLog} when a request starts (L{started}), when
its whole answer or its stream's head goes out (L{answered}), when a
stream ends (L{stream_ended}) and when a request is cancelled
(L{cancelled}); the line is buffered in an L{AccessLog}.  With
C{access_log.level: errors}, only answers with status >= 500,
cancellations and failed streams are written.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

from twisted.internet.interfaces import IReactorTime

from ..accesslog import AccessLog
from ..common.ids import CorrelationId
from ..config.observability import AccessLogConfig

#: The microservice's access log fields, in order (the first is the time).
SDK_ACCESS_LOG_FIELDS = ("time", "cid", "method", "path", "route", "status", "bytes_out",
                         "duration_ms", "outcome")

#: At most this many requests are remembered between their start and their
#: end (more than a process serves at once; the oldest is dropped beyond).
MAX_TRACKED = 16384

#: What is remembered of a request in flight: method, path, template, when
#: it started, and its status once its head went out.
_Started = Tuple[str, str, str, float, Optional[int]]


class RequestLog:
    """
    Writes the SDK's access log lines.
    """

    def __init__(self, config: AccessLogConfig, clock: IReactorTime,
                 log: Optional[AccessLog] = None) -> None:
        self.clock = clock
        self.log = log if log is not None else AccessLog(SDK_ACCESS_LOG_FIELDS, config, clock)
        self.errors_only = config.level == "errors"
        self._requests: Dict[CorrelationId, _Started] = {}

    def started(self, cid: CorrelationId, method: str, path: str, template: str) -> None:
        """
        A request is dispatched to its handler.
        """
        requests = self._requests
        if len(requests) >= MAX_TRACKED:
            del requests[next(iter(requests))]
        requests[cid] = (method, path, template, self.clock.seconds(), None)

    def answered(self, cid: CorrelationId, status: int, size: int,
                 streaming: bool = False) -> None:
        """
        A whole answer went out (C{size} body bytes), or the head of a
        streamed one (C{streaming}: its line is written when it ends).
        """
        if streaming:
            known = self._requests.get(cid)
            if known is not None:
                self._requests[cid] = known[:4] + (status,)
            return
        self._line(cid, status, size, "ok" if status < 500 else "error")

    def stream_ended(self, cid: CorrelationId, ok: bool) -> None:
        """
        A streamed answer ended (C{ok}) or was aborted.
        """
        known = self._requests.get(cid)
        status = known[4] if known is not None and known[4] is not None else 200
        self._line(cid, status, None, "ok" if ok else "stream-aborted")

    def cancelled(self, cid: CorrelationId, reason: str) -> None:
        """
        The gateway cancelled the request (C{reason}: the CANCEL's).
        """
        self._line(cid, None, None, f"cancelled:{reason}")

    def _line(self, cid: CorrelationId, status: Optional[int], size: Optional[int],
              outcome: str) -> None:
        known = self._requests.pop(cid, None)
        if self.errors_only and outcome == "ok":
            return
        now = self.clock.seconds()
        if known is None:
            self.log.add((now, cid, None, None, None, status, size, None, outcome))
            return
        # (The correlation id stays an object until the line is formatted.)
        self.log.add((now, cid, known[0], known[1], known[2], status, size,
                      (now - known[3]) * 1000, outcome))

    def close(self) -> None:
        """
        Write out what is buffered.
        """
        self.log.close()
