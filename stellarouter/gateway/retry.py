"""
When the gateway may send a request again (issue 24): pure policy, no I/O,
time passed in as C{now}.

A request is sent again at most once, to another instance of the same
version, and only when that cannot make it run twice where running twice
matters:

 - it I{provably did not run}: the instance answered that it did not start
   it (a RESPONSE carrying L{NOT_STARTED_HEADER}, protocol.md), or the
   connection was gone before its REQUEST was written; or
 - it I{may have run} (the connection was lost after the REQUEST left) and
   its endpoint is idempotent for retries (L{retry_idempotent}).

Never when its body was streamed to the instance as it arrived (the gateway
does not hold it), when a response has begun, after a timeout (the deadline
is spent), or when the L{RetryBudget} is exhausted.
"""

from __future__ import annotations

import enum
from typing import List, Optional

from ..common.models import EndpointDescriptor

#: Methods retried after they may have started, unless the endpoint or the
#: gateway's configuration says otherwise (RFC 9110 section 9.2.1's safe
#: methods; PUT and DELETE are idempotent but change state, so a retry of
#: them is opt-in).
RETRY_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

#: The RESPONSE header by which a microservice says it did not start a
#: request (status 503; the value names why: C{draining}, C{overloaded}).
#: The gateway never passes it on.
NOT_STARTED_HEADER = "X-Stella-Not-Started"

#: The response header telling the client how many instances were tried,
#: written when more than one was.
ATTEMPTS_HEADER = b"X-Stella-Attempts"


class AttemptOutcome(enum.Enum):
    """
    How an attempt ended without an answer the client can be given.
    """

    #: Provably not run: refused before the REQUEST was written, or the
    #: instance said so.
    NOT_STARTED = "not-started"
    #: The connection was lost after the REQUEST was written: it may have
    #: run.
    LOST = "lost"
    #: The deadline passed (504).
    TIMED_OUT = "timed-out"
    #: Anything else (an unusable RESPONSE, the gateway shutting down).
    OTHER = "other"


def retry_idempotent(endpoint: EndpointDescriptor, configured: Optional[bool] = None) -> bool:
    """
    Whether a request to C{endpoint} may be sent again after it may have
    started.

    @param configured: the gateway's C{services[].endpoints[].idempotent}
        override, if any (it wins).
    @return: the override if given, else the endpoint's own C{idempotent}
        if it announced one, else whether its method is in
        L{RETRY_SAFE_METHODS}.
    """
    if configured is not None:
        return configured
    if endpoint.idempotent is not None:
        return endpoint.idempotent
    return endpoint.method in RETRY_SAFE_METHODS


def may_retry(outcome: AttemptOutcome, idempotent: bool, streamed_body: bool,
              attempts_made: int, max_attempts: int = 2) -> bool:
    """
    Whether the request whose attempt ended with C{outcome} may be sent
    again (to another instance; the caller finds one and asks the budget).

    @param idempotent: L{retry_idempotent} of its endpoint.
    @param streamed_body: its body went to the instance as it arrived from
        the client (the gateway cannot send it again).
    @param attempts_made: attempts so far, the one that just ended included.
    @param max_attempts: attempts allowed in all (2: one retry).
    """
    if attempts_made >= max_attempts or streamed_body:
        return False
    if outcome is AttemptOutcome.NOT_STARTED:
        return True
    return outcome is AttemptOutcome.LOST and idempotent


class RetryBudget:
    """
    Retries may be at most C{ratio} of the requests of the last C{window}
    seconds (at least C{minimum} retries are always allowed per window), so
    a sick backend does not double the load on the healthy ones: a retry
    storm stops at the budget.

    The window slides in C{buckets} steps; memory is two lists of that
    length whatever the traffic.

    @ivar granted: retries the budget allowed, since it was created.
    @ivar refused: retries it refused.
    """

    def __init__(self, ratio: float = 0.2, window: float = 10.0, minimum: int = 3,
                 buckets: int = 10) -> None:
        """
        @param ratio: retries allowed per request, in [0, 1].
        @param window: seconds over which requests and retries are counted.
        @param minimum: retries allowed per window whatever the traffic.
        @param buckets: how finely the window slides.
        """
        if not 0 <= ratio <= 1:
            raise ValueError(f"ratio must be in [0, 1], not {ratio!r}")
        if window <= 0 or buckets < 1 or minimum < 0:
            raise ValueError("window must be > 0, buckets >= 1 and minimum >= 0")
        self.ratio = ratio
        self.window = window
        self.minimum = minimum
        self._width = window / buckets
        self._requests: List[int] = [0] * buckets
        self._retries: List[int] = [0] * buckets
        #: The bucket index (time // width) each slot holds counts for.
        self._slot_of: List[int] = [-1] * buckets
        self.granted = 0
        self.refused = 0

    def _slot(self, now: float) -> int:
        """
        The slot for C{now}, emptied first if it held an older bucket.
        """
        index = int(now // self._width)
        slot = index % len(self._requests)
        if self._slot_of[slot] != index:
            self._slot_of[slot] = index
            self._requests[slot] = 0
            self._retries[slot] = 0
        return slot

    def _totals(self, now: float) -> "tuple[int, int]":
        """
        Requests and retries counted in the window ending at C{now}.
        """
        newest = int(now // self._width)
        oldest = newest - len(self._requests) + 1
        requests = retries = 0
        for slot, index in enumerate(self._slot_of):
            if oldest <= index <= newest:
                requests += self._requests[slot]
                retries += self._retries[slot]
        return requests, retries

    def request(self, now: float) -> None:
        """
        Count one request (its first attempt).
        """
        index = int(now // self._width)
        slot = index % len(self._requests)
        if self._slot_of[slot] != index:
            slot = self._slot(now)
        self._requests[slot] += 1

    def allows(self, now: float) -> bool:
        """
        Whether one more retry fits now (nothing is counted).
        """
        requests, retries = self._totals(now)
        return retries < max(self.minimum, self.ratio * requests)

    def spend(self, now: float) -> bool:
        """
        Take one retry from the budget if it allows one.

        @return: whether it did (the retry may go).
        """
        if not self.allows(now):
            self.refused += 1
            return False
        self._retries[self._slot(now)] += 1
        self.granted += 1
        return True
