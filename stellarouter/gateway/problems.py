"""
How the HTTP edge words a problem (RFC 9457 problem+json): the status,
header lines and body of the answer to a L{PipelineError}
(L{problem_answer}), the reason phrases of the statuses a connection is
refused with (L{refusal_reason}), and the rate-limited log of refusals
(L{RefusalLog}).  Writing any of them is L{stellarouter.gateway.writer}'s
job.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

from twisted.logger import Logger
from twisted.web import http

from ..common.problems import PROBLEM_CONTENT_TYPE, problem_body
from ..common.untrusted import shown
from .errors import MethodNotAllowed, PipelineError, Unauthorized

#: The gateway's correlation header, on every answer.
CORRELATION_HEADER = b"X-Correlation-Id"

PROBLEM = PROBLEM_CONTENT_TYPE.encode()

#: How many characters of a refusal's detail (which may quote the client's
#: path or method) its log line shows.
MAX_LOGGED_DETAIL = 300

#: Reason phrases of the statuses the edge refuses with (RFC 9110 wording,
#: not twisted.web's older table).
_REASONS = {
    400: b"Bad Request", 408: b"Request Timeout", 413: b"Content Too Large",
    414: b"URI Too Long", 431: b"Request Header Fields Too Large",
    501: b"Not Implemented", 503: b"Service Unavailable",
}


def problem_answer(error: PipelineError,
                   correlation_id: Optional[str]) -> Tuple[List[bytes], bytes]:
    """
    The headers and body of the problem+json answer to C{error}.

    @return: the header lines (each C{b"Name: value\\r\\n"}: C{Content-Type},
        then C{Allow}, C{WWW-Authenticate} and C{Retry-After} where they
        apply; no C{Content-Length}) and the body.
    """
    lines = [b"Content-Type: " + PROBLEM + b"\r\n"]
    extra: Dict[str, object] = {}
    if isinstance(error, MethodNotAllowed):
        lines.append(b"Allow: " + ", ".join(error.allow).encode() + b"\r\n")
        extra["allow"] = list(error.allow)
    if isinstance(error, Unauthorized):
        lines.append(b'WWW-Authenticate: Bearer error="invalid_token"\r\n'
                     if error.invalid_token else b"WWW-Authenticate: Bearer\r\n")
    if error.retry_after is not None:
        lines.append(b"Retry-After: %d\r\n" % error.retry_after)
    body = problem_body(error.status, error.kind, error.title, error.detail,
                        correlation_id, **extra)
    return lines, body


def refusal_reason(status: int) -> bytes:
    """
    The reason phrase of a refusal's status line (RFC 9110 wording where
    twisted.web's older table differs).
    """
    return _REASONS.get(status) or http.RESPONSES.get(status, b"Error")


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

    def refused(self, now: float, peer: object, error: PipelineError, correlation_id: str) -> None:
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
                      status=error.status, detail=shown(error.detail, MAX_LOGGED_DETAIL),
                      cid=correlation_id)
