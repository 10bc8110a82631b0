"""
Whether a REQUEST may start on this instance (issue 24).  A request refused
here never reaches a handler, and its answer says so: a 503 with the header
C{X-Stella-Not-Started} (protocol.md, "Not started"), on which the gateway
may send it to another instance, whatever its method.
"""

from __future__ import annotations

from typing import Dict, Optional

from ..common.ids import CorrelationId
from ..common.problems import PROBLEM_CONTENT_TYPE, problem_body
from .context import RawResponse

#: The RESPONSE header of a request the instance did not start (the same
#: name as L{stellarouter.gateway.retry.NOT_STARTED_HEADER}; the SDK does not
#: import the gateway).
NOT_STARTED_HEADER = "X-Stella-Not-Started"
#: Values of L{NOT_STARTED_HEADER}.
DRAINING = "draining"
OVERLOADED = "overloaded"


class RequestAdmission:
    """
    The admission rule of one gateway connection: no new request while the
    instance drains, nor beyond C{max_concurrent} requests in flight.

    @ivar draining: the instance reported DRAINING.
    @ivar refused: requests refused, by reason.
    """

    def __init__(self, max_concurrent: Optional[int] = None) -> None:
        """
        @param max_concurrent: requests in flight at most on the connection
            (C{None}: no limit).
        """
        if max_concurrent is not None and max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self.max_concurrent = max_concurrent
        self.draining = False
        self.refused: Dict[str, int] = {}

    def refusal(self, in_flight: int) -> Optional[str]:
        """
        Why a new request may not start now (L{DRAINING}, L{OVERLOADED}), or
        C{None}; a refusal is counted.

        @param in_flight: requests in flight on the connection now.
        """
        reason: Optional[str] = None
        if self.draining:
            reason = DRAINING
        elif self.max_concurrent is not None and in_flight >= self.max_concurrent:
            reason = OVERLOADED
        if reason is not None:
            self.refused[reason] = self.refused.get(reason, 0) + 1
        return reason


def not_started_response(reason: str, cid: CorrelationId) -> RawResponse:
    """
    The answer to a request refused before its handler was called: 503
    problem+json, C{Retry-After: 1}, and L{NOT_STARTED_HEADER} naming why.
    """
    detail = ("the instance is draining" if reason == DRAINING
              else "the instance has as many requests in flight as it accepts")
    return RawResponse(503, (("Content-Type", PROBLEM_CONTENT_TYPE), ("Retry-After", "1"),
                             (NOT_STARTED_HEADER, reason)),
                       problem_body(503, "not-started", "Request not started",
                                    f"{detail}; the request was not started", str(cid)))
