"""
How the HTTP edge words a problem (RFC 9457 problem+json): the status,
headers and body of a L{PipelineError} answered on a twisted.web request
(L{write_problem}), the whole raw answer of a request or connection refused
before it reaches the pipeline (L{refusal}), and the rate-limited log of
those refusals (L{RefusalLog}).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from twisted.logger import Logger
from twisted.web import http
from twisted.web.iweb import IRequest

from ..common.problems import PROBLEM_CONTENT_TYPE, problem_body
from .errors import MethodNotAllowed, PipelineError, Unauthorized

#: The gateway's correlation header, on every answer.
CORRELATION_HEADER = b"X-Correlation-Id"

PROBLEM = PROBLEM_CONTENT_TYPE.encode()

#: Reason phrases of the statuses the edge refuses with (RFC 9110 wording,
#: not twisted.web's older table).
_REASONS = {
    400: b"Bad Request", 408: b"Request Timeout", 413: b"Content Too Large",
    414: b"URI Too Long", 431: b"Request Header Fields Too Large",
    501: b"Not Implemented", 503: b"Service Unavailable",
}


def write_problem(request: IRequest, error: PipelineError,
                  correlation_id: Optional[str]) -> bytes:
    """
    Set status and headers of a problem+json answer and return its body.
    """
    request.setResponseCode(error.status)
    request.setHeader(b"Content-Type", PROBLEM)
    extra: Dict[str, Any] = {}
    if isinstance(error, MethodNotAllowed):
        request.setHeader(b"Allow", ", ".join(error.allow).encode())
        extra["allow"] = list(error.allow)
    if isinstance(error, Unauthorized):
        request.setHeader(b"WWW-Authenticate", b'Bearer error="invalid_token"'
                          if error.invalid_token else b"Bearer")
    if error.retry_after is not None:
        request.setHeader(b"Retry-After", str(error.retry_after).encode())
    body = problem_body(error.status, error.kind, error.title, error.detail,
                        correlation_id, **extra)
    request.setHeader(b"Content-Length", str(len(body)).encode())
    return body


def refusal(error: PipelineError, correlation_id: str) -> bytes:
    """
    A whole HTTP/1.1 answer to a refused request or connection:
    problem+json, C{X-Correlation-Id}, C{Connection: close}.
    """
    body = problem_body(error.status, error.kind, error.title, error.detail, correlation_id)
    reason = _REASONS.get(error.status) or http.RESPONSES.get(error.status, b"Error")
    head = [b"HTTP/1.1 %d %s" % (error.status, reason),
            b"Content-Type: " + PROBLEM,
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
